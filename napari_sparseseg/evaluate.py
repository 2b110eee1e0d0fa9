"""Simulated-user evaluation: label slices from ground truth, train, score.

Used by ``napari-sparseseg evaluate`` and the benchmarks. Qt-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .core.config import SessionConfig
from .core.metrics import evaluate_masks
from .core.protocols import FULL, parse_protocol, protocol_mask, simulate_annotation
from .core.session import SegmentationSession
from .core.volume import validate_spacing

#: Fractions of the budget at which the Dice-versus-time curve is sampled.
CURVE_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)
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
    if truth.shape != np.asarray(image).shape[-3:] or truth.ndim != 3:
        raise ValueError(f"labels of shape {truth.shape} do not match image of shape {np.asarray(image).shape}")
    if truth.dtype.kind not in "ui":
        raise ValueError(f"labels must be integers (0 = background, 1..K), got dtype {truth.dtype}")
    k = int(truth.max())
    if k < 1:
        raise ValueError("ground-truth labels hold no foreground class")
    return k


def _axial_part(annotation: np.ndarray, protocol: str) -> np.ndarray:
    """The labels of the axial (z) slices of an ``ortho:K`` annotation; other protocols unchanged."""
    kind, k = parse_protocol(protocol)
    if kind != "ortho":
        return annotation
    return np.where(protocol_mask(annotation.shape, f"z:{k}"), annotation, 0).astype(annotation.dtype)


def _scores(truth: np.ndarray, pred: np.ndarray, k: int, unannotated: np.ndarray) -> dict[str, Any]:
    return {"all": evaluate_masks(truth, pred, k + 1), "unannotated": evaluate_masks(truth, pred, k + 1, unannotated)}


def evaluate_volume(image: np.ndarray, truth: np.ndarray, *, spacing: Sequence[float] | None, protocol: str,
                    budget_seconds: float, config: SessionConfig = SessionConfig(), baselines: Sequence[str] = (),
                    progress: Callable[[str, float, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train on the slices a protocol labels and score the dense result.

    Parameters
    ----------
    image : np.ndarray
        ``(z, y, x)`` volume.
    truth : np.ndarray
        ``(z, y, x)`` ground truth, mask encoding (0 = background, 1..K).
    spacing : sequence of float, optional
        Voxel size ``(z, y, x)``.
    protocol : str
        ``z:K``, ``ortho:K``, ``scribble:K`` or ``full`` (see :mod:`~.core.protocols`). Under ``full`` every
        voxel is labeled and the *raw* network prediction is scored (the usual merged mask would copy the
        labels and score 1.0): Dice over all voxels is then the training-set Dice, the fully supervised bound.
    budget_seconds : float
        Training wall-clock budget; evaluation for the curve is not counted.
    config : SessionConfig
        Settings of the session.
    baselines : sequence of {"rf", "interp"}
        Baselines to run on the same labeled voxels. One not defined for the protocol
        (:func:`baseline_applicability`) is recorded as ``{"applicable": False, "reason": ...}``.
    progress : callable, optional
        ``progress(stage, fraction, info)`` for progress bars.

    Returns
    -------
    dict
        JSON-ready results; ``dice_fg`` is the headline foreground Dice over all voxels.
    """
    k = validate_ground_truth(image, truth)
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; choose from {BASELINES}")
    if budget_seconds <= 0:
        raise ValueError(f"budget_seconds must be > 0, got {budget_seconds}")
    spacing = validate_spacing(spacing)
    labeled = protocol_mask(truth.shape, protocol, truth)
    annotation = simulate_annotation(truth, protocol, labeled)
    unannotated = ~labeled
    full = parse_protocol(protocol)[0] == FULL
    session = SegmentationSession(image, num_classes=k, spacing=spacing, annotation=annotation, config=config)
    trainer = session.trainer
    curve = []
    wall0 = time.perf_counter()
    for fraction in CURVE_FRACTIONS:
        target = budget_seconds * fraction
        for event in session.train(max_seconds=max(target - trainer.elapsed, 0.0), decay_until=budget_seconds):
            if progress is not None:
                progress("train", min(trainer.elapsed / budget_seconds, 1.0),
                         {"step": trainer.step, "loss": getattr(event, "loss", float("nan"))})
        t_eval = time.perf_counter()
        pred = session.trainer.predict(final=True).labels if full else session.segment()
        point = {"seconds": round(trainer.elapsed, 2), "step": trainer.step,
                 "dice_fg": evaluate_masks(truth, pred, k + 1)["dice_fg"],
                 "eval_seconds": round(time.perf_counter() - t_eval, 2)}
        curve.append(point)
        if progress is not None:
            progress("curve", fraction, point)
    result: dict[str, Any] = {
        "protocol": protocol,
        "device": str(trainer.device),
        "budget_seconds": budget_seconds,
        "seed": config.train.seed,
        "steps": trainer.step,
        "clean_tail_from_step": trainer.clean_since,
        "fit_guard_kept_step": trainer.fit_restored_from,
        "train_seconds": round(trainer.elapsed, 2),
        "wall_seconds": round(time.perf_counter() - wall0, 2),
        "patch_size": list(trainer.patch_size),
        "annotated_fraction": float(1 - unannotated.mean()),
        "train_voxels_per_second": trainer.step * trainer.batch_size * float(np.prod(trainer.patch_size))
        / max(trainer.elapsed, 1e-9),
        "curve": curve,
        **_scores(truth, pred, k, unannotated),
    }
    result["dice_fg"] = result["all"]["dice_fg"]
    result["baselines"] = {}
    for name in baselines:
        reason = baseline_applicability(name, protocol)
        if reason is not None:
            result["baselines"][name] = {"applicable": False, "reason": reason}
            continue
        t0 = time.perf_counter()
        if name == "rf":
            from .baselines.random_forest import random_forest_segment
            bpred = random_forest_segment(image, annotation, spacing, seed=config.train.seed)
        else:
            from .baselines.interpolation import interpolate_slices
            bpred = interpolate_slices(_axial_part(annotation, protocol), axis=0)
            bpred[labeled] = truth[labeled]
        res = _scores(truth, bpred, k, unannotated)
        res["dice_fg"] = res["all"]["dice_fg"]
        res["seconds"] = round(time.perf_counter() - t0, 2)
        result["baselines"][name] = res
        if progress is not None:
            progress("baseline", 1.0, {"name": name, "dice_fg": res["dice_fg"]})
    return result
