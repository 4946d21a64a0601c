"""convext.nn layers: drop-in for torch.nn (signature, init, state_dict, padding_mode) and convert()."""

import copy

import pytest
import torch
from conftest import assert_close

import convext


def lenet():
    """The course's LeNet, built from torch.nn."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, kernel_size=5, padding=2), torch.nn.Sigmoid(),
        torch.nn.AvgPool2d(kernel_size=2, stride=2),
        torch.nn.Conv2d(6, 16, kernel_size=5), torch.nn.Sigmoid(),
        torch.nn.AvgPool2d(kernel_size=2, stride=2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 5 * 5, 120), torch.nn.Sigmoid(),
        torch.nn.Linear(120, 84), torch.nn.Sigmoid(),
        torch.nn.Linear(84, 10),
    )


LAYER_PAIRS = [
    (torch.nn.Conv2d, convext.nn.Conv2d, (3, 8, 3), dict(stride=2, padding=1, dilation=1, groups=1, bias=True)),
    (torch.nn.Conv2d, convext.nn.Conv2d, (4, 8, (3, 2)), dict(padding="same", dilation=(1, 2), groups=2, bias=False)),
    (torch.nn.ConvTranspose2d, convext.nn.ConvTranspose2d, (4, 6, 3),
     dict(stride=2, padding=1, output_padding=1, groups=2, bias=True)),
    (torch.nn.ConvTranspose2d, convext.nn.ConvTranspose2d, (3, 2, (2, 3)), dict(dilation=(2, 1), bias=False)),
    (torch.nn.MaxPool2d, convext.nn.MaxPool2d, (3,), dict(stride=2, padding=1, dilation=2, ceil_mode=True)),
    (torch.nn.AvgPool2d, convext.nn.AvgPool2d, ((3, 2),), dict(padding=1, ceil_mode=True, count_include_pad=False)),
]


@pytest.mark.parametrize("torch_cls,convext_cls,args,kwargs", LAYER_PAIRS)
def test_layer_matches_torch_layer_with_same_seed(torch_cls, convext_cls, args, kwargs):
    torch.manual_seed(3)
    expected_layer = torch_cls(*args, **kwargs)
    torch.manual_seed(3)
    layer = convext_cls(*args, **kwargs)
    assert isinstance(layer, torch_cls)
    assert layer.state_dict().keys() == expected_layer.state_dict().keys()
    for name, value in expected_layer.state_dict().items():
        assert torch.equal(layer.state_dict()[name], value)
    channels = args[0] if torch_cls in (torch.nn.Conv2d, torch.nn.ConvTranspose2d) else 2
    x = torch.randn(2, channels, 11, 10, requires_grad=True)
    out, ref = layer(x), expected_layer(x)
    assert_close(out, ref)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    assert_close(grad, ref_grad)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_conv2d_padding_modes_match_torch(padding_mode, padding):
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(3, 4, 3, padding=padding, padding_mode=padding_mode)
    layer = convext.nn.Conv2d(3, 4, 3, padding=padding, padding_mode=padding_mode)
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 7, 6, requires_grad=True)
    assert_close(layer(x), ref(x))
    (grad,) = torch.autograd.grad(layer(x).square().sum(), x)
    (ref_grad,) = torch.autograd.grad(ref(x).square().sum(), x)
    assert_close(grad, ref_grad)


def test_checkpoints_load_either_way():
    torch_model, convext_model = lenet(), convext.nn.convert(lenet())
    convext_model.load_state_dict(torch_model.state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert_close(convext_model(x), torch_model(x))
    fresh_torch = lenet()
    fresh_torch.load_state_dict(convext_model.state_dict())
    assert_close(fresh_torch(x), convext_model(x))


def test_repr_names_convext_and_the_arguments():
    assert repr(convext.nn.Conv2d(1, 6, 5, padding=2)) == \
        "convext.nn.Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))"
    assert repr(convext.nn.MaxPool2d(2)).startswith("convext.nn.MaxPool2d(kernel_size=2, stride=2")
    assert repr(convext.nn.AvgPool2d(2)).startswith("convext.nn.AvgPool2d(kernel_size=2, stride=2")


def test_conv_transpose_layer_takes_output_size_as_torch_does():
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1)
    layer = convext.nn.ConvTranspose2d.from_torch(ref)
    x = torch.randn(2, 3, 5, 6)
    for output_size in (None, [9, 11], [10, 12], (2, 4, 10, 11)):
        out = layer(x, output_size=output_size)
        assert_close(out, ref(x, output_size=output_size))
    assert layer(x, output_size=[10, 12]).shape == (2, 4, 10, 12)
    with pytest.raises(ValueError, match="requested an output size of"):
        layer(x, output_size=[12, 12])
    with pytest.raises(ValueError, match='Only "zeros" padding mode'):
        convext.nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect")


def test_max_pool_layer_returns_indices_when_asked():
    x = torch.randn(1, 2, 6, 6)
    out, idx = convext.nn.MaxPool2d(2, return_indices=True)(x)
    ref, ref_idx = torch.nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


def test_convert_replaces_layers_and_keeps_outputs():
    torch.manual_seed(0)
    model = lenet()
    converted = convext.nn.convert(model)
    kinds = [type(m) for m in converted]
    assert kinds.count(convext.nn.Conv2d) == 2 and kinds.count(convext.nn.AvgPool2d) == 2
    assert kinds.count(torch.nn.Linear) == 3 and kinds.count(torch.nn.Sigmoid) == 4
    assert [type(m) for m in model] == [type(m) for m in lenet()]  # the original is untouched
    x = torch.randn(3, 1, 28, 28)
    assert_close(converted(x), model(x))
    # A copy: same values, separate tensors.
    assert converted[0].weight is not model[0].weight
    assert torch.equal(converted[0].weight, model[0].weight)


def test_convert_inplace_shares_weights_and_nested_modules():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.ModuleList([torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2)])
            self.head = torch.nn.Conv2d(4, 2, 1)

        def forward(self, x):
            for m in self.features:
                x = m(x)
            return self.head(x)

    model = Block()
    weight = model.features[0].weight
    hook_calls = []
    model.head.register_forward_hook(lambda *args: hook_calls.append(1))
    result = convext.nn.convert(model, inplace=True)
    assert result is model
    assert type(model.features[0]) is convext.nn.Conv2d and type(model.features[1]) is convext.nn.MaxPool2d
    assert model.features[0].weight is weight
    model(torch.randn(1, 3, 10, 10))
    assert hook_calls == [1]


def test_convert_covers_conv_transpose2d():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ConvTranspose2d(8, 3, 3, stride=2))
    converted = convext.nn.convert(model)
    assert [type(m) for m in converted] == [convext.nn.Conv2d, convext.nn.ConvTranspose2d]
    assert repr(converted[1]).startswith("convext.nn.ConvTranspose2d(8, 3, kernel_size=(3, 3), stride=(2, 2)")
    x = torch.randn(2, 3, 9, 9)
    assert_close(converted(x), model(x))


def test_convert_leaves_subclasses_and_a_bare_layer_is_converted():
    class MyConv(torch.nn.Conv2d):
        pass

    model = torch.nn.Sequential(MyConv(1, 1, 3))
    assert type(convext.nn.convert(model)[0]) is MyConv
    assert type(convext.nn.convert(torch.nn.Conv2d(1, 1, 3))) is convext.nn.Conv2d


def test_converted_model_trains_like_the_torch_model():
    torch.manual_seed(0)
    model = lenet()
    converted = convext.nn.convert(model)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for m in (model, converted):
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    for p, q in zip(model.parameters(), converted.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


def test_deepcopy_and_pickle_round_trip(tmp_path):
    layer = convext.nn.Conv2d(2, 3, 3)
    clone = copy.deepcopy(layer)
    assert type(clone) is convext.nn.Conv2d
    path = tmp_path / "layer.pt"
    torch.save(layer, path)
    loaded = torch.load(path, weights_only=False)
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(loaded(x), layer(x))
