"""The course's edge detection, computed by convext.

A 6x8 image, white on the sides and black in the middle, is correlated with
the kernel [1, -1]: the result is 1 at the white-to-black edge, -1 at the
black-to-white one, 0 elsewhere, and all zeros for the transposed image (the
kernel only sees vertical edges). Then a 1x2 convext.nn.Conv2d learns the
kernel back from the image and that output, as the notes do.

    python examples/edge_detection.py [--steps 10] [--lr 0.03]
"""

import argparse

import torch

import convext


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="gradient steps to learn the kernel")
    parser.add_argument("--lr", type=float, default=0.03, help="learning rate, as in the notes")
    parser.add_argument("--quick", action="store_true", help="the same run (it already takes a second)")
    args = parser.parse_args()
    torch.manual_seed(0)

    X = torch.ones(6, 8)
    X[:, 2:6] = 0
    print("X, the image:", X, sep="\n")

    K = torch.tensor([[1.0, -1.0]])
    Y = convext.corr2d(X, K)
    print("\nY = corr2d(X, K), K = [1, -1]: the vertical edges", Y, sep="\n")
    print("\ncorr2d(X.t(), K): no vertical edge in the transpose", convext.corr2d(X.t(), K), sep="\n")

    # Learn the kernel back from (X, Y), batch and channel dimensions added.
    conv2d = convext.nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    X, Y = X.reshape(1, 1, 6, 8), Y.reshape(1, 1, 6, 7)
    print(f"\nLearning a 1x2 kernel with {conv2d!r}")
    for step in range(args.steps):
        loss = (conv2d(X) - Y) ** 2
        conv2d.zero_grad()
        loss.sum().backward()
        conv2d.weight.data[:] -= args.lr * conv2d.weight.grad
        if (step + 1) % 2 == 0:
            print(f"step {step + 1}, loss {loss.sum():.3f}")
    print("learned kernel:", conv2d.weight.data.reshape(1, 2), "(the true one is [1, -1])")


if __name__ == "__main__":
    main()
