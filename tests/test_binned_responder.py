"""A volume whose full filter bank would not fit still gets a first responder (in half precision, then binned), and a
large one a preview while its bank computes."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_sparseseg.core import feature_stack, features
from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.binning import MAX_FACTOR, bin_mean, binned_shape, binning_factors, covering_box, upsample
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.encoding import mask_to_layer
from napari_sparseseg.core.events import Notice, Prediction
from napari_sparseseg.core.feature_stack import (
    EXTRA_THREAD_BYTES,
    PREVIEW_VOXELS,
    FeatureStack,
    Grid,
    choose_grid,
    feature_workers,
    preview_grid,
    responder_bytes,
)
from napari_sparseseg.core.features import ComputationCancelled, compute_features
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.holdout import HoldOut
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.plugin.background import FeatureCache
from tests.conftest import sphere_volume, tiny_config

SHAPE = (16, 40, 40)
SPACING = (2.0, 1.0, 1.0)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _bytes(shape, itemsize=4):
    return responder_bytes(shape, 1, 1, itemsize)


# -- the grid --------------------------------------------------------------------------------------------
def test_bins_grow_along_the_finest_axes_first_and_only_as_far_as_needed():
    assert binning_factors(SHAPE, SPACING, _bytes, _bytes(SHAPE)) == (1, 1, 1)
    assert binning_factors(SHAPE, SPACING, _bytes, _bytes(SHAPE) - 1) == (1, 2, 2)  # 2 x 1 x 1 -> 2 x 2 x 2
    assert binning_factors(SHAPE, SPACING, _bytes, _bytes(binned_shape(SHAPE, (1, 2, 2))) - 1) == (2, 4, 4)
    assert binning_factors((100, 512, 512), (5.0, 0.8, 0.8), _bytes, 4 << 30) == (1, 2, 2)  # a CT: in plane
    assert binning_factors((512, 512, 512), (1.0, 1.0, 1.0), _bytes, 4 << 30) == (2, 2, 2)
    assert binning_factors(SHAPE, SPACING, _bytes, 1) is None  # not even bins of MAX_FACTOR fit
    assert max(binning_factors((4, 400, 400), (1.0, 1.0, 1.0), _bytes, 20_000_000)) <= MAX_FACTOR
    assert binning_factors((4, 400, 400), (1.0, 1.0, 1.0), _bytes, 20_000_000)[0] <= 4  # never past the volume


@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 2, 2), (1, 4, 2), (4, 1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_a_bin_holds_the_mean_of_its_voxels_partial_bins_included(factors, dtype):
    image = (np.random.default_rng(0).normal(size=(7, 10, 9)) * 100 + 1000).astype(dtype)
    binned = bin_mean(image, factors)
    assert binned.shape == binned_shape(image.shape, factors) and binned.dtype == np.float32
    for index in np.ndindex(binned.shape):
        region = tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors))
        assert binned[index] == pytest.approx(image[region].astype(np.float64).mean(), rel=1e-5)


@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 2, 2), (2, 4, 4)])
def test_interpolation_back_is_exact_on_a_ramp_and_a_box_agrees_with_the_whole(factors):
    z, y, x = np.meshgrid(*(np.arange(n) for n in (16, 24, 24)), indexing="ij")
    ramp = (z + 2 * y - 3 * x).astype(np.float32)
    bins = bin_mean(ramp, factors)[None]
    grid = binned_shape(ramp.shape, factors)
    whole = Box.full(ramp.shape)
    up = upsample(bins, Box.full(grid), factors, whole)[0]
    inner = tuple(slice(f, n - f) for f, n in zip(factors, ramp.shape))  # past the outer bin centres: clamped
    np.testing.assert_allclose(up[inner], ramp[inner], atol=1e-4)
    box = Box((3, 5, 7), (11, 20, 13))
    cover = covering_box(box, factors, grid)
    part = upsample(bins[(slice(None),) + cover.slices], cover, factors, box)[0]
    np.testing.assert_allclose(part, up[box.slices], atol=1e-5)


def test_threads_for_the_bank_follow_training_and_stay_within_their_memory():
    assert feature_workers((48, 128, 128), 4) == 4
    assert feature_workers((48, 128, 128), 1) == 1  # the plugin on two cores: one thread, one core for the window
    per_thread = 17 * 4 * 96 * 512 * 512
    assert feature_workers((96, 512, 512), 8) == 1 + EXTRA_THREAD_BYTES // per_thread
    assert feature_workers((512, 1024, 1024), 8) == 1


def test_features_computed_side_by_side_equal_those_computed_in_turn():
    image, _ = sphere_volume((12, 24, 24), radius=5)
    np.testing.assert_array_equal(compute_features(image, SPACING, contrast=True),
                                  compute_features(image, SPACING, contrast=True, workers=3))
    with pytest.raises(ValueError, match="workers"):
        compute_features(image, workers=0)


# -- the first responder on it ---------------------------------------------------------------------------
def _binned_volume() -> tuple[AnnotatedVolume, np.ndarray, np.ndarray, ResponderConfig]:
    image, mask = sphere_volume(SHAPE, radius=9)
    volume = AnnotatedVolume(image, num_classes=1, spacing=SPACING)
    for z in (5, 8, 11):
        volume.set_labels((z, slice(None), slice(None)), mask[z] + 1)
    config = ResponderConfig(trees=16, max_feature_bytes=_bytes(SHAPE, 2) - 1)  # not even in float16
    return volume, image, mask, config


def test_a_volume_over_the_memory_limit_is_segmented_on_a_binned_grid_and_answered_at_every_voxel():
    volume, image, mask, config = _binned_volume()
    responder = FirstResponder(image, volume, config)
    assert responder.grid == Grid((1, 2, 2), half=True) and responder.unavailable_reason() is None
    assert "half precision, binned 1 x 2 x 2" in responder.grid_note()
    assert responder.feature_bytes() <= config.max_feature_bytes
    assert responder.fit(HoldOut(SPACING, 0.125)) and responder.fit_scored() and responder.scored
    while responder.refine():
        pass
    assert responder.fit_scored() and responder.scored  # the scored stages follow the one shown
    assert responder.warm().shape[:3] == binned_shape(SHAPE, (1, 2, 2)) and responder.warm().dtype == np.float16
    probs = responder.predict()
    assert probs.shape == (2,) + SHAPE and probs.dtype == np.float32  # every voxel of the full grid
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    pred = probs.argmax(0)
    dice = 2 * np.sum((pred == 1) & (mask == 1)) / (np.sum(pred == 1) + np.sum(mask == 1))
    assert dice > 0.9
    box = Box((4, 7, 9), (12, 30, 33))  # the view: the same answer as the whole volume's, cropped
    np.testing.assert_allclose(responder.predict(box), probs[(slice(None),) + box.slices], atol=1e-5)
    coords = np.stack(np.nonzero(np.ones(SHAPE, bool)), axis=1)[::7]  # what is scored is what is shown
    np.testing.assert_allclose(responder.predict_at(coords), probs[:, coords[:, 0], coords[:, 1], coords[:, 2]].T,
                               atol=1e-5)
    assert responder.predict_scored_at(coords).shape == (len(coords), 2)


@pytest.mark.parametrize("factors", [(1, 1, 1), (1, 2, 2), (2, 4, 4), (8, 8, 8)])
def test_no_bin_holds_both_held_back_and_training_voxels(factors):
    holdout = HoldOut((2.0, 0.7, 0.7), 0.3, multiple_of=factors)
    assert all(b % f == 0 for b, f in zip(holdout.block, factors))
    held = holdout.box((0, 0, 0), (32, 64, 64))
    grid = binned_shape(held.shape, factors)
    for index in np.ndindex(grid):
        region = held[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors))]
        assert region.all() or not region.any()
    assert HoldOut((2.0, 0.7, 0.7), 0.3).block == HoldOut((2.0, 0.7, 0.7), 0.3, multiple_of=(1, 1, 1)).block


def test_the_full_grid_is_untouched_where_it_fits():
    volume, image, _, _ = _binned_volume()
    responder = FirstResponder(image, volume, ResponderConfig(trees=16))
    assert responder.grid == Grid() and responder.grid_note() is None
    assert responder.warm().shape[:3] == SHAPE and responder.warm().dtype == np.float32


def test_half_precision_comes_before_bins_and_finds_what_the_full_precision_bank_finds():
    volume, image, mask, _ = _binned_volume()
    config = ResponderConfig(trees=16, max_feature_bytes=_bytes(SHAPE) - 1)  # float32 does not fit, float16 does
    half = FirstResponder(image, volume, config)
    assert half.grid == Grid(half=True) and "half precision (" in half.grid_note()
    stack = half.warm()
    assert stack.shape[:3] == SHAPE and stack.dtype == np.float16 and np.isfinite(stack).all()
    full = compute_features(image, SPACING, contrast=True)
    for column in range(full.shape[-1]):  # each column a positive multiple of the float32 one
        a, b = full[..., column].ravel(), stack[..., column].astype(np.float32).ravel()
        if a.std() > 0:
            assert np.corrcoef(a, b)[0, 1] > 0.999
    assert half.fit()
    while half.refine():
        pass
    pred = half.predict().argmax(0)
    assert 2 * np.sum((pred == 1) & (mask == 1)) / (np.sum(pred == 1) + np.sum(mask == 1)) > 0.9
    with pytest.raises(ValueError, match="dtype"):
        compute_features(image, dtype=np.float64)


def test_the_plugins_background_stack_is_the_binned_one_the_session_uses():
    volume, image, _, config = _binned_volume()
    layer = SimpleNamespace(data=image, scale=SPACING)
    stack = FeatureCache(max_bytes=config.max_feature_bytes).for_layer(layer)
    assert stack is not None and stack.grid == choose_grid(SHAPE, SPACING, config.max_feature_bytes)
    responder = FirstResponder(image, volume, config, features=stack)
    assert responder.features is stack  # computed while the user painted, not again
    assert FeatureCache(max_bytes=1).for_layer(layer) is None
    limit = _bytes(binned_shape(SHAPE, (1, 2, 2)), 2)  # one class fits bins of 1 x 2 x 2 exactly
    cache = FeatureCache(max_bytes=limit)
    one = cache.for_layer(layer)
    assert one.factors == (1, 2, 2) and cache.for_layer(layer) is one  # asked again: not computed twice
    many = cache.for_layer(layer, num_classes=6)  # six classes' context maps take more of the memory
    assert many is not one and many.grid == choose_grid(SHAPE, SPACING, limit, num_classes=6)
    assert many.factors != (1, 2, 2)
    assert cache.for_layer(layer, num_classes=6) is many
    other = FeatureStack(image, SPACING)  # a full-grid stack offered for a binned volume: it makes its own
    assert FirstResponder(image, volume, config, features=other).features is not other
    with pytest.raises(ValueError, match="bins"):
        Grid((1, 0, 2))


def test_the_session_says_the_first_responder_is_binned_and_shows_its_mask_before_the_net_trains():
    image, mask = sphere_volume(SHAPE, radius=9)
    annotation = np.zeros(SHAPE, np.uint8)
    for z in (5, 8, 11):
        annotation[z] = mask[z] + 1
    config = tiny_config(trees=16, max_feature_bytes=_bytes(SHAPE, 2) - 1)
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, annotation=annotation, config=config)
    events = session.interactive(first_refresh_steps=10**6)
    notices, predictions = [], []
    for event in events:
        if isinstance(event, Notice):
            notices.append(event.message)
        if isinstance(event, Prediction):
            predictions.append(event)
            block = session.volume.holdout.block  # scored on whole bins
            break
    events.close()
    assert any("half precision, binned" in n for n in notices)
    assert all(b % f == 0 for b, f in zip(block, session.responder.features.factors))
    assert session.trainer.step == 0 and predictions[0].learner == "forest"
    shown = predictions[0].labels
    assert shown.shape == SHAPE
    assert 2 * np.sum(shown & mask) / (shown.sum() + mask.sum()) > 0.9


# -- a preview while the bank computes ------------------------------------------------------------------------
class _GatedStack(FeatureStack):
    """A bank that is not computed until the test opens its gate (its preview computes at once)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def get(self, should_stop=None) -> np.ndarray:
        assert self.gate.wait(60), "the test never opened the gate"
        return super().get(should_stop)


def _wait_ready(stack: FeatureStack) -> None:
    deadline = time.monotonic() + 60
    while not stack.ready and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stack.ready


def test_a_preview_has_at_most_its_voxels_and_bins_the_bank_divides():
    assert preview_grid(SHAPE, SPACING, Grid()) is None  # small: the bank itself answers first
    grid = choose_grid((96, 512, 512), (2.0, 0.5, 0.5), 4 << 30)
    preview = preview_grid((96, 512, 512), (2.0, 0.5, 0.5), grid)
    assert preview.half and np.prod(binned_shape((96, 512, 512), preview.factors)) <= PREVIEW_VOXELS
    assert all(p % g == 0 for p, g in zip(preview.factors, grid.factors))


def test_the_preview_answers_until_the_bank_is_ready_and_the_next_fit_reads_the_bank(monkeypatch):
    monkeypatch.setattr(feature_stack, "PREVIEW_VOXELS", 5_000)
    volume, image, mask, _ = _binned_volume()
    config = ResponderConfig(trees=16)
    preview = preview_grid(SHAPE, SPACING, Grid())
    gated = _GatedStack(image, SPACING, grid=Grid(), preview=preview)
    responder = FirstResponder(image, volume, config, features=gated)
    assert "preview binned" in responder.grid_note()
    assert responder.fit() and not responder.upgradable
    while responder.refine():
        pass
    probs = responder.predict()
    assert probs.shape == (2,) + SHAPE and not gated.ready  # answered from the preview
    pred = probs.argmax(0)
    assert 2 * np.sum((pred == 1) & (mask == 1)) / (np.sum(pred == 1) + np.sum(mask == 1)) > 0.8
    assert responder.block_multiple == preview.factors
    gated.gate.set()  # the bank finishes in the background
    _wait_ready(gated)
    assert responder.upgradable and responder.behind
    assert responder.fit() and not responder.upgradable
    assert not gated.preview.ready  # freed: the bank answers from now on
    while responder.refine():
        pass
    reference = FirstResponder(image, volume, config, features=FeatureStack(image, SPACING))
    reference.fit()
    while reference.refine():
        pass
    np.testing.assert_allclose(responder.predict(), reference.predict(), atol=1e-6)  # now the bank's answer


def test_the_session_shows_the_preview_first_then_the_banks_mask(monkeypatch):
    monkeypatch.setattr(feature_stack, "PREVIEW_VOXELS", 5_000)
    image, mask = sphere_volume(SHAPE, radius=9)
    annotation = np.zeros(SHAPE, np.uint8)
    for z in (5, 8, 11):
        annotation[z] = mask[z] + 1
    gated = _GatedStack(image, SPACING, grid=Grid(), preview=preview_grid(SHAPE, SPACING, Grid()))
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, annotation=annotation,
                                  config=tiny_config(trees=16), features=gated)
    events = session.interactive(first_refresh_steps=10**6)
    first, upgraded = None, None
    for _, event in zip(range(10_000), events):
        if isinstance(event, Prediction) and event.learner == "forest":
            if first is None:
                first = event
                assert session.responder._bank is gated.preview
                gated.gate.set()
                _wait_ready(gated)
            elif session.responder._bank is gated:
                upgraded = event
                break
    events.close()
    assert first is not None and upgraded is not None  # the bank's mask replaced the preview's without new labels
    assert 2 * np.sum(upgraded.labels & mask) / (upgraded.labels.sum() + mask.sum()) > 0.9


class _FailingStack(FeatureStack):
    """A bank whose computation runs out of memory."""

    def get(self, should_stop=None) -> np.ndarray:
        raise MemoryError("no room for the bank")


def test_a_bank_that_cannot_be_computed_leaves_the_preview_answering(monkeypatch):
    monkeypatch.setattr(feature_stack, "PREVIEW_VOXELS", 5_000)
    volume, image, mask, _ = _binned_volume()
    failing = _FailingStack(image, SPACING, grid=Grid(), preview=preview_grid(SHAPE, SPACING, Grid()))
    responder = FirstResponder(image, volume, ResponderConfig(trees=16), features=failing)
    with pytest.warns(RuntimeWarning, match="could not be computed"):
        assert responder.fit()
        deadline = time.monotonic() + 60
        while failing.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert isinstance(failing.error, MemoryError) and not responder.upgradable
    assert responder.fit() and responder._bank is failing.preview  # refits keep reading the preview
    assert responder.predict().shape == (2,) + SHAPE


def test_the_bank_stops_before_its_next_scale_when_asked(monkeypatch):
    image = sphere_volume(SHAPE, radius=8)[0]
    scales, real = [], features._scale_columns
    monkeypatch.setattr(features, "_scale_columns", lambda *args: scales.append(args[2]) or real(*args))
    asked = []
    with pytest.raises(ComputationCancelled):
        compute_features(image, SPACING, should_stop=lambda: asked.append(1) or len(asked) > 1)
    assert len(scales) == 1  # the first scale ran; none after it was asked to stop


def test_a_stack_dropped_for_another_image_stops_computing_unless_a_session_claimed_it(monkeypatch):
    gate, real = threading.Event(), feature_stack.compute_features

    def gated(*args, **kwargs):
        gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_stack, "compute_features", gated)
    one, other = (SimpleNamespace(data=sphere_volume(SHAPE, radius=r)[0], scale=SPACING) for r in (6, 9))
    cache = FeatureCache()
    first = cache.for_layer(one)
    second = cache.for_layer(other)  # the user chose another image while the first bank computed
    gate.set()
    first._thread.join(60)
    second._thread.join(60)
    assert not first._thread.is_alive() and not first.ready and first.error is None  # stopped, nothing kept
    assert second.ready
    assert first.get().shape == second.get().shape  # asked later, it computes in the caller's thread

    gate.clear()
    claimed = FeatureCache()
    used = claimed.for_layer(one, claim=True)  # given to a session
    chosen = claimed.for_layer(other)
    claimed.unclaim()  # the session is gone: a stack dropped now stops
    dropped = claimed.for_layer(one)
    gate.set()
    for stack in (used, chosen, dropped):
        stack._thread.join(60)
    assert used.ready and used.error is None  # the session's bank went on computing
    assert not chosen.ready and dropped.ready


class _CountedLazy:
    """A lazy image (``shape``, ``dtype``, slicing; not an ``np.ndarray``) that counts how often it is read whole."""

    def __init__(self, array: np.ndarray) -> None:
        self._array, self.shape, self.dtype, self.ndim, self.reads = array, array.shape, array.dtype, array.ndim, 0

    def __getitem__(self, index):
        return self._array[index]

    def __array__(self, dtype=None, copy=None):
        self.reads += 1
        return self._array.copy() if dtype is None else self._array.astype(dtype)


def test_a_lazy_image_gets_its_bank_while_the_user_paints_and_the_session_is_built_on_the_array_read():
    from napari_sparseseg.plugin.session_build import new_session

    image, mask = sphere_volume(SHAPE, radius=8)
    lazy = _CountedLazy(image)
    layer = SimpleNamespace(data=lazy, scale=SPACING)
    stack = FeatureCache().for_layer(layer)  # chosen: its bank computes in the background from the image read once
    assert stack is not None and stack.matches(lazy, SPACING)
    stack._thread.join(60)
    assert stack.ready and lazy.reads == 1
    painted = np.zeros(SHAPE, np.uint8)
    painted[8] = mask_to_layer(mask[8])
    session = new_session(layer, SimpleNamespace(data=painted), 1, tiny_config(), stack)()
    assert lazy.reads == 1  # Start read nothing again
    assert session.responder.features is stack and not session.volume.lazy
    assert np.array_equal(session.responder.features.array(), image)
    assert session.responder.fit() and session.responder.predict().shape == (2, *SHAPE)
    assert not FeatureStack(lazy, SPACING).matches(image, SPACING)  # another array of the same values is not it


def test_the_window_says_how_the_filter_bank_comes_on():
    from napari_sparseseg.plugin.background import bank_words

    image = sphere_volume(SHAPE, radius=8)[0]
    assert bank_words(None) == ""
    stack = FeatureStack(image, SPACING, preview=Grid((1, 2, 2)))
    assert "will be computed" in bank_words(stack)
    stack.preview.started = 100.0  # the preview began (reading the image) at 100 s
    assert bank_words(stack, now=112.4) == "first responder: computing its filter bank, 12 s so far (keep painting)"
    stack.preview.get()
    assert "a coarser preview is ready" in bank_words(stack, now=130.0)
    stack.preview.started = 100.0
    stack.started, stack.share_done = 120.0, 0.4  # the bank itself began at 120 s and has 40 % of its columns
    assert bank_words(stack, now=140.0) == ("first responder: computing its filter bank: 40 % in 40 s, about 30 s "
                                            "left; a coarser preview is ready to answer at Start (keep painting)")
    stack.error = MemoryError("out of memory")
    assert "failed (out of memory); its coarser preview answers" in bank_words(stack)
    alone = FeatureStack(image, SPACING)  # no preview to answer meanwhile
    alone.error = MemoryError("out of memory")
    assert "failed (out of memory); Start computes it again" in bank_words(alone)
    stack.error = None
    stack.get()
    assert stack.share_done == 1.0 and bank_words(stack).startswith("first responder ready (filter bank computed in")
    cache = FeatureCache()
    one, other = (SimpleNamespace(data=sphere_volume(SHAPE, radius=r)[0], scale=SPACING) for r in (6, 9))
    held = cache.for_layer(one)
    assert cache.held_for(one) is held and cache.held_for(other) is None and cache.held_for(None) is None


def test_the_bank_never_plans_with_more_than_half_the_machine_whatever_the_settings_ask(monkeypatch):
    """A session store's settings may allow the bank any number of bytes; the machine's memory bounds it."""
    from napari_sparseseg.core import footprint
    from napari_sparseseg.core.first_responder import FirstResponder

    image = np.random.default_rng(0).normal(size=(16, 64, 64)).astype(np.float32)
    volume = AnnotatedVolume(image, num_classes=1)
    generous = ResponderConfig(max_feature_bytes=1 << 50)
    assert FirstResponder(image, volume, generous).grid.factors == (1, 1, 1)
    monkeypatch.setattr(footprint, "physical_memory", lambda: 8 << 20)  # a bank of 12.6 MB does not fit
    responder = FirstResponder(image, volume, generous)
    assert responder.max_bytes == 4 << 20
    assert responder.grid is None or responder.grid.factors != (1, 1, 1) or responder.grid.itemsize == 2
