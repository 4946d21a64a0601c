"""The course's examples (shared/seeds), run through convext."""

import torch
from conftest import assert_close

import convext
from convext import reference


def edge_image():
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    return X


def test_corr2d_values():
    X = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    K = [[0, 1], [2, 3]]
    expected = torch.tensor([[19.0, 25.0], [37.0, 43.0]])
    assert torch.equal(convext.corr2d(X, K), expected)
    assert torch.equal(convext.corr2d(torch.tensor(X), torch.tensor(K)), expected)
    assert torch.equal(reference.corr2d(torch.tensor(X), torch.tensor(K)), expected)


def test_edge_detection_and_its_transpose():
    X, K = edge_image(), torch.tensor([[1.0, -1.0]])
    Y = convext.corr2d(X, K)
    expected_row = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0])
    assert torch.equal(Y, expected_row.expand(6, 7))
    # [1, -1] sees vertical edges only: on the transposed image it gives zeros.
    assert torch.equal(convext.corr2d(X.t(), K), torch.zeros(8, 5))


def test_conv2d_layer_of_the_course_built_on_corr2d():
    class Conv2D(torch.nn.Module):
        def __init__(self, kernel_size):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.rand(kernel_size))
            self.bias = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return convext.corr2d(x, self.weight) + self.bias

    layer = Conv2D(kernel_size=(2, 2))
    X = torch.ones(3, 3)
    assert_close(layer(X), torch.full((2, 2), layer.weight.sum().item()), torch.float32)
    layer(X).sum().backward()
    assert torch.equal(layer.weight.grad, torch.full((2, 2), 4.0))


def test_multi_in_and_multi_in_out():
    X = torch.tensor([[[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]]).float()
    K = torch.tensor([[[0, 1], [2, 3]], [[1, 2], [3, 4]]]).float()
    assert torch.equal(convext.conv2d(X, K[None])[0], torch.tensor([[56.0, 72.0], [104.0, 120.0]]))
    assert torch.equal(reference.corr2d_multi_in(X, K), torch.tensor([[56.0, 72.0], [104.0, 120.0]]))
    K3 = torch.stack([K, K + 1, K + 2])
    expected = torch.tensor([[[56.0, 72.0], [104.0, 120.0]], [[76.0, 100.0], [148.0, 172.0]],
                             [[96.0, 128.0], [192.0, 224.0]]])
    assert torch.equal(convext.conv2d(X, K3), expected)
    assert torch.equal(reference.corr2d_multi_in_out(X, K3), expected)


def test_1x1_convolution_is_a_matmul():
    X, K = torch.rand(3, 3, 3), torch.rand(2, 3, 1, 1)
    as_matmul = (K.view(2, 3) @ X.view(3, 9)).view(2, 3, 3)
    assert (convext.conv2d(X, K) - as_matmul).norm().item() < 1e-6
    assert (reference.corr2d_multi_in_out(X, K) - as_matmul).norm().item() < 1e-6


def test_padding_and_stride_output_shapes():
    X = torch.rand(1, 1, 8, 8)
    shapes = [(dict(kernel_size=3, padding=1), (8, 8)), (dict(kernel_size=(5, 3), padding=(2, 1)), (8, 8)),
              (dict(kernel_size=3, padding=1, stride=2), (4, 4)),
              (dict(kernel_size=(3, 5), padding=(0, 1), stride=(3, 4)), (2, 2))]
    for kwargs, shape in shapes:
        assert convext.nn.Conv2d(1, 1, **kwargs)(X).shape[2:] == shape


def test_pool2d_values():
    X = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    assert torch.equal(convext.max_pool2d(X[None], 2, stride=1)[0], torch.tensor([[4.0, 5.0], [7.0, 8.0]]))
    assert torch.equal(convext.avg_pool2d(X[None], 2, stride=1)[0], torch.tensor([[2.0, 3.0], [5.0, 6.0]]))
    assert torch.equal(reference.pool2d(X, (2, 2)), torch.tensor([[4.0, 5.0], [7.0, 8.0]]))
    assert torch.equal(reference.pool2d(X, (2, 2), "avg"), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


def test_pooling_padding_stride_and_channels():
    X = torch.arange(16, dtype=torch.float).view(1, 1, 4, 4)
    assert torch.equal(convext.nn.MaxPool2d(3)(X), torch.tensor([[[[10.0]]]]))
    assert torch.equal(convext.nn.MaxPool2d(3, padding=1, stride=2)(X), torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))
    assert torch.equal(convext.nn.MaxPool2d((2, 4), padding=(1, 2), stride=(2, 3))(X),
                       torch.tensor([[[[1.0, 3.0], [9.0, 11.0], [13.0, 15.0]]]]))
    X2 = torch.cat((X, X + 1), dim=1)
    assert torch.equal(convext.nn.MaxPool2d(3, padding=1, stride=2)(X2),
                       torch.tensor([[[[5.0, 7.0], [13.0, 15.0]], [[6.0, 8.0], [14.0, 16.0]]]]))


def test_learning_the_edge_kernel():
    torch.manual_seed(0)
    X, K = edge_image(), torch.tensor([[1.0, -1.0]])
    Y = convext.corr2d(X, K).reshape(1, 1, 6, 7)
    X = X.reshape(1, 1, 6, 8)
    conv2d = convext.nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    for _ in range(20):
        loss = ((conv2d(X) - Y) ** 2).sum()
        conv2d.zero_grad()
        loss.backward()
        conv2d.weight.data[:] -= 3e-2 * conv2d.weight.grad
    assert loss.item() < 0.05
    assert torch.allclose(conv2d.weight.data.reshape(1, 2), K, atol=0.1)
