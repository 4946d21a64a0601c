"""Training with convext layers: autocast, channels_last end to end,
torch.compile, and DistributedDataParallel (gloo, 2 processes)."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from conftest import DEVICES, HALF_TYPES, assert_close, is_channels_last

import convext


def small_cnn():
    """Every convext layer once: conv, grouped strided conv, transposed conv, both pools."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(16, 8, 2, stride=2),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )


def twin_models(device, memory_format=torch.contiguous_format):
    torch_model = small_cnn().to(device=device, memory_format=memory_format)
    return torch_model, convext.nn.convert(torch_model)


def record_outputs(model):
    """Each layer's output, in call order."""
    outputs = []
    for layer in model:
        layer.register_forward_hook(lambda _layer, _input, output: outputs.append(output))
    return outputs


def train_step(model, x):
    out = model(x)
    out.float().square().mean().backward()
    return out


@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_autocast_casts_like_torch(device, dtype):
    """conv2d and conv_transpose2d run in the autocast dtype, the pools in their
    input's; float32 weights get float32 gradients."""
    torch_model, convext_model = twin_models(device)
    torch_outputs, convext_outputs = record_outputs(torch_model), record_outputs(convext_model)
    x = torch.randn(4, 3, 16, 16, device=device)
    with torch.autocast(device, dtype=dtype):
        out, ref = train_step(convext_model, x), train_step(torch_model, x)
    assert [o.dtype for o in convext_outputs] == [o.dtype for o in torch_outputs]
    assert convext_outputs[0].dtype == dtype
    # Several layers of rounding apart: a tolerance of a few units of the dtype.
    tol = 8 * torch.finfo(dtype).eps
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * ref.abs().max().item())
    for p, p_ref in zip(convext_model.parameters(), torch_model.parameters(), strict=True):
        assert p.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=tol, atol=tol * p_ref.grad.abs().max().item())


def test_autocast_leaves_float64_alone_and_off_means_off():
    x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with torch.autocast("cpu"):
        assert convext.conv2d(x, w).dtype == torch.float64
        with torch.autocast("cpu", enabled=False):
            assert convext.conv2d(x.float(), w.float()).dtype == torch.float32
    assert convext.conv2d(x.float(), w.float()).dtype == torch.float32


def test_compiled_model_under_autocast_matches_eager():
    _, model = twin_models("cpu")
    x = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(model, fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, out = model(x), compiled(x)
    assert out.dtype == expected.dtype == torch.bfloat16
    assert_close(out, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_stays_channels_last_forward_and_backward(device):
    """A channels_last model and input: every layer's output, the input gradient
    and every conv weight gradient are channels_last, as with torch.nn."""
    torch_model, convext_model = twin_models(device, torch.channels_last)
    torch_outputs, convext_outputs = record_outputs(torch_model), record_outputs(convext_model)
    x = torch.randn(4, 3, 16, 16, device=device).contiguous(memory_format=torch.channels_last)
    x_ref = x.detach().clone().requires_grad_()
    x.requires_grad_()
    out, ref = train_step(convext_model, x), train_step(torch_model, x_ref)
    assert_close(out, ref)
    spatial = [o for o in convext_outputs if o.dim() == 4]
    assert len(spatial) == 7 and all(is_channels_last(o) for o in spatial)
    assert [is_channels_last(o) for o in convext_outputs] == [is_channels_last(o) for o in torch_outputs]
    assert is_channels_last(x.grad) and is_channels_last(x_ref.grad)
    assert_close(x.grad, x_ref.grad)
    for p, p_ref in zip(convext_model.parameters(), torch_model.parameters(), strict=True):
        assert p.grad.stride() == p_ref.grad.stride()
        assert_close(p.grad, p_ref.grad)


# -- DistributedDataParallel ---------------------------------------------------

STEPS, BATCH = 3, 8


def _data():
    generator = torch.Generator().manual_seed(5)
    return [(torch.randn(BATCH, 3, 16, 16, generator=generator), torch.randint(0, 10, (BATCH,), generator=generator))
            for _ in range(STEPS)]


def _train(model, batches):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return grads


def _ddp_worker(rank, world_size, init_file, result_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world_size)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(convext.nn.convert(small_cnn()))
        shard = BATCH // world_size
        batches = [(x[rank * shard:(rank + 1) * shard], y[rank * shard:(rank + 1) * shard]) for x, y in _data()]
        grads = _train(model, batches)
        if rank == 0:
            torch.save({"grads": grads, "state": model.module.state_dict()}, result_file)
        torch.distributed.barrier()  # both ranks done before either tears gloo down
    finally:
        torch.distributed.destroy_process_group()
    # torch 2.13's gloo aborts about one process in fifty at exit, after the work
    # ("terminate called without an active exception"), with torch's own layers
    # too (3 of 150 runs with convext, 1 of 150 without); a clean exit here skips
    # that teardown. An error above still fails the spawn.
    os._exit(0)


def test_ddp_with_gloo_matches_single_process_training(tmp_path, monkeypatch):
    """Two processes, half the batch each: DDP averages their gradients, which
    equals the full batch's (the loss is a mean)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the two processes share the cores
    result_file = tmp_path / "rank0.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(result_file)), nprocs=2, join=True)
    torch.manual_seed(0)
    model = convext.nn.convert(small_cnn())
    grads = _train(model, _data())
    ddp = torch.load(result_file)
    for step_grads, ddp_step_grads in zip(grads, ddp["grads"], strict=True):
        for g, g_ddp in zip(step_grads, ddp_step_grads, strict=True):
            torch.testing.assert_close(g_ddp, g, rtol=1e-4, atol=1e-6)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ddp["state"][name], value, rtol=1e-4, atol=1e-6)
