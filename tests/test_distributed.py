"""Distributed (dask) blockwise prediction equals the single-process whole-volume prediction."""

import time

import numpy as np
import pytest
import torch
import zarr

from napari_sparseseg.core.checkpoint import save_model
from napari_sparseseg.core.config import InferenceConfig, ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.session import SegmentationSession

from .conftest import sphere_volume

pytest.importorskip("distributed")

SPACING = (2.0, 1.0, 1.0)
TINY = SessionConfig(model=ModelConfig(base_channels=4, depth=2),
                     train=TrainConfig(patch_voxels=12 * 32 * 32, warmup_steps=1),
                     inference=InferenceConfig(final_mirror_axes=(0,)), device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    image, mask = sphere_volume((24, 80, 80), radius=14.0, seed=3)
    image = (image * 1000).astype(np.int16)  # integer intensities, as microscopes and CT write them
    annotation = np.zeros_like(mask)
    annotation[12] = mask_to_annotation(mask[12])
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, annotation=annotation, config=TINY)
    for _ in session.train(max_steps=4):
        pass
    root = tmp_path_factory.mktemp("distributed")
    model = save_model(session.trainer, root / "model.pt")
    # single process, whole volume: the streamed prediction and the final one (mirrored along z)
    t0 = time.perf_counter()
    streamed = session.trainer.predict()
    root.joinpath("single_seconds.txt").write_text(f"{time.perf_counter() - t0:.2f}")
    return image, model, (streamed, session.trainer.predict(final=True)), root


@pytest.fixture(scope="module")
def cluster():
    """One 2-worker LocalCluster for the module (starting one costs seconds: torch is imported per worker)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def test_two_local_workers_equal_the_single_process_prediction(trained, cluster):
    from napari_sparseseg.distributed import predict_distributed

    image, model, (expected, _), root = trained
    seen = []
    t0 = time.perf_counter()
    result = predict_distributed(image, model, root / "mask.zarr", scheduler=cluster.scheduler_address,
                                 spacing=SPACING, block=(16, 48, 48),
                                 probabilities_path=root / "probs.zarr", final=False,
                                 progress=lambda d, t: seen.append((d, t)))
    seconds = time.perf_counter() - t0
    single = float((root / "single_seconds.txt").read_text())
    print(f"\ndistributed prediction 24x80x80, {result.workers} workers, {result.blocks} blocks of 16x48x48: "
          f"{seconds:.1f} s (single process, whole volume: {single:.1f} s)")  # the BENCHMARKS.md figure
    assert result.workers == 2 and result.blocks == 2 * 2 * 2 and seen[-1] == (8, 8)
    out = zarr.open_array(str(root / "mask.zarr"), mode="r")
    assert out.chunks == (16, 48, 48) and tuple(out.attrs["spacing"]) == SPACING
    probs = zarr.open_array(str(root / "probs.zarr"), mode="r")[...]
    assert np.allclose(probs, expected.probabilities, atol=1e-5)
    assert np.array_equal(out[...], expected.labels)
    assert result.classes == np.unique(expected.labels).tolist()


def test_without_an_address_a_local_cluster_is_made_and_closed(trained, cluster, tmp_path, monkeypatch):
    import distributed

    from napari_sparseseg.distributed import predict_distributed

    made = []

    class Local:  # stands in for LocalCluster: records how it is built, runs on the module's workers
        def __init__(self, **kwargs):
            self.kwargs, self.closed, self.scheduler_address = kwargs, False, cluster.scheduler_address
            made.append(self)

        def close(self):
            self.closed = True

    monkeypatch.setattr(distributed, "LocalCluster", Local)
    image, model, (expected, _), _ = trained
    result = predict_distributed(image[:, :40, :40], model, tmp_path / "m.tif", spacing=SPACING, block=(24, 40, 40),
                                 final=False)
    assert len(made) == 1 and made[0].closed and result.blocks == 1
    assert {k: made[0].kwargs[k] for k in ("n_workers", "threads_per_worker", "processes")} == {
        "n_workers": 2, "threads_per_worker": 1, "processes": True}


def test_cli_predict_on_a_scheduler_address_and_single_process_zarr(trained, cluster, tmp_path):
    import nibabel as nib
    import zarr

    from napari_sparseseg import cli
    from napari_sparseseg.io import read_volume, save_mask

    image, model, (_, expected), _ = trained
    src = tmp_path / "image.nii.gz"  # x flipped and moved: the mask must lie on the scan in a NIfTI viewer
    affine = np.diag([-SPACING[2], SPACING[1], SPACING[0], 1.0])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(image.T), affine), src)
    rc = cli.main(["predict", str(src), "--model", str(model), "--out", str(tmp_path / "d.nii.gz"),
                   "--scheduler", cluster.scheduler_address, "--block", "12", "40", "80", "--device", "cpu"])
    assert rc == 0
    assert np.array_equal(read_volume(tmp_path / "d.nii.gz").data, expected.labels)
    np.testing.assert_allclose(nib.load(tmp_path / "d.nii.gz").affine, affine)  # the image's grid, not diag(spacing)
    # without --scheduler: one process, blockwise into the .zarr store, at the zarr image's origin
    src = tmp_path / "image.zarr"
    zarr.create_array(str(src), data=image, attributes={"spacing": list(SPACING), "origin": [5.0, 6.0, 7.0]})
    assert cli.main(["predict", str(src), "--model", str(model), "--out", str(tmp_path / "s.zarr"),
                     "--block", "16", "48", "48", "--device", "cpu"]) == 0
    single = read_volume(tmp_path / "s.zarr")
    assert single.spacing == SPACING and np.array_equal(single.data, expected.labels)
    assert single.origin == (5.0, 6.0, 7.0)
    save_mask(tmp_path / "x.npz", expected.labels, SPACING)
    assert cli.main(["predict", str(src), "--model", str(model), "--out", str(tmp_path / "e.zarr"),
                     "--block", "0", "4", "4"]) == 2  # a bad block is a clear error, not a traceback


def test_an_image_of_another_spacing_is_predicted_by_the_net_the_model_was_trained_as(trained, cluster, tmp_path):
    from napari_sparseseg.core.checkpoint import read_model
    from napari_sparseseg.distributed import predict_distributed

    image, model, _, _ = trained
    coarse = (4.0, 1.0, 1.0)  # would plan other kernels than those of the model's (2, 1, 1)
    predict_distributed(image, model, tmp_path / "m.zarr", scheduler=cluster.scheduler_address, spacing=coarse,
                        block=(24, 80, 80), final=False)
    expected = SegmentationSession.from_model(image, read_model(model), spacing=coarse, device="cpu").predict()
    assert np.array_equal(zarr.open_array(str(tmp_path / "m.zarr"), mode="r")[...], expected.labels)
