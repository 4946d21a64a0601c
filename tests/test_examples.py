"""The course's examples in examples/ run (quick mode) and print what they promise."""

import importlib.util
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name, *args):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), "--quick", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_edge_detection_finds_the_edges_and_learns_the_kernel():
    out = run_example("edge_detection.py")
    assert "[ 0.,  1.,  0.,  0.,  0., -1.,  0.]" in out
    assert "step 10, loss" in out
    learned = out.split("learned kernel: tensor([[")[1].split("]]")[0]
    first, second = (float(v) for v in learned.split(","))
    assert abs(first - 1) < 0.1 and abs(second + 1) < 0.1


# Looked up, not imported: scikit-learn would load a second OpenMP runtime into the test process.
@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="lenet.py's data set comes with scikit-learn")
def test_lenet_reaches_torchs_accuracy():
    out = run_example("lenet.py")
    assert "(the same)" in out
    accuracy = float(out.split("test accuracy: convext ")[1].split(",")[0])
    assert accuracy > 0.5  # ten classes: chance is 0.1


@pytest.mark.parametrize("layout", [[], ["--channels-last"]])
def test_swap_into_model_gives_torchs_outputs_and_times_both(layout):
    out = run_example("swap_into_model.py", *layout)
    assert "convert() swapped 17 layers" in out
    assert "eval mode" in out and "train mode" in out
    assert "convext speed vs torch.nn" in out
