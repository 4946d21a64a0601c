"""The course's LeNet trained with convext layers and with torch.nn, side by side.

LeNet as in the course: conv 5x5 pad 2 -> sigmoid -> avg pool -> conv 5x5 ->
sigmoid -> avg pool -> three linear layers. The data: scikit-learn's bundled
handwritten digits (1797 images of 8x8, no download), upsampled to 28x28 and
split into train and test sets. Both models start from the same weights and
see the same batches; the script prints the loss, the test accuracy and the
images per second of each, and checks that they reach the same accuracy.

The course trains with SGD at lr 0.9 on 60,000 images an epoch; with 1,438
images an epoch that leaves too few steps for the sigmoid network to leave its
plateau, so this uses Adam on standardised images.

    pip install scikit-learn          # or: pip install ".[examples]"
    python examples/lenet.py [--epochs 10] [--batch-size 64] [--lr 0.003] [--quick]
"""

import argparse
import copy
import sys
import time

import torch
import torch.nn.functional as F

import convext


def lenet():
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


def init_weights(module):
    """Xavier, as the course initialises LeNet."""
    if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
        torch.nn.init.xavier_uniform_(module.weight)


def digits(test_fraction=0.2, seed=0):
    """scikit-learn's 8x8 digits as 28x28 images, standardised by the training set's mean and deviation."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit('lenet.py needs scikit-learn for its data set: pip install scikit-learn (or ".[examples]")')
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test = int(len(labels) * test_fraction)
    train = images[order[test:]]
    images = (images - train.mean()) / train.std()
    return (images[order[test:]], labels[order[test:]]), (images[order[:test]], labels[order[:test]])


class Progress:
    """A one-line progress bar on stderr, drawn only on a terminal; write()
    prints a line of results above it."""

    def __init__(self, total, width=30):
        self.total, self.width, self.done, self.text = total, width, 0, ""
        self.shown = sys.stderr.isatty()

    def step(self, text=""):
        self.done, self.text = self.done + 1, text
        self._draw()

    def write(self, line):
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        print(line, flush=True)
        self._draw()

    def _draw(self):
        if self.shown:
            filled = self.width * self.done // self.total
            print(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self.text}",
                  end="" if self.done < self.total else "\n", file=sys.stderr, flush=True)


def accuracy(model, images, labels):
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 epochs, for CI")
    args = parser.parse_args()
    epochs = 3 if args.quick else args.epochs

    (train_x, train_y), (test_x, test_y) = digits(seed=args.seed)
    torch.manual_seed(args.seed)
    torch_model = lenet()
    torch_model.apply(init_weights)
    models = {"convext": convext.nn.convert(copy.deepcopy(torch_model)), "torch.nn": torch_model}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=args.lr) for name, m in models.items()}
    seconds = dict.fromkeys(models, 0.0)
    print(f"LeNet on {len(train_y)} training and {len(test_y)} test digits (28x28), "
          f"{epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, {torch.get_num_threads()} threads")
    print(f"{'epoch':>5} | {'convext loss':>12} {'test acc':>8} {'img/s':>7} | "
          f"{'torch.nn loss':>13} {'test acc':>8} {'img/s':>7}")

    generator = torch.Generator().manual_seed(args.seed)
    batches = (len(train_y) + args.batch_size - 1) // args.batch_size
    progress = Progress(epochs * batches)
    for epoch in range(epochs):
        order = torch.randperm(len(train_y), generator=generator)
        losses = dict.fromkeys(models, 0.0)
        for first in range(0, len(train_y), args.batch_size):
            index = order[first:first + args.batch_size]
            x, y = train_x[index], train_y[index]
            for name, model in models.items():  # the same batch for both, timed apart
                start = time.perf_counter()
                loss = F.cross_entropy(model(x), y)
                optimizers[name].zero_grad()
                loss.backward()
                optimizers[name].step()
                seconds[name] += time.perf_counter() - start
                losses[name] += loss.item() * len(y)
            progress.step(f"epoch {epoch + 1}")
        row = []
        for name, model in models.items():
            images_per_second = (epoch + 1) * len(train_y) / seconds[name]
            row.append(f"{losses[name] / len(train_y):>{len(name) + 5}.4f} "
                       f"{accuracy(model, test_x, test_y):>8.3f} {images_per_second:>7.0f}")
        progress.write(f"{epoch + 1:>5} | {row[0]} | {row[1]}")

    final = {name: accuracy(model, test_x, test_y) for name, model in models.items()}
    same = abs(final["convext"] - final["torch.nn"]) <= 1 / len(test_y) + 1e-9
    print(f"test accuracy: convext {final['convext']:.3f}, torch.nn {final['torch.nn']:.3f} "
          f"({'the same' if same else 'DIFFERENT'}); training speed convext/torch.nn "
          f"{seconds['torch.nn'] / seconds['convext']:.2f}x")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
