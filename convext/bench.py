"""convext against torch's own kernels (oneDNN on CPU, cuDNN on CUDA), on the same inputs in one run.

    python -m convext.bench                      # the default suite, fwd+bwd, this machine's threads
    python -m convext.bench --pass fwd --memory-format channels_last --quick
    python -m convext.bench --shape conv:8,64,56,56,64,3,1,1      # N,C,H,W,C_out,k,stride,pad[,dilation,groups]
    python -m convext.bench --shape max:8,64,112,112,3,2,1        # N,C,H,W,k,stride,pad

Layers whose input is the image (LeNet conv1, the ResNet-50 stem) compute no input gradient in their
backward, for torch and convext alike, as in a training step, where the image needs none.

For every case: the median time of each implementation after warm-up (torch.utils.benchmark), GFLOP/s
for convolutions and GB/s for pools, their fraction of this machine's peak FMA throughput and copy
bandwidth (both measured in the same run by convext's own probe kernels), the speed ratio
torch time / convext time (above 1: convext is faster), and a check that both give the same results.
Writes a table to the terminal, and JSON plus a PNG chart of the ratios to --output.

By default glibc's malloc is told to keep freed memory (--malloc steady): otherwise it hands large
blocks back to the system, and a loop that allocates the same tensors again page-faults them in on
every call. That noise hit either library at random: torch's NCHW ResNet-50 stem forward took
20-22 ms instead of 6, its 1x1 backward 30 ms instead of 8.
"""

import argparse
import ctypes
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark

import convext

aten = torch.ops.aten
ops = torch.ops.convext


@dataclasses.dataclass
class Case:
    name: str
    kind: str  # conv, max or avg
    batch: int
    channels: int
    size: int
    out_channels: int = 0
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    image_input: bool = False  # a network's first layer: its backward computes no input gradient

    def conv_args(self):
        return self.stride, self.padding, self.dilation, self.groups


def default_suite():
    conv = "conv"
    return [
        Case("LeNet conv1 1->6 5x5 p2", conv, 256, 1, 28, 6, 5, 1, 2, image_input=True),
        Case("LeNet conv2 6->16 5x5", conv, 256, 6, 14, 16, 5),
        Case("ResNet-50 stem 7x7/2", conv, 8, 3, 224, 64, 7, 2, 3, image_input=True),
        Case("ResNet-50 3x3 64 @56", conv, 8, 64, 56, 64, 3, 1, 1),
        Case("ResNet-50 3x3 128 @28", conv, 8, 128, 28, 128, 3, 1, 1),
        Case("ResNet-50 3x3 256 @14", conv, 8, 256, 14, 256, 3, 1, 1),
        Case("ResNet-50 3x3 512 @7", conv, 8, 512, 7, 512, 3, 1, 1),
        Case("ResNet-50 3x3/2 128 @56", conv, 8, 128, 56, 128, 3, 2, 1),  # v1.5 downsampling: strided input grad
        Case("ResNet-50 1x1 256->64 @56", conv, 8, 256, 56, 64, 1),
        Case("MobileNetV2 dw 3x3 144 @56", conv, 8, 144, 56, 144, 3, 1, 1, 1, 144),
        Case("MobileNetV2 dw 3x3/2 960 @14", conv, 8, 960, 14, 960, 3, 2, 1, 1, 960),
        Case("dilated 3x3 d2 64 @56", conv, 8, 64, 56, 64, 3, 1, 2, 2),
        Case("grouped 3x3 g32 128 @56", conv, 8, 128, 56, 128, 3, 1, 1, 1, 32),
        Case("grouped 3x3 g32 256 @28", conv, 8, 256, 28, 256, 3, 1, 1, 1, 32),  # ResNeXt-50: 8 per group
        Case("max 3x3/2 p1 64 @112", "max", 8, 64, 112, 0, 3, 2, 1),
        Case("avg 2x2 256 @56", "avg", 8, 256, 56, 0, 2, 2, 0),
        Case("max 2x2 6 @28 (LeNet)", "max", 256, 6, 28, 0, 2, 2, 0),
    ]


CUDA_MIN_BATCH = 32


def quick_suite():
    keep = {"LeNet conv2 6->16 5x5", "ResNet-50 3x3 64 @56", "ResNet-50 1x1 256->64 @56",
            "MobileNetV2 dw 3x3 144 @56", "max 3x3/2 p1 64 @112", "avg 2x2 256 @56"}
    return [c for c in default_suite() if c.name in keep]


def parse_shape(text):
    kind, _, numbers = text.partition(":")
    values = [int(v) for v in numbers.split(",")]
    if kind == "conv":
        n, c, h, w, out, k, s, p, *rest = values
        d, g = (rest + [1, 1])[:2]
        if h != w:
            raise SystemExit("--shape: square inputs only (H == W)")
        return Case(f"user conv {text[5:]}", "conv", n, c, h, out, k, s, p, d, g)
    if kind in ("max", "avg"):
        n, c, h, w, k, s, p = values
        return Case(f"user {kind} {text[4:]}", kind, n, c, h, 0, k, s, p)
    raise SystemExit(f"--shape: expected conv:..., max:... or avg:..., got {text!r}")


# -- the work of one case: the same inputs for both implementations ----------

class Workload:
    def __init__(self, case, device, dtype, memory_format):
        self.case = case
        shape = (case.batch, case.channels, case.size, case.size)
        self.x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
        if case.kind == "conv":
            w_shape = (case.out_channels, case.channels // case.groups, case.kernel, case.kernel)
            self.w = torch.randn(w_shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
            self.w *= 1 / math.sqrt(self.w[0].numel())
            self.b = torch.randn(case.out_channels, device=device, dtype=dtype)
            y = F.conv2d(self.x, self.w, self.b, *case.conv_args())
        elif case.kind == "max":
            y, self.indices = F.max_pool2d(self.x, case.kernel, case.stride, case.padding, return_indices=True)
        else:
            y = F.avg_pool2d(self.x, case.kernel, case.stride, case.padding)
        self.gy = torch.randn_like(y)

    def forward(self, lib):
        lib = F if lib is torch else lib
        c = self.case
        if c.kind == "conv":
            return lib.conv2d(self.x, self.w, self.b, *c.conv_args())
        if c.kind == "max":
            return lib.max_pool2d(self.x, c.kernel, c.stride, c.padding, return_indices=True)
        return lib.avg_pool2d(self.x, c.kernel, c.stride, c.padding)

    def backward(self, lib):
        """The backward ops alone, on fixed inputs: every gradient of the layer (no input
        gradient for an image-input layer)."""
        c = self.case
        conv = ([c.stride] * 2, [c.padding] * 2, [c.dilation] * 2, c.groups)
        if lib is torch:
            if c.kind == "conv":
                return aten.convolution_backward(self.gy, self.x, self.w, [c.out_channels], conv[0], conv[1],
                                                 conv[2], False, [0, 0], c.groups, [not c.image_input, True, True])
            if c.kind == "max":
                return aten.max_pool2d_with_indices_backward(self.gy, self.x, [c.kernel] * 2, [c.stride] * 2,
                                                             [c.padding] * 2, [1, 1], False, self.indices)
            return aten.avg_pool2d_backward(self.gy, self.x, [c.kernel] * 2, [c.stride] * 2, [c.padding] * 2,
                                            False, True, None)
        if c.kind == "conv":
            grad_input = None if c.image_input else ops.conv2d_backward_input(self.gy, self.x, self.w, *conv)
            return (grad_input, ops.conv2d_backward_weight(self.gy, self.x, self.w, *conv),
                    ops.conv2d_backward_bias(self.gy))
        if c.kind == "max":
            return ops.max_pool2d_backward(self.gy, self.x, self.indices, [c.kernel] * 2, [c.stride] * 2,
                                           [c.padding] * 2, [1, 1], False)
        return ops.avg_pool2d_backward(self.gy, self.x, [c.kernel] * 2, [c.stride] * 2, [c.padding] * 2,
                                       False, True, None)

    def forward_backward(self, lib):
        leaves = [t.detach().requires_grad_() for t in self.leaves()]
        if self.case.image_input:
            leaves[0].requires_grad_(False)
        saved = self.swap_leaves(leaves)
        out = self.forward(lib)
        out = out[0] if isinstance(out, tuple) else out
        grads = torch.autograd.grad(out, [t for t in leaves if t.requires_grad], self.gy)
        self.swap_leaves(saved)
        return out, grads

    def leaves(self):
        return [self.x, self.w, self.b] if self.case.kind == "conv" else [self.x]

    def swap_leaves(self, tensors):
        old = self.leaves()
        if self.case.kind == "conv":
            self.x, self.w, self.b = tensors
        else:
            (self.x,) = tensors
        return old

    def work(self, pass_name):
        """FLOPs (conv) or bytes moved (pools) of one pass."""
        c, x, gy = self.case, self.x, self.gy
        if c.kind == "conv":
            fwd = 2 * gy.numel() * (c.channels // c.groups) * c.kernel * c.kernel
            bwd = fwd if c.image_input else 2 * fwd  # weight gradient, and input gradient unless image input
            return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[pass_name]
        # Each pass reads one of input / grad_output and writes the other, plus max_pool2d's indices.
        moved = (x.numel() + gy.numel()) * x.element_size() + (gy.numel() * 8 if c.kind == "max" else 0)
        return {"fwd": moved, "bwd": moved, "fwd+bwd": 2 * moved}[pass_name]


# Largest max_error that counts as the same result: float32 and float64 sum in
# another order. Half types: convext rounds a float32 sum once, but torch's own
# half kernels may round partial sums (LeNet conv2's float16 weight gradient:
# torch 4e-3 from the float64 result, convext 4e-4), so about ten units in the
# last place. float32 on CUDA with TF32 allowed: both sides round the operands
# to 10 mantissa bits, each its own way.
CHECK_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-9, torch.float16: 1e-2, torch.bfloat16: 8e-2}
TF32_CHECK_TOLERANCE = 1e-2


def check_tolerance(dtype, device):
    if dtype == torch.float32 and device == "cuda" and torch.backends.cudnn.allow_tf32:
        return TF32_CHECK_TOLERANCE
    return CHECK_TOLERANCE[dtype]


def max_error(a, b):
    """Largest difference between two results (tensors or nested tuples), relative to b's scale."""
    if isinstance(a, (tuple, list)):
        return max(max_error(x, y) for x, y in zip(a, b, strict=True) if x is not None)
    if not a.is_floating_point():
        return 0.0 if torch.equal(a, b) else float("inf")
    if b.numel() == 0:
        return 0.0
    return (a.double() - b.double()).abs().max().item() / max(b.abs().max().item(), 1e-30)


def time_median(fn, threads, min_run_time):
    fn()  # warm-up: allocations, caches, lazy initialisation
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median


# -- machine peaks -------------------------------------------------------------

def measure_peaks(dtype, device):
    if device == "cuda":
        # Copy bandwidth only: a GPU's FMA peak depends on the units a kernel uses
        # (CUDA cores, tensor cores), so convolutions are compared with cuDNN alone.
        src = torch.ones(2**28, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        best = time_median(lambda: ops._stream_copy(dst, src), 1, 0.2)
        return {"fma_gflops": None, "copy_gbs": 2 * src.nbytes / best / 1e9}
    iterations = 20_000_000
    # Half types compute in float32 on the CPU: their peak is float32's.
    peak_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    fma = max(ops._fma_peak_gflops(iterations, peak_dtype) for _ in range(3))
    src = torch.ones(2**26, dtype=torch.float32)
    dst = torch.empty_like(src)
    ops._stream_copy(dst, src)
    best = min(_timed(lambda: ops._stream_copy(dst, src)) for _ in range(5))
    return {"fma_gflops": fma, "copy_gbs": 2 * src.nbytes / best / 1e9}


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def steady_heap():
    """Tells glibc's malloc to serve large blocks from its heap (mmap threshold at its 32 MiB
    maximum) and never give freed memory back (no trimming). Returns a description of what was
    set, or None where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, TypeError, AttributeError):
        return None
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    mmap_threshold, trim_threshold = 32 << 20, 2**31 - 1
    if mallopt(m_mmap_threshold, mmap_threshold) != 1 or mallopt(m_trim_threshold, trim_threshold) != 1:
        return None
    return f"glibc, mmap threshold {mmap_threshold >> 20} MiB, no trimming"


def machine_info(device, threads, malloc):
    info = {
        "machine": platform.node(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "convext": convext.__version__,
        "threads": threads,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "malloc": malloc,
    }
    if device == "cpu":
        info["cpu"] = _cpu_model()
        info["isa"] = ops._cpu_isa()
    else:
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        info["allow_tf32"] = torch.backends.cudnn.allow_tf32
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -- running and reporting -----------------------------------------------------

def progress(done, total, label, stream=sys.stderr):
    width = 30
    filled = int(width * done / total)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label[:40]:<40}")
    if done == total:
        stream.write("\n")
    stream.flush()


def run_case(case, args, dtype, memory_format, peaks):
    work = Workload(case, args.device, dtype, memory_format)
    rows = []
    for pass_name in args.passes:
        if pass_name == "fwd":
            fns = {lib: (lambda lib=lib: work.forward(lib)) for lib in (torch, convext)}
        elif pass_name == "bwd":
            fns = {lib: (lambda lib=lib: work.backward(lib)) for lib in (torch, convext)}
        else:
            fns = {lib: (lambda lib=lib: work.forward_backward(lib)) for lib in (torch, convext)}
        with torch.no_grad() if pass_name != "fwd+bwd" else torch.enable_grad():
            error = max_error(fns[convext](), fns[torch]())
            times = {lib: time_median(fn, args.threads, args.min_run_time) for lib, fn in fns.items()}
        amount = work.work(pass_name)
        rate = amount / times[convext] / 1e9
        peak = peaks["fma_gflops"] if case.kind == "conv" else peaks["copy_gbs"]
        rows.append({
            "case": case.name, "kind": case.kind, "pass": pass_name,
            "shape": dataclasses.asdict(case),
            "torch_ms": times[torch] * 1e3, "convext_ms": times[convext] * 1e3,
            "ratio": times[torch] / times[convext],
            "unit": "GFLOP/s" if case.kind == "conv" else "GB/s",
            "convext_rate": rate, "torch_rate": amount / times[torch] / 1e9,
            "convext_fraction_of_peak": rate / peak if peak else None,
            "max_rel_error": error,
            "correct": error <= check_tolerance(dtype, args.device),
        })
    return rows


def format_table(rows):
    head = (f"{'case':<32} {'pass':<8} {'torch ms':>9} {'convext ms':>10} {'ratio':>6} {'rate':>16} "
            f"{'peak':>5} {'check':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        peak = f"{100 * r['convext_fraction_of_peak']:.0f}%" if r["convext_fraction_of_peak"] else "-"
        lines.append(
            f"{r['case']:<32} {r['pass']:<8} {r['torch_ms']:>9.3f} {r['convext_ms']:>10.3f} {r['ratio']:>6.2f} "
            f"{r['convext_rate']:>8.1f} {r['unit']:<7} {peak:>5} {'ok' if r['correct'] else 'FAIL':>5}"
        )
    return "\n".join(lines)


def summary(rows):
    out = {}
    for pass_name in sorted({r["pass"] for r in rows}):
        ratios = [r["ratio"] for r in rows if r["pass"] == pass_name]
        out[pass_name] = {"geomean_ratio": statistics.geometric_mean(ratios), "min_ratio": min(ratios)}
    return out


def peaks_text(peaks):
    """The peaks a run measured: on a GPU only the copy bandwidth (no FMA loop of convext's own there)."""
    fma = f"FMA {peaks['fma_gflops']:.0f} GFLOP/s, " if peaks["fma_gflops"] else ""
    return f"{fma}copy {peaks['copy_gbs']:.0f} GB/s"


def markdown_table(result):
    m = result["machine"]
    on_gpu = m.get("device") == "cuda"
    if on_gpu:
        machine = (f"{m['gpu']}, torch {m['torch']} (CUDA {m['cuda']}), cuDNN benchmark "
                   f"{'on' if m['cudnn_benchmark'] else 'off'}, TF32 {'allowed' if m['allow_tf32'] else 'off'}, ")
    else:
        machine = f"{m['cpu']}, {m['threads']} threads, {m['isa']} kernels, torch {m['torch']}, "
    lines = [
        f"{machine}{result['dtype']}, {result['memory_format']}, {m['date'][:10]}"
        + (f", malloc {m['malloc']}" if not on_gpu and "malloc" in m else "")
        + f". Peaks measured in the run: {peaks_text(result['peaks'])}.",
        "",
        "| case | pass | torch ms | convext ms | torch/convext | convext rate | of peak |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        peak = f"{100 * r['convext_fraction_of_peak']:.0f}%" if r["convext_fraction_of_peak"] else "-"
        lines.append(f"| {r['case']} | {r['pass']} | {r['torch_ms']:.3f} | {r['convext_ms']:.3f} | "
                     f"{r['ratio']:.2f}x | {r['convext_rate']:.1f} {r['unit']} | {peak} |")
    for pass_name, s in result["summary"].items():
        lines.append(f"\n{pass_name}: geometric mean {s['geomean_ratio']:.2f}x torch, lowest {s['min_ratio']:.2f}x.")
    return "\n".join(lines)


def write_chart(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
        return None
    rows = result["rows"]
    passes = sorted({r["pass"] for r in rows})
    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(cases) + 1.5))
    height = 0.8 / len(passes)
    for i, pass_name in enumerate(passes):
        ratios = {r["case"]: r["ratio"] for r in rows if r["pass"] == pass_name}
        ys = [j + i * height for j in range(len(cases))]
        ax.barh(ys, [ratios.get(c, 0) for c in cases], height=height, label=pass_name)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(cases))], cases)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("speed vs torch (torch time / convext time; > 1: convext faster)")
    m = result["machine"]
    ax.set_title(f"convext vs torch {m['torch']} on {m.get('cpu', m.get('gpu'))}, {m['threads']} threads, "
                 f"{result['dtype']} {result['memory_format']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m convext.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--memory-format", default="nchw", choices=["nchw", "channels_last"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--pass", dest="passes", action="append", choices=["fwd", "bwd", "fwd+bwd"],
                        help="repeatable; default: fwd, bwd and fwd+bwd")
    parser.add_argument("--quick", action="store_true", help="a few representative cases, shorter timing")
    parser.add_argument("--shape", action="append", default=[], help="a case of your own (see above); repeatable")
    parser.add_argument("--min-run-time", type=float, default=None, help="seconds of timing per measurement")
    parser.add_argument("--output", default="bench-results", help="folder for the JSON and the PNG chart")
    parser.add_argument("--malloc", default="steady", choices=["steady", "default"],
                        help="steady (default): glibc keeps freed memory, so timings do not include page faults")
    args = parser.parse_args(argv)
    args.passes = args.passes or ["fwd", "bwd", "fwd+bwd"]
    args.min_run_time = args.min_run_time or (0.1 if args.quick else 0.3)

    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device")
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(args.threads)
    malloc = (steady_heap() if args.malloc == "steady" else None) or "default"
    dtype = getattr(torch, args.dtype)
    memory_format = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    cases = [parse_shape(s) for s in args.shape] or (quick_suite() if args.quick else default_suite())
    if args.device == "cuda" and not args.shape:
        # A GPU needs batches of training size to fill it; the CPU suite's 8 would time launches.
        cases = [dataclasses.replace(c, batch=max(c.batch, CUDA_MIN_BATCH)) for c in cases]

    peaks = measure_peaks(dtype, args.device)
    rows = []
    for i, case in enumerate(cases):
        progress(i, len(cases), case.name)
        rows += run_case(case, args, dtype, memory_format, peaks)
    progress(len(cases), len(cases), "done")

    result = {"machine": machine_info(args.device, args.threads, malloc), "dtype": args.dtype,
              "memory_format": args.memory_format, "peaks": peaks, "rows": rows, "summary": summary(rows)}
    print(format_table(rows))
    for pass_name, s in result["summary"].items():
        print(f"{pass_name}: geometric mean {s['geomean_ratio']:.2f}x torch, lowest {s['min_ratio']:.2f}x")
    print(f"peaks this run: {peaks_text(peaks)}")

    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, f"{args.device}-{args.dtype}-{args.memory_format}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown_table(result) + "\n")
    chart = write_chart(result, stem + ".png")
    print(f"results: {stem}.json, {stem}.md" + (f", {chart}" if chart else ""))
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
