"""The fit guard: a budgeted run ends on the best-fitting weights if the final ones contradict their labels.

A run can end inside a transient state that contradicts its own labels (on
a CT the neighbouring organ flips to the labeled one, even on a labeled slice
through it, for tens of steps at a time), and there the share of labeled
voxels the prediction contradicts tracks the Dice. From half a budgeted run
on, at every probe (:class:`~.probe.ProbeMonitor`) the guard keeps the EMA
weights whose probe contradicted the fewest labeled voxels; at the end, if
the final weights contradict more than ``ratio`` times as many, it puts the
kept weights back. Open-ended (interactive) training is never guarded. The
reasons for the defaults: ``docs/decisions.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .probe import ProbeMonitor


class KeptWeights(NamedTuple):
    """The best-fitting prediction weights so far: their probe's error rate, step, state (on the CPU) and the
    probe epoch they were measured in."""

    error_rate: float
    step: int
    state: dict[str, torch.Tensor]
    epoch: int


class FitGuard:
    """Keeps the best-fitting prediction weights of a budgeted run and restores them at its end if needed.

    Parameters
    ----------
    ratio : float
        The final weights are replaced when their probe error rate exceeds this many times the best one
        (0 turns the guard off).
    start : float
        Share of the budget from which the guard keeps weights.
    floor : float
        Error rates below this count as equal (no swap over a handful of voxels).
    """

    def __init__(self, ratio: float = 1.25, start: float = 0.5, floor: float = 0.001) -> None:
        if not (ratio == 0 or ratio >= 1) or not 0 <= start <= 1 or floor < 0:
            raise ValueError(f"ratio must be 0 (off) or >= 1, start in [0, 1], floor >= 0; got {ratio}, {start}, "
                             f"{floor}")
        self.ratio, self.start, self.floor = ratio, start, floor
        self.kept: KeptWeights | None = None
        #: Step whose weights the guard put back at the end of the last budget (None: the final ones were kept).
        self.restored_from: int | None = None
        self._budget: float | None = None

    def begin(self, budget: float | None) -> bool:
        """A run towards ``budget`` starts; returns whether it is another budget than the last (the kept weights
        of an earlier one are dropped)."""
        if budget == self._budget:
            return False
        self.kept, self._budget = None, budget
        return True

    def forget(self) -> None:
        """Drop the kept weights (they were measured on another class head or other weights)."""
        self.kept = None

    def due(self, step: int, progress: float | None, monitor: ProbeMonitor) -> bool:
        """Whether ``step`` is a step of the guarded part of a budgeted run at which it probes."""
        return (progress is not None and bool(self.ratio) and progress >= self.start
                and step % monitor.every == 0)

    def observe(self, step: int, monitor: ProbeMonitor, model: torch.nn.Module) -> None:
        """After a probe at ``step``: keep ``model``'s weights if they fit best so far in this probe epoch."""
        rate = monitor.error_rate
        kept = self.kept if self.kept is not None and self.kept.epoch == monitor.epoch else None
        if rate is not None and (kept is None or rate < kept.error_rate):
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            kept = KeptWeights(rate, step, state, monitor.epoch)
        self.kept = kept

    def end(self, monitor: ProbeMonitor, probe: Callable[[], None], model: torch.nn.Module) -> str | None:
        """At the end of a budget: probe the final weights, and put the kept ones into ``model`` if those fit
        clearly better. Returns the message for the user when it did, else None."""
        self.restored_from = None
        kept, self.kept = self.kept, None
        if kept is None or kept.epoch != monitor.epoch or not self.ratio:
            return None
        probe()  # new labels since, and the kept weights no longer count
        rate = monitor.error_rate
        if kept.epoch != monitor.epoch or rate is None or rate <= self.ratio * max(kept.error_rate, self.floor):
            return None
        model.load_state_dict(kept.state)
        monitor.forget()  # the probes described the weights just replaced
        self.restored_from = kept.step
        return (f"end of the training budget: the final weights misclassify {rate:.2%} of the labeled voxels "
                f"they were checked on, the weights of step {kept.step} {kept.error_rate:.2%}: keeping those of "
                f"step {kept.step}")
