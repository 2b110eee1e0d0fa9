"""Model files and session stores are untrusted: loading one never runs code from it, and bad weights never land.

A pickle can name any Python callable and have it called while loading (``__reduce__``). These tests plant such a
payload (``exec`` of a line that writes a marker file) in a model file and in a session store's checkpoint, open
them every way the product does, and check that the marker never appears and the user gets a clear answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sparseseg.cli import main
from napari_sparseseg.core.checkpoint import UnsafeCheckpointError, read_model, save_model
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.core.volume import normalize
from napari_sparseseg.store import SessionStore
from tests.conftest import sphere_volume, tiny_config

SHAPE = (16, 32, 32)
CONFIG = tiny_config()


class _RunsCode:
    """Unpickles into a call of ``exec``: what a malicious model file carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _session() -> SegmentationSession:
    image, mask = sphere_volume(SHAPE, radius=8)
    session = SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), config=CONFIG)
    session.add_labels((8, slice(None), slice(None)), mask[8] + 1)
    return session


def _one_slice_files(folder) -> None:
    """``img.npz`` (the sphere) and ``ann.npz`` (its slice z = 8 painted) in ``folder``."""
    image, mask = sphere_volume(SHAPE)
    np.savez(folder / "img.npz", image=image)
    ann = np.zeros(SHAPE, np.uint8)
    ann[8] = mask[8] + 1
    np.savez(folder / "ann.npz", labels=ann)


def _plant(path, marker) -> None:
    """A file that looks like our checkpoint and calls ``exec`` when unpickled."""
    real = torch.load(path, weights_only=True)
    real["config"]["payload"] = _RunsCode(marker)
    torch.save(real, path)


def test_a_model_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    session = _session()
    next(session.train(max_steps=1))
    model = save_model(session.trainer, tmp_path / "evil.pt")
    marker = tmp_path / "marker"
    _plant(model, marker)
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        read_model(model)
    with pytest.raises(ValueError):
        SegmentationSession.from_model(sphere_volume(SHAPE)[0], model, spacing=(2.0, 1.0, 1.0), device="cpu")
    image, _ = sphere_volume(SHAPE)
    np.savez(tmp_path / "img.npz", image=image)
    assert main(["predict", str(tmp_path / "img.npz"), "--model", str(model), "--out", str(tmp_path / "o.tif"),
                 "--device", "cpu"]) == 2
    assert not marker.exists()
    assert not (tmp_path / "o.tif").exists()


def test_a_session_store_whose_checkpoint_would_run_code_opens_without_running_it(tmp_path):
    session = _session()
    store = SessionStore.create(tmp_path / "s.zarr", session)
    next(session.train(max_steps=1))
    store.save_checkpoint(session.trainer)
    store.close()
    marker = tmp_path / "marker"
    _plant(tmp_path / "s.zarr" / "checkpoints" / "latest.pt", marker)
    reopened, s2 = SessionStore.open(tmp_path / "s.zarr")
    assert not marker.exists()
    assert "could run code" in reopened.resume_error
    assert s2.trainer.step == 0  # training starts afresh; the labels are still there
    assert s2.volume.n_labeled == session.volume.n_labeled
    reopened.close()


def test_a_model_file_with_impossible_counts_or_nan_weights_is_refused(tmp_path):
    session = _session()
    model = save_model(session.trainer, tmp_path / "m.pt")
    payload = torch.load(model, weights_only=True)
    payload["num_classes"] = 10_000
    torch.save(payload, tmp_path / "classes.pt")
    with pytest.raises(ValueError, match="num_classes"):
        read_model(tmp_path / "classes.pt")
    payload = torch.load(model, weights_only=True)
    next(iter(payload["state"]["model"].values())).fill_(float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="not finite"):
        read_model(tmp_path / "nan.pt")


def test_a_non_finite_loss_leaves_the_weights_and_the_saved_checkpoints_as_they_were(tmp_path, monkeypatch):
    session = _session()
    store = SessionStore.create(tmp_path / "s.zarr", session)
    list(session.train(max_steps=2))
    store.save_checkpoint(session.trainer)
    before = {k: v.clone() for k, v in session.trainer.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in session.trainer.ema_model.state_dict().items()}
    trainer = session.trainer
    real = trainer._backward

    def nan_loss(*args):
        loss, label_loss, logits = real(*args)
        return loss * float("nan"), label_loss, logits

    monkeypatch.setattr(trainer, "_backward", nan_loss)
    with pytest.raises(FloatingPointError, match="weights of step 2 are kept"):
        next(session.train(max_steps=1))
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    for key, value in trainer.ema_model.state_dict().items():
        assert torch.equal(value, ema_before[key]), key
    store.close(checkpoint=True)
    _, s2 = SessionStore.open(tmp_path / "s.zarr")
    assert s2.trainer.step == 2


def test_weights_that_are_not_finite_are_never_written(tmp_path):
    session = _session()
    save_model(session.trainer, tmp_path / "m.pt")
    good = (tmp_path / "m.pt").read_bytes()
    with torch.no_grad():
        next(session.trainer.model.parameters()).fill_(float("inf"))
    with pytest.raises(FloatingPointError):
        save_model(session.trainer, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").read_bytes() == good


def test_an_image_near_the_float32_limit_normalises_to_finite_features():
    image = np.random.default_rng(0).uniform(-3e38, 3e38, size=(1, 8, 16, 16)).astype(np.float32)
    features = normalize(image)
    assert np.isfinite(features).all()
    assert features.min() >= 0 and features.max() <= 1


def test_a_budgeted_run_on_an_empty_annotation_ends(tmp_path):
    image, _ = sphere_volume(SHAPE)
    session = SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), config=CONFIG)
    events = list(session.train(max_seconds=0.3, idle_sleep=0.05))
    assert events and session.trainer.step == 0


def test_train_on_an_empty_annotation_is_refused_before_training(tmp_path, capsys):
    image, _ = sphere_volume(SHAPE)
    np.savez(tmp_path / "img.npz", image=image)
    np.savez(tmp_path / "ann.npz", labels=np.zeros(SHAPE, np.uint8))
    rc = main(["train", str(tmp_path / "img.npz"), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "2",
               "--model", str(tmp_path / "m.pt"), "--device", "cpu"])
    assert rc == 2
    assert "no labeled voxels" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_cli_refuses_a_bad_output_path_before_training_and_reports_os_errors_in_one_line(tmp_path, capsys):
    _one_slice_files(tmp_path)
    base = ["train", str(tmp_path / "img.npz"), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "60",
            "--model", str(tmp_path / "m.pt"), "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "missing" / "mask.tif")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "mask.png")]) == 2
    assert "unsupported output type" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()  # refused before training
    assert main(["predict", str(tmp_path / "nothing.npz"), "--model", str(tmp_path / "m.pt"),
                 "--out", str(tmp_path / "o.tif")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_mask_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from napari_sparseseg import io
    from napari_sparseseg.formats import tiff

    out = tmp_path / "mask.tif"
    io.save_mask(out, np.ones(SHAPE, np.uint8), (2.0, 1.0, 1.0))
    good = out.read_bytes()

    def full_disk(path, mask, spacing):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(tiff, "write_tiff", full_disk)
    with pytest.raises(OSError):
        io.save_mask(out, np.zeros(SHAPE, np.uint8), (2.0, 1.0, 1.0))
    assert out.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["mask.tif"]  # no temporary file left behind


@pytest.mark.parametrize("suffix", [".zarr", ".ome.zarr"])
def test_a_zarr_mask_replaces_the_old_store_whole_or_not_at_all(tmp_path, monkeypatch, suffix):
    from napari_sparseseg import io
    from napari_sparseseg.formats import zarr_store

    out = tmp_path / f"mask{suffix}"
    io.save_mask(out, np.ones(SHAPE, np.uint8), (2.0, 1.0, 1.0))
    writer = "write_ome_zarr" if suffix == ".ome.zarr" else "write_zarr"
    real = getattr(zarr_store, writer)

    def full_disk(path, mask, spacing, origin=None):
        real(path, mask, spacing, origin)  # most of it written...
        raise OSError(28, "No space left on device", str(path))  # ...then the disk fills

    monkeypatch.setattr(zarr_store, writer, full_disk)
    with pytest.raises(OSError):
        io.save_mask(out, np.zeros(SHAPE, np.uint8), (2.0, 1.0, 1.0))
    assert (io.load_volume(out)[0] == 1).all()  # the old mask, whole
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no partial store left beside it
    monkeypatch.undo()
    io.save_mask(out, np.full(SHAPE, 2, np.uint8), (2.0, 1.0, 1.0))
    assert (io.load_volume(out)[0] == 2).all() and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_ctrl_c_during_train_keeps_the_steps_made_in_the_model_and_the_session(tmp_path, monkeypatch):
    from napari_sparseseg.core.trainer import Trainer

    _one_slice_files(tmp_path)
    real = Trainer.train_step

    def interrupted_at_step_3(self, progress=None):
        if self.step == 2:
            raise KeyboardInterrupt
        return real(self, progress)

    monkeypatch.setattr(Trainer, "train_step", interrupted_at_step_3)
    rc = main(["train", str(tmp_path / "img.npz"), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "60",
               "--model", str(tmp_path / "m.pt"), "--session", str(tmp_path / "s.zarr"), "--device", "cpu",
               "--model-size", "small"])
    assert rc == 130
    assert read_model(tmp_path / "m.pt")["state"]["step"] == 2
    _, resumed = SessionStore.open(tmp_path / "s.zarr")
    assert resumed.trainer.step == 2


@pytest.mark.parametrize("values, expected", [
    ({0: 100, 1: 50, 2: 50}, []),
    ({1: 150, 2: 50}, ["ground-truth mask"]),
    ({0: 100, 1: 100}, ["only background"]),
    ({0: 100, 2: 100}, ["no background"]),
    ({0: 100, 1: 50, 2: 40, 9: 1}, ["stray label"]),
])
def test_annotation_warnings_name_what_a_user_would_want_to_know(values, expected):
    from napari_sparseseg.cli import annotation_warnings

    annotation = np.concatenate([np.full(n, v, np.uint8) for v, n in values.items()])
    warnings = annotation_warnings(annotation)
    assert len(warnings) == len(expected)
    for text, word in zip(warnings, expected):
        assert word in text


@pytest.mark.parametrize("classes, warned", [(0, True), (8, False)])
def test_train_warns_of_a_stray_label_unless_told_how_many_classes(tmp_path, capsys, classes, warned):
    import argparse

    from napari_sparseseg.cli.train import _read_labeled

    image, _ = sphere_volume(SHAPE)
    annotation = np.zeros(SHAPE, np.uint8)
    annotation[0], annotation[1], annotation[2, 0, 0] = 1, 2, 9  # background, class 1, and one voxel of "class 8"
    np.savez(tmp_path / "img.npz", image=image)
    np.savez(tmp_path / "ann.npz", labels=annotation)
    args = argparse.Namespace(level=0, encoding="auto", classes=classes)  # --classes' default is 0
    _read_labeled(str(tmp_path / "img.npz"), str(tmp_path / "ann.npz"), args)
    assert ("stray label" in capsys.readouterr().err) is warned


def test_fractional_labels_are_refused(tmp_path, capsys):
    image, mask = sphere_volume(SHAPE)
    np.savez(tmp_path / "img.npz", image=image)
    np.savez(tmp_path / "ann.npz", labels=np.full(SHAPE, 1.5, np.float32))
    rc = main(["train", str(tmp_path / "img.npz"), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "5",
               "--model", str(tmp_path / "m.pt"), "--device", "cpu"])
    assert rc == 2 and "whole numbers" in capsys.readouterr().err
