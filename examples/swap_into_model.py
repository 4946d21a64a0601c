"""convext.nn.convert() on a ResNet-style model: the same outputs and
gradients, and the time of a training step with each.

The model below is plain torch.nn (convolutions with batch norm, residual
blocks, max and average pooling). convert() returns a copy in which every
Conv2d, ConvTranspose2d, MaxPool2d and AvgPool2d is convext's, with the same
weights; everything else is untouched.

    python examples/swap_into_model.py [--batch-size 16] [--size 64] [--steps 20] [--channels-last] [--quick]
"""

import argparse
import statistics
import time

import torch

import convext


class BasicBlock(torch.nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(out_channels)
        self.conv2 = torch.nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(out_channels)
        self.shortcut = torch.nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = torch.nn.Sequential(
                torch.nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), torch.nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(torch.nn.Module):
    def __init__(self, size, classes=10, widths=(32, 64, 128)):
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), torch.nn.BatchNorm2d(widths[0]), torch.nn.ReLU(),
            torch.nn.MaxPool2d(3, 2, 1),
        )
        blocks, channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks += [BasicBlock(channels, width, 1 if i == 0 else 2), BasicBlock(width, width, 1)]
            channels = width
        self.blocks = torch.nn.Sequential(*blocks)
        final = size // 4 // 2 ** (len(widths) - 1)
        self.pool = torch.nn.AvgPool2d(final)
        self.fc = torch.nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def training_step(model, optimizer, x, y):
    start = time.perf_counter()
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="image height and width (a multiple of 16)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--channels-last", action="store_true", help="run both models in channels_last")
    parser.add_argument("--quick", action="store_true", help="batch 4, 3 steps, for CI")
    args = parser.parse_args()
    batch, steps = (4, 3) if args.quick else (args.batch_size, args.steps)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    torch.manual_seed(0)
    model = SmallResNet(args.size).to(memory_format=memory_format)
    swapped = convext.nn.convert(model)
    layers = sum(type(m).__module__ == "convext.nn" for m in swapped.modules())
    print(f"convert() swapped {layers} layers, for example:\n  {swapped.stem[0]!r}\n  {swapped.stem[3]!r}")

    x = torch.randn(batch, 3, args.size, args.size).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,))
    for mode in ("eval", "train"):
        getattr(model, mode)()
        getattr(swapped, mode)()
        out, ref = swapped(x), model(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        print(f"{mode} mode: outputs {tuple(out.shape)}, max |convext - torch.nn| {(out - ref).abs().max():.2e}")
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(swapped(x), y), list(swapped.parameters()))
    ref_grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    difference = max(((g - r).abs().max() / r.abs().max().clamp_min(1e-12)).item()
                     for g, r in zip(grads, ref_grads, strict=True))
    print(f"gradients of all {len(grads)} parameters: largest difference {difference:.2e} of the largest value")

    # Interleaved steps after a warm-up, so both models see the same machine load.
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
                  for name, m in (("convext", swapped), ("torch.nn", model))}
    models = {"convext": swapped, "torch.nn": model}
    times = {name: [] for name in models}
    for step in range(steps + 1):
        for name, m in models.items():
            seconds = training_step(m, optimizers[name], x, y)
            if step > 0:
                times[name].append(seconds)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"training step, batch {batch} of {args.size}x{args.size}, median of {steps} after a warm-up, "
          f"{torch.get_num_threads()} threads:")
    for name, ms in medians.items():
        print(f"  {name:9} {ms:8.1f} ms")
    print(f"  convext speed vs torch.nn: {medians['torch.nn'] / medians['convext']:.2f}x")


if __name__ == "__main__":
    main()
