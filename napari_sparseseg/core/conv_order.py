"""A 3D convolution that gets PyTorch's fast CPU kernel (oneDNN) for one sample, by the order it walks the axes in.

For a float32 batch of one on the CPU, PyTorch hands a convolution to oneDNN only when
``batch x channels x Z x Y`` exceeds 20,480 (``use_mkldnn`` in ``aten/src/ATen/native/Convolution.cpp``: the last
axis is not counted); below that it runs its reference ``slow_conv3d``, several times slower. The deep levels of a
flat patch fall there, such as the 64 maps of 12 x 24 x 24 of the sample's 24 x 96 x 96 patch (voxels 4 times
longer along z). Convolving with the spatial axes permuted, weights and strides with them, is the same
convolution; with the shortest axis last the product counts the two longest ones. :class:`AxisOrderedConv3d` does
so where that moves the convolution from the slow path to oneDNN, and nowhere else (a cubic patch, a GPU, a batch
of several, bf16 keep their path). A training step on the sample's patch took 0.52 s instead of 0.64, one on the
spleen CT's ran 1.07 times as fast; the other shared volumes' patches meet no such convolution
(``benchmarks/conv_order.py``, BENCHMARKS.md).

Which path PyTorch takes is asked of PyTorch (``torch._C._select_conv_backend``, once per input shape): a PyTorch
without it, or whose rule changes, gets the plain convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Order = tuple[int, int, int]
#: Not asked yet (an input shape a convolution has not met).
_UNKNOWN = object()


def _cpu_autocast() -> bool:
    """Whether autocast is on for the CPU (``torch.is_autocast_enabled("cpu")`` from PyTorch 2.4 on)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch before 2.4: no device argument
        return torch.is_autocast_cpu_enabled()


def _backend(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int):
    """The kernel PyTorch would run a convolution with.

    Parameters
    ----------
    x : torch.Tensor
        Input ``(B, C, Z, Y, X)``.
    weight : torch.Tensor
        ``(C', C / groups, kz, ky, kx)``.
    stride, padding, dilation : sequence of int
        Per spatial axis, in the order of ``x``'s.
    groups : int

    Returns
    -------
    torch._C._ConvBackend or None
        None where this PyTorch cannot be asked.
    """
    select = getattr(torch._C, "_select_conv_backend", None)
    if select is None:
        return None
    try:
        return select(x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0, 0], groups, None)
    except (RuntimeError, TypeError):
        return None


def faster_order(conv: nn.Conv3d, x: torch.Tensor) -> Order | None:
    """The order to convolve ``x`` in, where that moves ``conv`` from PyTorch's slow CPU kernel to oneDNN.

    Parameters
    ----------
    conv : torch.nn.Conv3d
        The convolution (its weight, stride, padding, dilation, groups).
    x : torch.Tensor
        Its input ``(B, C, Z, Y, X)``.

    Returns
    -------
    tuple of int or None
        The spatial axes ``(0 = z, 1 = y, 2 = x)`` longest first, to permute ``x`` and the weight by; None to
        convolve as it is (not a float32 CPU input, not on the slow kernel, or no order moves it to oneDNN).
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 5 or isinstance(conv.padding, str) \
            or conv.padding_mode != "zeros":
        return None
    backends = getattr(torch._C, "_ConvBackend", None)
    slow, fast = getattr(backends, "Slow3d", None), getattr(backends, "Mkldnn", None)
    if slow is None or fast is None \
            or _backend(x, conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups) != slow:
        return None
    order: Order = tuple(sorted(range(3), key=lambda a: -x.shape[2 + a]))  # type: ignore[assignment]
    if order == (0, 1, 2):
        return None
    perm = (0, 1) + tuple(2 + a for a in order)
    moved = _backend(x.permute(perm), conv.weight.permute(perm), *(_reorder(v, order) for v in
                                                                   (conv.stride, conv.padding, conv.dilation)),
                     conv.groups)
    return order if moved == fast else None


def _reorder(values, order: Order) -> tuple[int, int, int]:
    return tuple(values[a] for a in order)  # type: ignore[return-value]


class AxisOrderedConv3d(nn.Conv3d):
    """:class:`torch.nn.Conv3d` that convolves in the axis order :func:`faster_order` gives (same parameters,
    same state dict, the same result to float rounding).

    Input ``(B, C, Z, Y, X)``, output ``(B, C', Z', Y', X')`` as :class:`torch.nn.Conv3d`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._orders: dict[tuple[int, ...], object] = {}

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if input.device.type != "cpu" or _cpu_autocast():  # bf16 takes oneDNN as it is
            return super()._conv_forward(input, weight, bias)
        key, orders = (*input.shape, input.dtype.itemsize), self._orders
        order = orders.get(key, _UNKNOWN)
        if order is _UNKNOWN:
            if len(orders) > 64:  # shapes change with the patch and the windows predicted: keep a few
                orders.clear()
            order = orders[key] = faster_order(self, input)
        if order is None:
            return super()._conv_forward(input, weight, bias)
        perm = (0, 1) + tuple(2 + a for a in order)
        out = F.conv3d(input.permute(perm), weight.permute(perm), bias, _reorder(self.stride, order),
                       _reorder(self.padding, order), _reorder(self.dilation, order), self.groups)
        return out.permute((0, 1) + tuple(2 + order.index(a) for a in range(3)))
