"""Simulated-user evaluation: label slices from ground truth, run the product's loop, score what it shows.

Used by ``napari-sparseseg evaluate`` and the benchmarks. Qt-free.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..core.config import SessionConfig
from ..core.encoding import mask_to_annotation
from ..core.estimate import DiceEstimate
from ..core.events import Guidance, Prediction, TrainStep
from ..core.session import SegmentationSession
from ..core.shown import ShownMask
from ..core.volume import validate_spacing
from .metrics import evaluate_masks
from .protocols import FULL, parse_protocol, protocol_mask, simulate_annotation

#: Seconds after the labels are in at which the mask shown is scored (those within the budget; and the budget).
CURVE_SECONDS: tuple[float, ...] = (5, 15, 30, 60, 120, 300)
BASELINES = ("rf", "interp")


def baseline_applicability(name: str, protocol: str) -> str | None:
    """Why baseline ``name`` is not defined for ``protocol`` (``None`` when it is).

    ``interp`` needs whole slices to interpolate between: it is not defined for
    ``scribble:K``; for ``ortho:K`` it interpolates between the K axial slices
    only (the y and x slices are kept as labels). Under ``full`` both baselines
    would only return the labels they were given (they keep labeled voxels),
    so neither is a reference there.
    """
    kind, _ = parse_protocol(protocol)
    if kind == FULL:
        return "every voxel is labeled: the baseline would return the labels it was given"
    if name == "interp" and kind == "scribble":
        return "slice interpolation needs whole labeled slices, not scribbles"
    if name == "interp" and kind in ("y", "x"):
        return f"slice interpolation runs along axis 0 (z) only, not along {kind}"
    return None


def validate_ground_truth(image: np.ndarray, truth: np.ndarray) -> int:
    """Check a ground-truth pair; returns the number of foreground classes ``K``."""
    shape = np.asarray(image).shape
    if truth.ndim != 3 or len(shape) < 3:
        raise ValueError(f"expected a 3D volume (z, y, x): the image has shape {shape}, the labels {truth.shape}")
    if truth.shape != shape[-3:]:
        raise ValueError(f"labels of shape {truth.shape} do not match image of shape {shape}")
    if truth.dtype.kind not in "ui":
        raise ValueError(f"labels must be integers (0 = background, 1..K), got dtype {truth.dtype}")
    k = int(truth.max())
    if k < 1:
        raise ValueError("ground-truth labels hold no foreground class")
    return k


#: The simulated users who follow the suggestions: ``suggest:K`` starts from ``z:1`` and paints K - 1 suggested
#: slices whole; ``suggest-scribble:K`` starts from ``scribble:1`` and paints only the uncertain region of each.
SUGGEST, SUGGEST_REGION = "suggest", "suggest-scribble"
_SUGGEST_START = {SUGGEST: "z:1", SUGGEST_REGION: "scribble:1"}


def suggest_count(protocol: str) -> int | None:
    """K of ``suggest:K`` or ``suggest-scribble:K`` (None for any other protocol)."""
    kind, _, count = str(protocol).strip().partition(":")
    if kind not in _SUGGEST_START:
        return None
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"protocol {protocol!r}: use {kind}:K with K >= 1 (e.g. {kind}:3)")
    return int(count)


def _plane(axis: int, index: int) -> tuple:
    """The ``(z, y, x)`` index of one whole plane normal to ``axis``."""
    plane: list = [slice(None)] * 3
    plane[axis] = index
    return tuple(plane)


def _axial_part(annotation: np.ndarray, protocol: str) -> np.ndarray:
    """The labels of the axial (z) slices of an ``ortho:K`` annotation; other protocols unchanged."""
    kind, k = parse_protocol(protocol)
    if kind != "ortho":
        return annotation
    return np.where(protocol_mask(annotation.shape, f"z:{k}"), annotation, 0).astype(annotation.dtype)


def _scores(truth: np.ndarray, pred: np.ndarray, k: int, unannotated: np.ndarray) -> dict[str, Any]:
    return {"all": evaluate_masks(truth, pred, k + 1), "unannotated": evaluate_masks(truth, pred, k + 1, unannotated)}


class _Clock:
    """Wall-clock seconds since :meth:`start`, less the time spent in :meth:`paused` (scoring, not the product)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._paused = 0.0

    def now(self) -> float:
        return time.perf_counter() - self._start - self._paused

    def pause_while(self, work: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return work()
        finally:
            self._paused += time.perf_counter() - t0


def estimate_fields(estimate: DiceEstimate | None) -> dict[str, Any]:
    """The expected Dice of the mask shown (:mod:`~.core.estimate`) as result fields."""
    if estimate is None:
        return {"estimated_dice": None, "estimated_dice_interval": None, "estimated_dice_per_class": None}
    return {"estimated_dice": estimate.dice, "estimated_dice_interval": list(estimate.interval),
            "estimated_dice_per_class": list(estimate.per_class)}


def curve_seconds(budget_seconds: float) -> list[float]:
    """The instants (seconds after the labels are in) at which the shown mask is scored: those of
    :data:`CURVE_SECONDS` before the budget, and the budget itself."""
    return sorted({float(t) for t in CURVE_SECONDS if t < budget_seconds} | {float(budget_seconds)})


def evaluate_volume(image: np.ndarray, truth: np.ndarray, *, spacing: Sequence[float] | None, protocol: str,
                    budget_seconds: float, config: SessionConfig = SessionConfig(), baselines: Sequence[str] = (),
                    progress: Callable[[str, float, dict[str, Any]], None] | None = None,
                    features_ready: bool = True) -> dict[str, Any]:
    """Label a protocol's voxels from ground truth, run the product's loop for a wall-clock budget, score what it shows.

    The loop is :meth:`.SegmentationSession.interactive`, as in the plugin: the first responder answers, the net
    trains, and the hand-over chooses the prediction shown. The Dice of the mask the prediction layer would show
    (labels merged in) is taken at :func:`curve_seconds` of wall-clock time after the labels are in; the time
    spent scoring is not counted, everything the user would wait for is.

    Parameters
    ----------
    image : np.ndarray
        ``(z, y, x)`` volume.
    truth : np.ndarray
        ``(z, y, x)`` ground truth, mask encoding (0 = background, 1..K).
    spacing : sequence of float, optional
        Voxel size ``(z, y, x)``.
    protocol : str
        ``z:K``, ``ortho:K``, ``scribble:K``, ``suggest:K`` or ``full`` (see :mod:`.protocols`).
        ``suggest:K`` is a user who follows the suggestions: one axial slice in the middle first, then at each
        ``budget / K`` of the time the slice suggested last (any orientation) painted whole from the ground
        truth, ``K`` slices in all (``painted`` records them); the baselines see the final labels.
        ``suggest-scribble:K`` starts from ``scribble:1`` and paints only the suggested slice's uncertain region
        (the bounding box of its uncertain voxels, :class:`~.core.guidance.SliceSuggestion`). Under ``full`` every
        voxel is labeled and the *raw* prediction shown is scored (the merged mask would copy the labels and
        score 1.0): its Dice over all voxels is the training-set Dice, the fully supervised bound.
    budget_seconds : float
        Wall-clock seconds after the labels are in.
    config : SessionConfig
        Settings of the session.
    baselines : sequence of {"rf", "interp"}
        Baselines to run on the same labeled voxels. One not defined for the protocol
        (:func:`baseline_applicability`) is recorded as ``{"applicable": False, "reason": ...}``.
    progress : callable, optional
        ``progress(stage, fraction, info)`` for progress bars.
    features_ready : bool
        Compute the first responder's features before the clock starts, as the plugin does from the moment
        the image is chosen (while the user paints); their time is reported as ``features_seconds``. False
        counts them in the budget.

    Returns
    -------
    dict
        JSON-ready results. ``dice_fg`` is the foreground Dice over all voxels of the mask shown at the end of
        the budget; ``dice_fg_net`` that of the net's latest whole-volume prediction (labels merged in);
        ``learner`` who was shown; ``curve`` the shown mask's Dice at each instant of :func:`curve_seconds`,
        beside the Dice of each learner's latest whole-volume prediction then (``dice_fg_net``,
        ``dice_fg_forest``; None before its first). ``estimated_dice`` (with ``_interval`` and ``_per_class``)
        is what the widget tells the user: the mask's expected Dice under its own probabilities
        (:mod:`~.core.estimate`), to compare with ``dice_fg``; ``held_back_dice`` is the shown learner's score on
        the held-back labels, which decides the hand-over (``held_back_scores`` for every learner).
    """
    k = validate_ground_truth(image, truth)
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; choose from {BASELINES}")
    if not (math.isfinite(budget_seconds) and budget_seconds > 0):  # NaN would never end the run
        raise ValueError(f"budget_seconds must be a finite number > 0, got {budget_seconds}")
    spacing = validate_spacing(spacing)
    suggested = suggest_count(protocol)
    regions_only = suggested is not None and protocol.strip().startswith(SUGGEST_REGION)
    start_protocol = _SUGGEST_START[SUGGEST_REGION if regions_only else SUGGEST] if suggested else protocol
    labeled = protocol_mask(truth.shape, start_protocol, truth)
    annotation = simulate_annotation(truth, start_protocol, labeled)
    full = not suggested and parse_protocol(protocol)[0] == FULL
    if full:  # the bound is the net's: a forest fitted on every voxel would only recite them
        config = replace(config, responder=replace(config.responder, enabled=False))
    session = SegmentationSession(image, num_classes=k, spacing=spacing, annotation=annotation, config=config)
    trainer = session.trainer
    features_seconds = None
    if features_ready:
        session.warm_up()
        features_seconds = session.responder.features.seconds

    def displayed(mask: np.ndarray) -> np.ndarray:
        return mask if full else np.where(labeled, truth, mask).astype(np.uint8)

    shown = ShownMask.empty(truth.shape)  # nothing shown yet: background everywhere (labels merged in)
    instants = curve_seconds(budget_seconds)
    curve: list[dict[str, Any]] = []
    clock = _Clock()

    def learner_dice(name: str) -> float | None:
        probabilities = session.display.latest(name)
        if probabilities is None or probabilities.shape[0] != k + 1:
            return None
        return evaluate_masks(truth, displayed(probabilities.argmax(0).astype(np.uint8)), k + 1)["dice_fg"]

    def score_until(now: float) -> None:
        while len(curve) < len(instants) and instants[len(curve)] <= now:
            t = instants[len(curve)]
            point = clock.pause_while(lambda t=t: {
                "seconds": t, "step": trainer.step, "learner": shown.learner,
                "dice_fg": evaluate_masks(truth, displayed(shown.labels), k + 1)["dice_fg"],
                **estimate_fields(shown.estimate),
                "held_back_dice": session.handover.scores.get(shown.learner) if shown.learner else None,
                "dice_fg_net": learner_dice("net"), "dice_fg_forest": learner_dice("forest")})
            curve.append(point)
            if progress is not None:
                progress("curve", t / budget_seconds, point)

    painted: list[dict[str, int]] = []  # suggest:K: the slices the simulated user painted, when
    guidance: Guidance | None = None
    events = session.interactive(should_stop=lambda: clock.now() >= budget_seconds)
    for event in events:
        now = clock.now()
        score_until(now)
        if now >= budget_seconds:  # what arrives after the budget was not on screen at its end
            break
        if isinstance(event, Guidance):
            guidance = event
        if (suggested and len(painted) < suggested - 1 and now >= budget_seconds * (len(painted) + 1) / suggested
                and guidance is not None and guidance.slices):
            best = guidance.slices[0]  # paint the suggested slice (or its uncertain region) from the ground truth
            plane = best.box.slices if regions_only else _plane(best.axis, best.index)
            session.add_labels(plane, mask_to_annotation(truth[plane]))
            labeled[plane] = True
            painted.append({"seconds": round(now, 1), "axis": best.axis, "index": best.index,
                            "voxels": int(np.prod(truth[plane].shape))})
            guidance = None
        if isinstance(event, Prediction):
            shown.update(event)
        elif progress is not None and isinstance(event, TrainStep):
            progress("train", min(clock.now() / budget_seconds, 1.0),
                     {"step": trainer.step, "loss": event.loss, "learner": shown.learner})
    events.close()
    score_until(float("inf"))
    wall = clock.now()
    pred = displayed(shown.labels)
    learner = shown.learner
    net = session.display.latest("net")
    net_scores = None if net is None else evaluate_masks(truth, displayed(net.argmax(0).astype(np.uint8)), k + 1)
    annotation = session.volume.labels.copy() if suggested else annotation  # the baselines see the final labels
    unannotated = ~labeled
    result: dict[str, Any] = {
        "protocol": protocol,
        **({"painted": painted} if suggested else {}),
        "device": str(trainer.device),
        "budget_seconds": budget_seconds,
        "seed": config.train.seed,
        "steps": trainer.step,
        "learner": learner,
        "held_back_scores": dict(session.handover.scores),
        **estimate_fields(shown.estimate),
        "held_back_dice": session.handover.scores.get(learner) if learner else None,
        "held_back_dice_interval": session.handover.intervals.get(learner) if learner else None,
        "features_seconds": None if features_seconds is None else round(features_seconds, 2),
        "train_seconds": round(trainer.elapsed, 2),
        "wall_seconds": round(wall, 2),
        "patch_size": list(trainer.patch_size),
        "annotated_fraction": float(1 - unannotated.mean()),
        "train_voxels_per_second": trainer.step * trainer.batch_size * float(np.prod(trainer.patch_size))
        / max(trainer.elapsed, 1e-9),
        "curve": curve,
        **_scores(truth, pred, k, unannotated),
    }
    result["dice_fg"] = result["all"]["dice_fg"]
    result["dice_fg_net"] = None if net_scores is None else net_scores["dice_fg"]
    result["miou_net"] = None if net_scores is None else net_scores["miou"]
    result["baselines"] = {}
    for name in baselines:
        if suggested:  # the suggested slices lie in any orientation: nothing to interpolate between along z
            reason = "slice interpolation runs along z; suggested slices lie in any orientation" \
                if name == "interp" else None
        else:
            reason = baseline_applicability(name, protocol)
        if reason is not None:
            result["baselines"][name] = {"applicable": False, "reason": reason}
            continue
        t0 = time.perf_counter()
        if name == "rf":
            from ..baselines.random_forest import random_forest_segment
            bpred = random_forest_segment(image, annotation, spacing, seed=config.train.seed)
        else:
            from ..baselines.interpolation import interpolate_slices
            bpred = interpolate_slices(_axial_part(annotation, protocol), axis=0)
            bpred[labeled] = truth[labeled]
        res = _scores(truth, bpred, k, unannotated)
        res["dice_fg"] = res["all"]["dice_fg"]
        res["seconds"] = round(time.perf_counter() - t0, 2)
        result["baselines"][name] = res
        if progress is not None:
            progress("baseline", 1.0, {"name": name, "dice_fg": res["dice_fg"]})
    return result
