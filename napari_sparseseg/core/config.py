"""Frozen, validated configuration for the model, training and inference.

Every field has a default that works across modalities (CT in Hounsfield
units, MRI, fluorescence microscopy) without tuning; the CLI and the widget
only override what the user changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
PrefetchMode = Literal["auto", "always", "never"]
ModelSize = Literal["small", "medium", "large"]

#: Base channel count per model size preset.
MODEL_SIZE_CHANNELS: dict[str, int] = {"small": 16, "medium": 24, "large": 32}


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the 3D U-Net.

    Attributes
    ----------
    in_channels : int
        Image channels fed to the net (after normalization views are added,
        see ``TrainConfig.intensity_views``).
    num_classes : int
        Output channels: background plus foreground classes (``K + 1``).
    base_channels : int
        Feature maps at full resolution; doubled at each level, capped at
        ``max_channels``.
    depth : int
        Number of resolution levels (``depth - 1`` downsamplings).
    max_channels : int
        Upper bound on feature maps at any level.
    anisotropy_threshold : float
        A level pools along z only when the current z step is at most this
        multiple of the in-plane step (nnU-Net's rule); otherwise z is kept and
        kernels are ``1 x 3 x 3``.
    """

    in_channels: int = 2
    num_classes: int = 2
    base_channels: int = 16
    depth: int = 4
    max_channels: int = 256
    anisotropy_threshold: float = 2.0

    def __post_init__(self) -> None:
        _check(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        _check(self.num_classes >= 2, f"num_classes must be >= 2 (background + 1), got {self.num_classes}")
        _check(self.base_channels >= 4, f"base_channels must be >= 4, got {self.base_channels}")
        _check(2 <= self.depth <= 6, f"depth must be in 2..6, got {self.depth}")
        _check(self.max_channels >= self.base_channels,
               f"max_channels ({self.max_channels}) < base_channels ({self.base_channels})")
        _check(self.anisotropy_threshold >= 1.0,
               f"anisotropy_threshold must be >= 1, got {self.anisotropy_threshold}")


@dataclass(frozen=True)
class TrainConfig:
    """How the trainer samples, augments and optimises.

    Attributes
    ----------
    patch_voxels : int
        Target voxel count of one training patch; the patch shape is derived
        from it, the spacing and the volume shape (isotropic physical field of
        view, clipped to the volume).
    batch_size : int
        Patches per step.
    learning_rate : float
        Peak AdamW learning rate.
    weight_decay : float
        AdamW weight decay.
    warmup_steps : int
        Linear learning-rate warm-up.
    lr_floor : float
        In a budgeted run the rate decays (poly 0.9) towards
        ``lr_floor * learning_rate`` at the end of the budget.
    foreground_share : float
        Share of patches centred on a voxel of a randomly chosen labeled
        foreground class (the rest are centred on any labeled voxel).
    random_share : float
        Share of patches placed anywhere (context for the net; they only
        train on labeled voxels they happen to contain).
    error_share : float
        Share of patches centred on a labeled voxel that the net got wrong in
        one of its recent training steps (hard-example sampling): a region
        whose labels the net keeps contradicting, such as a correction painted
        over a false positive, is revisited until it is learned. 0 turns it off.
        Off by default: at 0.2 it changed nothing measurable on the two real
        volumes (800 step-clocked CPU steps: spleen CT z:5 0.975 / 0.975
        against 0.976 / 0.973 over two seeds, reaching 0.93 later; nuclei z:5
        0.938 against 0.939; ``BENCHMARKS.md``, "Why the defaults are what they are"), whose training
        patches already span two thirds of the volume on each axis, so a
        re-centred patch sees much the same voxels. It is meant for volumes
        many patches wide.
    centre_margin : float
        A sampled patch centre lies anywhere in the patch but this fraction
        of its size from its edges; patches may reach past the volume
        (mirrored image, zero weight), so labeled slices land on every row of
        the patch and the net cannot learn *where* labels are.
    class_balance_power : float
        Class weight is ``(n_labeled / n_class) ** power``, normalised so the
        mean over present classes is 1: ``0`` disables balancing, ``0.5`` (the
        default) lowers the weight of the dominant background as in the
        paper without letting rare classes explode.
    correction_weight : float
        Source factor of voxels the user corrected on the prediction.
    dice_weight : float
        Weight of a soft Dice term over labeled voxels added to the weighted
        cross-entropy (0 disables it).
    smoothness : float
        Weight of a contrast-sensitive Potts term over every voxel of the
        patch (:func:`~.loss.contrast_smoothness`), scaled by one minus the
        labels' plane coverage, so it acts on brush strokes (whose object
        boundaries nobody labeled) and not at all on whole slices (their
        training is unchanged), and ramped in over the first 200 steps
        (``trainer.SMOOTHNESS_RAMP_STEPS``). On nuclei strokes the net otherwise grows a
        rim past every nucleus (all its false positives lie within two voxels
        of a nucleus) whose width drifts from probe to probe; the term puts
        the boundary on the image's edge. Scribble rows, 300 s CPU
        (``BENCHMARKS.md``, "Why the defaults are what they are"): nuclei 0.843 -> 0.856-0.880,
        spleen CT 0.868 -> 0.908-0.924 (forest 0.856 and 0.837). Step-clocked
        nuclei strokes, 1,000 steps: 0.820 at 0, 0.823 at 1, 0.869 at 10.
        0 turns it off.
    hardest_weight : float
        Weight of the mean cross-entropy of the hardest tenth of the labeled
        voxels of each batch (:func:`~.loss.hardest_cross_entropy`, nnU-Net's
        TopK loss), while the net contradicts many of its own labels: from step
        200 on, it ramps in as the running share of misclassified labeled
        voxels goes from 2 % to 4 % (``Trainer.hardest_weight``).
        On the spleen CT the kidney is painted background on only a few
        hundred voxels of the ortho:1 slices and the net calls it spleen
        (5-9 % of the labels contradicted); the nuclei nets contradict 0.6-1.9 %
        after step 200, at boundary voxels that the term would only overfit.
        300 s CPU runs (``BENCHMARKS.md``, "Why the defaults are what they are"): spleen ortho:1
        0.898 -> 0.949 (forest 0.925), z:5 0.975, z:3 0.969. 0 turns it off.
    augment : bool
        Flips, in-plane 90 degree rotations, scaling, and the intensity/gamma
        jitter of ``intensity_share`` of the patches.
    spatial_share : float
        Share of patches that get the rotation/scaling (and elastic) warp.
    intensity_share : float
        Share of patches that get the brightness, contrast, gamma and noise
        jitter. Training and prediction see the same volume, so the jitter
        was tried off (0) earlier (``BENCHMARKS.md``, "Why the defaults are what they are"): at
        400-600 steps it gained on nuclei (z:3 +0.010, z:5 +0.005, scribbles
        +0.020), but in the 300 s CPU runs it did not (nuclei z:3 0.927 and
        z:5 0.935 against 0.929 and 0.934) and CT z:3 fell to 0.946 against
        0.964 +- 0.002. So the default stays 1.
    elastic : float
        Std of the elastic displacement in patch-grid units (2 spans the
        patch; 0 disables it).
    clean_tail : float
        Largest share of a budgeted run (``evaluate``, ``train``: a run whose
        learning rate decays over a known budget), at its end, trained on
        patches without any augmentation, once the augmented steps have
        settled. The share is scaled by the labels' plane coverage
        (``Trainer.clean_tail``: whole slices get all of it, brush strokes
        almost none, since sparse labels overfit without augmentation).
        Open-ended (interactive) training always augments. 0 turns it off.
    clean_tail_drift : float
        The clean tail's gate: it starts only once the prediction has
        settled, i.e. the EMA predictions of a probe patch 100 steps apart
        differ by less than this many layers of their surface
        (:func:`~.convergence.surface_drift`). Until then the run keeps
        augmenting, however little budget is left. 0 removes the gate (the
        tail then starts at its share of the budget whatever the state).
    fit_guard : float
        End-of-budget guard of a budgeted run: from half the budget on, every
        50 steps the prediction weights (the EMA; the raw weights when
        ``ema_decay`` is 0) predict the probe patch around the labeled voxels
        and the best-fitting weights (the smallest share of labeled voxels
        misclassified) are kept; if the final weights misclassify a share
        more than ``fit_guard`` times the best one (taken as at least 0.1 %),
        the run ends on the kept weights instead. A run can end inside a
        transient state that contradicts its own labels: on the spleen CT the
        neighbouring kidney flips to spleen, even on the labeled slice through
        it, for 25-100 steps at a time, and the labeled error rate tracks the
        Dice there (Spearman -0.99; ``BENCHMARKS.md``, "Why the defaults are what they are"). 0 turns
        it off; open-ended (interactive) training is never guarded.
    intensity_views : tuple of {"linear", "equalized"}
        Normalised views of each image channel fed to the net: robust
        percentile scaling, and a rank (histogram-equalized) transform that
        spreads densely populated intensity ranges such as soft tissue in CT.
    ema_decay : float
        Predictions use an exponential moving average of the weights with
        this decay per step (0 disables it and predicts with the raw weights).
    seed : int
        Seed of every random choice; CPU training is reproducible.
    amp : bool
        bf16 autocast where it is fast: CUDA, and CPUs with AMX matrix units
        (``core.device.fast_bf16``); ignored elsewhere.
    compile : bool
        ``torch.compile`` the model on CUDA.
    prefetch : {"auto", "always", "never"}
        Build the next batch (sampling, cutting and augmenting: the host part
        of a step) in a worker thread while the current step computes
        (:class:`~.prefetch.OneAhead`). A batch built ahead is thrown away when
        the labels changed meanwhile, so an edit still reaches the next step,
        and seeded training trains on the same batches either way. ``"auto"``
        turns it on for CUDA only (``benchmarks/prefetch.py``,
        ``BENCHMARKS.md``, "Speed"): on an H200 a step of the
        default model took 57.6 ms with the batch built inline and 31.0 ms
        with it built ahead (1.86x, spleen CT; 2.07x on the synthetic
        sample), while on a CPU the host part is too small to matter (14 ms
        of a 573 ms step on one core of the 2-core machine: 0.99x). Off while
        ``error_share`` > 0.
    """

    patch_voxels: int = 64 * 64 * 64
    batch_size: int = 1
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    lr_floor: float = 0.3
    foreground_share: float = 0.5
    random_share: float = 0.1
    error_share: float = 0.0
    centre_margin: float = 0.25
    class_balance_power: float = 0.5
    correction_weight: float = 2.0
    dice_weight: float = 1.0
    smoothness: float = 10.0
    hardest_weight: float = 1.0
    augment: bool = True
    spatial_share: float = 0.3
    intensity_share: float = 1.0
    elastic: float = 0.0
    clean_tail: float = 0.5
    clean_tail_drift: float = 0.15
    fit_guard: float = 1.25
    intensity_views: tuple[str, ...] = ("linear", "equalized")
    ema_decay: float = 0.98
    seed: int = 0
    amp: bool = True
    compile: bool = False
    prefetch: PrefetchMode = "auto"

    def __post_init__(self) -> None:
        _check(self.prefetch in ("auto", "always", "never"),
               f"prefetch must be one of auto, always, never; got {self.prefetch!r}")
        _check(self.patch_voxels >= 8**3, f"patch_voxels must be >= 512, got {self.patch_voxels}")
        for name in ("spatial_share", "intensity_share", "clean_tail"):
            _check(0 <= getattr(self, name) <= 1, f"{name} must be in [0, 1], got {getattr(self, name)}")
        _check(self.elastic >= 0, f"elastic must be >= 0, got {self.elastic}")
        _check(self.fit_guard == 0 or self.fit_guard >= 1,
               f"fit_guard must be 0 (off) or >= 1, got {self.fit_guard}")
        _check(self.clean_tail_drift >= 0, f"clean_tail_drift must be >= 0, got {self.clean_tail_drift}")
        _check(0 < self.lr_floor <= 1, f"lr_floor must be in (0, 1], got {self.lr_floor}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0,
               f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        _check(0 <= self.class_balance_power <= 1,
               f"class_balance_power must be in [0, 1] (0: no class balance, 1: inverse frequency), got "
               f"{self.class_balance_power}")
        _check(0 <= self.foreground_share <= 1, f"foreground_share must be in [0, 1], got {self.foreground_share}")
        _check(0 <= self.random_share <= 1, f"random_share must be in [0, 1], got {self.random_share}")
        _check(0 <= self.centre_margin <= 0.5, f"centre_margin must be in [0, 0.5], got {self.centre_margin}")
        _check(0 <= self.error_share <= 1, f"error_share must be in [0, 1], got {self.error_share}")
        _check(self.foreground_share + self.random_share + self.error_share <= 1,
               "foreground_share + random_share + error_share must be <= 1")
        _check(self.correction_weight > 0, f"correction_weight must be > 0, got {self.correction_weight}")
        _check(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        _check(self.dice_weight >= 0, f"dice_weight must be >= 0, got {self.dice_weight}")
        _check(self.smoothness >= 0, f"smoothness must be >= 0, got {self.smoothness}")
        _check(self.hardest_weight >= 0, f"hardest_weight must be >= 0, got {self.hardest_weight}")
        _check(len(self.intensity_views) >= 1 and set(self.intensity_views) <= {"linear", "equalized"},
               f"intensity_views must be a non-empty subset of ('linear', 'equalized'), got {self.intensity_views}")


@dataclass(frozen=True)
class InferenceConfig:
    """Sliding-window prediction.

    Attributes
    ----------
    overlap : float
        Fractional overlap of neighbouring windows in the streamed
        (interactive) predictions. The windows cover the volume
        ``(1 / (1 - overlap)) ** 3`` times: 2.4x at 0.25 against 8x at 0.5,
        so a refresh costs a third of what it would at 0.5.
    final_overlap : float
        The same for the final dense segmentation (``segment()``: export,
        ``evaluate``, ``predict``), where nnU-Net's 0.5 buys a smoother blend.
    sigma_scale : float
        Gaussian importance map sigma as a fraction of the window size.
    batch_size : int
        Windows per forward pass on CPU/MPS (more only adds memory there).
    gpu_batch_size : int
        Windows per forward pass on CUDA, where small batches leave the GPU
        idle: a 256x512x512 refresh on an H100 took 2.1 s at 2 and 1.4 s at 8
        (``benchmarks/speed.py --refresh``). An out-of-memory halves it.
    mirror_axes : tuple of int
        Spatial axes (0 = z, 1 = y, 2 = x) flipped for test-time augmentation
        of the streamed (interactive) predictions; empty for none (fastest).
    final_mirror_axes : tuple of int
        The same for the final dense segmentation (``segment()``: export,
        ``evaluate``, ``predict``), where a few seconds more buy a smoother
        mask (nnU-Net mirrors by default too).
    prior_correction : float
        ``tau``: prediction divides the probability of class ``c`` by
        ``w_c ** tau``, where ``w_c`` is the class-balance weight training
        gave it (``TrainConfig.class_balance_power``), so rare classes the
        loss up-weighted are over-segmented less. 0 keeps the tilted
        posterior, 1 undoes it fully (the prior correction of Saerens et al.
        2002, or logit adjustment). ``benchmarks/prior_correction.py`` scored
        one model per row (both real volumes, seven protocols, H100, 800
        steps), against tau 0: tau 0.25 gained on 14 of 14 rows (mean +0.003
        Dice, at most +0.013), 0.5 on 13 (mean +0.005, worst -0.001), 1 on 9
        (worst -0.003). On the synthetic sample, whose second class covers
        0.2 % of the voxels, 0.25 cost 0.001 (400 steps) and 0.5 cost 0.003;
        on the regression guard's 8-channel net after 120 steps 0.25 cost
        0.011 and 0.5 cost 0.032. Hence the cautious 0.25. The offset is
        stored in the model (``UNet3D.decision_offset``), so a saved model
        applies it to images without labels. This ``tau`` is for labels
        that fill the planes they lie in (whole slices in any orientation);
        see ``sparse_prior_correction``.
    sparse_prior_correction : float
        ``tau`` for brush strokes that leave most of their slice unlabeled.
        Strokes down the middle of objects and in far background leave the
        object boundaries unlabeled, so there the class weights alone decide
        where a boundary falls, and the net grows objects past the strokes.
        ``tau`` moves from this value to ``prior_correction`` as the labels'
        plane coverage (``AnnotatedVolume.plane_coverage``: 1 for whole
        slices, about 0.1 for strokes) goes from 0 to 1. On the scribble
        protocol (``BENCHMARKS.md``, "Why the defaults are what they are") tau 1 against 0.25
        lifted nuclei by 0.036 (CPU, 200 steps) and 0.046 (H100, 800 steps),
        and cost CT 0.001 and 0.003.
    edge_margin : tuple of float
        Per axis ``(z, y, x)``: the window grid reaches this fraction of a
        window past each edge of the volume (mirrored content), so the edge
        slices are predicted from a window's inner rows with context on both
        sides, as training patches see them, rather than from its outermost
        row next to zero padding. ``benchmarks/edge_margin.py`` on the two
        real volumes, one annotated axial slice, 100 steps: padding z lifted
        Dice from 0.26 to 0.92 (nuclei) and 0.788 to 0.791 (CT); padding in
        plane as well scored 0.915 and 0.737: hence z only by default
        (``BENCHMARKS.md``). ``(0, 0, 0)`` keeps every window inside the volume.
    """

    overlap: float = 0.25
    final_overlap: float = 0.5
    sigma_scale: float = 0.125
    batch_size: int = 2
    gpu_batch_size: int = 8
    mirror_axes: tuple[int, ...] = ()
    final_mirror_axes: tuple[int, ...] = (0, 1, 2)
    prior_correction: float = 0.25
    sparse_prior_correction: float = 1.0
    edge_margin: tuple[float, float, float] = (0.25, 0.0, 0.0)

    def __post_init__(self) -> None:
        _check(len(self.edge_margin) == 3 and all(0 <= m <= 0.5 for m in self.edge_margin),
               f"edge_margin must be three fractions (z, y, x) in [0, 0.5], got {self.edge_margin}")
        for name in ("prior_correction", "sparse_prior_correction"):
            value = getattr(self, name)
            _check(0 <= value <= 2, f"{name} must be in [0, 2], got {value}")
        for name in ("overlap", "final_overlap"):
            value = getattr(self, name)
            _check(0 <= value < 1, f"{name} must be in [0, 1), got {value}")
        _check(self.sigma_scale > 0, f"sigma_scale must be > 0, got {self.sigma_scale}")
        for name in ("batch_size", "gpu_batch_size"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mirror_axes", "final_mirror_axes"):
            axes = getattr(self, name)
            _check(set(axes) <= {0, 1, 2}, f"{name} must be within (0, 1, 2), got {axes}")

    def batch_for(self, device_type: str) -> int:
        """Windows per forward pass on a device of this type (``"cuda"``, ``"cpu"``, ``"mps"``)."""
        return self.gpu_batch_size if device_type == "cuda" else self.batch_size

    def correction_for(self, plane_coverage: float) -> float:
        """The prior correction ``tau`` for labels of this plane coverage (``[0, 1]``).

        Linear from ``sparse_prior_correction`` (coverage 0, strokes) to
        ``prior_correction`` (coverage 1, whole slices).
        """
        c = min(max(float(plane_coverage), 0.0), 1.0)
        return c * self.prior_correction + (1.0 - c) * self.sparse_prior_correction

    def final(self) -> InferenceConfig:
        """This config with the final segmentation's overlap and mirroring in place of the streamed ones."""
        return replace(self, overlap=self.final_overlap, mirror_axes=self.final_mirror_axes)


@dataclass(frozen=True)
class ResponderConfig:
    """The fast first responder and the hand-over to the net (see ``core/first_responder.py``, ``core/handover.py``).

    Attributes
    ----------
    enabled : bool
        Show a pixel classifier's prediction from the first stroke until the net scores better.
    trees : int
        Trees of the extremely randomised forest.
    max_samples : int
        At most this many labeled voxels (a class-stratified subsample) fit it.
    held_back : float
        Share of the labels, in spatial blocks, that no learner trains on: the learners are scored on them
        to decide which prediction is shown. 0 turns the scoring (and with it the hand-over) off.
    margin : float
        A learner replaces the one shown only when it scores this much higher on the held-back labels (Dice),
        so the display does not flicker between two learners that are level.
    distill : float
        Weight of the first responder's confident answers as targets for the net on unlabeled voxels (a label
        weighs about 1); it fades to 0 as the net catches up on the held-back labels (``core/distill.py``).
        0 turns it off.
    max_feature_bytes : int
        Largest feature stack (float32, 46 filters per image channel) kept in memory; a larger volume is
        predicted by the net alone.
    """

    enabled: bool = True
    trees: int = 32
    max_samples: int = 30_000
    held_back: float = 0.125
    margin: float = 0.005
    distill: float = 0.5
    max_feature_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        _check(isinstance(self.enabled, bool), f"enabled must be a bool, got {self.enabled!r}")
        for name in ("trees", "max_samples", "max_feature_bytes"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        _check(0 <= self.held_back <= 0.5, f"held_back must be in [0, 0.5], got {self.held_back}")
        _check(0 <= self.margin < 1, f"margin must be in [0, 1), got {self.margin}")
        _check(0 <= self.distill <= 10, f"distill must be in [0, 10], got {self.distill}")


@dataclass(frozen=True)
class SessionConfig:
    """Everything a session needs, in one serialisable object."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    responder: ResponderConfig = field(default_factory=ResponderConfig)
    device: DeviceName = "auto"

    def __post_init__(self) -> None:
        _check(self.device in ("auto", "cpu", "cuda", "mps"),
               f"device must be one of auto, cpu, cuda, mps; got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        def build(kind: type, values: dict[str, Any]) -> Any:
            known = {f.name for f in fields(kind)}
            unknown = set(values) - known
            _check(not unknown, f"unknown {kind.__name__} keys: {sorted(unknown)}")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        return cls(
            model=build(ModelConfig, data.get("model", {})),
            train=build(TrainConfig, data.get("train", {})),
            inference=build(InferenceConfig, data.get("inference", {})),
            responder=build(ResponderConfig, data.get("responder", {})),
            device=data.get("device", "auto"),
        )


def preset(size: ModelSize = "small", **overrides: Any) -> ModelConfig:
    """Model config for a size preset (``small`` is the CPU default)."""
    _check(size in MODEL_SIZE_CHANNELS, f"model size must be one of {list(MODEL_SIZE_CHANNELS)}, got {size!r}")
    return replace(ModelConfig(base_channels=MODEL_SIZE_CHANNELS[size]), **overrides)
