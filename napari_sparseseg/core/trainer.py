"""The trainer: a generator of typed events that retrains while the user paints.

It reads the current labels and weights at every step, so an edit applied to the
:class:`~.annotation.AnnotatedVolume` between two steps is in the very next batch. It never touches a GUI: the
napari layer runs :meth:`Trainer.run` in a worker thread, tests run it inline.

A step composes named parts, each in its own module: the batches (:class:`~.batches.BatchMaker`: sampler,
augmentation, prefetch), the loss terms and their ramps (:class:`~.schedule.LossSchedule`), the learning rate
(:func:`~.schedule.learning_rate`), and for budgeted runs two guards that read the probe
(:class:`~.probe.ProbeMonitor`): the clean tail (:class:`~.clean_tail.CleanTail`) and the fit guard
(:class:`~.fit_guard.FitGuard`). A variant is another instance of a part (``trainer.losses =
LossSchedule(smoothness=0)``), not a flag.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from .annotation import AnnotatedVolume
from .batches import BatchMaker
from .bf16_check import bf16_for_training
from .box import Box
from .clean_tail import CleanTail
from .config import SessionConfig
from .device import autocast, fast_bf16, free_memory, select_device
from .events import Notice, Prediction, TrainStep, Waiting
from .fit_guard import FitGuard
from .inference import NEVER_LABELED, class_map_and_uncertainty, predict_probabilities, prior_offset
from .loss import contrast_smoothness, hardest_cross_entropy, labeled_error_share, partial_label_loss
from .memory import back_off, fit_to_free_memory
from .net import UNet3D
from .probe import ProbeMonitor, predict_probe
from .sampler import patch_shape
from .schedule import LossSchedule, learning_rate
from .weights import NetWeights

#: cuDNN autotuning (``torch.backends.cudnn.benchmark``) starts after this many steps, so the first steps and the
#: first view run on cuDNN's heuristics and the tuning happens while the user looks at the first prediction.
AUTOTUNE_AFTER_STEPS = 20
#: Decay per step of the running mean of the batches' labeled error rate (``Trainer.fit_error_rate``).
FIT_ERROR_DECAY = 0.95
#: Gradients are clipped to this norm.
MAX_GRAD_NORM = 12.0


class Trainer:
    """Owns the model, optimiser and training parts of one annotated volume.

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
        #: The net, its EMA (what predictions use) and its optimiser.
        self.weights = NetWeights(UNet3D(mc, volume.spacing).to(self.device), volume.spacing, tc.learning_rate)
        #: Notices (e.g. sizes shrunk after a GPU out-of-memory) that :meth:`run` yields next.
        self.notices: deque[Notice] = deque()
        patch_voxels, self._max_batch = tc.patch_voxels, tc.batch_size
        if (free := free_memory(self.device)) is not None:  # patch and batch that fit (core/memory.py); CPU in fp32
            patch_voxels, self._max_batch, told = fit_to_free_memory(
                free[0], mc, tc.patch_voxels, tc.batch_size, self.amp and self.device.type == "cuda", free[1])
            if told:
                self.notices.append(Notice(told, "info"))
        #: The training batches: sampler, augmentation and prefetch.
        self.batches = BatchMaker(volume, self._patch_for(patch_voxels), rng=self._rng, gen=self._gen,
                                  device=self.device)
        #: The loss terms beside the weighted cross-entropy, and their ramps.
        self.losses = LossSchedule()
        #: The probe patch the guards of a budgeted run read.
        self.monitor = ProbeMonitor()
        #: Budgeted runs end on steps without augmentation once the prediction has settled.
        self.clean_tail = CleanTail()
        #: Budgeted runs end on the best-fitting weights if the final ones contradict their labels.
        self.fit_guard = FitGuard()
        self._predict_batch: int | None = None
        self._predict_window: tuple[int, int, int] | None = None
        self.step = 0
        self.elapsed = 0.0
        self.last_revision = -1
        self._times: deque[tuple[float, int]] = deque(maxlen=20)
        #: Running mean (decay :data:`FIT_ERROR_DECAY`) of the share of each batch's labeled voxels that the
        #: training forward pass misclassified (None before the first step).
        self.fit_error_rate: float | None = None
        #: bool ``(K + 1,)``: the classes the net has had labels of (all those of loaded weights).
        self.learned = np.zeros(volume.num_classes + 1, bool)
        self._forward = self.model
        if tc.compile and self.device.type == "cuda":
            self._forward = torch.compile(self.model)

    @property
    def model(self) -> UNet3D:
        """The net being trained."""
        return self.weights.model

    @property
    def ema_model(self) -> torch.nn.Module:
        """The exponential moving average of the net's weights: what predictions use."""
        return self.weights.ema

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.weights.optimizer

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """``(z, y, x)`` size of a training patch."""
        return self.batches.patch_size

    @property
    def prefetching(self) -> bool:
        """Whether the next batch is built in a worker thread while a step computes (``TrainConfig.prefetch``)."""
        return self.batches.prefetching(self.config.train)

    @property
    def batch_size(self) -> int:
        """Patches per step: the configured batch, capped by the device memory (see :meth:`_back_off`)."""
        return max(1, min(self.config.train.batch_size, self._max_batch))

    @property
    def amp(self) -> bool:
        """bf16 autocast: configured on (``TrainConfig.amp``) and fast on this device (:func:`fast_bf16`)."""
        return self.config.train.amp and fast_bf16(self.device)

    def close(self) -> None:
        """End the prefetching thread (idempotent; training again starts a new one)."""
        self.batches.close()

    def add_volume(self, volume: AnnotatedVolume) -> None:
        """Also train on the labels of ``volume`` from the next step on (see :meth:`.batches.BatchMaker.add_volume`;
        raises ValueError for a volume of other channels, classes or voxel size). The probe of a budgeted run's
        guards and the prior correction stay with the session's volume; :meth:`predict` predicts any."""
        self.batches.add_volume(volume)

    # -- building blocks ------------------------------------------------------------------
    def _patch_for(self, voxels: int) -> tuple[int, int, int]:
        return patch_shape(self.volume.shape, self.volume.spacing, voxels, self.model.size_multiple)

    def _back_off(self, what: str, batch: int, size: tuple[int, int, int]) -> tuple[int, tuple[int, int, int]]:
        """After a GPU out-of-memory: free the cache, halve the batch or the patch/window, tell the user."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        batch, size, change = back_off(what, batch, size, self.volume.shape, self.volume.spacing,
                                       self.model.size_multiple)
        self.notices.append(Notice(f"out of GPU memory during {what}: carrying on with {change}", "warning"))
        return batch, size

    def _sync_classes(self) -> None:
        if self.weights.set_num_classes(self.volume.num_classes + 1):  # under the weights' lock
            self._forward = self.model
            self.fit_guard.forget()
            self.fit_error_rate = None  # measured on the old head

    # -- the guards of a budgeted run --------------------------------------------------------
    def _probe(self) -> None:
        """Predict the probe patch with the EMA weights (:func:`~.probe.predict_probe`) for :attr:`monitor`."""
        revision = self.volume.revision
        self.update_decision_offset()  # train_step has synced the classes
        class_weight = self.volume.class_weights(self.config.train.class_balance_power)
        probe = predict_probe(self.ema_model, self.volume, self.patch_size, class_weight, self.device, self.amp)
        self.monitor.record(self.step, revision, *probe)

    def _guard(self, progress: float | None) -> bool:
        """The guards' part of a step, before it trains: the fit guard keeps the best weights, the clean tail
        decides whether this step augments (returned)."""
        if self.fit_guard.due(self.step, progress, self.monitor):
            if self.monitor.probed_at != self.step:
                self._probe()
            self.fit_guard.observe(self.step, self.monitor, self.ema_model)
        began = self.clean_tail.since
        augment = self.clean_tail.augment(self.step, progress, self.volume.plane_coverage(), self.monitor,
                                          self._probe)
        if began is None and self.clean_tail.since is not None:
            self.notices.append(Notice(self.clean_tail.describe(self.monitor), "info"))
        return augment

    def _end_of_budget(self) -> None:
        """The fit guard's end of a budgeted run: maybe put the best-fitting weights back."""
        if self.volume.n_labeled == 0:
            self.fit_guard.forget()
            self.fit_guard.restored_from = None
            return
        message = self.fit_guard.end(self.monitor, self._probe, self.ema_model)
        if message is not None:
            self.notices.append(Notice(message, "info"))

    # -- one step -------------------------------------------------------------------------
    def _backward(self, image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward, loss and backward of one batch; the gradients are left in the parameters.

        ``image`` ``(B, C, Z, Y, X)``, ``target`` and ``weight`` ``(B, Z, Y, X)``. Returns the loss optimised,
        its label part (cross-entropy and Dice, detached) and the logits ``(B, K + 1, Z, Y, X)`` (detached).
        """
        with autocast(self.device, bf16_for_training(self.amp, self.device, self.model, self.weights.spacing,
                                                     self.patch_size, self.batch_size, self.notices)):
            logits = self._forward(image)
        label_loss = partial_label_loss(logits, target, weight, self.losses.dice)
        loss = label_loss
        smoothness = self.losses.smoothness_at(self.step, self.volume.plane_coverage())
        hardest = self.losses.hardest_at(self.step, self.fit_error_rate)
        if smoothness > 0:
            loss = loss + smoothness * contrast_smoothness(logits, image)
        if hardest > 0:
            loss = loss + hardest * hardest_cross_entropy(logits, target, weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss, label_loss.detach(), logits.detach()

    def _track_fit(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> float:
        """Share of this batch's labeled voxels misclassified (:func:`~.loss.labeled_error_share`); updates the
        running mean :attr:`fit_error_rate`."""
        rate = labeled_error_share(logits, target, weight)
        if rate is None:
            return 0.0
        previous = self.fit_error_rate
        self.fit_error_rate = rate if previous is None else FIT_ERROR_DECAY * previous + (1 - FIT_ERROR_DECAY) * rate
        return rate

    def train_step(self, progress: float | None = None) -> TrainStep | Waiting:
        """Run one optimisation step on the labels as they are now.

        ``progress`` is the share of a budgeted run done, in [0, 1]; None for open-ended (interactive) training.
        """
        if not any(v.n_labeled for v in self.batches.volumes):  # labels on another volume alone train too
            return Waiting("no labeled voxels yet: paint a few slices")
        t0 = time.perf_counter()
        self._sync_classes()
        augment = self._guard(progress) if self.volume.n_labeled else True  # own labels; probes: before .train()
        self.model.train()
        tc = self.config.train
        lr = learning_rate(tc.learning_rate, self.step, tc.warmup_steps, progress)
        while True:
            image, target, weight, revision = self.batches.take(augment, self.batch_size, tc)
            self._sync_classes()  # a class added while the batch was made may be in it: the head must have it
            for group in self.optimizer.param_groups:  # (a new head brings a new optimiser)
                group["lr"] = lr
            try:
                loss, label_loss, logits = self._backward(image, target, weight)
                break
            except torch.cuda.OutOfMemoryError:
                self.optimizer.zero_grad(set_to_none=True)
                del image, target, weight
                self._max_batch, size = self._back_off("training", self.batch_size, self.patch_size)
                if size != self.patch_size:
                    self.batches.set_patch(size)
        self._track_fit(logits, target, weight)
        del logits
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
        loss_value, label_value, norm_value = torch.stack(
            (loss.detach().float(), label_loss.float(), grad_norm.detach().float())).tolist()  # one host sync
        if not (np.isfinite(loss_value) and np.isfinite(norm_value)):
            # Checked before the optimiser and the EMA touch the weights: a bad step leaves them as they were, so
            # what a store or a model file saves afterwards is still the last good state.
            self.optimizer.zero_grad(set_to_none=True)
            what = "loss" if not np.isfinite(loss_value) else "gradient norm"
            raise FloatingPointError(f"training {what} became {loss_value if what == 'loss' else norm_value} at "
                                     f"step {self.step + 1}; the weights of step {self.step} are kept")
        with self.weights.lock:  # a model file written from another thread meanwhile holds one step's weights
            self.weights.apply_step(self.step)
            self.step += 1
        if self.step == AUTOTUNE_AFTER_STEPS and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.last_revision = revision
        dt = time.perf_counter() - t0
        self.elapsed += dt
        self._times.append((dt, image.shape[0] * int(np.prod(image.shape[2:]))))
        secs = sum(t for t, _ in self._times)
        return TrainStep(step=self.step, loss=loss_value, revision=revision, elapsed=self.elapsed,
                         voxels_per_second=sum(v for _, v in self._times) / max(secs, 1e-9),
                         learning_rate=lr, labeled_error_rate=self.fit_error_rate or 0.0,
                         label_loss=label_value)

    def run(self, *, max_steps: int | None = None, max_seconds: float | None = None,
            should_stop: Callable[[], bool] | None = None, decay_until: float | None = None,
            idle_sleep: float = 0.1) -> Iterator[TrainStep | Waiting | Notice]:
        """Train until a limit is reached or ``should_stop()`` is true.

        Yields after every step (or every wait while nothing is labeled), so a
        caller can pause, quit or apply edits between steps. Pending
        :class:`Notice` events (sizes shrunk after a GPU out-of-memory, in
        training or prediction) are yielded before the next step.

        Parameters
        ----------
        max_steps, max_seconds : optional
            Limits counted from this call: steps, and seconds of training plus seconds spent waiting for labels
            (so a budgeted run on an empty annotation ends).
        should_stop : callable, optional
            Polled before each step.
        decay_until : float, optional
            For budgeted runs: the training time (``self.elapsed``) at which the learning rate reaches its floor
            and the guards end the run. ``None``: open-ended (interactive) training.
        idle_sleep : float
            Seconds to sleep per ``Waiting`` event.
        """
        start_step, start_time, waited = self.step, self.elapsed, 0.0
        if self.fit_guard.begin(decay_until):  # another budget: weights kept for an earlier one do not count
            self.clean_tail.restart()
        while True:
            while self.notices:
                yield self.notices.popleft()
            done_steps, done_time = self.step - start_step, self.elapsed - start_time + waited
            if should_stop is not None and should_stop():
                return
            if (max_steps is not None and done_steps >= max_steps) or (
                    max_seconds is not None and done_time >= max_seconds):
                if decay_until is not None and self.elapsed >= decay_until:
                    self._end_of_budget()
                    while self.notices:
                        yield self.notices.popleft()
                return
            progress = None if decay_until is None else min(self.elapsed / max(decay_until, 1e-9), 1.0)
            t0 = time.perf_counter()
            event = self.train_step(progress)
            if isinstance(event, Waiting):
                if idle_sleep:
                    time.sleep(idle_sleep)
                waited += time.perf_counter() - t0  # a budget also runs out while nothing is labeled
            yield event

    def predict(self, box: Box | None = None, window: tuple[int, int, int] | None = None, *,
                final: bool = False, volume: int = 0) -> Prediction:
        """Predict ``box`` (default: whole volume) of training volume ``volume`` (0: the session's own; an index of
        ``batches.volumes``) with the current (EMA) weights.

        ``final`` uses ``inference.final_overlap`` and ``final_mirror_axes`` (test-time augmentation for the end
        result) instead of the streamed ``overlap`` and ``mirror_axes``.
        """
        self._sync_classes()
        self.update_decision_offset()
        model, vol = self.ema_model, self.batches.volumes[volume]
        model.eval()
        revision = vol.revision
        icfg = self.config.inference.final() if final else self.config.inference
        while True:
            size = window or self._predict_window or self.patch_size
            wanted = icfg.batch_for(self.device.type)
            batch = min(wanted, self._predict_batch or wanted)
            try:
                probs = predict_probabilities(model, vol.features, size, config=replace(icfg, batch_size=batch),
                                              box=box, device=self.device, amp=self.amp, as_tensor=True)
                break
            except torch.cuda.OutOfMemoryError:
                self._predict_batch, smaller = self._back_off("prediction", batch, size)
                if smaller != size:
                    self._predict_window, window = smaller, None
        box = Box.full(vol.shape) if box is None else box.clip(vol.shape)
        probabilities, labels, uncertainty = class_map_and_uncertainty(probs)
        return Prediction(box=box, labels=labels, probabilities=probabilities, uncertainty=uncertainty,
                          step=self.step, revision=revision, volume=volume)

    @torch.no_grad()
    def update_decision_offset(self) -> None:
        """Set the models' ``decision_offset`` (:func:`~.inference.prior_offset`) from the labels: ``tau`` is
        ``InferenceConfig.correction_for`` their plane coverage; a class this net never had labels of (a loaded
        model's as its offset says) is never predicted (:data:`~.inference.NEVER_LABELED`). With nothing
        labeled (e.g. a loaded model applied to a new image) the offset the weights came with is kept."""
        if not any(v.n_labeled for v in self.batches.volumes):
            return
        offset = prior_offset(self.volume.class_weights(self.config.train.class_balance_power),
                              self.config.inference.correction_for(self.volume.plane_coverage()))
        learned = np.zeros(len(offset), bool)
        learned[:len(self.learned)] = self.learned[:len(offset)]
        self.learned = learned | np.any([c > 0 for c in (v.class_counts for v in self.batches.volumes)
                                         if len(c) == len(offset)], axis=0)
        offset[~self.learned] = NEVER_LABELED
        self.weights.set_decision_offset(torch.as_tensor(offset, dtype=torch.float32))

    # -- persistence ------------------------------------------------------------
    def state_dict(self) -> dict:
        """The weights (:meth:`NetWeights.state_dict`: copies, safe to call while another thread trains), the step
        and the training time, all of one step."""
        with self.weights.lock:
            self.update_decision_offset()
            return {**self.weights.state_dict(), "step": self.step, "elapsed": self.elapsed}

    def load_state_dict(self, state: dict) -> None:
        """Restore weights, EMA, optimiser, step and training time (see :meth:`NetWeights.load_state_dict`)."""
        if self.weights.load_state_dict(state, self.device):
            self._forward = self.model
            self.batches.set_patch(self._patch_for(int(np.prod(self.patch_size))))
        self.step = int(state.get("step", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.learned = self.weights.model.decision_offset.cpu().numpy() > NEVER_LABELED / 2  # kept in its offset
        # the probes, the kept weights and the running error rate described the weights just replaced
        self.monitor = ProbeMonitor(self.monitor.every, self.monitor.lag)
        self.fit_guard.forget()
        self.fit_error_rate = None
