"""The net's weights: those trained, their exponential moving average (what predictions use), the optimiser."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

import torch

from .net import UNet3D, plan_levels

#: Predictions use an exponential moving average of the weights with this decay per step (less in the first
#: steps, :func:`ema_decay`), smooth under noisy small-data steps.
EMA_DECAY = 0.98
#: In the first steps the decay is ``(1 + step) / (EMA_WARM_UP + step)``: an average over about the last
#: ``(EMA_WARM_UP + step) / (EMA_WARM_UP - 1)`` steps (the last ninth), until :data:`EMA_DECAY` caps it (step 440).
EMA_WARM_UP = 10.0
#: AdamW weight decay.
WEIGHT_DECAY = 1e-4


def ema_decay(step: int, decay: float = EMA_DECAY, warm_up: float = EMA_WARM_UP) -> float:
    """The EMA's decay after step ``step + 1``: ``min(decay, (1 + step) / (warm_up + step))``."""
    return min(decay, (1 + step) / (warm_up + step))


class NetWeights:
    """The trained net, its EMA copy and its AdamW state, kept consistent with each other.

    Parameters
    ----------
    model : UNet3D
        The net to train (already on its device).
    spacing : sequence of float
        The voxel spacing its kernels and pooling were planned for.
    learning_rate : float
        The optimiser's initial rate (the trainer sets the rate of every step).
    """

    def __init__(self, model: UNet3D, spacing: Sequence[float], learning_rate: float) -> None:
        self.model = model
        #: The spacing the net's kernels and pooling were planned for (a loaded model may keep another).
        self.spacing: tuple[float, ...] = tuple(float(v) for v in spacing)
        self.learning_rate = learning_rate
        self.optimizer = self.new_optimizer()
        #: What predictions use.
        self.ema = self.new_ema()
        #: Held while the weights change (a step, a new head, the decision offset) and while :meth:`state_dict`
        #: copies them: a model file saved from another thread (the window's Save model) is of one step.
        self.lock = threading.RLock()

    def new_optimizer(self) -> torch.optim.Optimizer:
        """A fresh AdamW for the current model."""
        return torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate, weight_decay=WEIGHT_DECAY)

    def new_ema(self) -> torch.nn.Module:
        """A frozen copy of the current model."""
        ema = copy.deepcopy(self.model)
        ema.requires_grad_(False)
        return ema

    def apply_step(self, step: int) -> None:
        """Apply the gradients (the optimiser's step) and move the EMA, after step ``step + 1``."""
        with self.lock:
            self.optimizer.step()
            self.update_ema(step)

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        """Move the EMA towards the model after step ``step + 1``."""
        decay = ema_decay(step)
        torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.model.parameters()], 1.0 - decay)

    def set_num_classes(self, outputs: int) -> bool:
        """Grow or shrink the head to ``outputs`` channels (``K + 1``); a fresh optimiser and EMA follow.

        Returns whether the head changed.
        """
        if self.model.head.out_channels == outputs:
            return False
        with self.lock:
            self.model.set_num_classes(outputs)
            self.optimizer = self.new_optimizer()
            self.ema = self.new_ema()
        return True

    @torch.no_grad()
    def set_decision_offset(self, offset: torch.Tensor) -> None:
        """Set the ``decision_offset`` ``(K + 1,)`` of both nets (where it has their shape)."""
        with self.lock:
            for model in (self.model, self.ema):
                if model.decision_offset.shape == offset.shape:
                    model.decision_offset.copy_(offset)

    def state_dict(self) -> dict[str, Any]:
        """Copies of the weights, EMA and optimiser state (of one step, under :attr:`lock`), the net's config and
        planned spacing."""
        with self.lock:
            return copy.deepcopy({"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                                  "optimizer": self.optimizer.state_dict(), "model_config": self.model.config.__dict__,
                                  "spacing": list(self.spacing)})

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> bool:
        """Restore weights, EMA and optimiser; returns whether the net was rebuilt for another spacing.

        A model planned for another spacing (e.g. trained on another OME-Zarr level) keeps the kernel/pooling
        layout it was trained with: the net is rebuilt from the checkpoint's spacing before its weights load.
        """
        rebuilt = False
        spacing = state.get("spacing")
        if spacing is not None:
            config = self.model.config
            if plan_levels(spacing, config.depth, config.anisotropy_threshold) != (self.model.kernels,
                                                                                   self.model.strides):
                self.model = UNet3D(config, spacing).to(device)
                self.spacing = tuple(float(v) for v in spacing)
                rebuilt = True
        if state["model_config"]["num_classes"] != self.model.head.out_channels:
            self.model.set_num_classes(state["model_config"]["num_classes"])
        self.model.load_state_dict(state["model"])
        self.ema = self.new_ema()
        if "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.optimizer = self.new_optimizer()
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        return rebuilt
