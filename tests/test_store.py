"""The session store: layout, round trip, chunk-level autosave, crash leftovers, CLI train --session / resume."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from napari_sparseseg.cli import main
from napari_sparseseg.core.annotation import Source
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.events import TrainStep
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.store import STORE_KEY, STORE_VERSION, SessionStore, align_to_chunks, is_session_store
from tests.conftest import sphere_volume

SHAPE = (16, 48, 48)
CHUNKS = (8, 16, 16)
CONFIG = SessionConfig(model=ModelConfig(base_channels=4, depth=2),
                       train=TrainConfig(patch_voxels=8 * 32 * 32, batch_size=1, augment=False), device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def make_session(num_classes: int = 1) -> SegmentationSession:
    image, mask = sphere_volume(SHAPE, radius=10)
    session = SegmentationSession(image, num_classes=num_classes, spacing=(2.0, 1.0, 1.0), config=CONFIG)
    session.add_labels((8, slice(None), slice(None)), mask[8] + 1)
    session.add_correction((4, slice(20, 28), slice(20, 28)), 1)
    return session


def chunk_mtimes(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns
            for name in ("labels", "source", "weights") for p in (path / name / "c").rglob("*") if p.is_file()}


def test_round_trip_restores_labels_sources_prediction_history_and_training_step(tmp_path):
    session = make_session()
    store = SessionStore.create(tmp_path / "s.zarr", session, class_names=["sphere"], colors=[(1, 0, 0, 1)],
                                chunks=CHUNKS)
    for event in session.train(max_steps=3):
        store.record_step(event)
    store.save_checkpoint(session.trainer)
    prediction = session.predict(Box((0, 0, 0), (8, 32, 32)))
    store.record_prediction(prediction)
    store.close()

    assert is_session_store(tmp_path / "s.zarr")
    attrs = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs[STORE_KEY] == {"version": STORE_VERSION} and attrs["num_classes"] == 1 and attrs["image_ref"] is None
    store2, s2 = SessionStore.open(tmp_path / "s.zarr")
    np.testing.assert_array_equal(s2.volume.labels, session.volume.labels)
    np.testing.assert_array_equal(s2.volume.source, session.volume.source)
    assert (s2.volume.source == Source.CORRECTED).sum() == 64  # corrections keep their extra weight
    cw = session.volume.class_weights(0.5)
    full = Box.full(SHAPE).slices
    np.testing.assert_array_equal(s2.volume.weights(full, cw, 2.0), session.volume.weights(full, cw, 2.0))
    np.testing.assert_allclose(store2.read("weights"), session.volume.weights(full, cw, 2.0))
    assert s2.trainer.step == 3 and store2.resume_error is None
    for a, b in zip(s2.trainer.model.parameters(), session.trainer.model.parameters()):
        torch.testing.assert_close(a, b)
    assert [r["step"] for r in store2.history()] == [1, 2, 3]
    assert store2.class_names == ["sphere"] and store2.colors == [[1.0, 0.0, 0.0, 1.0]]
    assert store2.has_prediction()
    np.testing.assert_array_equal(store2.read("prediction")[prediction.box.slices], session.merge(prediction))
    np.testing.assert_allclose(store2.read("probabilities")[(slice(None),) + prediction.box.slices],
                               prediction.probabilities, atol=1e-3)
    assert s2.config == CONFIG
    next(s2.train(max_steps=1))
    assert s2.trainer.step == 4  # training resumes at the checkpoint's step


def test_autosave_writes_the_chunks_a_stroke_touched_and_only_those(tmp_path):
    """The autosave thread, not an explicit flush, puts a stroke on disk (how fast is benchmarks/durability.py's
    ``latency``: under 1 s at p99 on a loaded 2-core machine)."""
    session = make_session()
    path = tmp_path / "s.zarr"
    store = SessionStore.create(path, session, chunks=CHUNKS)
    before = chunk_mtimes(path)
    store.start_autosave(0.1)
    time.sleep(0.05)
    t0 = time.perf_counter()
    session.add_labels((slice(1, 3), slice(2, 5), slice(2, 5)), 2)
    labels = zarr.open_array(str(path / "labels"), mode="r")
    while labels[1, 2, 2] != 2:
        assert time.perf_counter() - t0 < 60, "the autosave thread never wrote the stroke"
        time.sleep(0.02)
    store.stop_autosave()
    after = chunk_mtimes(path)
    changed = sorted(k for k in after if before.get(k) != after[k])
    assert changed == ["labels/c/0/0/0", "source/c/0/0/0", "weights/c/0/0/0"]


def test_align_to_chunks_rounds_out_and_clips():
    assert align_to_chunks(Box((1, 17, 30), (3, 18, 33)), CHUNKS, SHAPE) == Box((0, 16, 16), (8, 32, 48))
    assert align_to_chunks(Box((9, 40, 40), (16, 48, 48)), (8, 32, 32), SHAPE) == Box((8, 32, 32), (16, 48, 48))


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no cleanup handler runs."""


def flush_killed_at(store: SessionStore, array: str, monkeypatch) -> None:
    """Flush ``store``, killed (:class:`Killed`) when zarr renames the first chunk of ``array`` into place."""
    real_replace = pathlib.Path.replace

    def dying_replace(self, target):
        if f"/{array}/" in str(target):
            raise Killed
        return real_replace(self, target)

    monkeypatch.setattr(pathlib.Path, "replace", dying_replace)
    with pytest.raises(Killed):
        store.flush()
    monkeypatch.undo()


def test_chunk_write_killed_before_rename_leaves_old_chunk_and_a_store_that_opens(tmp_path, monkeypatch):
    session = make_session()
    path = tmp_path / "s.zarr"
    store = SessionStore.create(path, session, chunks=CHUNKS)
    old = store.read("labels")
    session.add_labels((slice(8, 9), slice(0, 16), slice(0, 16)), 2)
    flush_killed_at(store, "labels", monkeypatch)
    assert list(path.glob("labels/**/*.partial"))  # the new chunk was written in full, but never renamed
    store2, s2 = SessionStore.open(path)
    np.testing.assert_array_equal(s2.volume.labels, old)  # the previous chunk is intact
    assert not list(path.glob("**/*.partial"))


@pytest.mark.parametrize("dies_at", ["source", "weights"])
def test_kill_between_the_chunks_of_one_edit_is_repaired_when_the_store_opens(tmp_path, monkeypatch, dies_at):
    """A kill after a chunk's labels were written but before its source or weights: the store opened next has its
    stored source and weights agree with its labels again (else the voxels of that stroke keep weight 0 on disk)."""
    session = make_session()
    path = tmp_path / "s.zarr"
    store = SessionStore.create(path, session, chunks=CHUNKS)
    store.flush()
    session.add_labels((slice(0, 2), slice(0, 6), slice(0, 14)), 3 - 1)  # a new stroke in chunk (0, 0, 0)
    session.add_labels((8, slice(16, 32), slice(16, 32)), 0)  # an erase in chunk (8, 16, 16)
    flush_killed_at(store, dies_at, monkeypatch)
    store.stop_autosave(flush=False)
    torn = zarr.open_group(str(path), mode="r+")
    assert (np.asarray(torn["weights"][0:2, 0:6, 0:14]) == 0).any()  # the kill left labels without weights
    torn["source"][8:16, 32:48, 32:48] = Source.PAINTED  # stale chunks where nothing is labeled (an erase cut short)
    torn["weights"][8:16, 32:48, 32:48] = 0.5
    store2, s2 = SessionStore.open(path)
    labels, source = store2.read("labels"), store2.read("source")
    np.testing.assert_array_equal(labels, s2.volume.labels)
    np.testing.assert_array_equal(source, s2.volume.source)
    cw = s2.volume.class_weights(CONFIG.train.class_balance_power)
    expected = s2.volume.weights(Box.full(SHAPE).slices, cw, CONFIG.train.correction_weight)
    np.testing.assert_allclose(store2.read("weights"), expected, rtol=1e-2)
    np.testing.assert_array_equal(store2.read("weights") > 0, labels > 0)
    store2.close()


def test_open_refuses_what_is_not_a_store_or_is_newer(tmp_path):
    with pytest.raises(ValueError, match="not a napari-sparseseg session store"):
        SessionStore.open(tmp_path)
    zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=(2, 2, 2), dtype="u1")
    with pytest.raises(ValueError, match="not a napari-sparseseg session store"):
        SessionStore.open(tmp_path / "plain.zarr")
    path = tmp_path / "s.zarr"
    SessionStore.create(path, make_session()).close()
    zarr.open_group(str(path), mode="r+").attrs.update({STORE_KEY: {"version": 99}})
    with pytest.raises(ValueError, match="version 99 is newer"):
        SessionStore.open(path)
    with pytest.raises(ValueError, match="already exists"):
        SessionStore.create(path, make_session())
    with pytest.raises(ValueError, match="not a napari-sparseseg session store; refusing"):
        SessionStore.create(tmp_path / "plain.zarr", make_session(), overwrite=True)


def test_image_reference_is_read_back_instead_of_copied(tmp_path):
    image, mask = sphere_volume(SHAPE, radius=10)
    np.savez(tmp_path / "vol.npz", image=image, spacing=np.array([2.0, 1.0, 1.0]))
    session = make_session()
    SessionStore.create(tmp_path / "s.zarr", session, image_ref={"path": tmp_path / "vol.npz"}).close()
    assert not (tmp_path / "s.zarr" / "image").exists()
    _, s2 = SessionStore.open(tmp_path / "s.zarr")
    np.testing.assert_allclose(s2.volume.features, session.volume.features)


def test_a_referenced_image_file_replaced_by_another_image_of_its_shape_is_refused(tmp_path):
    image, _ = sphere_volume(SHAPE, radius=10)
    np.savez(tmp_path / "vol.npz", image=image, spacing=np.array([2.0, 1.0, 1.0]))
    session = make_session()
    SessionStore.create(tmp_path / "s.zarr", session, image_ref={"path": tmp_path / "vol.npz"}).close()
    other, _ = sphere_volume(SHAPE, radius=10, seed=7)  # the next scan, saved under the same name
    np.savez(tmp_path / "vol.npz", image=other, spacing=np.array([2.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="not the image this session was made from"):
        SessionStore.open(tmp_path / "s.zarr")  # its labels would train on the other scan's voxels
    assert main(["resume", str(tmp_path / "s.zarr"), "--seconds", "1", "--device", "cpu"]) == 2
    np.savez(tmp_path / "vol.npz", image=image, spacing=np.array([2.0, 1.0, 1.0]))  # put back: opens again
    store, _ = SessionStore.open(tmp_path / "s.zarr")
    store.close()


def test_best_checkpoint_keeps_the_lowest_loss(tmp_path):
    session = make_session()
    store = SessionStore.create(tmp_path / "s.zarr", session)
    next(session.train(max_steps=1))
    store.save_checkpoint(loss=1.0)
    next(session.train(max_steps=1))
    store.save_checkpoint(loss=2.0)
    index = store.checkpoint_index()
    assert index["latest"]["step"] == 2 and index["best"]["step"] == 1
    best = torch.load(tmp_path / "s.zarr" / "checkpoints" / "best.pt", weights_only=True)
    assert best["state"]["step"] == 1
    store.save_checkpoint(loss=0.5)
    assert store.checkpoint_index()["best"]["step"] == 2


def test_history_line_cut_by_a_crash_is_dropped_and_later_rows_stay_readable(tmp_path):
    session = make_session()
    store = SessionStore.create(tmp_path / "s.zarr", session)
    for event in session.train(max_steps=2):
        store.record_step(event)
    store.close()
    with open(tmp_path / "s.zarr" / "history.jsonl", "a") as fh:
        fh.write('{"step": 3, "lo')
    store2, s2 = SessionStore.open(tmp_path / "s.zarr")
    for event in s2.train(max_steps=1):
        store2.record_step(event)
    store2.close()
    assert [r["step"] for r in store2.history()] == [1, 2, 1]  # no checkpoint was written: resumes at step 0


def test_new_class_grows_probabilities_and_class_names(tmp_path):
    session = make_session()
    store = SessionStore.create(tmp_path / "s.zarr", session, class_names=["a"])
    session.volume.add_class()
    session.add_labels((slice(0, 1), slice(0, 4), slice(0, 4)), 3)
    store.flush()
    assert store.array("probabilities").shape == (3,) + SHAPE
    assert store.attrs["num_classes"] == 2 and store.class_names == ["a", "class 2"]
    _, s2 = SessionStore.open(tmp_path / "s.zarr")
    assert s2.volume.num_classes == 2 and s2.volume.labels[0, 0, 0] == 3


def test_interactive_loop_records_history_through_the_bound_store(tmp_path):
    session = make_session()
    store = SessionStore.create(tmp_path / "s.zarr", session)
    assert session.store is store
    events = session.interactive(first_refresh_steps=100)
    while session.trainer.step < 2:  # the first responder's predictions come first
        next(events)
    events.close()
    store.close()
    assert [r["step"] for r in store.history()] == [1, 2]


def test_saving_under_a_new_name_while_steps_are_recorded_loses_none(tmp_path, monkeypatch):
    """The training thread records each step into ``session.store`` while the user saves elsewhere: every step
    reaches the new store's history, in order: one recorded while the new store is written (into the old one), and
    one recorded into the old store after the switch (the training thread took it just before)."""
    import napari_sparseseg.store as store_module

    session = make_session()
    old = SessionStore.create(tmp_path / "a.zarr", session)
    step = next(e for e in session.train(max_steps=1) if isinstance(e, TrainStep))
    record = lambda i: session.store.record_step(dataclasses.replace(step, step=i))  # noqa: E731
    record(1)
    rename = os.rename

    def rename_while_training(src, dst):  # the new store's files are written, it is not yet bound
        record(2)
        rename(src, dst)
        record(3)

    monkeypatch.setattr(store_module.os, "rename", rename_while_training)
    new = SessionStore.create(tmp_path / "b.zarr", session)  # as the widget's "save as" does
    monkeypatch.undo()
    assert session.store is new
    old.record_step(dataclasses.replace(step, step=4))  # the training thread took the old store before the switch
    record(5)
    old.stop_autosave(flush=True)
    new.prepend_history(old.path)
    old.close()
    new.close()
    assert [r["step"] for r in new.history()] == [1, 2, 3, 4, 5]


@pytest.mark.usefixtures("steps_clock")
def test_cli_train_with_session_then_resume_continues_from_the_checkpoint(tmp_path, capsys):
    image, mask = sphere_volume((16, 32, 32))
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    np.savez(tmp_path / "img.npz", image=image, spacing=np.array([2.0, 1.0, 1.0]))
    np.savez(tmp_path / "ann.npz", image=image, labels=ann)
    store_path = tmp_path / "s.zarr"
    assert main(["train", str(tmp_path / "img.npz"), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "2",
                 "--session", str(store_path), "--device", "cpu"]) == 0
    first = SessionStore.open(store_path)[0].checkpoint_index()["latest"]["step"]
    assert first > 0
    out = tmp_path / "mask.tif"
    assert main(["resume", str(store_path), "--seconds", "2", "--device", "cpu", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"resuming {store_path} at step {first}" in said
    assert "wrote the segmentation shown at the end (" in said  # the window's loop: whose mask, said
    store, session = SessionStore.open(store_path)
    assert store.checkpoint_index()["latest"]["step"] == session.trainer.step > first
    assert out.exists()
    steps = [r["step"] for r in store.history()]
    assert steps[: first] == list(range(1, first + 1)) and steps[-1] == session.trainer.step
    assert main(["train", str(tmp_path / "img.npz"), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "1",
                 "--device", "cpu"]) == 2  # neither --model nor --session


def test_lazy_image_is_copied_slab_by_slab_and_a_large_store_reopens_lazily(tmp_path, monkeypatch):
    import napari_sparseseg.store as store_module

    image, mask = sphere_volume(SHAPE, radius=10)
    source = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=SHAPE, chunks=(4, 48, 48), dtype="f4")
    source[...] = image
    session = SegmentationSession(source, num_classes=1, spacing=(2.0, 1.0, 1.0), config=CONFIG)
    assert session.volume.lazy
    session.add_labels((8, slice(None), slice(None)), mask[8] + 1)
    session.add_correction((4, slice(20, 28), slice(20, 28)), 1)
    SessionStore.create(tmp_path / "s.zarr", session, chunks=CHUNKS).close()
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s.zarr" / "image"))[...], image)
    monkeypatch.setattr(store_module, "EAGER_IMAGE_BYTES", 0)  # as if the image were larger than memory
    _, s2 = SessionStore.open(tmp_path / "s.zarr")
    assert s2.volume.lazy
    np.testing.assert_array_equal(s2.volume.labels[...], session.volume.labels[...])
    np.testing.assert_array_equal(s2.volume.source[...], session.volume.source[...])


def test_a_setting_changed_while_the_session_runs_is_kept_by_its_store(tmp_path):
    session = make_session()
    store = SessionStore.create(tmp_path / "s.zarr", session, chunks=CHUNKS)
    session.update_training(correction_weight=5.0)  # the widget's box, changed mid-run
    store.close()
    _, reopened = SessionStore.open(tmp_path / "s.zarr")
    assert reopened.config.train.correction_weight == 5.0
