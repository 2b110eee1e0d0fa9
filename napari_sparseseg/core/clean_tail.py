"""The clean tail: a budgeted run ends on steps without augmentation, once its prediction has settled.

Training and prediction see the same volume, so the last steps of a budgeted
run (``evaluate``, ``train --seconds``: a run whose learning rate decays over
a known budget) may fit the labeled voxels as they are. Sparse labels overfit
without augmentation, so the share of the run spent so is scaled by the
labels' plane coverage (whole slices get all of it, brush strokes almost
none), and the tail begins only once the probe's drift
(:class:`~.probe.ProbeMonitor`) shows the prediction has stopped growing into
unlabeled slices. Open-ended (interactive) training always augments. The
reasons for the defaults: ``docs/decisions.md``.
"""

from __future__ import annotations

from collections.abc import Callable

from .probe import ProbeMonitor


class CleanTail:
    """Decides, step by step, whether a budgeted run still augments.

    Parameters
    ----------
    share : float
        Largest share of a budgeted run, at its end, trained without augmentation (times the plane coverage);
        0 turns the tail off.
    max_drift : float
        The tail begins only once the probe's drift is below this many layers of its surface; 0 removes the gate
        (the tail then begins at its share of the budget whatever the state).
    lead : float
        Probing starts this share of the budget before the earliest start of the tail, so that the first drift
        is known when the tail may begin.
    """

    def __init__(self, share: float = 0.5, max_drift: float = 0.15, lead: float = 0.15) -> None:
        if not 0 <= share <= 1 or max_drift < 0 or not 0 <= lead <= 1:
            raise ValueError(f"share and lead must be in [0, 1] and max_drift >= 0, got {share}, {lead}, {max_drift}")
        self.share, self.max_drift, self.lead = share, max_drift, lead
        #: Step at which the tail began (None: still augmenting).
        self.since: int | None = None

    def share_for(self, plane_coverage: float) -> float:
        """Largest share of the run trained without augmentation for labels of this plane coverage."""
        return self.share * plane_coverage

    def restart(self) -> None:
        """A new budget: augment again until its own tail."""
        self.since = None

    def augment(self, step: int, progress: float | None, plane_coverage: float, monitor: ProbeMonitor,
                probe: Callable[[], None]) -> bool:
        """Whether step ``step + 1`` augments; probes (``probe()``) when the gate needs a fresh drift.

        ``progress`` is the share of the budgeted run done, None for open-ended training. The step at which
        the tail begins is kept in :attr:`since`.
        """
        if progress is None or not self.share:
            return True
        if self.since is not None:
            return False
        start = 1.0 - self.share_for(plane_coverage)
        gated = self.max_drift > 0
        if gated and progress >= start - self.lead and monitor.due(step):
            probe()
        if progress < start or (gated and (monitor.drift is None or monitor.drift >= self.max_drift)):
            return True
        self.since = step
        return False

    def describe(self, monitor: ProbeMonitor) -> str:
        """What the user is told when the tail begins."""
        settled = f" (prediction settled: drift {monitor.drift:.3f})" if self.max_drift > 0 else ""
        return f"from step {(self.since or 0) + 1} on, training without augmentation{settled}"
