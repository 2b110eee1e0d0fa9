"""File formats in and out: round trips keep shape, dtype, values and spacing; broken files fail clearly."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_sparseseg.io import VolumeFile, VolumeFileError, load_volume, read_volume, save_mask
from napari_sparseseg.plugin.reader import get_reader, read_layers
from napari_sparseseg.plugin.writer import write_labels
from tests.conftest import damaged_copies

SPACING = (2.5, 0.3, 0.4)
MASK_SUFFIXES = [".npz", ".tif", ".tiff", ".nii", ".nii.gz", ".zarr", ".ome.zarr"]


def _mask(shape=(6, 10, 12), dtype=np.uint8, k=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k + 1, shape).astype(dtype)


def _oblique_affine() -> np.ndarray:
    """A rotated, flipped, shifted voxel-to-world matrix with zooms (x, y, z) = (0.8, 0.7, 3.0)."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.7, 3.0])
    affine[:3, 3] = [12.0, -40.0, 7.5]
    return affine


def _write_ngff(path: Path, levels: list[np.ndarray], scales: list[list[float]], axes: str, *,
                version: str = "0.4", global_scale: list[float] | None = None) -> None:
    """A multiscale OME-Zarr written by hand: NGFF 0.4 on zarr v2 or 0.5 on zarr v3."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    for i, level in enumerate(levels):
        group.create_array(str(i), data=level, chunks=level.shape)
    ms = {"axes": [{"name": a, "type": "channel" if a == "c" else "time" if a == "t" else "space"} for a in axes],
          "datasets": [{"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": s}]}
                       for i, s in enumerate(scales)]}
    if global_scale is not None:
        ms["coordinateTransformations"] = [{"type": "scale", "scale": global_scale}]
    if version == "0.4":
        group.attrs["multiscales"] = [{"version": "0.4", **ms}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}


# ------------------------------------------------------------------ round trips of every writer with the reader
@pytest.mark.parametrize("suffix", MASK_SUFFIXES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_save_mask_then_read_volume_keeps_everything(tmp_path, suffix, dtype):
    mask = _mask(dtype=dtype, k=300 if dtype == np.uint16 else 3)
    path = tmp_path / f"mask{suffix}"
    save_mask(path, mask, SPACING)
    vol = read_volume(path, key="labels")
    assert isinstance(vol, VolumeFile)
    assert vol.data.dtype == dtype and vol.data.shape == mask.shape
    np.testing.assert_array_equal(vol.data, mask)
    assert vol.spacing == pytest.approx(SPACING, rel=1e-6)
    assert (vol.channel_axis, vol.axes, vol.level, vol.n_levels) == (None, "zyx", 0, 1)
    assert load_volume(path, key="labels")[1] == vol.spacing  # the old API reads the same


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz", ".zarr"])
def test_wide_integer_masks_are_stored_compact(tmp_path, suffix):
    mask = _mask(dtype=np.int64)
    save_mask(tmp_path / f"m{suffix}", mask, SPACING)
    vol = read_volume(tmp_path / f"m{suffix}")
    assert vol.data.dtype == np.uint8
    np.testing.assert_array_equal(vol.data, mask)


def test_nifti_keeps_orientation_and_writes_the_source_affine(tmp_path):
    import nibabel as nib

    image_ijk = np.random.default_rng(1).normal(size=(9, 8, 5)).astype(np.float32)  # (i, j, k) = (x, y, z)
    affine = _oblique_affine()
    nib.save(nib.Nifti1Image(image_ijk, affine), str(tmp_path / "ct.nii.gz"))

    vol = read_volume(tmp_path / "ct.nii.gz")
    assert vol.data.shape == (5, 8, 9) and vol.axes == "zyx"
    np.testing.assert_array_equal(vol.data, image_ijk.transpose(2, 1, 0))  # (z, y, x) = (k, j, i), not reoriented
    assert vol.spacing == pytest.approx((3.0, 0.7, 0.8))
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)

    mask = (vol.data > 0).astype(np.uint8)
    save_mask(tmp_path / "mask.nii.gz", mask, vol.spacing, affine=vol.affine)
    out = nib.load(str(tmp_path / "mask.nii.gz"))
    np.testing.assert_allclose(out.affine, affine, atol=1e-6)  # overlays the source in ITK-SNAP / Slicer
    np.testing.assert_array_equal(np.asarray(out.dataobj), (image_ijk > 0).astype(np.uint8))
    # voxel (z, y, x) of our array is at the same world point in both files
    z, y, x = 3, 2, 7
    np.testing.assert_allclose(out.affine @ [x, y, z, 1], nib.load(str(tmp_path / "ct.nii.gz")).affine @ [x, y, z, 1])


def test_nifti_without_affine_is_diagonal_spacing(tmp_path):
    import nibabel as nib

    save_mask(tmp_path / "m.nii", _mask(), SPACING)
    np.testing.assert_allclose(nib.load(str(tmp_path / "m.nii")).affine, np.diag([0.4, 0.3, 2.5, 1.0]), atol=1e-7)
    assert read_volume(tmp_path / "m.nii").affine is not None


def test_nifti_4d_reads_as_channels_first(tmp_path):
    import nibabel as nib

    data = np.random.default_rng(2).normal(size=(9, 8, 5, 2)).astype(np.float32)  # (i, j, k, c)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp_path / "mr.nii.gz"))
    vol = read_volume(tmp_path / "mr.nii.gz")
    assert vol.data.shape == (2, 5, 8, 9) and vol.channel_axis == 0 and vol.axes == "czyx"
    assert vol.shape == (5, 8, 9) and vol.spacing == (2.0, 1.0, 1.0)


def test_imagej_hyperstack_keeps_channel_axis_and_spacing(tmp_path):
    import tifffile

    data = np.random.default_rng(3).integers(0, 1000, (5, 2, 8, 9)).astype(np.uint16)  # Z C Y X
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"})
    vol = read_volume(tmp_path / "h.tif")
    assert vol.axes == "zcyx" and vol.channel_axis == 1 and vol.shape == (5, 8, 9)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.spacing == pytest.approx((1.5, 0.5, 0.25))


def test_ome_tiff_physical_sizes_give_spacing(tmp_path):
    import tifffile

    data = np.random.default_rng(4).integers(0, 255, (2, 5, 8, 9)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "c.ome.tif", data,
                     metadata={"axes": "CZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.25, "PhysicalSizeX": 0.5})
    vol = read_volume(tmp_path / "c.ome.tif")
    assert vol.axes == "czyx" and vol.channel_axis == 0
    assert vol.spacing == pytest.approx((2.0, 0.25, 0.5))
    np.testing.assert_array_equal(vol.data, data)


def test_ome_tiff_mixed_units_are_converted_to_micrometres(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "u.ome.tif", _mask((5, 8, 9)),
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 0.002, "PhysicalSizeZUnit": "mm",
                               "PhysicalSizeY": 250.0, "PhysicalSizeYUnit": "nm", "PhysicalSizeX": 0.25})
    assert read_volume(tmp_path / "u.ome.tif").spacing == pytest.approx((2.0, 0.25, 0.25))


def test_ome_zarr_mixed_units_are_converted_to_micrometres_as_an_ome_tiffs(tmp_path):
    import zarr

    _write_ngff(tmp_path / "u.ome.zarr", [_mask((5, 8, 9))], [[0.002, 0.25, 0.25]], "zyx", version="0.5")
    group = zarr.open_group(str(tmp_path / "u.ome.zarr"), mode="a")
    ome = group.attrs["ome"]
    for axis, unit in zip(ome["multiscales"][0]["axes"], ("millimeter", "micrometer", "micrometer")):
        axis["unit"] = unit
    ome["multiscales"][0]["coordinateTransformations"] = [{"type": "scale", "scale": [1, 1, 1]},
                                                          {"type": "translation", "translation": [0.01, 3, 4]}]
    group.attrs["ome"] = ome
    vol = read_volume(tmp_path / "u.ome.zarr")
    assert vol.spacing == pytest.approx((2.0, 0.25, 0.25)) and vol.origin == pytest.approx((10.0, 3.0, 4.0))


def test_plain_tiff_dpi_is_not_taken_as_voxel_size(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "p.tif", _mask((5, 8, 9)), resolution=(72, 72), resolutionunit="INCH")
    vol = read_volume(tmp_path / "p.tif")
    assert vol.spacing == (1.0, 1.0, 1.0) and vol.data.shape == (5, 8, 9)


# ------------------------------------------------------------------ zarr and OME-Zarr
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_level_choice_gives_that_levels_shape_and_spacing(tmp_path, version):
    full = np.random.default_rng(5).normal(size=(8, 16, 20)).astype(np.float32)
    half = full[:, ::2, ::2]
    path = tmp_path / "img.ome.zarr"
    _write_ngff(path, [full, half], [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0]], "zyx", version=version)

    vol = read_volume(path, level=1)
    assert vol.data.shape == (8, 8, 10) and vol.n_levels == 2 and vol.level == 1
    assert vol.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(vol.data, half)
    assert read_volume(path).spacing == (2.0, 0.5, 0.5)


def test_ome_zarr_channel_axis_and_global_scale(tmp_path):
    data = np.random.default_rng(6).normal(size=(2, 4, 6, 6)).astype(np.float32)
    _write_ngff(tmp_path / "c.ome.zarr", [data], [[1.0, 3.0, 0.5, 0.5]], "czyx", version="0.5",
                global_scale=[1.0, 2.0, 2.0, 2.0])
    vol = read_volume(tmp_path / "c.ome.zarr")
    assert vol.axes == "czyx" and vol.channel_axis == 0 and vol.shape == (4, 6, 6)
    assert vol.spacing == (6.0, 1.0, 1.0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ome-zarr's own API churn, not ours
def test_ome_zarr_written_by_the_ome_zarr_library_tczyx(tmp_path):
    pytest.importorskip("ome_zarr")
    import zarr
    from ome_zarr.writer import write_multiscale

    full = np.random.default_rng(7).normal(size=(1, 1, 6, 16, 16)).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "lib.ome.zarr"), mode="w")
    write_multiscale([full, full[..., ::2, ::2]], group, axes=list("tczyx"),
                     coordinate_transformations=[[{"type": "scale", "scale": [1, 1, 2.0, 0.5, 0.5]}],
                                                 [{"type": "scale", "scale": [1, 1, 2.0, 1.0, 1.0]}]])
    vol = read_volume(tmp_path / "lib.ome.zarr", level=1)
    assert vol.axes == "czyx" and vol.data.shape == (1, 6, 8, 8) and vol.spacing == (2.0, 1.0, 1.0)
    lazy = read_volume(tmp_path / "lib.ome.zarr", level=1, lazy=True)  # size-1 t dropped without reading
    assert not isinstance(lazy.data, np.ndarray) and lazy.data.shape == (1, 6, 8, 8)
    np.testing.assert_array_equal(np.asarray(lazy.data), full[0, ..., ::2, ::2])


def test_our_ome_zarr_is_valid_for_the_ome_zarr_library(tmp_path):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    mask = _mask()
    save_mask(tmp_path / "m.ome.zarr", mask, SPACING)
    node = next(iter(Reader(parse_url(str(tmp_path / "m.ome.zarr")))()))
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == list(SPACING)
    np.testing.assert_array_equal(np.asarray(node.data[0]), mask)


def test_ome_zarr_labels_group_is_read_as_labels(tmp_path):
    image = np.random.default_rng(10).normal(size=(4, 8, 8)).astype(np.float32)
    labels = _mask((4, 8, 8))
    _write_ngff(tmp_path / "i.ome.zarr", [image], [[2.0, 0.5, 0.5]], "zyx", version="0.5")
    _write_ngff(tmp_path / "i.ome.zarr" / "labels" / "cells", [labels], [[2.0, 0.5, 0.5]], "zyx", version="0.5")
    import zarr

    zarr.open_group(str(tmp_path / "i.ome.zarr" / "labels"), mode="a").attrs["ome"] = {"version": "0.5",
                                                                                         "labels": ["cells"]}
    vol = read_volume(tmp_path / "i.ome.zarr", key="labels")
    np.testing.assert_array_equal(vol.data, labels)
    assert vol.spacing == (2.0, 0.5, 0.5)
    layers = read_layers(str(tmp_path / "i.ome.zarr"))
    assert [k for *_, k in layers] == ["image", "labels"]
    assert isinstance(layers[1][0], np.ndarray)  # in memory: painted on (the store is opened read-only)


def test_the_reader_claims_a_zarr_group_of_image_and_labels_and_a_bioformats2raw_store(tmp_path):
    import zarr

    image = np.random.default_rng(10).normal(size=(4, 8, 8)).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("image", data=image, attributes={"spacing": [2.0, 0.5, 0.5]})
    group.create_array("labels", data=_mask((4, 8, 8)))
    assert get_reader(str(tmp_path / "g.zarr")) is not None  # read_volume reads it: napari's File > Open too
    assert [k for *_, k in read_layers(str(tmp_path / "g.zarr"))] == ["image", "labels"]
    root = zarr.open_group(str(tmp_path / "b.zarr"), mode="w", zarr_format=2)  # as bioformats2raw writes
    root.attrs["bioformats2raw.layout"] = 3
    _write_ngff(tmp_path / "b.zarr" / "0", [image], [[2.0, 0.5, 0.5]], "zyx", version="0.4")
    assert get_reader(str(tmp_path / "b.zarr")) is not None
    [(data, meta, kind)] = read_layers(str(tmp_path / "b.zarr"))
    assert kind == "image" and np.asarray(data).shape == (4, 8, 8) and meta["scale"] == pytest.approx((2, 0.5, 0.5))
    assert get_reader(str(tmp_path)) is None  # a plain folder is no volume


def test_lazy_returns_a_zarr_array_and_reads_no_chunks(tmp_path):
    import zarr

    mask = _mask((8, 16, 16))
    save_mask(tmp_path / "m.zarr", mask, SPACING)
    for chunk in (p for p in (tmp_path / "m.zarr").rglob("*") if p.is_file() and p.name != "zarr.json"):
        chunk.write_bytes(b"\x00garbage")  # any chunk read would now fail
    vol = read_volume(tmp_path / "m.zarr", lazy=True)
    assert isinstance(vol.data, zarr.Array) and vol.data.shape == mask.shape and vol.spacing == SPACING
    with pytest.raises(VolumeFileError, match="cannot read the zarr chunks"):
        read_volume(tmp_path / "m.zarr")


def test_plain_zarr_group_reads_the_named_array(tmp_path):
    import zarr

    image, labels = np.random.default_rng(8).normal(size=(4, 6, 6)).astype(np.float32), _mask((4, 6, 6))
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("image", data=image).attrs["spacing"] = [3.0, 1.0, 1.0]
    group.create_array("labels", data=labels)
    vol = read_volume(tmp_path / "g.zarr")
    np.testing.assert_array_equal(vol.data, image)
    assert vol.spacing == (3.0, 1.0, 1.0)
    np.testing.assert_array_equal(read_volume(tmp_path / "g.zarr", key="labels").data, labels)


def test_zarr_writers_replace_only_zarr_stores(tmp_path):
    save_mask(tmp_path / "m.zarr", _mask(), SPACING)
    save_mask(tmp_path / "m.zarr", _mask(seed=1), (1.0, 1.0, 1.0))  # an old mask store: replaced
    np.testing.assert_array_equal(read_volume(tmp_path / "m.zarr").data, _mask(seed=1))
    (tmp_path / "work.zarr").mkdir()
    (tmp_path / "work.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(VolumeFileError, match="refusing to overwrite"):
        save_mask(tmp_path / "work.zarr", _mask(), SPACING)
    assert (tmp_path / "work.zarr" / "notes.txt").read_text() == "mine"
    session = _session_store(tmp_path / "s.zarr")
    with pytest.raises(VolumeFileError, match="session store"):
        save_mask(session, _mask(), SPACING)



@pytest.mark.parametrize("name", ["m.zarr", "m.ome.zarr"])
def test_a_mask_never_replaces_zarr_data_it_did_not_write(tmp_path, name):
    import zarr

    image = np.arange(4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    ome = zarr.open_group(str(tmp_path / name), mode="w", zarr_format=3)  # another tool's OME-Zarr image
    ome.create_array("0", data=image)
    ome.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": [{"name": a, "type": "space"} for a in "zyx"],
                                                          "datasets": [{"path": "0"}]}]}
    plain = tmp_path / f"plain_{name}"
    zarr.create_array(str(plain), data=image, zarr_format=3)  # another tool's array
    for path in (tmp_path / name, plain):
        with pytest.raises(VolumeFileError, match="did not write as a mask"):
            save_mask(path, _mask(), SPACING)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(tmp_path / name / "0"), mode="r")), image)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(plain), mode="r")), image)
    save_mask(tmp_path / f"ours_{name}", _mask(), SPACING)  # a mask this package wrote is replaced
    save_mask(tmp_path / f"ours_{name}", _mask(seed=1), SPACING)
    np.testing.assert_array_equal(read_volume(tmp_path / f"ours_{name}").data, _mask(seed=1))


def test_labels_that_cannot_be_the_images_are_left_out_and_the_image_opens(tmp_path):
    import zarr

    image = np.ones((6, 10, 12), np.float32)
    cases = {"other_shape.npz": _mask((5, 10, 12)), "fractions.npz": np.full((6, 10, 12), 0.5),
             "whole_floats.npz": _mask().astype(np.float64)}
    for name, labels in cases.items():
        np.savez(tmp_path / name, image=image, labels=labels)
    for name in ("other_shape.npz", "fractions.npz"):
        with pytest.warns(UserWarning, match="labels are left out"):
            assert [k for *_, k in read_layers(str(tmp_path / name))] == ["image"]
    _, (labels, _, kind) = read_layers(str(tmp_path / "whole_floats.npz"))
    assert kind == "labels" and labels.dtype.kind == "u"
    np.testing.assert_array_equal(labels, _mask())
    _write_ngff(tmp_path / "e.ome.zarr", [image], [[1.0, 1.0, 1.0]], "zyx")
    zarr.open_group(str(tmp_path / "e.ome.zarr" / "labels"), mode="w", zarr_format=2)  # an empty labels group
    with pytest.warns(UserWarning, match="labels are left out"):
        assert [k for *_, k in read_layers(str(tmp_path / "e.ome.zarr"))] == ["image"]


def test_an_npz_declaring_an_array_larger_than_memory_is_a_volume_file_error(tmp_path):
    import io as stdlib_io
    import zipfile

    header = stdlib_io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                   "shape": (100_000, 100_000, 100_000)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("image.npy", np.lib.format.magic(1, 0) + header.getvalue())
    with pytest.raises(VolumeFileError, match="huge.npz"):
        read_volume(tmp_path / "huge.npz")

def test_an_unmarked_integer_array_is_never_taken_for_a_mask_and_probabilities_open_as_an_image(tmp_path):
    import zarr

    from napari_sparseseg.distributed import open_mask_output

    image = _mask()  # an image of integers with its spacing, as the docs describe a zarr image
    zarr.create_array(str(tmp_path / "scan.zarr"), data=image, zarr_format=3, dimension_names=("z", "y", "x"),
                      attributes={"spacing": list(SPACING)})
    assert [kind for *_, kind in read_layers(str(tmp_path / "scan.zarr"))] == ["image"]
    with pytest.raises(VolumeFileError, match="did not write as a mask"):
        save_mask(tmp_path / "scan.zarr", _mask(seed=1), SPACING)
    np.testing.assert_array_equal(read_volume(tmp_path / "scan.zarr").data, image)
    with open_mask_output(tmp_path / "p.zarr", (2, 4, 4), (2, 4, 4), SPACING, channels=3, dtype="float32") as out:
        out[...] = 0.5
    assert [kind for *_, kind in read_layers(str(tmp_path / "p.zarr"))] == ["image"]  # probabilities: not labels

def test_a_mask_never_replaces_an_npz_holding_an_image(tmp_path):
    np.savez_compressed(tmp_path / "scan.npz", image=np.ones((4, 6, 6), np.float32), labels=_mask((4, 6, 6)))
    with pytest.raises(VolumeFileError, match=r"holds \['image'\]"):
        save_mask(tmp_path / "scan.npz", _mask((4, 6, 6)), SPACING)
    with np.load(tmp_path / "scan.npz") as kept:
        assert sorted(kept.files) == ["image", "labels"]
    save_mask(tmp_path / "mask.npz", _mask(), SPACING)
    save_mask(tmp_path / "mask.npz", _mask(seed=1), SPACING)  # a mask file: replaced
    np.testing.assert_array_equal(read_volume(tmp_path / "mask.npz", key="labels").data, _mask(seed=1))


@pytest.mark.parametrize("name", ["m.tif", "m.nii.gz", "m.npz", "m.zarr"])
def test_a_written_mask_is_readable_by_others_as_the_umask_allows(tmp_path, name):
    import os

    old = os.umask(0o022)
    try:
        save_mask(tmp_path / name, _mask(), SPACING)
    finally:
        os.umask(old)
    assert (tmp_path / name).stat().st_mode & 0o777 == (0o755 if name.endswith(".zarr") else 0o644)



def test_a_model_and_a_session_store_are_readable_by_others_as_the_umask_allows(tmp_path):
    import os

    from napari_sparseseg.core.checkpoint import save_model
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.store import SessionStore
    from tests.conftest import sphere_volume, tiny_config

    image, mask = sphere_volume((8, 16, 16), radius=4)
    session = SegmentationSession(image, num_classes=1, config=tiny_config())
    session.add_labels((4, slice(None), slice(None)), mask[4] + 1)
    list(session.train(max_steps=1))
    old = os.umask(0o022)
    try:
        model = save_model(session.trainer, tmp_path / "model.pt")
        store = SessionStore.create(tmp_path / "s.sparseseg", session)
        store.save_checkpoint(session.trainer)
        store.close()
    finally:
        os.umask(old)
    written = [model, *sorted((tmp_path / "s.sparseseg" / "checkpoints").iterdir())]
    assert len(written) > 2 and all(p.stat().st_mode & 0o777 == 0o644 for p in written if p.is_file())


# ------------------------------------------------------------------ errors name the path and say what is wrong
def _session_store(path: Path) -> Path:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["napari_sparseseg_session"] = {"version": 1}
    group.create_array("image", data=np.zeros((4, 6, 6), np.float32))
    return path


def _broken(tmp_path: Path, case: str) -> tuple[Path, dict, str]:
    """A bad input for read_volume: (path, kwargs, what the message must say)."""
    import tifffile
    import zarr

    if case == "missing":
        return tmp_path / "nope.nii.gz", {}, "no such file"
    if case == "truncated tif":
        tifffile.imwrite(tmp_path / "t.tif", _mask((5, 64, 64)))
        raw = (tmp_path / "t.tif").read_bytes()
        (tmp_path / "t.tif").write_bytes(raw[: len(raw) // 3])
        return tmp_path / "t.tif", {}, "cannot read as TIFF"
    if case == "random nii.gz":
        (tmp_path / "r.nii.gz").write_bytes(np.random.default_rng(0).bytes(4000))
        return tmp_path / "r.nii.gz", {}, "cannot read as NIfTI"
    if case == "zarr without metadata":
        (tmp_path / "e.zarr" / "0").mkdir(parents=True)
        return tmp_path / "e.zarr", {}, "no valid zarr metadata"
    if case == "unsupported suffix":
        (tmp_path / "x.png").write_bytes(b"\x89PNG")
        return tmp_path / "x.png", {}, "unsupported file type"
    if case == "plain zarr group":
        zarr.open_group(str(tmp_path / "g.zarr"), mode="w").create_array("other", data=np.zeros((2, 2, 2)))
        return tmp_path / "g.zarr", {}, "neither an array nor OME-Zarr"
    if case == "session store":
        return _session_store(tmp_path / "s.zarr"), {}, "session store"
    if case == "level out of range (ome-zarr)":
        save_mask(tmp_path / "m.ome.zarr", _mask(), SPACING)
        return tmp_path / "m.ome.zarr", {"level": 2}, "level 2 is out of range"
    if case == "level out of range (nifti)":
        save_mask(tmp_path / "m.nii.gz", _mask(), SPACING)
        return tmp_path / "m.nii.gz", {"level": 1}, "level 1 is out of range"
    if case == "2D tif":
        tifffile.imwrite(tmp_path / "flat.tif", np.zeros((8, 9), np.uint8))
        return tmp_path / "flat.tif", {}, "not a 3D volume"
    if case == "npz without the key":
        np.savez(tmp_path / "a.npz", other=np.zeros(3))
        return tmp_path / "a.npz", {}, "no 'image' array"
    if case == "corrupt npz":
        np.savez(tmp_path / "c.npz", image=np.zeros((4, 4, 4)))
        raw = (tmp_path / "c.npz").read_bytes()
        (tmp_path / "c.npz").write_bytes(raw[:100])
        return tmp_path / "c.npz", {}, "cannot read as .npz"
    raise AssertionError(case)


BROKEN = ["missing", "truncated tif", "random nii.gz", "zarr without metadata", "unsupported suffix",
          "plain zarr group", "session store", "level out of range (ome-zarr)", "level out of range (nifti)",
          "2D tif", "npz without the key", "corrupt npz"]


@pytest.mark.parametrize("case", BROKEN)
def test_bad_files_raise_volume_file_error_naming_the_path(tmp_path, case):
    path, kwargs, says = _broken(tmp_path, case)
    with pytest.raises(VolumeFileError) as info:
        read_volume(path, **kwargs)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value) and says in str(info.value)


def test_corrupt_zip_npz_is_a_volume_file_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as zf:
        zf.writestr("image.npy", b"not a npy header")
    with pytest.raises(VolumeFileError, match="z.npz"):
        read_volume(tmp_path / "z.npz")


@pytest.mark.parametrize("mask, path, says", [
    (np.zeros((4, 4), np.uint8), "m.tif", "3D"),
    (np.zeros((4, 4, 4), np.float32), "m.tif", "integers"),
    (-np.ones((4, 4, 4), np.int16), "m.nii.gz", "non-negative"),
    (np.zeros((4, 4, 4), np.uint8), "m.png", "unsupported output type"),
])
def test_save_mask_rejects_bad_input(tmp_path, mask, path, says):
    with pytest.raises(ValueError, match=says):
        save_mask(tmp_path / path, mask, SPACING)
    assert not (tmp_path / path).exists()


# ------------------------------------------------------------------ napari reader / writer contributions
def test_reader_declines_what_it_cannot_open(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    (tmp_path / "plain").mkdir()
    save_mask(tmp_path / "a.nii.gz", _mask(), SPACING)
    for path in [tmp_path / "x.png", tmp_path / "missing.nii.gz", tmp_path / "plain",
                 _session_store(tmp_path / "s.zarr"), _broken(tmp_path, "plain zarr group")[0]]:
        assert get_reader(str(path)) is None, path
    assert get_reader([str(tmp_path / "a.nii.gz")] * 2) is None
    # the session store is recognised from zarr.json alone
    assert "napari_sparseseg_session" in json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())["attributes"]


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii", "a.tif", "a.zarr", "a.ome.zarr", "a.npz"])
def test_a_written_mask_reopens_as_labels_where_it_lay(tmp_path, name):
    origin = (3.0, -4.5, 6.0)
    save_mask(tmp_path / name, _mask(), SPACING, origin=origin)
    reader = get_reader(str(tmp_path / name))
    assert reader is not None
    [(data, meta, kind)] = reader(str(tmp_path / name))
    assert meta["name"] == "a" and meta["scale"] == pytest.approx(SPACING)
    np.testing.assert_array_equal(np.asarray(data), _mask())
    assert kind == ("image" if name.endswith(".tif") else "labels")  # TIFF has no mark of a label map
    if name.endswith((".zarr", ".nii.gz", ".nii")):  # the formats that keep a position
        where = meta["metadata"]["affine"][:3, 3][::-1] if name.startswith("a.nii") else meta["translate"]
        assert tuple(where) == pytest.approx(origin)
    if name.startswith("a.nii"):  # a napari layer's units are its own (micrometres, say): not called millimetres
        import nibabel as nib

        assert nib.load(tmp_path / name).header.get_xyzt_units()[0] == "unknown"


def test_reader_gives_an_image_and_its_labels_from_an_npz(tmp_path):
    np.savez(tmp_path / "a.npz", image=np.ones((6, 10, 12), np.float32), labels=_mask(), spacing=SPACING)
    layers = read_layers(str(tmp_path / "a.npz"))
    assert [k for *_, k in layers] == ["image", "labels"]
    assert layers[0][1]["name"] == "a" and layers[0][1]["scale"] == pytest.approx(SPACING)


def test_an_npz_opens_its_further_channels_and_names_the_arrays_it_leaves_out(tmp_path):
    flair, t1c = np.ones((6, 10, 12), np.float32), np.full((6, 10, 12), 2.0, np.float32)
    np.savez(tmp_path / "mri.npz", image=flair, image_t1c=t1c, labels=_mask(), instances=_mask().astype(np.uint16),
             spacing=SPACING)
    with pytest.warns(UserWarning, match="instances"):
        layers = read_layers(str(tmp_path / "mri.npz"))
    assert [(meta["name"], kind) for _, meta, kind in layers] == [("mri", "image"), ("mri t1c", "image"),
                                                                   ("mri labels", "labels")]
    np.testing.assert_array_equal(layers[1][0], t1c)
    assert layers[1][1]["scale"] == pytest.approx(SPACING)
    np.savez(tmp_path / "odd.npz", image=np.stack([flair, flair]), image_t2=t1c, image_notes=np.array([{}], object),
             extra=np.zeros(3))  # a 4D image; an entry that cannot be read without pickles
    with pytest.warns(UserWarning, match=r"\['image_notes', 'extra'\]"):
        layers = read_layers(str(tmp_path / "odd.npz"))
    assert [meta["name"] for _, meta, _ in layers] == [["odd [0]", "odd [1]"], "odd t2"]


@pytest.mark.parametrize("name", ["m.npz", "m.nii.gz"])
def test_a_mask_file_of_float_whole_numbers_opens_as_labels(tmp_path, name):
    floats = _mask().astype(np.float32)
    if name.endswith(".npz"):
        np.savez(tmp_path / name, labels=floats, spacing=SPACING)
    else:
        import nibabel as nib

        img = nib.Nifti1Image(np.ascontiguousarray(floats.T), np.diag([*SPACING[::-1], 1.0]))
        img.header.set_intent("label")
        nib.save(img, tmp_path / name)
    [(data, _, kind)] = read_layers(str(tmp_path / name))
    assert kind == "labels" and data.dtype.kind == "u"  # napari's labels layers take integers only
    np.testing.assert_array_equal(data, _mask())


def test_reader_gives_a_multiscale_layer_for_an_ome_zarr_pyramid(tmp_path):
    full = np.random.default_rng(9).normal(size=(4, 16, 16)).astype(np.float32)
    _write_ngff(tmp_path / "p.ome.zarr", [full, full[:, ::2, ::2]], [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0]], "zyx")
    [(data, meta, kind)] = read_layers(str(tmp_path / "p.ome.zarr"))
    assert meta["multiscale"] and [d.shape for d in data] == [(4, 16, 16), (4, 8, 8)]
    assert meta["scale"] == (2.0, 0.5, 0.5)


@pytest.mark.parametrize("name", ["w.tif", "w.nii.gz", "w.zarr", "w.ome.zarr"])
def test_writer_saves_labels_with_the_layer_scale(tmp_path, name):
    mask = _mask().astype(np.int32)  # napari's default labels dtype
    assert write_labels(str(tmp_path / name), mask, {"scale": (1.0, *SPACING), "metadata": {}}) == [
        str(tmp_path / name)]
    vol = read_volume(tmp_path / name)
    np.testing.assert_array_equal(vol.data, mask)
    assert vol.spacing == pytest.approx(SPACING, rel=1e-6)


def test_writer_puts_the_readers_nifti_affine_back(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((9, 8, 5), np.int16), _oblique_affine()), str(tmp_path / "src.nii.gz"))
    image_meta = read_layers(str(tmp_path / "src.nii.gz"))[0][1]
    write_labels(str(tmp_path / "out.nii.gz"), _mask((5, 8, 9)), {"scale": image_meta["scale"],
                                                                  "metadata": image_meta["metadata"]})
    np.testing.assert_allclose(nib.load(str(tmp_path / "out.nii.gz")).affine, _oblique_affine(), atol=1e-6)


@pytest.mark.gui
def test_napari_opens_nifti_with_spacing_as_scale_and_saves_labels(make_napari_viewer, tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(12, 10, 6)).astype(np.float32),
                             np.diag([0.8, 0.7, 3.0, 1.0])), str(tmp_path / "ct.nii.gz"))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "ct.nii.gz"), plugin="napari-sparseseg")
    assert layer.data.shape == (6, 10, 12)
    np.testing.assert_allclose(layer.scale, (3.0, 0.7, 0.8))
    labels = viewer.add_labels(_mask((6, 10, 12)), scale=layer.scale, metadata=dict(layer.metadata))
    labels.save(str(tmp_path / "mask.nii.gz"), plugin="napari-sparseseg")
    saved = read_volume(tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(saved.data, labels.data)
    assert saved.spacing == pytest.approx((3.0, 0.7, 0.8))



@pytest.mark.gui
def test_napari_saves_a_new_labels_layer_on_the_open_niftis_affine_and_a_shifted_layer_where_it_lies(
        make_napari_viewer, tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((9, 8, 5), np.int16), _oblique_affine()), str(tmp_path / "src.nii.gz"))
    viewer = make_napari_viewer()
    [image] = viewer.open(str(tmp_path / "src.nii.gz"), plugin="napari-sparseseg")
    labels = viewer.add_labels(_mask((5, 8, 9)), scale=image.scale)  # napari's own new layer: no metadata
    labels.save(str(tmp_path / "mask.nii.gz"), plugin="napari-sparseseg")
    np.testing.assert_allclose(nib.load(str(tmp_path / "mask.nii.gz")).affine, _oblique_affine(), atol=1e-6)
    elsewhere = viewer.add_labels(_mask((5, 8, 9)), scale=(3, 3, 3), translate=(100, 0, 0))  # not over the scan
    elsewhere.save(str(tmp_path / "elsewhere.nii.gz"), plugin="napari-sparseseg")
    np.testing.assert_allclose(nib.load(str(tmp_path / "elsewhere.nii.gz")).header.get_zooms(), (3, 3, 3))
    shifted = viewer.add_labels(_mask(), scale=SPACING, translate=(10, 20, 30))
    shifted.save(str(tmp_path / "shifted.ome.zarr"), plugin="napari-sparseseg")
    [reopened] = viewer.open(str(tmp_path / "shifted.ome.zarr"), plugin="napari-sparseseg")
    assert type(reopened).__name__ == "Labels"
    np.testing.assert_allclose(reopened.translate, (10, 20, 30))
    np.testing.assert_allclose(reopened.scale, SPACING)


# ------------------------------------------------------------------ CLI: NIfTI geometry and OME-Zarr levels
@pytest.mark.usefixtures("steps_clock")
def test_cli_keeps_nifti_geometry_and_reads_ome_zarr_levels(tmp_path):
    import nibabel as nib

    from napari_sparseseg.cli import main
    from tests.conftest import sphere_volume

    image, mask = sphere_volume((16, 32, 32))
    affine = _oblique_affine()
    nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), affine), str(tmp_path / "img.nii.gz"))
    ann = np.zeros_like(mask)
    ann[8] = mask[8] + 1
    np.savez(tmp_path / "ann.npz", labels=ann)
    model = tmp_path / "m.pt"
    assert main(["train", str(tmp_path / "img.nii.gz"), "--annotation", str(tmp_path / "ann.npz"),
                 "--seconds", "2", "--model", str(model), "--device", "cpu"]) == 0
    assert main(["predict", str(tmp_path / "img.nii.gz"), "--model", str(model), "--device", "cpu",
                 "--out", str(tmp_path / "pred.nii.gz")]) == 0
    written = nib.load(str(tmp_path / "pred.nii.gz"))
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    assert written.shape == (32, 32, 16)

    # level 1 has the training spacing (the net's kernels follow the spacing, so a checkpoint needs it)
    _write_ngff(tmp_path / "img.ome.zarr", [image, image[:, ::2, ::2]], [[3.0, 0.35, 0.4], [3.0, 0.7, 0.8]], "zyx")
    assert main(["predict", str(tmp_path / "img.ome.zarr"), "--level", "1", "--model", str(model),
                 "--device", "cpu", "--out", str(tmp_path / "pred.ome.zarr")]) == 0
    pred = read_volume(tmp_path / "pred.ome.zarr")
    assert pred.data.shape == (16, 16, 16) and pred.spacing == (3.0, 0.7, 0.8)
    assert set(np.unique(pred.data)) <= {0, 1}
    assert main(["predict", str(tmp_path / "img.ome.zarr"), "--level", "2", "--model", str(model),
                 "--device", "cpu", "--out", str(tmp_path / "x.zarr")]) == 2


def test_a_truncated_imagej_tiff_is_called_truncated_not_2d(tmp_path):
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((8, 32, 32), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    data = path.read_bytes()
    assert read_volume(path).data.shape == (8, 32, 32)  # whole: reads
    path.write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(VolumeFileError, match="truncated.*declares 8 images"):
        read_volume(path)


def test_a_truncated_ome_tiff_is_called_damaged_not_2d(tmp_path):
    import tifffile

    path = tmp_path / "stack.ome.tif"  # its OME-XML lies past the cut: nothing declares the planes lost
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (6, 32, 40)).astype(np.uint8),
                     metadata={"axes": "ZYX"})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VolumeFileError, match="damaged or truncated"):
        read_volume(path)


@pytest.mark.parametrize("suffix", [".npz", ".tif", ".ome.tif", ".nii", ".nii.gz"])
def test_a_damaged_image_file_is_read_or_refused_with_a_volume_file_error_never_another_error(tmp_path, suffix):
    """400 damaged copies of a small image file per format (a zipped .npz once raised ``TokenError`` from NumPy's
    header parser and ``NotImplementedError`` from zipfile, past the reader's refusal)."""
    image = np.random.default_rng(0).integers(0, 200, size=(8, 24, 24)).astype(np.uint8)
    path = tmp_path / f"v{suffix}"
    if suffix == ".npz":
        np.savez(path, image=image, spacing=np.array([2.0, 1.0, 1.0]))
    else:
        save_mask(path, image, (2.0, 1.0, 1.0))
    damaged, others = tmp_path / f"d{suffix}", []
    for i, data in enumerate(damaged_copies(path.read_bytes(), 400)):
        damaged.write_bytes(data)
        try:
            volume = read_volume(damaged)
            assert np.asarray(volume.data).ndim in (3, 4)
        except VolumeFileError:
            pass
        except Exception as exc:  # noqa: BLE001 - any other kind is what this test looks for
            others.append(f"{i}: {type(exc).__name__}: {str(exc)[:80]}")
    assert not others, "\n".join(others[:10])


def _json_paths(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield prefix + (key,)
            yield from _json_paths(value, prefix + (key,))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield prefix + (i,)
            yield from _json_paths(value, prefix + (i,))


@pytest.mark.parametrize("suffix", [".zarr", ".ome.zarr"])
def test_zarr_metadata_of_the_wrong_type_is_refused_with_a_volume_file_error(tmp_path, suffix):
    """Every entry of every ``zarr.json`` replaced by a value of another type, or removed, then read eagerly and
    opened lazily: read, or refused with a ``VolumeFileError`` (before: ``TypeError``, ``AttributeError``,
    ``KeyError``, and chunks declared empty opened lazily, to divide by zero at the first read). A lazy open reads
    no chunks, so chunks that do not decode as declared are found when read, as corrupt chunks are."""
    import shutil

    image = np.random.default_rng(0).integers(0, 200, size=(8, 24, 24)).astype(np.uint8)
    base, work, others = tmp_path / f"v{suffix}", tmp_path / f"w{suffix}", []
    save_mask(base, image, (2.0, 1.0, 1.0))
    for rel in sorted(p.relative_to(base) for p in base.rglob("zarr.json")):
        doc = json.loads((base / rel).read_text())
        for path in _json_paths(doc):
            for value in (None, "x", -3, 0, 2.5, {}, True, "removed"):
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(base, work)
                mutated = json.loads(json.dumps(doc))
                parent = mutated
                for key in path[:-1]:
                    parent = parent[key]
                if value == "removed":
                    if not isinstance(parent, dict):
                        continue
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = value
                (work / rel).write_text(json.dumps(mutated))
                for lazy in (False, True):
                    try:
                        data = read_volume(work, lazy=lazy).data
                        assert lazy or data.ndim in (3, 4)
                    except VolumeFileError:
                        pass
                    except Exception as exc:  # noqa: BLE001 - any other kind is what this test looks for
                        others.append(f"{rel} {path} = {value!r} (lazy {lazy}): {type(exc).__name__}: {exc}"[:160])
    assert not others, "\n".join(others[:10])


def test_a_zarr_array_declaring_empty_chunks_is_refused_when_opened_lazily(tmp_path):
    save_mask(tmp_path / "m.zarr", _mask((8, 16, 16)), SPACING)
    meta = json.loads((tmp_path / "m.zarr" / "zarr.json").read_text())
    meta["chunk_grid"]["configuration"]["chunk_shape"][0] = 0
    (tmp_path / "m.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(VolumeFileError, match="at least 1 voxel"):
        read_volume(tmp_path / "m.zarr", lazy=True)
