"""The probe: one patch around the labels, predicted now and then, that tells two guards how the run is going.

Every :attr:`ProbeMonitor.every` steps of the guarded part of a budgeted run,
the trainer predicts one training-sized patch around the middle of the labeled
voxels with the EMA weights and hands the class map to :meth:`ProbeMonitor.record`.
The monitor keeps the two numbers the guards read, without ground truth:

* :attr:`~ProbeMonitor.drift`, the surface drift (:func:`~.convergence.surface_drift`)
  between this class map and the one ``lag`` probes before: has the
  prediction settled? (:class:`~.clean_tail.CleanTail`);
* :attr:`~ProbeMonitor.error_rate`, the share of the patch's labeled voxels
  the prediction contradicts (:class:`~.fit_guard.FitGuard`).

Probes answer one question at a time: new labels, another patch shape or
replaced weights start a new :attr:`~ProbeMonitor.epoch`, and whatever was
measured before no longer counts.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from .annotation import AnnotatedVolume
from .convergence import probe_box, surface_drift
from .device import autocast
from .inference import class_map


class ProbeMonitor:
    """Drift and labeled error rate of the probe patch's predictions.

    Parameters
    ----------
    every : int
        Steps between two probes (the guards probe on steps that are multiples of it).
    lag : int
        The drift compares probes this many apart: ``every * lag`` steps, enough to tell a prediction still
        growing into unlabeled slices from one that only flickers at its boundary.
    """

    def __init__(self, every: int = 50, lag: int = 2) -> None:
        if every < 1 or lag < 1:
            raise ValueError(f"every and lag must be >= 1, got {every} and {lag}")
        self.every, self.lag = every, lag
        self._maps: deque[np.ndarray] = deque(maxlen=lag + 1)
        #: Surface drift over the last ``lag`` probes (None until that many probes of this epoch exist).
        self.drift: float | None = None
        #: Share of the latest probe's labeled voxels that its prediction contradicts (None: not probed yet).
        self.error_rate: float | None = None
        #: Step of the latest probe (-1: none).
        self.probed_at = -1
        #: Counts the times earlier probes stopped describing the current labels, patch or weights.
        self.epoch = 0
        self._revision: int | None = None

    def due(self, step: int) -> bool:
        """Whether ``step`` is a probing step not yet probed."""
        return step % self.every == 0 and self.probed_at != step

    def forget(self) -> None:
        """Start a new epoch: the probes so far describe other labels, another patch or replaced weights."""
        self._maps.clear()
        self.drift = None
        self.epoch += 1

    def record(self, step: int, revision: int, labels: np.ndarray, target: np.ndarray, weight: np.ndarray) -> None:
        """Take one probe: the predicted class map ``labels`` ``(Z, Y, X)`` of the probe patch, whose labels are
        ``target`` where ``weight > 0`` (same shape), cut at annotation ``revision``."""
        self.probed_at = step
        if revision != self._revision or (self._maps and self._maps[-1].shape != labels.shape):
            self.forget()
            self._revision = revision
        self._maps.append(labels)
        if len(self._maps) == self._maps.maxlen:
            self.drift = surface_drift(self._maps[0], labels)
        labeled = weight > 0
        wrong = np.count_nonzero(labels[labeled] != target[labeled])
        self.error_rate = wrong / max(int(np.count_nonzero(labeled)), 1)


@torch.no_grad()
def predict_probe(model: torch.nn.Module, volume: AnnotatedVolume, patch_size: tuple[int, int, int],
                  class_weight: np.ndarray, device: torch.device, amp: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict the probe patch: one ``patch_size`` patch around the middle of the labeled voxels (mirrored where it
    reaches outside the volume), in a single forward pass of ``model`` (its decision offset applied).

    Returns the class map, the labels' target and their weight (``weight > 0``: labeled), each ``(Z, Y, X)``: the
    arguments of :meth:`ProbeMonitor.record`.
    """
    start = probe_box(volume.shape, patch_size, volume.labeled_centre(), windows=1).start
    patch = volume.read_patch(start, patch_size, class_weight, 1.0)
    model.eval()
    with autocast(device, amp):
        logits = model(torch.from_numpy(patch.image)[None].to(device))
    offset = model.decision_offset.view(1, -1, 1, 1, 1)
    labels = class_map(logits.float() + offset, 1)[0].to(torch.uint8).cpu().numpy()
    return labels, patch.target, patch.weight
