import threading

import numpy as np
import pytest

from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.events import TrainStep
from napari_sparseseg.core.prefetch import OneAhead
from napari_sparseseg.core.sampler import Sampling
from napari_sparseseg.core.session import SegmentationSession


class _Builds:
    """A build function that records the key and the thread of every call."""

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def __call__(self, key):
        self.calls.append((key, threading.current_thread().name))
        if key == self.fail_on:
            raise ValueError(f"cannot build {key}")
        return (key, len(self.calls))


def test_one_ahead_hands_over_the_item_built_in_the_worker():
    build = _Builds()
    ahead = OneAhead(build, name="test-prefetch")
    first = ahead.take("a")
    second = ahead.take("a")
    ahead.close()
    assert first == ("a", 1) and second == ("a", 2)  # items come in build order
    assert build.calls[0][1] == threading.current_thread().name  # nothing was pending: built here
    assert build.calls[1][1].startswith("test-prefetch")  # built ahead in the worker
    assert (ahead.hits, ahead.misses) == (1, 1)


@pytest.mark.parametrize("change", ["key", "stale"])
def test_one_ahead_rebuilds_when_the_key_changed_or_the_item_is_stale(change):
    build = _Builds()
    ahead = OneAhead(build)
    ahead.take("a")
    item = ahead.take("b") if change == "key" else ahead.take("a", fresh=lambda item: False)
    ahead.close()
    assert item == ("b" if change == "key" else "a", 3)  # the pending item 2 was dropped, 3 built here
    assert build.calls[2][1] == threading.current_thread().name
    assert (ahead.hits, ahead.misses) == (0, 2)


def _failing_at(n):
    """A build whose ``n``-th call raises; the others return their call count."""
    calls = []

    def build(key):
        calls.append(key)
        if len(calls) == n:
            raise ValueError(f"build {n} failed")
        return len(calls)

    return build


def test_one_ahead_raises_the_error_of_its_own_build_and_drops_others():
    ahead = OneAhead(_failing_at(2))
    ahead.take("a")  # build 1 here; build 2, pending for "a", fails in the worker
    with pytest.raises(ValueError, match="build 2 failed"):
        ahead.take("a")
    ahead.close()
    other = OneAhead(_failing_at(2))
    other.take("a")
    assert other.take("b") == 3  # the failed build was for another key: dropped, "b" built here
    other.close()


def test_one_ahead_close_ends_the_worker_thread():
    ahead = OneAhead(_Builds(), name="test-close")
    ahead.take("a")
    assert any(t.name.startswith("test-close") for t in threading.enumerate())
    ahead.close()
    ahead.close()  # idempotent
    assert not any(t.name.startswith("test-close") for t in threading.enumerate())


TINY = ModelConfig(base_channels=4, depth=3)


def _session(sphere, prefetch, **train):
    image, mask = sphere
    ann = np.where(np.arange(16)[:, None, None] == 8, mask_to_annotation(mask), 0)
    config = SessionConfig(model=TINY, device="cpu", train=TrainConfig(
        patch_voxels=8 * 16 * 16, warmup_steps=1, prefetch=prefetch, **train))
    return SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), annotation=ann, config=config)


def test_prefetching_trains_on_the_same_batches_as_building_inline(sphere):
    """Seeded training gives the same losses whether the next batch is built ahead in a thread or not."""
    losses = {}
    for mode in ("never", "always"):
        s = _session(sphere, mode)
        losses[mode] = [e.loss for e in s.train(max_steps=6) if isinstance(e, TrainStep)]
        if mode == "always":
            assert s.trainer.batches.built_ahead == (5, 1)  # every step after the first took a batch built ahead
        s.trainer.close()
    assert losses["always"] == losses["never"]


def test_a_correction_reaches_the_next_step_despite_the_batch_built_ahead(sphere):
    _image, mask = sphere
    s = _session(sphere, "always")
    s.trainer.batches.sampling = Sampling(foreground_share=0.0, random_share=0.0)
    gen = s.train()
    first = next(gen)
    assert isinstance(first, TrainStep)  # the worker now cuts the next batch from the labels of this step
    s.trainer.batches._prefetch._pending[1].result()  # ... and has finished it
    s.add_correction((4, slice(None), slice(None)), 1)  # background painted over a whole slice
    step = next(gen)
    assert step.revision == s.volume.revision > first.revision
    assert s.trainer.batches.built_ahead[1] == 2  # the stale batch was rebuilt from the corrected labels
    s.trainer.close()


def test_auto_prefetches_on_cuda_only(sphere):
    import torch

    s = _session(sphere, "auto")
    assert not s.trainer.prefetching  # on the CPU the host part of a step is a few percent
    s.trainer.batches.device = torch.device("cuda")  # the decision only (nothing runs)
    assert s.trainer.prefetching
    assert _session(sphere, "always").trainer.prefetching
    assert not _session(sphere, "never").trainer.prefetching


def test_interactive_ends_the_prefetching_thread(sphere):
    s = _session(sphere, "always")
    events = s.interactive(first_refresh_steps=100)
    steps = 0
    for event in events:  # the first responder's answers come first, then the net's steps
        steps += isinstance(event, TrainStep)
        if steps == 2:
            break
    assert s.trainer.batches._prefetch._executor is not None
    events.close()
    assert s.trainer.batches._prefetch._executor is None and s.trainer.batches._prefetch._pending is None


def test_prefetch_mode_is_validated():
    with pytest.raises(ValueError, match="prefetch must be one of"):
        TrainConfig(prefetch="sometimes")
