"""convext: hand-written convolution and pooling kernels for PyTorch.

    convext.conv2d, convext.conv_transpose2d,
    convext.max_pool2d, convext.avg_pool2d                  (torch.nn.functional's signatures)
    convext.corr2d                                          (the course's 2-D cross-correlation)
    convext.nn.Conv2d / ConvTranspose2d / MaxPool2d / AvgPool2d, convext.nn.convert(model)
    convext.reference                                       (the naive loops the kernels are tested against)

The ops are registered as torch.ops.convext.* with fake kernels and autograd.
"""

from . import nn, reference
from .functional import avg_pool2d, conv2d, conv_transpose2d, corr2d, max_pool2d

__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "corr2d", "nn", "reference"]
__version__ = "0.1.0"
