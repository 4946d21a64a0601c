"""Drop-in layers: torch.nn's Conv2d, ConvTranspose2d, MaxPool2d and AvgPool2d computed by
convext. Each subclasses its torch.nn twin, so the constructor, defaults,
parameter initialisation, state_dict keys and isinstance checks are torch's,
and a checkpoint loads either way."""

import copy

import torch

from . import functional as F

__all__ = ["Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "convert"]


class _Converted:
    @classmethod
    def from_torch(cls, module):
        """The same layer as a convext layer: parameters, buffers and hooks shared, not copied."""
        layer = cls.__new__(cls)
        for key, value in module.__dict__.items():
            layer.__dict__[key] = copy.copy(value) if isinstance(value, (dict, set, list)) else value
        return layer

    def _get_name(self):
        return "convext.nn." + type(self).__name__


class Conv2d(_Converted, torch.nn.Conv2d):
    """torch.nn.Conv2d, computed by convext.conv2d; every padding_mode works."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose2d(_Converted, torch.nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d, computed by convext.conv_transpose2d; forward
    takes output_size as torch's does."""

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                  self.groups, self.dilation)


class MaxPool2d(_Converted, torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d, computed by convext.max_pool2d."""

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(_Converted, torch.nn.AvgPool2d):
    """torch.nn.AvgPool2d, computed by convext.avg_pool2d."""

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


_CONVEXT_LAYER = {
    torch.nn.Conv2d: Conv2d,
    torch.nn.ConvTranspose2d: ConvTranspose2d,
    torch.nn.MaxPool2d: MaxPool2d,
    torch.nn.AvgPool2d: AvgPool2d,
}


def convert(module, inplace=False):
    """Returns `module` with every torch.nn.Conv2d, ConvTranspose2d, MaxPool2d and AvgPool2d
    replaced by convext's, everything else untouched.

    inplace=False works on a deep copy (the new model's weights are copies);
    inplace=True changes `module` itself and the new layers share its weights.
    Subclasses of those torch layers are left alone: their forward may differ.
    """
    if not inplace:
        module = copy.deepcopy(module)
    return _convert(module)


def _convert(module):
    layer = _CONVEXT_LAYER.get(type(module))
    if layer is not None:
        return layer.from_torch(module)
    for name, child in module.named_children():
        setattr(module, name, _convert(child))
    return module
