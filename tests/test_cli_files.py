"""What the command line does with the user's files: it never destroys a session, never leaves half a mask that a
rerun would keep, never paints one image's labels onto another, and says clearly what is wrong."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import zarr

from napari_sparseseg.cli import main
from napari_sparseseg.cli.train import annotation_warnings
from napari_sparseseg.evaluation.protocols import simulate_annotation
from tests.conftest import sphere_volume

SPACING = np.array([2.0, 1.0, 1.0], np.float32)


@pytest.fixture
def trained(tmp_path):
    """``(image file, session store, model)``: 2 net steps of ``train`` on slice z = 8 of a sphere."""
    from napari_sparseseg.core import shown

    real = shown.run_shown

    def two_steps(session, seconds, on_event=None, clock=None):
        return real(session, 2, on_event, clock=lambda: float(session.trainer.step))

    image, mask = sphere_volume((16, 32, 32))
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    np.savez(tmp_path / "a.npz", image=image, spacing=SPACING)
    np.savez(tmp_path / "ann.npz", labels=ann)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(shown, "run_shown", two_steps)
        assert main(["train", str(tmp_path / "a.npz"), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "2",
                     "--session", str(tmp_path / "a.sparseseg"), "--model", str(tmp_path / "m.pt"),
                     "--device", "cpu"]) == 0
    return tmp_path / "a.npz", tmp_path / "a.sparseseg", tmp_path / "m.pt"


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_mask_is_never_written_over_a_session_store(trained, tmp_path, capsys):
    image, store, model = trained
    target = tmp_path / "copy.zarr"  # a store renamed by the user still is a store
    shutil.copytree(store, target)
    before = _listing(target)
    assert main(["predict", str(image), "--model", str(model), "--out", str(target), "--device", "cpu"]) == 2
    assert "session store" in capsys.readouterr().err
    assert _listing(target) == before


def test_labels_of_another_image_are_refused_by_an_existing_session(trained, tmp_path, capsys):
    _, store, _ = trained
    labels_before = np.asarray(zarr.open_group(str(store), mode="r")["labels"][...])
    other, mask = sphere_volume((16, 32, 32), seed=5)  # same shape, other voxels
    ann = np.zeros_like(mask)
    ann[4] = mask[4] + 1
    np.savez(tmp_path / "b.npz", image=other, spacing=SPACING)
    np.savez(tmp_path / "b_ann.npz", labels=ann)
    smaller = other[:12]
    np.savez(tmp_path / "c.npz", image=smaller, spacing=SPACING)
    np.savez(tmp_path / "c_ann.npz", labels=ann[:12])
    for name, match in (("b", "not the image the session"), ("c", r"shape \(12, 32, 32\)")):
        capsys.readouterr()
        assert main(["train", str(tmp_path / f"{name}.npz"), "--annotation", str(tmp_path / f"{name}_ann.npz"),
                     "--session", str(store), "--seconds", "1", "--device", "cpu"]) == 2
        assert re_search(match, capsys.readouterr().err)
    assert np.array_equal(np.asarray(zarr.open_group(str(store), mode="r")["labels"][...]), labels_before)
    assert not (store / "lock.json").exists()  # refused, and left for the next command


def re_search(pattern, text):
    import re

    return re.search(pattern, text) is not None


def test_a_blockwise_mask_cut_short_leaves_nothing_a_rerun_would_keep(trained, tmp_path, monkeypatch, capsys):
    from napari_sparseseg.core import blockwise

    _, _, model = trained
    scans, out = tmp_path / "scans", tmp_path / "masks"
    scans.mkdir()
    image, _ = sphere_volume((16, 32, 32))
    zarr.create_array(str(scans / "a.zarr"), shape=image.shape, chunks=(8, 32, 32), dtype="float32",
                      zarr_format=3, attributes={"spacing": SPACING.tolist()})[...] = image  # its mask: a.zarr too
    real = blockwise.predict_to_array

    def dies_after_one_block(trainer, array, **kwargs):
        array[:8] = 1  # one block in
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(blockwise, "predict_to_array", dies_after_one_block)
    args = ["predict", str(scans), "--model", str(model), "--out", str(out), "--device", "cpu", "--block", "8",
            "32", "32"]
    assert main(args) == 2
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []  # no a_mask.zarr to keep
    monkeypatch.setattr(blockwise, "predict_to_array", real)
    (out / "a_mask.zarr").mkdir()  # an empty folder (a zarr library may leave one) is no mask either
    capsys.readouterr()
    assert main(args) == 0
    assert "1 mask(s) written" in capsys.readouterr().out
    assert zarr.open_array(str(out / "a_mask.zarr"), mode="r").shape == (16, 32, 32)


def test_a_folder_predicted_into_itself_does_not_segment_its_own_masks(trained, tmp_path, capsys):
    image, _, model = trained
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(image, scans / "a.npz")
    shutil.copy(image, scans / "b[1].npz")  # a name with glob characters is a file, not a pattern
    args = ["predict", str(scans), "--model", str(model), "--out", str(scans), "--device", "cpu"]
    assert main(args) == 0
    assert main(args) == 0  # the rerun keeps both masks and segments no mask
    captured = capsys.readouterr()
    assert "2 already there" in captured.out and "masks of these images" in captured.err
    assert sorted(p.name for p in scans.iterdir()) == ["a.npz", "a_mask.npz", "b[1].npz", "b[1]_mask.npz"]
    assert main(["predict", str(scans / "b[1].npz"), "--model", str(model), "--out", str(tmp_path / "b.npz"),
                 "--device", "cpu"]) == 0


def test_a_damaged_checkpoint_index_or_lock_file_costs_no_traceback(trained, capsys):
    from napari_sparseseg.store import SessionStore
    from napari_sparseseg.store_lock import StoreInUseError

    _, store, _ = trained
    (store / "checkpoints" / "index.json").write_text(json.dumps({"best": {"loss": "0.5"}, "latest": 5}))
    s, session = SessionStore.open(store, device="cpu")
    assert s.checkpoint_index() == {}
    list(session.train(max_steps=1))
    assert s.save_checkpoint(loss=0.4) is not None  # the next checkpoint is written and becomes the best
    s.close()
    assert set(json.loads((store / "checkpoints" / "index.json").read_text())) == {"latest", "best"}
    (store / "lock.json").write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": None}))
    with pytest.raises(StoreInUseError, match="since unknown"):
        SessionStore.open(store)


def test_resume_writes_a_nifti_mask_on_its_images_world_grid(tmp_path):
    image, mask = sphere_volume((16, 32, 32))
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    nib.save(nib.Nifti1Image(np.transpose(image, (2, 1, 0)), affine), tmp_path / "a.nii.gz")
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    np.savez(tmp_path / "ann.npz", labels=ann)
    store = tmp_path / "a.sparseseg"
    assert main(["train", str(tmp_path / "a.nii.gz"), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "1",
                 "--session", str(store), "--device", "cpu"]) == 0
    assert main(["resume", str(store), "--seconds", "1", "--out", str(tmp_path / "m.nii.gz"), "--device",
                 "cpu"]) == 0
    assert np.allclose(nib.load(tmp_path / "m.nii.gz").affine, affine)
    from napari_sparseseg.plugin.session_reader import store_layers

    for _, meta, _ in store_layers(store):  # the window that reopens the store: its layers carry the scan's affine
        np.testing.assert_allclose(meta["metadata"]["affine"], affine)


def test_an_untrained_net_writes_no_checkpoint_and_predict_warns_of_one(trained, tmp_path, capsys):
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.store import SessionStore

    image, mask = sphere_volume((16, 32, 32))
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    session = SegmentationSession(image, spacing=tuple(SPACING), annotation=ann)
    store = SessionStore.create(tmp_path / "fresh.sparseseg", session)
    store.close(checkpoint=True)
    assert not (tmp_path / "fresh.sparseseg" / "checkpoints" / "latest.pt").exists()
    import torch

    _, _, model = trained
    payload = torch.load(model, weights_only=True)
    payload["state"]["step"] = 0
    torch.save(payload, tmp_path / "untrained.pt")
    assert main(["predict", str(trained[0]), "--model", str(tmp_path / "untrained.pt"), "--out",
                 str(tmp_path / "x.npz"), "--device", "cpu"]) == 0
    assert "never trained a step" in capsys.readouterr().err


def test_the_annotation_file_is_named_when_its_shape_is_wrong_and_a_mask_given_as_labels_is_warned_of(tmp_path,
                                                                                                   capsys):
    from napari_sparseseg.sample_data import make_cells_volume

    image, mask = sphere_volume((16, 32, 32))
    np.savez(tmp_path / "a.npz", image=image, spacing=SPACING)
    np.savez(tmp_path / "short.npz", labels=np.ones((10, 32, 32), np.uint8))
    assert main(["train", str(tmp_path / "a.npz"), "--annotation", str(tmp_path / "short.npz"), "--seconds", "1",
                 "--model", str(tmp_path / "m.pt")]) == 2
    assert "short.npz: labels of shape (10, 32, 32), but the image" in capsys.readouterr().err
    truth = make_cells_volume().labels  # 0 background, 1 and 2 classes: a mask, not sparse labels
    assert any("ground-truth mask" in w for w in annotation_warnings(truth))
    for protocol in ("z:1", "z:3", "ortho:2", "scribble:3"):
        assert annotation_warnings(simulate_annotation(truth, protocol)) == []


def test_evaluate_says_it_reads_npz_files(tmp_path, capsys):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    assert main(["evaluate", str(tmp_path / "a.nii.gz")]) == 2
    assert "evaluate reads a .npz" in capsys.readouterr().err


def test_no_command_writes_its_output_over_a_file_it_reads(trained, tmp_path, capsys):
    import tifffile

    image, store, model = trained
    tif = tmp_path / "scan.tif"
    tifffile.imwrite(tif, np.load(image)["image"])
    named_like_objects = tmp_path / "cut_instances.tif"  # where predict --out cut.tif --instances puts objects
    tifffile.imwrite(named_like_objects, np.load(image)["image"])
    truth = tmp_path / "truth.npz"
    np.savez(truth, image=np.load(image)["image"], labels=(np.load(image)["image"] > 0.5).astype(np.uint8))
    before = {p: p.read_bytes() for p in (tif, tmp_path / "ann.npz", model, image, named_like_objects, truth)}
    attempts = [
        ["predict", str(named_like_objects), "--model", str(model), "--out", str(tmp_path / "cut.tif"),
         "--instances"],
        ["resume", str(store), "--seconds", "1", "--out", str(image)],  # the image the store refers to
        ["evaluate", str(truth), "--budget-seconds", "1", "--json", str(truth)],
        ["predict", str(tif), "--model", str(model), "--out", str(tif)],
        ["train", str(image), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "1", "--model",
         str(tmp_path / "m2.pt"), "--out", str(tmp_path / "ann.npz")],  # the painted labels
        ["train", str(tif), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "1", "--model", str(tif)],
        ["train", str(image), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "1", "--model",
         str(tmp_path / "." / "ann.npz")],  # another spelling of the same file
        ["resume", str(store), "--seconds", "1", "--out", str(store / "mask.npz")],  # into the store
    ]
    for args in attempts:
        assert main(args + ["--device", "cpu"]) == 2, args
        assert "which this command reads" in capsys.readouterr().err
    assert all(p.read_bytes() == data for p, data in before.items())


def test_a_folder_whose_images_would_share_a_mask_name_is_refused_and_a_damaged_mask_is_written_again(
        trained, tmp_path, capsys):
    image, _, model = trained
    for folder in ("g1", "g2"):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / "x.npz")
    masks = tmp_path / "masks"
    assert main(["predict", str(tmp_path / "g*" / "x.npz"), "--model", str(model), "--out", str(masks),
                 "--device", "cpu"]) == 2
    assert "would both write" in capsys.readouterr().err and not masks.exists()
    masks.mkdir()
    (masks / "x_mask.npz").write_bytes(b"")  # damaged since it was written
    assert main(["predict", str(tmp_path / "g1"), "--model", str(model), "--out", str(masks), "--device", "cpu"]) == 0
    assert "written again" in capsys.readouterr().err
    with np.load(masks / "x_mask.npz") as f:
        assert f["labels"].shape == (16, 32, 32)


def test_train_writes_its_mask_at_the_images_origin(tmp_path, monkeypatch):
    from napari_sparseseg.core import shown
    from napari_sparseseg.io import read_volume

    real = shown.run_shown
    monkeypatch.setattr(shown, "run_shown", lambda session, seconds, on_event=None, clock=None: real(
        session, 2, on_event, clock=lambda: float(session.trainer.step)))
    image, mask = sphere_volume((16, 32, 32))
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    zarr.create_array(str(tmp_path / "a.zarr"), data=image, attributes={"spacing": SPACING.tolist(),
                                                                        "origin": [4.0, -2.0, 8.0]})
    np.savez(tmp_path / "ann.npz", labels=ann)
    assert main(["train", str(tmp_path / "a.zarr"), "--annotation", str(tmp_path / "ann.npz"), "--seconds", "2",
                 "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "mask.zarr"), "--device", "cpu"]) == 0
    assert read_volume(tmp_path / "mask.zarr").origin == (4.0, -2.0, 8.0)  # drawn on its image in napari


def test_the_command_line_names_an_npz_channel_it_does_not_read(trained, tmp_path, capsys):
    image, _, model = trained
    with np.load(image) as f:
        np.savez(tmp_path / "mri.npz", image=f["image"], image_t1c=f["image"], spacing=f["spacing"])
    assert main(["predict", str(tmp_path / "mri.npz"), "--model", str(model), "--out", str(tmp_path / "m.npz"),
                 "--device", "cpu"]) == 0
    assert "also holds image_t1c" in capsys.readouterr().err  # not dropped without a word


def test_a_mask_tiff_cut_at_a_page_boundary_is_not_taken_for_whole(tmp_path):
    import tifffile

    from napari_sparseseg.cli.predict import _complete
    from napari_sparseseg.io import save_mask

    path = tmp_path / "a_mask.tif"
    save_mask(path, (np.random.default_rng(0).random((12, 32, 32)) > 0.7).astype(np.uint8), (2.0, 1.0, 1.0))
    assert _complete(path)
    data = path.read_bytes()
    with tifffile.TiffFile(path) as tif:
        ends = [page.dataoffsets[-1] + page.databytecounts[-1] for page in tif.pages][:-1]
    for end in ends:  # every page listed then has its data, but the planes after it are gone
        path.write_bytes(data[:end])
        assert not _complete(path), end
