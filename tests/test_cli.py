import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sparseseg.cli import main
from tests.conftest import sphere_volume


@pytest.fixture
def gt_file(tmp_path):
    image, mask = sphere_volume((16, 32, 32))
    path = tmp_path / "gt.npz"
    np.savez(path, image=image, labels=mask, spacing=np.array([2.0, 1.0, 1.0], np.float32))
    return path


def test_evaluate_writes_json_with_headline_and_curve(gt_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["evaluate", str(gt_file), "--protocol", "z:3", "--budget-seconds", "4", "--device", "cpu",
               "--baselines", "rf", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert 0 <= r["dice_fg"] <= 1
    assert {"all", "unannotated", "curve", "steps", "baselines"} <= set(r)
    assert {"pa", "mpa", "miou", "dice", "iou"} <= set(r["all"])
    assert r["curve"][-1]["seconds"] >= 4 and r["steps"] >= 0  # how many steps 4 s hold depends on the machine
    assert r["baselines"]["rf"]["dice_fg"] > 0.8
    assert "shown: " in capsys.readouterr().out


def _train_model(gt_file, folder, seconds: str = "3"):
    """A model trained by the CLI on slice z = 8 of the sphere: its path."""
    image, mask = sphere_volume((16, 32, 32))
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    np.savez(folder / "ann.npz", image=image, labels=ann)
    model = folder / "m.pt"
    assert main(["train", str(gt_file), "--annotation", str(folder / "ann.npz"), "--seconds", seconds,
                 "--model", str(model), "--device", "cpu"]) == 0
    return model


@pytest.mark.usefixtures("steps_clock")
def test_train_then_predict_round_trip(gt_file, tmp_path):
    _, mask = sphere_volume((16, 32, 32))
    from napari_sparseseg.core.checkpoint import image_channels, read_model

    model = _train_model(gt_file, tmp_path)
    assert image_channels(read_model(model)) == 1  # two intensity views of one channel are one image channel
    out = tmp_path / "pred.tif"
    assert main(["predict", str(gt_file), "--model", str(model), "--out", str(out), "--device", "cpu"]) == 0
    import tifffile

    pred = tifffile.imread(out)
    assert pred.shape == mask.shape and set(np.unique(pred)) <= {0, 1}


@pytest.mark.parametrize("args, match", [
    (["evaluate", "missing.npz"], "no such file|cannot read"),
    (["evaluate", "{gt}", "--protocol", "z:99", "--budget-seconds", "1"], "only 16"),
])
def test_errors_are_one_line_messages_with_exit_code_2(gt_file, capsys, args, match):
    import re

    rc = main([a.replace("{gt}", str(gt_file)) for a in args])
    assert rc == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Traceback" not in err


@pytest.mark.parametrize("command", [["evaluate", "{gt}", "--budget-seconds"], ["demo", "--seconds"],
                                     ["resume", "x.sparseseg", "--seconds"]])
@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_a_budget_that_would_never_end_or_never_start_is_refused(gt_file, capsys, command, value):
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error, before anything runs
        main([a.replace("{gt}", str(gt_file)) for a in command] + [value])
    assert exit_.value.code == 2 and "must be > 0 and finite" in capsys.readouterr().err


def test_evaluate_writes_strict_json_where_a_score_has_no_voxels(gt_file, tmp_path):
    from napari_sparseseg.cli.evaluate import json_safe

    strict = json.dumps(json_safe({"unannotated": {"pa": float("nan"), "dice": [1.0, float("inf")]}}),
                        allow_nan=False)
    assert json.loads(strict) == {"unannotated": {"pa": None, "dice": [1.0, None]}}


def test_gui_without_a_display_says_what_to_do(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert main(["gui"]) == 2
    assert "napari-sparseseg demo" in capsys.readouterr().err


@pytest.mark.usefixtures("steps_clock")
def test_predict_a_folder_writes_a_mask_per_image_in_its_format_and_a_rerun_resumes(gt_file, tmp_path, capsys):
    import tifffile

    image, mask = sphere_volume((16, 32, 32))
    model = _train_model(gt_file, tmp_path, seconds="2")
    scans = tmp_path / "scans"
    scans.mkdir()
    np.savez(scans / "a.npz", image=image, spacing=np.array([2.0, 1.0, 1.0], np.float32))
    tifffile.imwrite(scans / "b.tif", image.astype(np.float32), imagej=True, metadata={"axes": "ZYX"})
    (scans / "notes.txt").write_text("not an image")
    (scans / "broken.npz").write_bytes(b"not a zip")
    out = tmp_path / "masks"
    capsys.readouterr()
    assert main(["predict", str(scans), "--model", str(model), "--out", str(out), "--device", "cpu"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.npz", "b_mask.tif"]  # the broken file did not stop b
    err = capsys.readouterr().err
    assert "broken.npz" in err and "Traceback" not in err
    assert tifffile.imread(out / "b_mask.tif").shape == mask.shape
    written = (out / "a_mask.npz").stat().st_mtime_ns
    (scans / "broken.npz").unlink()
    assert main(["predict", str(scans / "*.npz"), "--model", str(model), "--out", str(out), "--device", "cpu"]) == 0
    assert (out / "a_mask.npz").stat().st_mtime_ns == written  # already there: kept
    assert "1 already there" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "nothing*.npz"), "--model", str(model), "--out", str(out)]) == 2


def test_the_headless_demo_of_make_run_trains_and_reports(capsys):
    assert main(["demo", "--seconds", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "final mask" in out and "foreground Dice" in out and "device: cpu" in out


@pytest.mark.usefixtures("steps_clock")
def test_predict_writes_separate_objects_beside_the_mask_on_request(gt_file, tmp_path, capsys):
    import tifffile

    model = _train_model(gt_file, tmp_path, seconds="2")
    out = tmp_path / "pred.tif"
    assert main(["predict", str(gt_file), "--model", str(model), "--out", str(out), "--device", "cpu",
                 "--instances"]) == 0
    objects = tifffile.imread(tmp_path / "pred_instances.tif")
    mask = tifffile.imread(out)
    assert objects.shape == mask.shape and "objects" in capsys.readouterr().out
    assert np.all(mask[objects > 0] > 0)  # objects lie in the mask
    # a .zarr mask (a zarr image's, in a folder) is made in memory then, and split too
    assert main(["predict", str(gt_file), "--model", str(model), "--out", str(tmp_path / "p.zarr"),
                 "--instances", "--device", "cpu"]) == 0
    from napari_sparseseg.io import read_volume

    np.testing.assert_array_equal(read_volume(tmp_path / "p_instances.zarr").data, objects)
    np.testing.assert_array_equal(read_volume(tmp_path / "p.zarr").data, mask)


def test_an_annotation_layer_saved_from_napari_is_read_as_such(tmp_path, capsys):
    """Value 255 (napari's painted background) marks a saved annotation layer: class k = k, background 255."""
    from napari_sparseseg.cli.train import _read_annotation

    layer = np.zeros((4, 8, 8), np.uint8)
    layer[1, :4] = 255  # background
    layer[1, 4:] = 2  # class 2
    np.savez(tmp_path / "layer.npz", labels=layer, spacing=np.ones(3))
    annotation = _read_annotation(str(tmp_path / "layer.npz"), 0)
    assert set(np.unique(annotation[1, :4]).tolist()) == {1} and set(np.unique(annotation[1, 4:]).tolist()) == {3}
    assert "napari's annotation layer" in capsys.readouterr().err


def test_the_encoding_of_an_annotation_file_can_be_named(tmp_path):
    """A napari layer with only classes painted (no 255) is read right when --encoding layer says so."""
    from napari_sparseseg.cli.train import _read_annotation

    layer = np.zeros((4, 8, 8), np.uint8)
    layer[1, :4], layer[1, 4:] = 1, 2  # classes 1 and 2, no background painted
    np.savez(tmp_path / "layer.npz", labels=layer, spacing=np.ones(3))
    as_layer = _read_annotation(str(tmp_path / "layer.npz"), 0, "layer")
    as_annotation = _read_annotation(str(tmp_path / "layer.npz"), 0, "annotation")
    assert set(np.unique(as_layer[1]).tolist()) == {2, 3}  # classes 1 and 2 in the annotation encoding
    assert set(np.unique(as_annotation[1]).tolist()) == {1, 2}  # background and class 1


@pytest.mark.usefixtures("steps_clock")
def test_train_learns_from_several_volumes_and_refuses_what_cannot_train_together(gt_file, tmp_path, capsys):
    image, mask = sphere_volume((16, 32, 32), seed=3, radius=5.0)
    other, other_labels = tmp_path / "other.npz", np.zeros_like(mask)
    other_labels[6] = mask[6] + 1
    np.savez(other, image=image, labels=other_labels, spacing=np.array([2.0, 1.0, 1.0], np.float32))
    ann = np.zeros_like(mask)
    ann[8] = sphere_volume((16, 32, 32))[1][8] + 1
    np.savez(tmp_path / "ann.npz", labels=ann)
    model = tmp_path / "m.pt"
    assert main(["train", str(gt_file), "--annotation", str(tmp_path / "ann.npz"), "--also", str(other), str(other),
                 "--seconds", "2", "--model", str(model), "--device", "cpu"]) == 0
    assert model.exists() and f"also learning from {other} ({32 * 32} labeled voxels)" in capsys.readouterr().out
    coarse = tmp_path / "coarse.npz"
    np.savez(coarse, image=image, labels=other_labels, spacing=np.array([4.0, 1.0, 1.0], np.float32))
    folder = tmp_path / "more"  # a folder of pairs: b.npz with b_annotation.npz; c.npz has none
    folder.mkdir()
    np.savez(folder / "b.npz", image=image, spacing=np.array([2.0, 1.0, 1.0], np.float32))
    np.savez(folder / "b_annotation.npz", labels=other_labels)
    np.savez(folder / "c.npz", image=image, spacing=np.array([2.0, 1.0, 1.0], np.float32))
    assert main(["train", str(gt_file), "--annotation", str(tmp_path / "ann.npz"), "--also-folder", str(folder),
                 "--seconds", "1", "--session", str(tmp_path / "folder.sparseseg"), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert f"also learning from {folder / 'b.npz'} ({32 * 32} labeled voxels)" in out
    assert "c.npz: left out" in err and out.count("also learning from") == 1
    from napari_sparseseg.cli.train import labeled_pairs

    np.savez(folder / "b_ANNOTATION.npz", labels=other_labels)  # the tag in any case: two annotations for b
    with pytest.raises(ValueError, match="ambiguous"):
        labeled_pairs(str(folder))
    (folder / "b_ANNOTATION.npz").unlink()
    tifffile.imwrite(folder / "d.ome.tif", image)  # an OME-TIFF and a name that ends in the tag itself
    np.savez(folder / "d_annotation.npz", labels=other_labels)
    np.savez(folder / "e_annotation.npz", image=image)
    np.savez(folder / "e_annotation_annotation.npz", labels=other_labels)
    pairs = labeled_pairs(str(folder), exclude=(str(folder / "b.npz"),))
    assert sorted((Path(a).name, Path(b).name) for a, b in pairs) == [
        ("d.ome.tif", "d_annotation.npz"), ("e_annotation.npz", "e_annotation_annotation.npz")]
    for name in ("d.ome.tif", "d_annotation.npz", "e_annotation.npz", "e_annotation_annotation.npz"):
        (folder / name).unlink()
    (folder / "b_annotation.npz").unlink()
    assert main(["train", str(gt_file), "--annotation", str(tmp_path / "ann.npz"), "--also-folder", str(folder),
                 "--seconds", "1", "--model", str(model), "--device", "cpu"]) == 2
    assert "no image with a sparse annotation beside it" in capsys.readouterr().err
    store = tmp_path / "s.zarr"
    assert main(["train", str(gt_file), "--annotation", str(tmp_path / "ann.npz"), "--also", str(other), str(other),
                 "--seconds", "1", "--session", str(store), "--device", "cpu"]) == 0
    assert main(["resume", str(store), "--seconds", "1", "--device", "cpu"]) == 0
    assert "and 1 other volumes" in capsys.readouterr().out  # the store kept the other volume and its labels
    for extra, match in ((["--also", str(coarse), str(coarse)], "voxel size"),
                         (["--also", str(other), str(other), "--session", str(store)], "keeps the volumes")):
        assert main(["train", str(gt_file), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "1",
                     "--model", str(tmp_path / "n.pt"), "--device", "cpu", *extra]) == 2
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "n.pt").exists()


def test_train_refuses_a_session_larger_than_the_machine_before_building_it(gt_file, tmp_path, capsys, monkeypatch):
    from napari_sparseseg.core import footprint, session

    _, mask = sphere_volume((16, 32, 32))
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    np.savez(tmp_path / "ann.npz", labels=ann)
    need = footprint.session_bytes((16, 32, 32), (2.0, 1.0, 1.0), 1)
    monkeypatch.setattr(footprint, "physical_memory", lambda: need - 1)

    def never(*args, **kwargs):
        raise AssertionError("a session was built")

    monkeypatch.setattr(session, "SegmentationSession", never)
    model = tmp_path / "m.pt"
    assert main(["train", str(gt_file), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "1",
                 "--model", str(model), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{gt_file} is too large to train on here" in err and "--level" in err and not model.exists()
    monkeypatch.setattr(footprint, "physical_memory", lambda: need)
    assert footprint.too_large("x", need, None, "") is None  # exactly enough is enough


def test_a_sessions_memory_grows_with_its_voxels_classes_channels_and_other_volumes():
    from napari_sparseseg.core.footprint import session_bytes

    one = session_bytes((16, 32, 32), (1.0, 1.0, 1.0), 1)
    assert session_bytes((32, 32, 32), (1.0, 1.0, 1.0), 1) > one
    assert session_bytes((16, 32, 32), (1.0, 1.0, 1.0), 4) > session_bytes((16, 32, 32), (1.0, 1.0, 1.0), 2)
    assert session_bytes((16, 32, 32), (1.0, 1.0, 1.0), 1, channels=2) > one
    assert session_bytes((16, 32, 32), (1.0, 1.0, 1.0), 1, others=[((8, 32, 32), 1)]) > one


def test_train_with_too_few_seconds_for_a_mask_waits_for_the_first_whole_one(gt_file, tmp_path, capsys):
    _, mask = sphere_volume((16, 32, 32))
    ann = np.zeros_like(mask)
    ann[[4, 8, 12]] = mask[[4, 8, 12]] + 1
    np.savez(tmp_path / "ann.npz", labels=ann)
    out = tmp_path / "mask.tif"
    assert main(["train", str(gt_file), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "0.001",
                 "--session", str(tmp_path / "s.sparseseg"), "--out", str(out), "--device", "cpu"]) == 0
    stdout, err = capsys.readouterr()
    assert "after the 0.001 s budget; the command waited for it" in err and "(the first responder)" in stdout
    written = tifffile.imread(out)
    assert 2 * np.sum((written > 0) & (mask > 0)) / (np.sum(written > 0) + np.sum(mask > 0)) > 0.9


@pytest.mark.usefixtures("steps_clock")
def test_train_and_predict_read_further_channels_from_files_of_their_own(tmp_path, capsys):
    """The objects are in the second file only: the model learns them from it, predict reads it again, a session
    store keeps both channels (copied: no one file holds them)."""
    image, mask = sphere_volume((16, 32, 32))
    noise = np.random.default_rng(0).normal(size=image.shape).astype(np.float32)
    first, second = tmp_path / "t1.tif", tmp_path / "flair.tif"
    tifffile.imwrite(first, noise)
    tifffile.imwrite(second, image)
    ann = np.zeros_like(mask)
    ann[[4, 8, 12]] = mask[[4, 8, 12]] + 1
    np.savez(tmp_path / "ann.npz", labels=ann)
    model, out, store = tmp_path / "m.pt", tmp_path / "mask.tif", tmp_path / "s.sparseseg"
    assert main(["train", str(first), "--channel", str(second), "--annotation", str(tmp_path / "ann.npz"),
                 "--seconds", "3", "--model", str(model), "--out", str(out), "--session", str(store),
                 "--device", "cpu"]) == 0
    written = tifffile.imread(out)
    assert 2 * np.sum((written > 0) & (mask > 0)) / (np.sum(written > 0) + np.sum(mask > 0)) > 0.8
    from napari_sparseseg.core.checkpoint import image_channels, read_model

    assert image_channels(read_model(model)) == 2
    predicted = tmp_path / "pred.tif"
    assert main(["predict", str(first), "--channel", str(second), "--model", str(model), "--out", str(predicted),
                 "--device", "cpu"]) == 0
    assert tifffile.imread(predicted).shape == mask.shape
    assert "matched" not in capsys.readouterr().err
    # another patient's files, given in the other order: fed to the model by their names
    tifffile.imwrite(tmp_path / "pat6_t1.tif", noise)
    tifffile.imwrite(tmp_path / "pat6_flair.tif", image)
    swapped = tmp_path / "swapped.tif"
    assert main(["predict", str(tmp_path / "pat6_flair.tif"), "--channel", str(tmp_path / "pat6_t1.tif"), "--model",
                 str(model), "--out", str(swapped), "--device", "cpu"]) == 0
    assert "t1.tif <- pat6_t1.tif, flair.tif <- pat6_flair.tif" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(swapped), tifffile.imread(predicted))
    assert main(["predict", str(first), "--model", str(model), "--out", str(tmp_path / "one.tif"),
                 "--device", "cpu"]) == 2  # the model needs its second channel
    assert main(["resume", str(store), "--seconds", "1", "--device", "cpu"]) == 0
    capsys.readouterr()
    tifffile.imwrite(tmp_path / "small.tif", noise[:8])
    for args, match in ((["train", str(first), "--channel", str(tmp_path / "small.tif"), "--annotation",
                          str(tmp_path / "ann.npz"), "--model", str(model)], "shape"),
                        (["predict", str(tmp_path), "--channel", str(second), "--model", str(model), "--out",
                          str(tmp_path / "masks")], "one image"),
                        (["train", str(first), "--channel", str(second), "--also", str(first), str(tmp_path /
                          "ann.npz"), "--annotation", str(tmp_path / "ann.npz"), "--model", str(model)], "--also")):
        assert main(args) == 2
        assert re.search(match, capsys.readouterr().err)


def test_a_channel_file_elsewhere_in_the_world_is_refused(tmp_path, capsys):
    import nibabel as nib

    image, mask = sphere_volume((16, 32, 32))
    first, moved = tmp_path / "flair.nii.gz", tmp_path / "t1c.nii.gz"
    nib.save(nib.Nifti1Image(image.T, np.eye(4)), first)  # NIfTI axes are (x, y, z)
    shifted = np.eye(4)
    shifted[:3, 3] = (10.0, 0.0, 0.0)
    nib.save(nib.Nifti1Image(image.T, shifted), moved)
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    np.savez(tmp_path / "ann.npz", labels=ann)
    assert main(["train", str(first), "--channel", str(moved), "--annotation", str(tmp_path / "ann.npz"),
                 "--model", str(tmp_path / "m.pt")]) == 2
    assert "another NIfTI affine" in capsys.readouterr().err


def test_train_writes_no_model_when_the_net_trained_no_step(gt_file, tmp_path, capsys, monkeypatch):
    """As the window's Save model: an untrained net is no model. The mask is still written; the exit code says so."""
    from napari_sparseseg.core import shown as shown_module
    from napari_sparseseg.core.shown import ShownMask

    _, mask = sphere_volume((16, 32, 32))
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    np.savez(tmp_path / "ann.npz", labels=ann)

    def forest_only(session, seconds, on_event=None, clock=None):  # the first responder took the whole budget
        return ShownMask(mask.astype(np.uint8), np.ones(mask.shape, bool), learner="forest")

    monkeypatch.setattr(shown_module, "run_shown", forest_only)
    model, out = tmp_path / "m.pt", tmp_path / "mask.tif"
    assert main(["train", str(gt_file), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "5",
                 "--model", str(model), "--out", str(out), "--device", "cpu"]) == 1
    assert not model.exists() and out.exists()
    assert "did not train a step in 5 s" in capsys.readouterr().err

