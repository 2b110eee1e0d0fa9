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
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch

from .annotation import AnnotatedVolume, Box
from .augment import augment_batch
from .config import SessionConfig
from .convergence import probe_box, surface_drift
from .device import autocast, fast_bf16, select_device
from .events import Notice, Prediction, TrainStep, Waiting
from .inference import class_map, class_map_and_uncertainty, predict_probabilities
from .loss import contrast_smoothness, hardest_cross_entropy, partial_label_loss
from .memory import MIN_PATCH_VOXELS, fit_patch_and_batch
from .net import UNet3D, plan_levels
from .prefetch import OneAhead
from .sampler import PatchSampler, patch_shape

#: cuDNN autotuning (``torch.backends.cudnn.benchmark``) starts after this many
#: steps, so the first steps and the first view run on cuDNN's heuristics and the
#: tuning happens while the user looks at the first prediction. On an H100 the
#: deferral took the cold-process first view from 9.7-10.1 s to 8.1-8.7 s
#: (``benchmarks/speed.py --first-view-only --warm-up``); most of the rest was the
#: one-time start-up that ``core.device.warm_up`` now pays in advance.
AUTOTUNE_AFTER_STEPS = 20

#: Steps between two predictions of the probe patch that watch whether a budgeted run has settled
#: (the clean tail's gate, ``TrainConfig.clean_tail_drift``). The drift compares probes
#: ``DRIFT_LAG_PROBES`` apart, i.e. 100 steps: enough to tell a prediction still growing into
#: unlabeled slices from one that only flickers at its boundary (``benchmarks/stability.py``).
DRIFT_PROBE_EVERY = 50
DRIFT_LAG_PROBES = 2
#: Probing starts this share of the budget before the earliest start of the clean tail, so that the
#: first drift is known about when the tail may begin.
DRIFT_PROBE_LEAD = 0.15
#: The fit guard (``TrainConfig.fit_guard``) probes, and keeps the best-fitting EMA weights, from this share of a
#: budgeted run on.
FIT_GUARD_FROM = 0.5
#: Probe error rates below this are treated as equal by the fit guard (no swap over a handful of voxels).
FIT_GUARD_FLOOR = 0.001
#: Decay per step of the running mean of the batches' labeled error rate (``Trainer.fit_error_rate``).
FIT_ERROR_DECAY = 0.95
#: The hardest-voxel term (``TrainConfig.hardest_weight``) ramps in as the running labeled error rate goes from
#: the first to the second of these: a net that still contradicts more than one in twenty-five of its own labels
#: is missing a labeled structure, not only blurring boundaries. Measured after step 200 (``BENCHMARKS.md``,
#: "Why the defaults are what they are"): nuclei 0.6-1.9 %, spleen CT 5-9 % while the kidney is called spleen.
HARDEST_RAMP = (0.02, 0.04)
#: ... and only from this step on: an untrained net contradicts a third of its labels, and the term at full weight
#: from step 0 lowered the nuclei z:3 prediction at step 100 from Dice 0.921 to 0.886.
HARDEST_FROM_STEP = 200
#: The smoothness term (``TrainConfig.smoothness``) ramps in over this many steps. At full weight from the start
#: it held nuclei strokes at Dice 0.15 after 81 steps (0.76 without it), as the net first learned one smooth class.
SMOOTHNESS_RAMP_STEPS = 200
#: Misclassified labeled voxels a training step hands to the sampler's error pool (a random subset of them),
#: for ``TrainConfig.error_share``.
ERRORS_PER_STEP = 64


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
        #: The spacing the net's kernels and pooling were planned for (a loaded model may keep another).
        self.model_spacing: tuple[float, ...] = tuple(volume.spacing)
        #: Notices (e.g. sizes shrunk after a GPU out-of-memory) that :meth:`run` yields next.
        self.notices: deque[Notice] = deque()
        patch_voxels, self._max_batch = tc.patch_voxels, tc.batch_size
        if self.device.type == "cuda":  # patch and batch from the free memory (see core/memory.py)
            free, _ = torch.cuda.mem_get_info(self.device)
            patch_voxels, self._max_batch = fit_patch_and_batch(free, mc, mc.in_channels, mc.num_classes,
                                                                tc.patch_voxels, tc.batch_size, self.amp)
            if (patch_voxels, self._max_batch) != (tc.patch_voxels, tc.batch_size):
                self.notices.append(Notice(f"{free / 2**30:.1f} GiB free on {self.device}: training with "
                                           f"{patch_voxels} voxel patches, batch {self._max_batch}", "info"))
        self._set_patch(patch_shape(volume.shape, volume.spacing, patch_voxels, self.model.size_multiple))
        self._predict_batch: int | None = None
        self._predict_window: tuple[int, int, int] | None = None
        self.optimizer = self._make_optimizer()
        #: Exponential moving average of the weights: what predictions use (smooth under noisy small-data steps).
        self.ema_model = self._make_ema()
        self.step = 0
        self.elapsed = 0.0
        self.last_revision = -1
        self._times: deque[tuple[float, int]] = deque(maxlen=20)
        #: Step at which the clean tail began (None: still augmenting).
        self.clean_since: int | None = None
        #: Latest surface drift of the probe region over ``DRIFT_LAG_PROBES`` probes (None: not measured yet).
        self.drift: float | None = None
        self._probes: deque[np.ndarray] = deque(maxlen=DRIFT_LAG_PROBES + 1)
        self._probe_revision = -1
        #: Share of the probe patch's labeled voxels that the latest probe misclassified (None: not probed yet).
        self.probe_error_rate: float | None = None
        self._probed_at = -1
        #: The best-fitting EMA weights of this budgeted run so far: (error rate, step, state on the CPU).
        self._best_fit: tuple[float, int, dict[str, torch.Tensor]] | None = None
        #: The ``decay_until`` of the budgeted run that ``_best_fit`` belongs to.
        self._guarded_budget: float | None = None
        #: Step whose EMA weights the fit guard kept at the end of the last budget (None: the final ones).
        self.fit_restored_from: int | None = None
        #: Running mean (decay :data:`FIT_ERROR_DECAY`) of the share of each batch's labeled voxels that the
        #: training forward pass misclassified (None before the first step).
        self.fit_error_rate: float | None = None
        self._forward = self.model
        if tc.compile and self.device.type == "cuda":
            self._forward = torch.compile(self.model)
        #: Builds the next batch in a worker thread while a step computes (see :attr:`prefetching`).
        self._prefetch: OneAhead[HostBatch] = OneAhead(self._host_batch)

    def _set_patch(self, size: tuple[int, int, int]) -> None:
        tc = self.config.train
        self.patch_size = size
        self.sampler = PatchSampler(self.volume, size, foreground_share=tc.foreground_share,
                                    random_share=tc.random_share, rng=self._rng, centre_margin=tc.centre_margin,
                                    error_share=tc.error_share)

    @property
    def batch_size(self) -> int:
        """Patches per step: the configured batch, capped by the device memory (see :meth:`_out_of_memory`)."""
        return max(1, min(self.config.train.batch_size, self._max_batch))

    def _smaller(self, size: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """A window/patch of about half the voxels (a valid net size), or None at the floor."""
        voxels = int(np.prod(size))
        if voxels <= MIN_PATCH_VOXELS:
            return None
        smaller = patch_shape(self.volume.shape, self.volume.spacing, max(voxels // 2, MIN_PATCH_VOXELS),
                              self.model.size_multiple)
        return smaller if np.prod(smaller) < voxels else None

    def _out_of_memory(self, what: str, batch: int, size: tuple[int, int, int]) -> tuple[int, tuple[int, int, int]]:
        """Free the cache and return a halved batch, else a halved patch/window; RuntimeError at the floor."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if batch > 1:
            batch //= 2
            change = f"batch {batch}"
        else:
            smaller = self._smaller(size)
            if smaller is None:
                raise RuntimeError(f"out of GPU memory during {what} even at batch 1 and a {size} window; free GPU "
                                   "memory (close other programs) or use a smaller model or the CPU (--device cpu)")
            size, change = smaller, f"{'x'.join(map(str, smaller))} {'patches' if what == 'training' else 'windows'}"
        self.notices.append(Notice(f"out of GPU memory during {what}: carrying on with {change}", "warning"))
        return batch, size

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
        """bf16 autocast: configured on (``TrainConfig.amp``) and fast on this device (:func:`fast_bf16`)."""
        return self.config.train.amp and fast_bf16(self.device)

    def _sync_classes(self) -> None:
        wanted = self.volume.num_classes + 1
        if self.model.head.out_channels != wanted:
            self.model.set_num_classes(wanted)
            self.optimizer = self._make_optimizer()
            self.ema_model = self._make_ema()
            self._forward = self.model
            self._best_fit = None
            self.fit_error_rate = None  # measured on the old head

    def learning_rate(self, progress: float | None) -> float:
        """Linear warm-up, then constant (open-ended) or poly decay (``progress`` in [0, 1])."""
        tc = self.config.train
        lr = tc.learning_rate * min(1.0, (self.step + 1) / max(tc.warmup_steps, 1))
        if progress is not None:
            lr *= max(1.0 - progress, tc.lr_floor) ** 0.9
        return lr

    def clean_tail(self) -> float:
        """Largest share of a budgeted run, at its end, trained without augmentation.

        ``TrainConfig.clean_tail`` times the labels' plane coverage
        (:meth:`AnnotatedVolume.plane_coverage`): whole slices get all of it,
        brush strokes (coverage below 0.1) almost none, since sparse labels
        overfit without augmentation. The tail starts later, or not at all,
        while the prediction has not settled (:meth:`_augment_now`).
        """
        return self.config.train.clean_tail * self.volume.plane_coverage()

    def hardest_weight(self) -> float:
        """Weight of the hardest-voxel term (:func:`~.loss.hardest_cross_entropy`) for the next step.

        ``TrainConfig.hardest_weight`` times a ramp from 0 to 1 as the running labeled error rate
        (:attr:`fit_error_rate`) goes through :data:`HARDEST_RAMP`, from step :data:`HARDEST_FROM_STEP` on:
        off while the net fits its labels but for scattered boundary voxels (where it would only overfit them),
        on while it contradicts a whole labeled region, such as an organ painted background on a few slices.
        """
        weight, rate = self.config.train.hardest_weight, self.fit_error_rate
        if not weight or rate is None or self.step < HARDEST_FROM_STEP:
            return 0.0
        lo, hi = HARDEST_RAMP
        return weight * min(max((rate - lo) / (hi - lo), 0.0), 1.0)

    def smoothness(self) -> float:
        """Weight of the contrast-sensitive smoothness term (:func:`~.loss.contrast_smoothness`) now.

        ``TrainConfig.smoothness`` times ``1 -`` the labels' plane coverage: brush strokes, which leave the
        object boundaries unlabeled, get nearly all of it; whole slices, which mark the boundaries, none. It
        ramps in linearly over the first :data:`SMOOTHNESS_RAMP_STEPS` steps: from random weights the cheapest
        smooth answer is one class everywhere, and the first predictions the user sees would show nothing.
        """
        weight = self.config.train.smoothness
        if not weight:
            return 0.0
        return weight * (1.0 - self.volume.plane_coverage()) * min(1.0, self.step / SMOOTHNESS_RAMP_STEPS)

    def _augment_now(self, progress: float | None) -> bool:
        """Whether this step augments; starts the clean tail once its share is reached and the drift is low."""
        tc = self.config.train
        if progress is None or not tc.clean_tail:
            return True
        if self.clean_since is not None:
            return False
        start = 1.0 - self.clean_tail()
        gated = tc.clean_tail_drift > 0
        if (gated and progress >= start - DRIFT_PROBE_LEAD and self.step % DRIFT_PROBE_EVERY == 0
                and self._probed_at != self.step):  # the fit guard may have probed this step already
            self._probe()
        if progress < start or (gated and (self.drift is None or self.drift >= tc.clean_tail_drift)):
            return True
        self.clean_since = self.step
        settled = f" (prediction settled: drift {self.drift:.3f})" if gated else ""
        self.notices.append(Notice(f"from step {self.step + 1} on, training without augmentation{settled}",
                                   "info"))
        return False

    @torch.no_grad()
    def _probe(self) -> None:
        """Predict the probe patch with the EMA weights: update :attr:`drift` and :attr:`probe_error_rate`.

        The probe is one training-sized patch around the middle of the labeled
        voxels (mirrored where it reaches outside the volume), predicted in a
        single forward pass: a few hundredths of the training time. The drift
        compares its class map with an older probe's; the error rate is the
        share of its labeled voxels whose label the prediction contradicts
        (what the fit guard, :meth:`_guard_fit`, compares).
        """
        self._probed_at = self.step
        revision = self.volume.revision
        if revision != self._probe_revision:  # new labels: earlier probes answer another question
            self._probes.clear()
            self.drift, self._probe_revision, self._best_fit = None, revision, None
        self.update_decision_offset()  # train_step has synced the classes
        start = probe_box(self.volume.shape, self.patch_size, self.volume.labeled_centre(), windows=1).start
        patch = self.volume.read_patch(start, self.patch_size,
                                       self.volume.class_weights(self.config.train.class_balance_power), 1.0)
        model = self._ema_or_model()
        model.eval()
        with autocast(self.device, self.amp):
            logits = model(torch.from_numpy(patch.image)[None].to(self.device))
        offset = model.decision_offset.view(1, -1, 1, 1, 1)
        labels = class_map(logits.float() + offset, 1)[0].to(torch.uint8).cpu().numpy()
        if self._probes and self._probes[-1].shape != labels.shape:  # the patch shrank after an out-of-memory
            self._probes.clear()
            self._best_fit = None
        self._probes.append(labels)
        if len(self._probes) == self._probes.maxlen:
            self.drift = surface_drift(self._probes[0], labels)
        labeled = patch.weight > 0
        wrong = np.count_nonzero(labels[labeled] != patch.target[labeled])
        self.probe_error_rate = wrong / max(int(np.count_nonzero(labeled)), 1)

    def _guard_fit(self, progress: float | None) -> None:
        """Probe every ``DRIFT_PROBE_EVERY`` steps of the guarded part of a budgeted run; keep the best EMA."""
        if (progress is None or not self.config.train.fit_guard or progress < FIT_GUARD_FROM
                or self.step % DRIFT_PROBE_EVERY):
            return
        if self._probed_at != self.step:
            self._probe()
        rate = self.probe_error_rate
        if rate is not None and (self._best_fit is None or rate < self._best_fit[0]):
            state = {k: v.detach().to("cpu", copy=True) for k, v in self._ema_or_model().state_dict().items()}
            self._best_fit = (rate, self.step, state)

    def _end_of_budget(self) -> None:
        """The fit guard: end a budgeted run on the best-fitting EMA weights if the final ones fit clearly worse.

        A run can end in a transient state that contradicts its own labels (on
        the spleen CT, the neighbouring kidney called spleen even on the
        labeled slice through it, ``BENCHMARKS.md``, "Why the defaults are what they are"); the share
        of misclassified labeled voxels tracks the Dice there (Spearman -0.99).
        If the final weights' error rate on the probe patch exceeds
        ``TrainConfig.fit_guard`` times the best rate seen in the second half
        of the run, the EMA weights of that probe are restored.
        """
        self.fit_restored_from = None
        if self._best_fit is None or not self.config.train.fit_guard or self.volume.n_labeled == 0:
            self._best_fit = None
            return
        self._probe()  # forgets the best weights if the labels changed since
        best, self._best_fit = self._best_fit, None
        if best is None:
            return
        rate = self.probe_error_rate
        best_rate, best_step, state = best
        if rate is None or rate <= self.config.train.fit_guard * max(best_rate, FIT_GUARD_FLOOR):
            return
        self._ema_or_model().load_state_dict(state)
        self._probes.clear()  # they described the weights just replaced
        self.drift = None
        self.fit_restored_from = best_step
        self.notices.append(Notice(
            f"end of the training budget: the final weights misclassify {rate:.2%} of the labeled voxels they "
            f"were checked on, the weights of step {best_step} {best_rate:.2%}: keeping those of step {best_step}",
            "info"))

    def _ema_or_model(self) -> torch.nn.Module:
        """The weights predictions use: the EMA model, or the raw model when the EMA is off."""
        return self.ema_model if self.config.train.ema_decay > 0 else self.model

    @property
    def prefetching(self) -> bool:
        """Whether the next batch is built in a worker thread while a step computes (``TrainConfig.prefetch``).

        ``"auto"`` prefetches on CUDA, where the GPU computes while the host would
        otherwise wait; never while the sampler's error pool is in use
        (``TrainConfig.error_share``), which each step feeds for the next.
        """
        mode = self.config.train.prefetch
        if mode == "never" or self.config.train.error_share > 0:
            return False
        return mode == "always" or self.device.type == "cuda"

    def _host_batch(self, key: tuple) -> HostBatch:
        """Sample and augment one batch on the CPU for ``key`` (see :meth:`_batch_key`)."""
        augment, batch_size = key[0], key[1]
        tc = self.config.train
        revision = self.volume.revision
        cw = self.volume.class_weights(tc.class_balance_power)
        patches = [self.sampler.sample(cw, tc.correction_weight) for _ in range(batch_size)]
        image = torch.from_numpy(np.stack([p.image for p in patches]))
        target = torch.from_numpy(np.stack([p.target for p in patches]))
        weight = torch.from_numpy(np.stack([p.weight for p in patches]))
        coords = None
        if tc.error_share > 0:
            coords = torch.from_numpy(np.stack([_voxel_coordinates(p.start, target.shape[1:]) for p in patches]))
        if tc.augment and augment:
            image, target, weight, *moved = augment_batch(
                image, target, weight, self._gen, p_affine=tc.spatial_share, elastic=tc.elastic,
                p_intensity=tc.intensity_share, carry=coords)
            coords = moved[0] if moved else None
        if self.device.type == "cuda":  # page-locked, so the copy to the device can overlap
            image, target, weight = image.pin_memory(), target.pin_memory(), weight.pin_memory()
        return HostBatch(image, target, weight, coords, revision)

    def _batch_key(self, augment: bool) -> tuple:
        """What a batch is built for: a prefetched batch with another key is rebuilt."""
        return augment, self.batch_size, self.patch_size, id(self.sampler), self.config.train

    def _batch(self, augment: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """One batch: image ``(B, C, Z, Y, X)``, target and weight ``(B, Z, Y, X)`` on the device, the
        volume coordinates of every voxel ``(B, 3, Z, Y, X)`` on the CPU (None unless errors are pooled),
        and the annotation revision the batch was cut from.

        With :attr:`prefetching`, the batch was built during the previous step
        unless the labels (revision), the augmentation switch, the batch or
        patch size, or the training settings changed since: then it is built now.
        """
        key = self._batch_key(augment)
        if self.prefetching:
            host = self._prefetch.take(key, fresh=lambda b: b.revision == self.volume.revision)
        else:
            self._prefetch.close()
            host = self._host_batch(key)
        nb = self.device.type == "cuda"
        return (host.image.to(self.device, non_blocking=nb), host.target.to(self.device, non_blocking=nb),
                host.weight.to(self.device, non_blocking=nb), host.coords, host.revision)

    @property
    def batches_built_ahead(self) -> tuple[int, int]:
        """``(ahead, in_step)``: batches taken from the prefetch worker, and batches it could not supply.

        A prefetching step that finds no matching fresh batch (the first one,
        or the labels or settings changed meanwhile) builds its own and counts
        in ``in_step``; steps made without prefetching count in neither.
        """
        return self._prefetch.hits, self._prefetch.misses

    def close(self) -> None:
        """End the prefetching thread (idempotent; training again starts a new one)."""
        self._prefetch.close()

    def _backward(self, image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward, loss and backward of one batch; the gradients are left in the parameters.

        Returns the loss optimised, its label part (cross-entropy and Dice, detached) and the logits
        ``(B, K + 1, Z, Y, X)`` (detached).
        """
        with autocast(self.device, self.amp):
            logits = self._forward(image)
        label_loss = partial_label_loss(logits, target, weight, self.config.train.dice_weight)
        loss = label_loss
        smoothness, hardest = self.smoothness(), self.hardest_weight()
        if smoothness > 0:
            loss = loss + smoothness * contrast_smoothness(logits, image)
        if hardest > 0:
            loss = loss + hardest * hardest_cross_entropy(logits, target, weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss, label_loss.detach(), logits.detach()

    @torch.no_grad()
    def _track_fit(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> float:
        """Share of this batch's labeled voxels misclassified; updates :attr:`fit_error_rate`.

        ``logits`` ``(B, K + 1, Z, Y, X)``, ``target`` and ``weight`` ``(B, Z, Y, X)`` as trained on.
        """
        labeled = weight > 0
        counts = torch.stack((labeled.sum(), ((class_map(logits, 1) != target) & labeled).sum()))
        n, wrong = counts.tolist()  # one host sync for both
        if n == 0:
            return 0.0
        rate = wrong / n
        previous = self.fit_error_rate
        self.fit_error_rate = rate if previous is None else FIT_ERROR_DECAY * previous + (1 - FIT_ERROR_DECAY) * rate
        return rate

    @torch.no_grad()
    def _pool_errors(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                     coords: torch.Tensor) -> None:
        """Hand up to :data:`ERRORS_PER_STEP` misclassified labeled voxels of this batch to the sampler.

        ``logits`` ``(B, K + 1, Z, Y, X)``, ``target`` and ``weight`` ``(B, Z, Y, X)`` as trained on;
        ``coords`` ``(B, 3, Z, Y, X)``: the volume coordinate of each of those voxels.
        """
        wrong = ((class_map(logits, 1) != target) & (weight > 0)).nonzero().cpu()  # (n, 4): b, z, y, x
        if len(wrong) > ERRORS_PER_STEP:
            wrong = wrong[torch.randperm(len(wrong), generator=self._gen)[:ERRORS_PER_STEP]]
        points = coords[wrong[:, 0], :, wrong[:, 1], wrong[:, 2], wrong[:, 3]]  # (n, 3): z, y, x
        self.sampler.add_errors(points.round().long().numpy())

    def train_step(self, progress: float | None = None) -> TrainStep | Waiting:
        """Run one optimisation step on the labels as they are now."""
        if self.volume.n_labeled == 0:
            return Waiting("no labeled voxels yet: paint a few slices")
        t0 = time.perf_counter()
        self._sync_classes()
        self._guard_fit(progress)  # these two may predict the probe region (eval mode): before .train()
        augment = self._augment_now(progress)
        self.model.train()
        lr = self.learning_rate(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        while True:
            image, target, weight, coords, revision = self._batch(augment)
            try:
                loss, label_loss, logits = self._backward(image, target, weight)
                break
            except torch.cuda.OutOfMemoryError:
                self.optimizer.zero_grad(set_to_none=True)
                del image, target, weight, coords
                self._max_batch, size = self._out_of_memory("training", self.batch_size, self.patch_size)
                if size != self.patch_size:
                    self._set_patch(size)
        if coords is not None:
            self._pool_errors(logits, target, weight, coords)
        self._track_fit(logits, target, weight)
        del logits
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)
        loss_value, label_value, norm_value = torch.stack(
            (loss.detach().float(), label_loss.float(), grad_norm.detach().float())).tolist()  # one host sync
        if not (np.isfinite(loss_value) and np.isfinite(norm_value)):
            # Checked before the optimiser and the EMA touch the weights: a bad step leaves them as they were, so
            # what a store or a model file saves afterwards is still the last good state.
            self.optimizer.zero_grad(set_to_none=True)
            what = "loss" if not np.isfinite(loss_value) else "gradient norm"
            raise FloatingPointError(f"training {what} became {loss_value if what == 'loss' else norm_value} at "
                                     f"step {self.step + 1}; the weights of step {self.step} are kept")
        self.optimizer.step()
        self._update_ema()
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
            For budgeted runs: the training time (``self.elapsed``) at which a
            poly learning-rate decay reaches its floor. ``None``: constant
            rate after warm-up (open-ended interactive training).
        idle_sleep : float
            Seconds to sleep per ``Waiting`` event.
        """
        start_step, start_time, waited = self.step, self.elapsed, 0.0
        if decay_until != self._guarded_budget:  # another budget: weights kept for an earlier one do not count
            self._best_fit, self._guarded_budget = None, decay_until
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
                final: bool = False) -> Prediction:
        """Predict ``box`` (default: whole volume) with the current (EMA) weights.

        ``final`` uses ``inference.final_overlap`` and ``final_mirror_axes``
        (test-time augmentation for the end result) instead of the streamed
        ``overlap`` and ``mirror_axes``.
        """
        self._sync_classes()
        self.update_decision_offset()
        model = self.ema_model if self.config.train.ema_decay > 0 else self.model
        model.eval()
        revision = self.volume.revision
        icfg = self.config.inference
        if final:
            icfg = icfg.final()
        while True:
            size = window or self._predict_window or self.patch_size
            wanted = icfg.batch_for(self.device.type)
            batch = min(wanted, self._predict_batch or wanted)
            try:
                probs = predict_probabilities(model, self.volume.features, size, config=replace(icfg, batch_size=batch),
                                              box=box, device=self.device, amp=self.amp, as_tensor=True)
                break
            except torch.cuda.OutOfMemoryError:
                self._predict_batch, smaller = self._out_of_memory("prediction", batch, size)
                if smaller != size:
                    self._predict_window, window = smaller, None
        box = Box.full(self.volume.shape) if box is None else box.clip(self.volume.shape)
        probabilities, labels, uncertainty = class_map_and_uncertainty(probs)
        return Prediction(box=box, labels=labels, probabilities=probabilities, uncertainty=uncertainty,
                          step=self.step, revision=revision)

    @torch.no_grad()
    def update_decision_offset(self) -> None:
        """Set the models' ``decision_offset`` to ``-tau * log w_c`` of the current labels' class weights.

        ``tau`` is ``InferenceConfig.correction_for`` the labels' plane
        coverage: whole slices get ``prior_correction``, brush strokes up to
        ``sparse_prior_correction``. With nothing labeled (e.g. a loaded model
        applied to a new image) the offset the weights came with is kept.
        Classes without labels get 0.
        """
        if self.volume.n_labeled == 0:
            return
        w = self.volume.class_weights(self.config.train.class_balance_power).astype(np.float64)
        tau = self.config.inference.correction_for(self.volume.plane_coverage())
        offset = np.where(w > 0, -tau * np.log(np.where(w > 0, w, 1.0)), 0.0)
        value = torch.as_tensor(offset, dtype=torch.float32)
        for model in (self.model, self.ema_model):
            if model.decision_offset.shape == value.shape:
                model.decision_offset.copy_(value)

    # -- persistence ------------------------------------------------------------
    def state_dict(self) -> dict:
        self.update_decision_offset()
        return {"model": self.model.state_dict(), "ema": self.ema_model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step,
                "elapsed": self.elapsed, "model_config": self.model.config.__dict__,
                "spacing": list(self.model_spacing)}

    def load_state_dict(self, state: dict) -> None:
        """Restore weights, EMA, optimiser, step and elapsed time.

        A model planned for another spacing (e.g. trained on another OME-Zarr
        level) keeps the kernel/pooling layout it was trained with: the net
        is rebuilt from the checkpoint's spacing before its weights load.
        """
        spacing = state.get("spacing")
        if spacing is not None:
            planned = plan_levels(spacing, self.model.config.depth, self.model.config.anisotropy_threshold)
            if planned != (self.model.kernels, self.model.strides):
                self.model = UNet3D(self.model.config, spacing).to(self.device)
                self.model_spacing = tuple(float(v) for v in spacing)
                self._forward = self.model
                voxels = int(np.prod(self.patch_size))
                self._set_patch(patch_shape(self.volume.shape, self.volume.spacing, voxels, self.model.size_multiple))
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
        self._probes.clear()  # probes and kept weights described the weights just replaced
        self.drift, self._best_fit, self._probed_at = None, None, -1
        self.fit_error_rate = None  # it described the weights just replaced


class HostBatch(NamedTuple):
    """One training batch on the CPU: image ``(B, C, Z, Y, X)``, target and weight ``(B, Z, Y, X)``, the volume
    coordinates of its voxels ``(B, 3, Z, Y, X)`` (None unless errors are pooled), and the annotation revision it
    was cut from."""

    image: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    coords: torch.Tensor | None
    revision: int


def _voxel_coordinates(start: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """float32 ``(3, Z, Y, X)``: the ``(z, y, x)`` volume coordinate of every voxel of a patch at ``start``."""
    axes = [np.arange(s, s + n, dtype=np.float32) for s, n in zip(start, shape)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))
