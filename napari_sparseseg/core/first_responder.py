"""The fast first responder: a pixel classifier on a precomputed filter bank (ilastik's live update).

A 3D U-Net on a plain CPU needs minutes before its prediction is worth showing; a forest of extremely randomised
trees (scikit-learn's ``ExtraTreesClassifier``, 5-8x faster to fit than a random forest of as many trees) on the
ilastik filter bank (:mod:`.features`) answers within about a second of a stroke. The feature stack is computed once
per volume (in the background from the moment the image is chosen, :meth:`FirstResponder.warm`), each fit reads only
the labeled voxels' rows, and a prediction is a chunked pass over the rows asked for. The net takes over when it
scores better on held-back labels.

Each fit runs in stages (``ResponderConfig.stages``, three by default). The first forest answers at once; each
next one, fitted on the filter bank plus the previous one's smoothed probabilities (:mod:`.context`, ilastik's
autocontext), then replaces its answer within seconds (:meth:`FirstResponder.refine`). From brush strokes each
forest is moved towards the volume's class shares (:mod:`.prior_shift`); what the forests read and how they split
follows how the labels fill their planes (:mod:`.forest_plan`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .annotation import AnnotatedVolume, Source
from .binning import MAX_FACTOR, binned_shape, covering_box, point_weights, upsample
from .box import Box
from .context import context_features, less_certain
from .encoding import UNLABELED
from .feature_stack import FeatureStack, Grid, choose_grid, describe_grid, preview_grid, responder_bytes
from .footprint import bank_budget
from .forest_plan import columns_for, max_features_for
from .prior_shift import PRIOR_SAMPLE, ShiftedClassifier, shift_for
from .subsample import stratified_subsample

if TYPE_CHECKING:
    from .config import ResponderConfig
    from .holdout import HoldOut

#: Rows predicted per chunk (bounds the memory of the classifier's output).
PREDICT_CHUNK = 1 << 18


class FirstResponder:
    """A per-voxel classifier of one volume's filter bank, refitted on the labels as they change.

    Parameters
    ----------
    image : array-like
        The raw image, ``(z, y, x)`` or 4D with ``channel_axis``; features are computed per channel.
    volume : AnnotatedVolume
        Labels (read under its lock) and spacing.
    config : ResponderConfig
        Trees, samples and the memory the feature stack may take.
    channel_axis : int, optional
        Channel axis of a 4D image.
    seed : int
        Seed of the subsample and of the trees.
    """

    def __init__(self, image, volume: AnnotatedVolume, config: ResponderConfig, *,
                 channel_axis: int | None = None, seed: int = 0, features: FeatureStack | None = None) -> None:
        self.volume, self.config, self.seed = volume, config, seed
        if features is not None and not features.matches(image, volume.spacing, channel_axis):
            raise ValueError("the feature stack given was computed for another image or spacing")
        #: Bins and precision of the grid the forests work on (:func:`~.feature_stack.choose_grid`): the full grid in
        #: float32 unless that would not fit ``max_bytes`` (``config.max_feature_bytes``, at most half the machine's
        #: memory: a session store's settings may ask for more); None when nothing fits.
        self.max_bytes = bank_budget(config.max_feature_bytes)
        self.grid = choose_grid(volume.shape, volume.spacing, self.max_bytes, volume.image_channels, volume.num_classes)
        if features is not None and features.grid != self.grid:
            features = None  # computed for another grid (the plugin guesses one class): this volume needs its own
        #: The filter bank (computed on first use unless given ready).
        self.features = features or FeatureStack(
            image, volume.spacing, channel_axis, self.grid or Grid(),
            preview_grid(volume.shape, volume.spacing, self.grid) if self.grid is not None else None)
        #: The stack the forests of the last fit read (:meth:`FeatureStack.to_fit_on`).
        self._bank = self.features
        # The latest stage's forests, fitted on every label (what is shown) and, when labels are held back, on the
        # rest (what is scored), and the context maps each reads (from the previous stage beside it; None at stage 1).
        self._forest = None
        self._scored = None
        self._context: np.ndarray | None = None
        self._scored_context: np.ndarray | None = None
        #: Stages of the scored chain fitted to the last fit's labels (:meth:`fit_scored`; it may trail the stage).
        self._scored_stage = 0
        #: The shown forest's probabilities of the whole binned grid, last predicted (``(forest, (K + 1, z, y, x))``;
        #: None on the full grid): what the next stage reads its context from.
        self._whole_grid: tuple[object, np.ndarray] | None = None
        #: Stages fitted to the last fit's labels (0: none), whether the next was not kept, and ``(coords (n, 3),
        #: probabilities (n, K + 1))`` of the stage shown on the unlabeled voxels its successor is judged on.
        self.stage, self._settled, self._sample_answer = 0, False, None
        self._rows: tuple[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._fit_rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        #: The last fit's ``tau`` and the ``(n, 3)`` voxels the volume's class shares are read at (:mod:`.prior_shift`).
        self._shift: tuple[float, np.ndarray] = (0.0, np.empty((0, 3), np.int64))
        #: Columns of the stack the fitted forests read (None: all; :func:`~.forest_plan.columns_for`).
        self._columns: np.ndarray | None = None
        #: ``max_features`` of the forests fitted next (:func:`~.forest_plan.max_features_for`).
        self._max_features: float | str = "sqrt"
        #: Annotation revision last answered: fitted to, or found with fewer than two classes to fit (-1: none yet).
        self.revision = -1

    # -- availability ------------------------------------------------------------------
    def _bytes_of(self, shape: Sequence[int], itemsize: int = 4) -> int:
        """Memory of the feature stack and the context maps on a grid of ``shape``."""
        return responder_bytes(shape, self.volume.image_channels, self.volume.num_classes, itemsize)

    def feature_bytes(self) -> int:
        """Memory of the feature stack (a bank per image channel) and the context maps on the forests' grid."""
        grid = self.grid or Grid()
        return self._bytes_of(binned_shape(self.volume.shape, grid.factors), grid.itemsize)

    def unavailable_reason(self) -> str | None:
        """Why this volume gets no first responder (``None`` when it does)."""
        if not self.config.enabled:
            return "the first responder is switched off"
        if self.volume.lazy:
            return "the image is read from disk on demand (zarr/dask): the net alone predicts it"
        if self.grid is None:
            coarsest = binned_shape(self.volume.shape, [min(MAX_FACTOR, n) for n in self.volume.shape])
            return (f"its feature stack would take {self._bytes_of(coarsest, 2) / 2**30:.1f} GiB even binned by "
                    f"{MAX_FACTOR} (limit {self.max_bytes / 2**30:.1f} GiB): the net alone predicts it")
        return None

    def grid_note(self) -> str | None:
        """A line for the user when the forests' bank is not the full float32 grid or a preview answers first."""
        return describe_grid(self.grid, self._bytes_of(self.volume.shape), self.max_bytes,
                             None if self.features.ready else self.features.preview)

    # -- features ----------------------------------------------------------------------
    def warm(self) -> np.ndarray:
        """The feature stack, computed now if it is not yet (see :meth:`FeatureStack.get`; not its preview)."""
        return self.features.get()

    def _stack(self) -> np.ndarray:
        """The stack the forests of the last fit read: the bank, or its preview while the bank was not ready."""
        return self._bank.get()

    @property
    def upgradable(self) -> bool:
        """Whether the forests read the preview and the bank itself is now ready: the next fit reads the bank."""
        return self._bank is not self.features and self.features.ready

    @property
    def binned(self) -> bool:
        """Whether the forests of the last fit read a binned grid (the bank's, or its preview's)."""
        return self._bank.binned

    @property
    def block_multiple(self) -> tuple[int, int, int]:
        """Bins the held-back blocks must be whole multiples of: the preview's where there is one (its bins are
        multiples of the bank's), else the bank's."""
        return (self.features.preview or self.features).factors

    # -- fitting -------------------------------------------------------------------------
    def labeled_rows(self, holdout: HoldOut | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every labeled voxel ``(n, 3)``, its class index ``(n,)`` (0..K) and whether ``holdout`` holds it back
        ``(n,)``."""
        key = (self.volume.revision, id(holdout))
        if self._rows is not None and self._rows[0] == key:  # the fit and the scoring of one revision share a scan
            return self._rows[1]
        per_class = self.volume.labeled_coordinates()
        coords = np.concatenate(per_class) if per_class else np.empty((0, 3), int)
        classes = np.concatenate([np.full(len(c), i, np.int64) for i, c in enumerate(per_class)])
        held = holdout.split(coords, classes) if holdout is not None else np.zeros(len(coords), bool)
        if held.any():  # corrections always train: never held back (the net's patches skip them too)
            held[held] = np.asarray(self.volume.source[tuple(coords[held].T)]) != Source.CORRECTED
        self._rows = (key, (coords, classes, held))
        return coords, classes, held

    def _rows_at(self, coords: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """Rows ``(n, F' [+ C])`` of the columns the forests read (and the context's) at ``(n, 3)`` coordinates."""
        at = tuple((coords // np.asarray(self._bank.factors)).T)  # their bins on the forests' grid
        rows = self._read(self._stack()[at])
        return rows if context is None else np.concatenate([rows, context[at]], axis=1)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """The columns of stack rows ``(n, F)`` that the fitted forests read."""
        return rows if self._columns is None else rows[:, self._columns]

    def new_forest(self):
        """An unfitted forest of ``config.trees`` extremely randomised trees, on as many threads as training."""
        import torch
        from sklearn.ensemble import ExtraTreesClassifier

        return ExtraTreesClassifier(self.config.trees, max_features=self._max_features, random_state=self.seed,
                                    n_jobs=torch.get_num_threads())

    def _fit_forest(self, coords: np.ndarray, classes: np.ndarray, context: np.ndarray | None = None):
        """An extremely randomised forest fitted on a class-stratified subsample of the given labeled voxels; from
        labels that do not fill their planes, moved towards the volume's class shares (:mod:`.prior_shift`)."""
        rng = np.random.default_rng(self.seed)
        pick = stratified_subsample(classes, self.config.max_samples, rng)
        forest = self.new_forest()
        forest.fit(self._rows_at(coords[pick], context), classes[pick])
        tau, anywhere = self._shift
        if tau == 0:
            return forest
        shares = np.bincount(classes[pick], minlength=self.volume.num_classes + 1)[forest.classes_]
        return ShiftedClassifier.fit_to(forest, self._rows_at(anywhere, context), shares / shares.sum(), tau)

    def fit(self, holdout: HoldOut | None = None) -> bool:
        """Fit the first stage of the classifier shown, on every labeled voxel; :meth:`refine` then adds the next
        stages, :meth:`fit_scored` the classifiers scored on the labels ``holdout`` holds back.

        The held-back labels must stay unseen by what is *scored* on them (:meth:`predict_scored_at`), not by what
        is *shown* (:meth:`predict`): the classifier shown learns from every label, so holding labels back costs
        the user nothing while the first responder is on screen (``benchmarks/display_fit.py``). False (and nothing
        fitted) when fewer than two classes are labeled.
        """
        revision = self.volume.revision
        coords, classes, held = self.labeled_rows(holdout)
        if np.unique(classes).size < 2:
            self.revision = revision  # nothing to fit until the labels change
            self._forest = self._scored = None  # the forests of the labels before answer no more
            return False
        before, self._bank = self._bank, self.features.to_fit_on()
        try:
            coverage = self.volume.plane_coverage()
            self._columns, tau = columns_for(coverage, self.volume.image_channels), shift_for(self.config.prior_shift,
                                                                                              coverage)
            self._max_features = max_features_for(coverage)
            self._shift = tau, np.random.default_rng([self.seed, 1]).integers(0, self.volume.shape, (PRIOR_SAMPLE, 3))
            forest = self._fit_forest(coords, classes)
        except BaseException:
            self._bank = before  # the forests fitted before still read the stack they were fitted on
            raise
        self._forest, self._scored, self._scored_stage, self.revision = forest, None, 0, revision
        self._context = self._scored_context = self._whole_grid = None
        self._fit_rows, self.stage, self._settled, self._sample_answer = (coords, classes, held), 1, False, None
        return True

    def refine(self, previous: np.ndarray | None = None) -> bool:
        """Fit the next stage on the labels of the last :meth:`fit`: the filter bank plus the current stage's
        smoothed probabilities (:mod:`.context`; ``previous``, its whole-volume ``(K + 1, z, y, x)``, when already
        predicted, ignored on a binned grid). Afterwards every prediction is the new stage's. False when there is no
        stage to refine, every stage is fitted, or the next one was less certain on unlabeled voxels
        (:func:`~.context.less_certain`: not kept, and no later one fitted to these labels).
        """
        if not self.fitted or self.refined:
            return False
        coords, classes, _ = self._fit_rows
        if self._bank.binned:  # the context reads the bins: their whole-grid answer, if the stage just gave it
            whole = self._whole_grid
            previous = whole[1] if whole is not None and whole[0] is self._forest else None
        elif previous is not None and previous.shape != (self.volume.num_classes + 1,) + self.volume.shape:
            previous = None
        context = self.context(self._predict_grid(self._forest, self._context) if previous is None else previous)
        forest = self._fit_forest(coords, classes, context)
        if self._sample_answer is None:  # after a kept stage, its answers there were computed as the candidate's
            sample = self._shift[1][np.asarray(self.volume.labels[tuple(self._shift[1].T)]) == UNLABELED]
            self._sample_answer = sample, self._proba_at(sample, self._forest, self._context)
        sample, candidate = self._sample_answer[0], self._proba_at(self._sample_answer[0], forest, context)
        if less_certain(self._sample_answer[1], candidate):
            self._settled = True  # this stage stays: a next one less certain where nothing is labeled did worse
            return False
        self._forest, self._context = forest, context
        self.stage, self._sample_answer = self.stage + 1, (sample, candidate)
        return True

    def fit_scored(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Fit the classifiers scored on the held-back labels (:meth:`predict_scored_at`) up to the stage shown.

        :meth:`fit` and :meth:`refine` fit the classifier shown alone, so that its mask is on screen first (on the
        tumour MRI this chain, each stage reading its own predecessor's answers, had delayed each later mask 4-6 s).

        Returns
        -------
        bool
            Whether the stage shown has its scored classifier now (:attr:`scored`): False when nothing is held
            back, fewer than two classes are labeled beside it, or ``should_stop`` ended the work between stages.
        """
        if not self.fitted:
            return False
        if self.scored:  # already: no scan of the labels on every call while the net leads
            return True
        coords, classes, held = self._fit_rows
        if not held.any() or np.unique(classes[~held]).size < 2:
            return False
        while self._scored_stage < self.stage:
            if should_stop():
                return False
            context = self.context(self._predict_grid(self._scored, self._scored_context)) if self._scored_stage \
                else None
            self._scored = self._fit_forest(coords[~held], classes[~held], context)
            self._scored_context, self._scored_stage = context, self._scored_stage + 1
        return True

    def context(self, probabilities: np.ndarray) -> np.ndarray:
        """The next stage's context columns ``(z, y, x, C)`` from the current stage's probabilities
        ``(K + 1, z, y, x)`` on the forests' grid: each foreground class smoothed at :data:`~.context.CONTEXT_SIGMAS`
        (a variant overrides this)."""
        return context_features(probabilities, self._bank.grid_spacing)

    @property
    def fitted(self) -> bool:
        """Whether a classifier has been fitted."""
        return self._forest is not None

    @property
    def stale(self) -> bool:
        """Whether the next answer needs a new :meth:`fit`: none yet, new labels, or the bank ready."""
        return not self.fitted or self.revision != self.volume.revision or self.upgradable

    @property
    def behind(self) -> bool:
        """Whether the labels changed since they were last answered, or the last fit awaits a stage or the bank."""
        return self.revision != self.volume.revision or (self.fitted and not self.refined) or self.upgradable

    @property
    def refined(self) -> bool:
        """Whether every stage is fitted to the labels of the last fit, or the next was not kept (:meth:`refine`)."""
        return self.fitted and (self.stage >= self.config.stages or self._settled)

    # -- prediction ----------------------------------------------------------------------
    def _proba(self, rows: np.ndarray, forest, context: np.ndarray | None = None) -> np.ndarray:
        """``(n, K + 1)`` class probabilities of stack rows ``(n, F)`` (classes never labeled get 0), the columns the
        forests read taken and the context rows ``(n, C)`` appended chunk by chunk (no copy of the whole stack)."""
        out = np.zeros((len(rows), self.volume.num_classes + 1), np.float32)
        columns = forest.classes_.astype(np.int64)
        for start in range(0, len(rows), PREDICT_CHUNK):
            stop = min(start + PREDICT_CHUNK, len(rows))
            chunk = self._read(rows[start:stop])
            if context is not None:
                chunk = np.concatenate([chunk, context[start:stop]], axis=1)
            out[start:stop, columns] = forest.predict_proba(chunk)
        return out

    def _proba_at(self, coords: np.ndarray, forest, context: np.ndarray | None) -> np.ndarray:
        """``(n, K + 1)`` probabilities by ``forest`` at ``(n, 3)`` coordinates: on a binned grid interpolated as
        :meth:`predict` is (:func:`~.binning.point_weights`), so that what is scored is what is shown."""
        stack = self._stack()
        if not self._bank.binned:
            at = tuple(coords.T)  # (n, 3) -> a NumPy index (z, y, x)
            return self._proba(stack[at], forest, None if context is None else context[at])
        bins, index, weights = point_weights(coords, self._bank.factors, stack.shape[:3])
        at = tuple(bins.T)
        proba = self._proba(stack[at], forest, None if context is None else context[at])
        return np.einsum("nk,nkc->nc", weights, proba[index]).astype(np.float32, copy=False)

    def _predict_grid(self, forest, context: np.ndarray | None, box: Box | None = None,
                      index: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """float32 ``(K + 1, z, y, x)`` probabilities by ``forest`` of ``box`` of its own (perhaps binned) grid
        (default: all of it), or of the voxels of ``index``, slices of that grid (strided ones too)."""
        stack = self._stack()
        if index is None:
            index = (Box.full(stack.shape[:3]) if box is None else box.clip(stack.shape[:3])).slices
        block = stack[index]
        ctx = None if context is None else context[index].reshape(-1, context.shape[-1])
        proba = self._proba(block.reshape(-1, block.shape[-1]), forest, ctx)
        return np.ascontiguousarray(np.moveaxis(proba, 1, 0).reshape((-1,) + block.shape[:3]))

    def _predict_volume(self, forest, context: np.ndarray | None, box: Box | None = None) -> np.ndarray:
        """float32 ``(K + 1, z, y, x)`` probabilities of ``box`` of the full grid (default: the whole volume) by
        ``forest``; on a binned grid interpolated from the bins around (:func:`~.binning.upsample`)."""
        box = Box.full(self.volume.shape) if box is None else box.clip(self.volume.shape)
        if not self._bank.binned:
            return self._predict_grid(forest, context, box)
        factors = self._bank.factors
        grid = binned_shape(self.volume.shape, factors)
        bins = covering_box(box, factors, grid)
        proba = self._predict_grid(forest, context, bins)
        if bins.shape == grid:  # the whole grid: the next stage's context is read from it (see refine)
            self._whole_grid = (forest, proba)
        return upsample(proba, bins, factors, box)

    def _shown(self) -> tuple[object, np.ndarray | None]:
        """The classifier shown (the latest stage's) and the context it reads."""
        if self._forest is None:
            raise RuntimeError("the first responder has not been fitted yet")
        return self._forest, self._context

    @property
    def scored(self) -> bool:
        """Whether the stage shown has a classifier fitted without the held-back labels (:meth:`fit_scored`)."""
        return self._scored is not None and self._scored_stage == self.stage

    def predict_scored_at(self, coords: np.ndarray) -> np.ndarray:
        """float32 ``(n, K + 1)`` probabilities at ``(n, 3)`` coordinates by the classifier fitted without the
        held-back labels (the latest stage's): the one to score there."""
        if not self.scored:
            raise RuntimeError("no classifier of the stage shown fitted without the held-back labels (fit_scored)")
        return self._proba_at(coords, self._scored, self._scored_context)

    def predict_at(self, coords: np.ndarray) -> np.ndarray:
        """float32 ``(n, K + 1)`` probabilities at ``(n, 3)`` voxel coordinates."""
        return self._proba_at(coords, *self._shown())

    def predict(self, box: Box | None = None) -> np.ndarray:
        """float32 ``(K + 1, z, y, x)`` probabilities of ``box`` (default: the whole volume)."""
        forest, context = self._shown()
        return self._predict_volume(forest, context, box)

    def predict_strided(self, index: tuple[slice, slice, slice]) -> np.ndarray:
        """float32 ``(K + 1, z', y', x')`` probabilities of the voxels of ``index``, slices (strided ones too) of the
        full grid, where the forests read it (not :attr:`binned`; :mod:`.coarse_first`)."""
        if self.binned:
            raise RuntimeError("the forests read a binned grid: predict() interpolates it")
        return self._predict_grid(*self._shown(), index=index)
