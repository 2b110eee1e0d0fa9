"""An anisotropy-aware 3D U-Net (Cicek et al. 2016, with nnU-Net's plan rules).

Encoder-decoder with skip connections; each level holds two ``conv ->
InstanceNorm -> LeakyReLU`` units (instance norm behaves at batch size 1-2).
Downsampling is a strided convolution, upsampling a transposed convolution.
Where the z step is much coarser than the in-plane step a level neither pools
along z nor convolves across it (``1 x 3 x 3`` kernels), until in-plane pooling
has made the voxels roughly isotropic.

Tensors are ``(batch, channel, z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .config import ModelConfig
from .conv_order import AxisOrderedConv3d
from .inference import NEVER_LABELED

Triple = tuple[int, int, int]


def plan_levels(spacing: Sequence[float], depth: int, anisotropy_threshold: float = 2.0
                ) -> tuple[list[Triple], list[Triple]]:
    """Kernel sizes per level and strides between levels.

    Parameters
    ----------
    spacing : sequence of float
        Physical voxel size ``(z, y, x)``.
    depth : int
        Number of levels.
    anisotropy_threshold : float
        An axis is pooled/convolved only while its current step is at most this
        multiple of the finest current step.

    Returns
    -------
    kernels : list of (int, int, int)
        ``depth`` kernel sizes.
    strides : list of (int, int, int)
        ``depth - 1`` downsampling factors.
    """
    current = [float(s) for s in spacing]
    kernels: list[Triple] = []
    strides: list[Triple] = []
    for level in range(depth):
        finest = min(current)
        active = [s <= anisotropy_threshold * finest for s in current]
        kernels.append(tuple(3 if a else 1 for a in active))  # type: ignore[arg-type]
        if level < depth - 1:
            stride = tuple(2 if a else 1 for a in active)
            strides.append(stride)  # type: ignore[arg-type]
            current = [s * f for s, f in zip(current, stride)]
    return kernels, strides


def total_stride(strides: Sequence[Triple]) -> Triple:
    """Product of all strides: input sizes must be multiples of this."""
    out = [1, 1, 1]
    for s in strides:
        out = [a * b for a, b in zip(out, s)]
    return tuple(out)  # type: ignore[return-value]


class ConvUnit(nn.Sequential):
    """``conv -> InstanceNorm -> LeakyReLU`` (the convolution in the axis order that is fast on a CPU,
    :mod:`.conv_order`)."""

    def __init__(self, cin: int, cout: int, kernel: Triple, stride: Triple = (1, 1, 1)) -> None:
        super().__init__(
            AxisOrderedConv3d(cin, cout, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=False),
            nn.InstanceNorm3d(cout, affine=True, eps=1e-5),
            nn.LeakyReLU(0.01, inplace=True),
        )


class UNet3D(nn.Module):
    """3D U-Net whose pooling and kernels follow the voxel spacing.

    Parameters
    ----------
    config : ModelConfig
        Channels, classes, depth.
    spacing : sequence of float
        Voxel size ``(z, y, x)`` used to plan anisotropic levels.

    Notes
    -----
    Input ``(B, in_channels, Z, Y, X)`` with ``Z, Y, X`` multiples of
    :attr:`size_multiple`; output logits ``(B, num_classes, Z, Y, X)``.
    """

    def __init__(self, config: ModelConfig, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.config = config
        self.kernels, self.strides = plan_levels(spacing, config.depth, config.anisotropy_threshold)
        self.size_multiple: Triple = total_stride(self.strides)
        widths = [min(config.base_channels * 2**i, config.max_channels) for i in range(config.depth)]
        self.widths = widths
        self.encoders = nn.ModuleList()
        cin = config.in_channels
        for i, (w, k) in enumerate(zip(widths, self.kernels)):
            first_stride = self.strides[i - 1] if i > 0 else (1, 1, 1)
            self.encoders.append(nn.Sequential(ConvUnit(cin, w, k, first_stride), ConvUnit(w, w, k)))
            cin = w
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(config.depth - 2, -1, -1):
            s = self.strides[i]
            self.upsamplers.append(nn.ConvTranspose3d(widths[i + 1], widths[i], s, stride=s, bias=False))
            self.decoders.append(nn.Sequential(ConvUnit(2 * widths[i], widths[i], self.kernels[i]),
                                               ConvUnit(widths[i], widths[i], self.kernels[i])))
        self.head = nn.Conv3d(widths[0], config.num_classes, 1)
        #: ``(K + 1,)`` offset that prediction (not training) adds to the logits: the prior correction
        #: ``-tau * log w_c`` of the class-balance weights the net was trained with (see
        #: ``InferenceConfig.prior_correction``). A buffer, so it travels with the weights into checkpoints.
        self.register_buffer("decision_offset", torch.zeros(config.num_classes))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """As :meth:`torch.nn.Module.load_state_dict`; weights saved before ``decision_offset`` existed load with
        a zero offset (no correction)."""
        if "decision_offset" not in state_dict:
            state_dict = {**state_dict, "decision_offset": torch.zeros_like(self.decision_offset)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.upsamplers, self.decoders):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)

    def set_num_classes(self, num_classes: int) -> None:
        """Grow (or shrink) the output head, keeping the weights of existing classes; a new class gets the
        decision offset :data:`~.inference.NEVER_LABELED` (its head weights are random) until the trainer sets
        one from its labels."""
        old = self.head
        new = nn.Conv3d(old.in_channels, num_classes, 1).to(old.weight.device, old.weight.dtype)
        keep = min(num_classes, old.out_channels)
        with torch.no_grad():
            new.weight[:keep] = old.weight[:keep]
            new.bias[:keep] = old.bias[:keep]
        self.head = new
        offset = torch.full((num_classes,), NEVER_LABELED, device=self.decision_offset.device)
        offset[:keep] = self.decision_offset[:keep]  # a new class is never predicted until it has labels
        self.decision_offset = offset
        self.config = type(self.config)(**{**self.config.__dict__, "num_classes": num_classes})
