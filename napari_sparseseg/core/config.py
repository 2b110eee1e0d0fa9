"""Frozen, validated configuration for the model, training and inference.

Every field has a default that works across modalities (CT in Hounsfield
units, MRI, fluorescence microscopy) without tuning; the CLI and the widget
only override what the user changes. Bounds on what settings may ask for: :mod:`.limits`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from .limits import MAX_BATCH, MAX_FEATURE_MAPS, MAX_PATCH_VOXELS, MAX_TREES, MAX_WINDOWS
from .typed_fields import check_fields, is_number

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
PrefetchMode = Literal["auto", "always", "never"]
ModelSize = Literal["small", "medium", "large"]

#: Base channel count per model size preset.
MODEL_SIZE_CHANNELS: dict[str, int] = {"small": 16, "medium": 24, "large": 32}


def require(cond: bool, msg: str) -> None:
    """Raise ``ValueError(msg)`` unless ``cond``: the validation of every config."""
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
        Upper bound on feature maps at any level, at most :data:`~.limits.MAX_FEATURE_MAPS`.
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
        require(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        require(self.num_classes >= 2, f"num_classes must be >= 2 (background + 1), got {self.num_classes}")
        require(self.base_channels >= 4, f"base_channels must be >= 4, got {self.base_channels}")
        require(2 <= self.depth <= 6, f"depth must be in 2..6, got {self.depth}")
        require(self.base_channels <= self.max_channels <= MAX_FEATURE_MAPS,
                f"max_channels must be in [base_channels, {MAX_FEATURE_MAPS}] (base_channels {self.base_channels}), "
                f"got {self.max_channels}")
        require(self.anisotropy_threshold >= 1.0,
               f"anisotropy_threshold must be >= 1, got {self.anisotropy_threshold}")


@dataclass(frozen=True)
class TrainConfig:
    """What a user or a benchmark chooses about training (the reasons for the defaults: ``docs/decisions.md``).

    The parts of a training step keep their own settings beside their code
    (:class:`~.sampler.Sampling`, :class:`~.schedule.LossSchedule`,
    :class:`~.clean_tail.CleanTail`, :class:`~.fit_guard.FitGuard`).

    Attributes
    ----------
    patch_voxels : int
        Target voxel count of one training patch; its shape covers a roughly
        isotropic physical field of view, clipped to the volume.
    batch_size : int
        Patches per step (capped by the free memory: the GPU's, or the machine's on the CPU).
    learning_rate : float
        Peak AdamW learning rate.
    warmup_steps : int
        Steps of the linear learning-rate warm-up.
    class_balance_power : float
        Class weight ``(n_labeled / n_class) ** power``, normalised to mean 1
        over the labeled classes: 0 disables balancing, 1 is inverse frequency.
    correction_weight : float
        Weight of voxels the user corrected on the prediction, relative to
        other labels.
    augment : bool
        Flips, in-plane quarter turns, rotation and scaling, and intensity
        jitter of the training patches.
    intensity_views : tuple of {"linear", "equalized"}
        Normalised views of each image channel fed to the net: robust
        percentile scaling, and a rank (histogram-equalized) transform that
        spreads densely populated intensity ranges such as soft tissue in CT.
    seed : int
        Seed of every random choice; CPU training is reproducible (where the same patch and batch fit the memory).
    amp : bool
        bf16 autocast where it is fast: CUDA, and CPUs with AMX matrix units
        (``core.device.fast_bf16``); ignored elsewhere.
    compile : bool
        ``torch.compile`` the model on CUDA.
    prefetch : {"auto", "always", "never"}
        Build the next batch in a worker thread while the current step
        computes; ``"auto"`` does so on CUDA only, where it pays.
    """

    patch_voxels: int = 64 * 64 * 64
    batch_size: int = 1
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    class_balance_power: float = 0.5
    correction_weight: float = 2.0
    augment: bool = True
    intensity_views: tuple[str, ...] = ("linear", "equalized")
    seed: int = 0
    amp: bool = True
    compile: bool = False
    prefetch: PrefetchMode = "auto"

    def __post_init__(self) -> None:
        require(self.prefetch in ("auto", "always", "never"),
               f"prefetch must be one of auto, always, never; got {self.prefetch!r}")
        require(isinstance(self.patch_voxels, int) and 8**3 <= self.patch_voxels <= MAX_PATCH_VOXELS,
                f"patch_voxels must be an integer in [512, {MAX_PATCH_VOXELS}], got {self.patch_voxels!r}")
        require(isinstance(self.batch_size, int) and 1 <= self.batch_size <= MAX_BATCH,
                f"batch_size must be an integer in [1, {MAX_BATCH}], got {self.batch_size!r}")
        require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        require(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0,
               f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        require(0 <= self.class_balance_power <= 1,
               f"class_balance_power must be in [0, 1] (0: no class balance, 1: inverse frequency), got "
               f"{self.class_balance_power}")
        require(self.correction_weight > 0, f"correction_weight must be > 0, got {self.correction_weight}")
        require(len(self.intensity_views) >= 1 and set(self.intensity_views) <= {"linear", "equalized"}
                and len(set(self.intensity_views)) == len(self.intensity_views),
               f"intensity_views must be distinct names of ('linear', 'equalized'), got {self.intensity_views}")


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
        require(len(self.edge_margin) == 3 and all(0 <= m <= 0.5 for m in self.edge_margin),
               f"edge_margin must be three fractions (z, y, x) in [0, 0.5], got {self.edge_margin}")
        for name in ("prior_correction", "sparse_prior_correction"):
            value = getattr(self, name)
            require(0 <= value <= 2, f"{name} must be in [0, 2], got {value}")
        for name in ("overlap", "final_overlap"):
            value = getattr(self, name)
            require(0 <= value < 1, f"{name} must be in [0, 1), got {value}")
        require(self.sigma_scale > 0, f"sigma_scale must be > 0, got {self.sigma_scale}")
        for name, value in (("batch_size", self.batch_size), ("gpu_batch_size", self.gpu_batch_size)):
            require(1 <= value <= MAX_WINDOWS, f"{name} must be in [1, {MAX_WINDOWS}], got {value}")
        for name in ("mirror_axes", "final_mirror_axes"):
            axes = getattr(self, name)
            require(set(axes) <= {0, 1, 2}, f"{name} must be within (0, 1, 2), got {axes}")

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
    stages : int
        Forests fitted in turn on each labeling: the first on the filter bank, each next one also on the previous
        one's smoothed answers (autocontext); each replaces the previous one's mask on screen. 1: the first alone.
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
    prior_shift : float
        How far, in ``[0, 1]``, each forest is moved from the class shares of the labels it was fitted on towards
        the volume's, estimated from its own answers (``core/prior_shift.py``): this share for labels that fill
        none of their planes, down to 0 for whole slices. Brush strokes paint objects more densely than the volume
        holds them; a forest fitted on them grows objects past their unlabeled edges. 0 turns it off.
    max_feature_bytes : int
        Memory the first responder may keep: its feature stack (float32, 48 columns per image channel) and two
        context maps, and at most half the machine's memory (``footprint.bank_budget``). A volume over it keeps the
        full grid in float16 where that fits, else is worked on binned by 2, 4 or 8 along its finest axes
        (``core/binning.py``, ``feature_stack.choose_grid``); one over it even then is predicted by the net alone.
    """

    enabled: bool = True
    trees: int = 32
    max_samples: int = 30_000
    stages: int = 3
    held_back: float = 0.125
    margin: float = 0.005
    distill: float = 0.5
    prior_shift: float = 0.5
    max_feature_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        require(isinstance(self.enabled, bool), f"enabled must be a bool, got {self.enabled!r}")
        for name in ("trees", "max_samples", "max_feature_bytes"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        require(self.trees <= MAX_TREES, f"trees must be at most {MAX_TREES}, got {self.trees}")
        require(isinstance(self.stages, int) and 1 <= self.stages <= 5,
                f"stages must be an integer in [1, 5], got {self.stages!r}")
        require(0 <= self.held_back <= 0.5, f"held_back must be in [0, 0.5], got {self.held_back}")
        require(0 <= self.margin < 1, f"margin must be in [0, 1), got {self.margin}")
        require(0 <= self.distill <= 10, f"distill must be in [0, 10], got {self.distill}")
        require(0 <= self.prior_shift <= 1, f"prior_shift must be in [0, 1], got {self.prior_shift}")


#: Training settings that files written by earlier versions hold and that now live beside the code of their part
#: (or were removed), with the value every such file had by default. Files (:meth:`SessionConfig.from_dict` with
#: ``legacy=True``) drop them, with a warning where a value differed; anything else refuses them.
RETIRED_TRAIN_DEFAULTS: dict[str, float] = {
    "weight_decay": 1e-4, "lr_floor": 0.3, "foreground_share": 0.5, "random_share": 0.1, "error_share": 0.0,
    "centre_margin": 0.25, "dice_weight": 1.0, "smoothness": 10.0, "hardest_weight": 1.0, "spatial_share": 0.3,
    "intensity_share": 1.0, "elastic": 0.0, "clean_tail": 0.5, "clean_tail_drift": 0.15, "fit_guard": 1.25,
    "ema_decay": 0.98}


@dataclass(frozen=True)
class SessionConfig:
    """Everything a session needs, in one serialisable object."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    responder: ResponderConfig = field(default_factory=ResponderConfig)
    device: DeviceName = "auto"

    def __post_init__(self) -> None:
        require(self.device in ("auto", "cpu", "cuda", "mps"),
               f"device must be one of auto, cpu, cuda, mps; got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists for tuples; a NumPy number a caller passed becomes a Python one, which
        a model file may hold: its reader refuses any other object)."""
        return json.loads(json.dumps(asdict(self), default=lambda value: value.item()))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, legacy: bool = False) -> SessionConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``.

        ``legacy``: the settings come from a file an earlier version may have written (a session store, a model):
        retired training keys (:data:`RETIRED_TRAIN_DEFAULTS`) are dropped, with a warning where a value was not
        the default. Otherwise a retired key with another value than its default is refused (it would be ignored).
        """
        def build(kind: type, values: dict[str, Any]) -> Any:
            require(isinstance(values, dict),
                    f"{kind.__name__} settings must be a mapping, got {type(values).__name__}")
            if kind is TrainConfig:
                retired = {k: v for k, v in values.items() if k in RETIRED_TRAIN_DEFAULTS}
                changed = sorted(k for k, v in retired.items() if not (is_number(v) and v == RETIRED_TRAIN_DEFAULTS[k]))
                if changed and legacy:
                    import warnings

                    warnings.warn(f"training settings no longer used were dropped: {changed} (the parts of a training "
                                  "step keep their settings beside their code now)", stacklevel=3)
                require(legacy or not changed, f"{changed} are no longer training settings: the parts of a training "
                        "step keep them (benchmarks/tune.py --parts varies them)")
                values = {k: v for k, v in values.items() if k not in retired}
            known = {f.name for f in fields(kind)}
            unknown = set(values) - known
            require(not unknown, f"unknown {kind.__name__} keys: {sorted(map(str, unknown))}")
            check_fields(kind, values)
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        require(isinstance(data, dict), f"settings must be a mapping, got {type(data).__name__}")
        device = data.get("device", "auto")
        check_fields(cls, {"device": device})
        return cls(
            model=build(ModelConfig, data.get("model", {})),
            train=build(TrainConfig, data.get("train", {})),
            inference=build(InferenceConfig, data.get("inference", {})),
            responder=build(ResponderConfig, data.get("responder", {})),
            device=device,
        )


def preset(size: ModelSize = "small", **overrides: Any) -> ModelConfig:
    """Model config for a size preset (``small`` is the CPU default)."""
    require(size in MODEL_SIZE_CHANNELS, f"model size must be one of {list(MODEL_SIZE_CHANNELS)}, got {size!r}")
    return replace(ModelConfig(base_channels=MODEL_SIZE_CHANNELS[size]), **overrides)
