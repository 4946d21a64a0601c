"""python -m convext.bench runs end to end: tiny cases, every pass, JSON and markdown written."""

import json

import pytest

from convext import bench


def test_bench_writes_results_for_user_shapes(tmp_path):
    status = bench.main([
        "--shape", "conv:2,4,9,9,6,3,1,1,1,2", "--shape", "max:2,3,9,9,3,2,1", "--shape", "avg:2,3,8,8,2,2,0",
        "--min-run-time", "0.01", "--output", str(tmp_path), "--memory-format", "channels_last",
    ])
    assert status == 0
    result = json.loads((tmp_path / "cpu-float32-channels_last.json").read_text())
    assert {r["pass"] for r in result["rows"]} == {"fwd", "bwd", "fwd+bwd"}
    assert len(result["rows"]) == 9 and all(r["correct"] for r in result["rows"])
    assert result["peaks"]["fma_gflops"] > 0 and result["peaks"]["copy_gbs"] > 0
    assert result["machine"]["isa"] in ("generic", "avx2", "avx512")
    # --malloc steady, the default: what mallopt accepted (glibc's own malloc), or "default" (another
    # malloc, such as a sanitizer's, or no glibc)
    assert result["machine"]["malloc"] == (bench.steady_heap() or "default")
    assert "| case | pass |" in (tmp_path / "cpu-float32-channels_last.md").read_text()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_bench_runs_every_dtype(tmp_path, dtype):
    status = bench.main(["--shape", "conv:2,4,9,9,6,3,1,1", "--shape", "max:2,3,9,9,3,2,1", "--pass", "fwd+bwd",
                         "--min-run-time", "0.01", "--output", str(tmp_path), "--dtype", dtype])
    assert status == 0
    result = json.loads((tmp_path / f"cpu-{dtype}-nchw.json").read_text())
    assert result["dtype"] == dtype and all(r["correct"] for r in result["rows"])


def test_bench_leaves_malloc_alone_when_asked(tmp_path):
    assert bench.main(["--shape", "avg:1,2,4,4,2,2,0", "--pass", "fwd", "--min-run-time", "0.01", "--malloc", "default",
                       "--output", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "cpu-float32-nchw.json").read_text())["machine"]["malloc"] == "default"


def test_default_suite_covers_the_issue_cases():
    names = [c.name for c in bench.default_suite()]
    assert len(names) == 17 and sum(c.kind == "conv" for c in bench.default_suite()) == 14
    assert {c.name for c in bench.default_suite() if c.image_input} == {"LeNet conv1 1->6 5x5 p2",
                                                                       "ResNet-50 stem 7x7/2"}


def test_markdown_of_a_gpu_run_names_the_gpu_and_only_the_copy_peak(tmp_path):
    """On a GPU convext measures no FMA peak (None in the JSON): the table says what the run had."""
    assert bench.main(["--shape", "avg:1,2,4,4,2,2,0", "--pass", "fwd", "--min-run-time", "0.01",
                       "--output", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cpu-float32-nchw.json").read_text())
    result["machine"] = {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130", "cuda": "13.0",
                         "cudnn_benchmark": True, "allow_tf32": False, "threads": 16, "date": result["machine"]["date"]}
    result["peaks"]["fma_gflops"] = None
    first_line = bench.markdown_table(result).splitlines()[0]
    assert first_line.startswith("NVIDIA H100 80GB HBM3, torch 2.11.0+cu130 (CUDA 13.0), cuDNN benchmark on, TF32 off")
    assert "copy" in first_line and "FMA" not in first_line
