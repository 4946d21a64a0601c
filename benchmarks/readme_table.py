"""Prints the README's benchmark table from a results folder of python -m convext.bench JSON files.

    python benchmarks/readme_table.py benchmarks/results/cpu-2026-11-22
"""

import json
import pathlib
import sys


def main(folder):
    runs = {}
    for path in sorted(pathlib.Path(folder).glob("*.json")):
        result = json.loads(path.read_text())
        runs[result["memory_format"]] = result
    formats = [f for f in ("nchw", "channels_last") if f in runs]
    passes = ["fwd", "bwd", "fwd+bwd"]
    header = ["case"] + [f"{p} {f}" for f in formats for p in passes]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" + " ---: |" * (len(header) - 1)]
    cases = list(dict.fromkeys(r["case"] for r in runs[formats[0]]["rows"]))
    for case in cases:
        cells = [case]
        for f in formats:
            ratio = {r["pass"]: r["ratio"] for r in runs[f]["rows"] if r["case"] == case}
            cells += [f"{ratio[p]:.2f}x" for p in passes]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**geometric mean**"]
    for f in formats:
        cells += [f"**{runs[f]['summary'][p]['geomean_ratio']:.2f}x**" for p in passes]
    lines.append("| " + " | ".join(cells) + " |")
    m = runs[formats[0]]["machine"]
    peaks = "; ".join(
        f"{f}: FMA {runs[f]['peaks']['fma_gflops']:.0f} GFLOP/s, copy {runs[f]['peaks']['copy_gbs']:.0f} GB/s"
        for f in formats
    )
    print(f"torch time / convext time (above 1: convext faster), float32, {m['cpu']}, {m['threads']} threads, "
          f"{m['isa']} kernels, torch {m['torch']}, {m['date'][:10]}, malloc {m.get('malloc', 'default')}. "
          f"Peaks measured in the runs: {peaks}.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
