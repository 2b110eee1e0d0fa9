"""What the benchmark scripts share: the volumes they run on, and step-clocked runs with variants of the parts.

Imported by the scripts in this folder (``python benchmarks/NAME.py`` puts the folder on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def load_volumes(files: Sequence[str], sample: bool,
                 tubes: bool = False) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    """``(name, image (z, y, x), labels (z, y, x), spacing (z, y, x))`` of the sample (first), each file and, with
    ``tubes``, the thin tubes of ``autocontext.thin_tubes`` (last)."""
    volumes = []
    if sample:
        from napari_sparseseg.sample_data import make_cells_volume

        v = make_cells_volume()
        volumes.append(("sample_cells", v.image, v.labels, tuple(v.spacing)))
    for f in files:
        with np.load(f) as d:
            volumes.append((f.rsplit("/", 1)[-1][:-4], d["image"], d["labels"],
                            tuple(float(s) for s in d["spacing"])))
    if tubes:
        from autocontext import thin_tubes  # autocontext imports this module

        volumes.append(("thin_tubes", *thin_tubes(0)))
    return volumes


def clock_in_steps(seconds_per_step: float) -> None:
    """Make every Trainer count ``seconds_per_step`` of training time per step (once per process)."""
    from napari_sparseseg.core import trainer as trainer_module

    step = trainer_module.Trainer.train_step
    step = getattr(step, "unclocked", step)

    def train_step(self, progress=None):
        event = step(self, progress)
        self.elapsed = self.step * seconds_per_step
        return event

    train_step.unclocked = step  # type: ignore[attr-defined]
    trainer_module.Trainer.train_step = train_step


def hardest_per_class(logits, target, weight, share: float = 0.1):
    """The hardest-voxel term (``loss.hardest_cross_entropy``) taken within each labeled class and averaged over
    the classes: no class can fill the hardest share alone. ``logits`` ``(B, C, Z, Y, X)``, ``target`` and
    ``weight`` ``(B, Z, Y, X)``."""
    import torch

    from napari_sparseseg.core.loss import hardest_cross_entropy

    present = torch.unique(target[weight > 0]).tolist()
    if not present:
        return logits.sum() * 0.0
    return torch.stack([hardest_cross_entropy(logits, target, weight * (target == c), share) for c in present]).mean()


def fade_out_hardest(start: float, end: float) -> None:
    """Make the hardest-voxel term's weight fall linearly to 0 as the running labeled error rate goes from ``start``
    to ``end`` (on top of its ramp in): where more of the labels are wrong than the hardest share holds, the term
    sees errors alone."""
    from napari_sparseseg.core.schedule import LossSchedule

    ramp_in = LossSchedule.hardest_at
    ramp_in = getattr(ramp_in, "unfaded", ramp_in)

    def hardest_at(self, step, fit_error_rate):
        weight = ramp_in(self, step, fit_error_rate)
        if weight and fit_error_rate is not None:
            weight *= min(max((end - fit_error_rate) / (end - start), 0.0), 1.0)
        return weight

    hardest_at.unfaded = ramp_in  # type: ignore[attr-defined]
    LossSchedule.hardest_at = hardest_at


def average_weights(decay: float, warm_up: float) -> None:
    """Make the weights that predictions use an exponential moving average of decay ``min(decay, (1 + step) /
    (warm_up + step))`` per step (the product's: ``weights.EMA_DECAY`` and ``weights.EMA_WARM_UP``,
    :func:`~napari_sparseseg.core.weights.ema_decay`): a larger ``warm_up`` follows the trained weights more closely
    in the first steps; the average then spans about ``(warm_up + step) / (warm_up - 1)`` steps until ``decay`` caps
    it."""
    import functools

    from napari_sparseseg.core import weights

    ema_decay = getattr(weights.ema_decay, "func", weights.ema_decay)
    weights.ema_decay = functools.partial(ema_decay, decay=decay, warm_up=warm_up)


def vary_parts(parts: dict[str, dict]) -> None:
    """Make every Trainer use the given variants of its parts: ``{"losses": {...}, "sampling": {...},
    "clean_tail": {...}, "fit_guard": {...}, "augment": {...}}``, each the keyword arguments of ``LossSchedule``,
    ``Sampling``, ``CleanTail``, ``FitGuard`` or ``augment.augment_batch`` (e.g. ``{"p_intensity": 0}``), and
    ``{"hardest": {"per_class": true}}``: the hardest-voxel term of each class apart (:func:`hardest_per_class`), or
    ``{"hardest": {"fade_out": [start, end]}}`` (:func:`fade_out_hardest`), and ``{"ema": {"decay": d, "warm_up":
    w}}``: the weights predictions use averaged over more or fewer steps (:func:`average_weights`)."""
    import functools

    from napari_sparseseg.core import augment, batches
    from napari_sparseseg.core import trainer as trainer_module
    from napari_sparseseg.core.clean_tail import CleanTail
    from napari_sparseseg.core.fit_guard import FitGuard
    from napari_sparseseg.core.sampler import Sampling
    from napari_sparseseg.core.schedule import LossSchedule

    kinds = {"losses": LossSchedule, "sampling": Sampling, "clean_tail": CleanTail, "fit_guard": FitGuard}
    unknown = set(parts) - set(kinds) - {"augment", "hardest", "ema"}
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; known: {sorted(kinds) + ['augment', 'ema', 'hardest']}")
    parts = dict(parts)
    if "augment" in parts:
        batches.augment_batch = functools.partial(augment.augment_batch, **parts.pop("augment"))
    hardest = parts.pop("hardest", {})
    if hardest.get("per_class"):
        trainer_module.hardest_cross_entropy = hardest_per_class
    if "fade_out" in hardest:
        fade_out_hardest(*hardest["fade_out"])
    if "ema" in parts:
        average_weights(**parts.pop("ema"))
    init = trainer_module.Trainer.__init__
    init = getattr(init, "unvaried", init)

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for name, values in parts.items():
            part = kinds[name](**values)
            if name == "sampling":
                self.batches.sampling = part
            else:
                setattr(self, name, part)

    __init__.unvaried = init  # type: ignore[attr-defined]
    trainer_module.Trainer.__init__ = __init__


def step_clocked_session(data: str, protocol: str, train: dict, threads: int, parts: dict | None = None):
    """A session on ``data`` labeled by ``protocol``, its trainer clocked at one second per step.

    ``train``: TrainConfig fields; ``parts``: variants of the training step's parts (:func:`vary_parts`).
    Returns the session, the ground truth and the class count ``K``; the CPU
    runs on ``threads`` threads (``mirroring.py``, ``stability.py``).
    """
    import torch

    from napari_sparseseg.core.config import SessionConfig
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.evaluation.protocols import protocol_mask, simulate_annotation

    torch.set_num_threads(threads)
    with np.load(data) as d:
        image, truth, spacing = d["image"], d["labels"], d["spacing"]
    k = int(truth.max())
    annotation = simulate_annotation(truth, protocol, protocol_mask(truth.shape, protocol, truth))
    config = SessionConfig.from_dict({"train": train, "device": "cpu"})
    clock_in_steps(1.0)
    vary_parts(parts or {})
    session = SegmentationSession(image, num_classes=k, spacing=spacing, annotation=annotation, config=config)
    return session, truth, k


def labeled_runs(image: np.ndarray, truth: np.ndarray, spacing, protocols: Sequence[str], seeds: Sequence[int]):
    """For each protocol and seed: ``(protocol, seed, annotation, volume, features)``, the annotation simulated from
    ``truth`` (annotation encoding), a fresh ``AnnotatedVolume`` holding it, and the image's filter bank (computed
    once for all runs) for a ``FirstResponder``."""
    from napari_sparseseg.core.annotation import AnnotatedVolume
    from napari_sparseseg.core.feature_stack import FeatureStack
    from napari_sparseseg.evaluation.protocols import simulate_annotation

    features = FeatureStack(image, spacing)
    features.get()
    k = int(truth.max())
    for protocol in protocols:
        annotation = simulate_annotation(truth, protocol)
        for seed in seeds:
            yield protocol, seed, annotation, AnnotatedVolume(image, num_classes=k, spacing=spacing,
                                                              annotation=annotation), features
