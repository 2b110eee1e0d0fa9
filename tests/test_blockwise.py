import numpy as np
import pytest
import torch
import zarr

from napari_sparseseg.core.blockwise import iter_blocks, predict_to_array
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import mask_to_annotation, merge_labels
from napari_sparseseg.core.session import SegmentationSession

from .conftest import sphere_volume

TINY = SessionConfig(model=ModelConfig(base_channels=4, depth=2),
                     train=TrainConfig(patch_voxels=8 * 16 * 16, warmup_steps=1), device="cpu")


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    image, mask = sphere_volume((16, 40, 40), radius=9.0)
    annotation = np.zeros_like(mask)
    annotation[8] = mask_to_annotation(mask[8])
    s = SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), annotation=annotation, config=TINY)
    for _ in s.train(max_steps=3):
        pass
    return s


def test_blocks_tile_the_volume_and_the_view_comes_first():
    shape = (10, 33, 20)
    boxes = iter_blocks(shape, (4, 16, 16))
    cover = np.zeros(shape, int)
    for b in boxes:
        cover[b.slices] += 1
    assert (cover == 1).all() and len(boxes) == 3 * 3 * 2
    view = Box((5, 20, 0), (6, 21, 3))
    first = iter_blocks(shape, (4, 16, 16), first=view)
    assert first[0] == Box((4, 16, 0), (8, 32, 16)) and sorted(first, key=str) == sorted(boxes, key=str)
    with pytest.raises(ValueError, match="block"):
        iter_blocks(shape, (0, 16, 16))


def test_blockwise_zarr_output_equals_the_whole_volume_prediction(trained, tmp_path):
    shape = trained.volume.shape
    full = trained.trainer.predict()
    out = zarr.open_array(str(tmp_path / "mask.zarr"), mode="w", shape=shape, chunks=(6, 24, 24), dtype="uint8")
    probs = np.zeros((2,) + shape, np.float32)
    unc = np.zeros(shape, np.float32)
    seen = []
    predict_to_array(trained.trainer, out, first=Box((12, 30, 30), (13, 31, 31)), probabilities=probs,
                     uncertainty=unc, merge=False, progress=lambda done, total, box: seen.append((done, total, box)))
    assert seen[0][2] == Box((12, 24, 24), (16, 40, 40)) and seen[-1][:2] == (12, 12)  # blocks = chunks, view first
    assert np.allclose(probs, full.probabilities, atol=1e-5)
    assert np.allclose(unc, full.uncertainty, atol=1e-4)
    top = np.sort(full.probabilities, axis=0)
    decided = top[-1] - top[-2] > 1e-4  # argmax of a near tie may flip with float rounding
    assert decided.mean() > 0.99
    assert (out[...][decided] == full.labels[decided]).all()


def test_blockwise_merges_user_labels_like_the_session(trained):
    out = np.zeros(trained.volume.shape, np.uint8)
    predict_to_array(trained.trainer, out, block=(16, 20, 40))
    labeled = trained.volume.labels > 0
    assert (out[labeled] == trained.volume.labels[labeled] - 1).all()
    assert np.array_equal(merge_labels(np.zeros((2, 2), np.uint8), np.array([[0, 1], [2, 0]], np.uint8)),
                          np.array([[0, 0], [1, 0]], np.uint8))
    with pytest.raises(ValueError, match="does not match the volume"):
        predict_to_array(trained.trainer, np.zeros((3, 3, 3), np.uint8))
