"""The trainer: a generator of typed events that retrains while the user paints.

It reads the current labels and weights at every step, so an edit applied to
the :class:`~.annotation.AnnotatedVolume` between two steps is in the very
next batch. It never touches a GUI: the napari layer runs :meth:`Trainer.run`
in a worker thread, tests run it inline.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import torch

from .annotation import AnnotatedVolume, Box
from .augment import augment_batch
from .config import SessionConfig
from .device import select_device
from .events import Prediction, TrainStep, Waiting
from .inference import entropy, predict_probabilities
from .loss import partial_label_loss
from .net import UNet3D
from .sampler import PatchSampler, patch_shape


class Trainer:
    """Owns the model, optimiser and sampler of one annotated volume.

    Parameters
    ----------
    volume : AnnotatedVolume
        Image, labels and weights; read (under its lock) at every step.
    config : SessionConfig
        Model, training and inference settings.
    """

    def __init__(self, volume: AnnotatedVolume, config: SessionConfig = SessionConfig()) -> None:
        self.volume = volume
        self.config = config
        self.device = select_device(config.device)
        tc = config.train
        torch.manual_seed(tc.seed)
        self._gen = torch.Generator().manual_seed(tc.seed)
        self._rng = np.random.default_rng(tc.seed)
        mc = type(config.model)(**{**config.model.__dict__, "in_channels": volume.features.shape[0],
                                   "num_classes": volume.num_classes + 1})
        self.model = UNet3D(mc, volume.spacing).to(self.device)
        self.patch_size = patch_shape(volume.shape, volume.spacing, tc.patch_voxels, self.model.size_multiple)
        self.sampler = PatchSampler(volume, self.patch_size, foreground_share=tc.foreground_share,
                                    random_share=tc.random_share, rng=self._rng,
                                    centre_margin=tc.centre_margin)
        self.optimizer = self._make_optimizer()
        #: Exponential moving average of the weights: what predictions use (smooth under noisy small-data steps).
        self.ema_model = self._make_ema()
        self.step = 0
        self.elapsed = 0.0
        self.last_revision = -1
        self._times: deque[tuple[float, int]] = deque(maxlen=20)
        self._forward = self.model
        if tc.compile and self.device.type == "cuda":
            self._forward = torch.compile(self.model)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _make_optimizer(self) -> torch.optim.Optimizer:
        tc = self.config.train
        return torch.optim.AdamW(self.model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)

    def _make_ema(self) -> torch.nn.Module:
        ema = copy.deepcopy(self.model)
        ema.requires_grad_(False)
        return ema

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.train.ema_decay, (1 + self.step) / (10 + self.step))
        ema_params = list(self.ema_model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in self.model.parameters()], 1.0 - decay)

    @property
    def amp(self) -> bool:
        return self.config.train.amp and self.device.type == "cuda"

    def _sync_classes(self) -> None:
        wanted = self.volume.num_classes + 1
        if self.model.head.out_channels != wanted:
            self.model.set_num_classes(wanted)
            self.optimizer = self._make_optimizer()
            self.ema_model = self._make_ema()
            self._forward = self.model

    def learning_rate(self, progress: float | None) -> float:
        """Linear warm-up, then constant (open-ended) or poly decay (``progress`` in [0, 1])."""
        tc = self.config.train
        lr = tc.learning_rate * min(1.0, (self.step + 1) / max(tc.warmup_steps, 1))
        if progress is not None:
            lr *= max(1.0 - progress, 0.02) ** 0.9
        return lr

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        tc = self.config.train
        revision = self.volume.revision
        cw = self.volume.class_weights(tc.class_balance_power)
        patches = [self.sampler.sample(cw, tc.correction_weight) for _ in range(tc.batch_size)]
        image = torch.from_numpy(np.stack([p.image for p in patches]))
        target = torch.from_numpy(np.stack([p.target for p in patches]))
        weight = torch.from_numpy(np.stack([p.weight for p in patches]))
        if tc.augment:
            image, target, weight = augment_batch(image, target, weight, self._gen)
        nb = self.device.type == "cuda"
        return (image.to(self.device, non_blocking=nb), target.to(self.device, non_blocking=nb),
                weight.to(self.device, non_blocking=nb), revision)

    def train_step(self, progress: float | None = None) -> TrainStep | Waiting:
        """Run one optimisation step on the labels as they are now."""
        if self.volume.n_labeled == 0:
            return Waiting("no labeled voxels yet: paint a few slices")
        t0 = time.perf_counter()
        self._sync_classes()
        self.model.train()
        image, target, weight, revision = self._batch()
        lr = self.learning_rate(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()
        with ctx:
            logits = self._forward(image)
        loss = partial_label_loss(logits, target, weight, self.config.train.dice_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)
        self.optimizer.step()
        self._update_ema()
        loss_value = float(loss.detach())
        if not np.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {self.step + 1}")
        self.step += 1
        self.last_revision = revision
        dt = time.perf_counter() - t0
        self.elapsed += dt
        self._times.append((dt, image.shape[0] * int(np.prod(image.shape[2:]))))
        secs = sum(t for t, _ in self._times)
        return TrainStep(step=self.step, loss=loss_value, revision=revision, elapsed=self.elapsed,
                         voxels_per_second=sum(v for _, v in self._times) / max(secs, 1e-9),
                         learning_rate=lr)

    def run(self, *, max_steps: int | None = None, max_seconds: float | None = None,
            should_stop: Callable[[], bool] | None = None, decay_until: float | None = None,
            idle_sleep: float = 0.1) -> Iterator[TrainStep | Waiting]:
        """Train until a limit is reached or ``should_stop()`` is true.

        Yields after every step (or every wait while nothing is labeled), so a
        caller can pause, quit or apply edits between steps.

        Parameters
        ----------
        max_steps, max_seconds : optional
            Limits counted from this call (training time only).
        should_stop : callable, optional
            Polled before each step.
        decay_until : float, optional
            For budgeted runs: the training time (``self.elapsed``) at which a
            poly learning-rate decay reaches its floor. ``None``: constant
            rate after warm-up (open-ended interactive training).
        idle_sleep : float
            Seconds to sleep per ``Waiting`` event.
        """
        start_step, start_time = self.step, self.elapsed
        while True:
            done_steps, done_time = self.step - start_step, self.elapsed - start_time
            if should_stop is not None and should_stop():
                return
            if (max_steps is not None and done_steps >= max_steps) or (
                    max_seconds is not None and done_time >= max_seconds):
                return
            progress = None if decay_until is None else min(self.elapsed / max(decay_until, 1e-9), 1.0)
            event = self.train_step(progress)
            if isinstance(event, Waiting) and idle_sleep:
                time.sleep(idle_sleep)
            yield event

    def predict(self, box: Box | None = None, window: tuple[int, int, int] | None = None, *,
                final: bool = False) -> Prediction:
        """Predict ``box`` (default: whole volume) with the current (EMA) weights.

        ``final`` mirrors along ``inference.final_mirror_axes`` instead of
        ``inference.mirror_axes`` (test-time augmentation for the end result).
        """
        self._sync_classes()
        model = self.ema_model if self.config.train.ema_decay > 0 else self.model
        model.eval()
        revision = self.volume.revision
        icfg = self.config.inference
        if final:
            icfg = replace(icfg, mirror_axes=icfg.final_mirror_axes)
        probs = predict_probabilities(model, self.volume.features, window or self.patch_size,
                                      config=icfg, box=box, device=self.device, amp=self.amp)
        box = Box.full(self.volume.shape) if box is None else box.clip(self.volume.shape)
        return Prediction(box=box, labels=probs.argmax(0).astype(np.uint8), probabilities=probs,
                          uncertainty=entropy(probs), step=self.step, revision=revision)

    # -- persistence ------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema_model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step,
                "elapsed": self.elapsed, "model_config": self.model.config.__dict__,
                "spacing": list(self.volume.spacing)}

    def load_state_dict(self, state: dict) -> None:
        if state["model_config"]["num_classes"] != self.model.head.out_channels:
            self.model.set_num_classes(state["model_config"]["num_classes"])
        self.model.load_state_dict(state["model"])
        self.ema_model = self._make_ema()
        if "ema" in state:
            self.ema_model.load_state_dict(state["ema"])
        self.optimizer = self._make_optimizer()
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state.get("step", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
