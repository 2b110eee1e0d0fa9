"""Volumes larger than memory: lazy features, sparse chunked labels, a session on a zarr image."""

import pickle

import numpy as np
import pytest
import torch
import zarr
from zarr.storage import LocalStore, WrapperStore

from napari_sparseseg.core.annotation import AnnotatedVolume, Source
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.chunked import SparseChunkedArray
from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.events import TrainStep
from napari_sparseseg.core.lazy import ChannelsFirst, LazyFeatures, is_lazy
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.core.volume import IntensityStats, mirror_index, normalize

torch.set_num_threads(1)

TINY = SessionConfig(model=ModelConfig(base_channels=4, depth=2),
                     train=TrainConfig(patch_voxels=8 * 16 * 16, batch_size=1, warmup_steps=1, augment=False),
                     device="cpu")


class CountingStore(WrapperStore):
    """A zarr store that records the chunk keys it is asked for."""

    def __init__(self, store):
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        if "/c/" in key or key.startswith("c/"):
            self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)


def _blobs(shape, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    img = rng.normal(40, 8, shape)
    for _ in range(4):
        c = [rng.uniform(0, s) for s in shape]
        img += 120 * (((z - c[0]) / 4) ** 2 + ((y - c[1]) / 7) ** 2 + ((x - c[2]) / 7) ** 2 < 1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _zarr(path, data, chunks):
    arr = zarr.open_array(str(path), mode="w", shape=data.shape, chunks=chunks, dtype=data.dtype)
    arr[:] = data
    return zarr.open_array(str(path), mode="r")


@pytest.fixture
def image():
    return _blobs((16, 32, 32))


# -- intensity statistics ------------------------------------------------------------------
@pytest.mark.parametrize("views", [("linear", "equalized"), ("equalized",), ("linear",)])
def test_normalize_is_fit_then_apply_and_apply_is_blockwise(views):
    rng = np.random.default_rng(1)
    for img in [rng.integers(0, 255, (2, 6, 20, 30)).astype(np.uint8),
                (rng.normal(size=(1, 50, 150, 150)) * 100).astype(np.float32)]:  # > STATS_SAMPLE: sampled
        stats = IntensityStats.fit(img, views)
        full = normalize(img, views)
        assert np.array_equal(full, stats.apply(img))
        block = (slice(None), slice(2, 5), slice(3, 17), slice(0, 9))
        assert np.array_equal(full[block], stats.apply(img[block]))  # elementwise: blocks need no context


def test_fit_on_a_large_lazy_array_reads_a_bounded_number_of_chunks(tmp_path):
    data = _blobs((64, 64, 64))
    _zarr(tmp_path / "a.zarr", data, (16, 16, 16))  # 64 chunks
    store = CountingStore(LocalStore(str(tmp_path / "a.zarr"), read_only=True))
    arr = zarr.open_array(store=store, mode="r")
    stats = IntensityStats.fit(ChannelsFirst(arr), sample=20_000, max_blocks=6)
    assert 0 < len(set(store.keys)) <= 6
    dense = IntensityStats.fit(data[None])
    # a 6-chunk sample of blobs + noise lands near the whole-image clip range
    assert abs(stats.channels[0].lo - dense.channels[0].lo) < 10
    assert stats.channels[0].hi > stats.channels[0].lo


# -- lazy features --------------------------------------------------------------------------
def test_lazy_features_give_the_dense_patches(tmp_path, image):
    lazy_img = _zarr(tmp_path / "img.zarr", image, (8, 16, 16))
    dense, lazy = AnnotatedVolume(image), AnnotatedVolume(lazy_img)
    assert lazy.lazy and not dense.lazy
    assert isinstance(lazy.features, LazyFeatures) and isinstance(lazy.labels, SparseChunkedArray)
    assert lazy.features.shape == dense.features.shape and lazy.features.dtype == np.float32
    annotation = np.zeros(image.shape, np.uint8)
    annotation[5] = np.where(image[5] > 100, 2, 1)
    annotation[:, 20] = np.where(image[:, 20] > 100, 2, 1)
    for vol in (dense, lazy):
        vol.set_labels(Box.full(image.shape).slices, annotation)
    cw = dense.class_weights(0.5)
    rng = np.random.default_rng(0)
    for _ in range(25):
        start = [int(rng.integers(-12, s)) for s in image.shape]  # reaches past both edges (mirrored)
        a = dense.read_patch(start, (8, 16, 24), cw, 2.0)
        b = lazy.read_patch(start, (8, 16, 24), cw, 2.0)
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.target, b.target) and np.array_equal(a.weight, b.weight)
    assert np.array_equal(lazy.features[:, 3:9, :, 30:40], dense.features[:, 3:9, :, 30:40])
    with pytest.raises(TypeError, match="refusing to materialise"):
        np.asarray(lazy.features)


def test_lazy_features_of_dask_memmap_and_channel_axis_match_dense(tmp_path, image):
    da = pytest.importorskip("dask.array")
    two = np.stack([image, 255 - image[::-1]], axis=-1)  # (z, y, x, c)
    mm = np.memmap(tmp_path / "img.raw", dtype=np.uint8, mode="w+", shape=image.shape)
    mm[:] = image
    mm.flush()
    cases = [(da.from_array(two, chunks=(8, 16, 16, 2)), -1, two),
             (np.memmap(tmp_path / "img.raw", dtype=np.uint8, mode="r", shape=image.shape), None, image)]
    for lazy_img, axis, dense_img in cases:
        assert is_lazy(lazy_img)
        lazy = AnnotatedVolume(lazy_img, channel_axis=axis)
        dense = AnnotatedVolume(dense_img, channel_axis=axis)
        grid = np.ix_(np.array([1, 0, 1, 2]), np.arange(28, 34) % 32, np.array([31, 30, 0]))
        assert np.array_equal(lazy.features[(slice(None),) + grid], dense.features[(slice(None),) + grid])
        # pickles small (ships to dask workers) and reads the same afterwards
        blob = pickle.dumps(lazy.features)
        assert len(blob) < 100_000
        assert np.array_equal(pickle.loads(blob)[:, :4], dense.features[:, :4])


def test_lazy_image_validation_keeps_the_dense_messages(tmp_path):
    z = tmp_path / "x.zarr"
    with pytest.raises(ValueError, match="unsupported image dtype"):
        AnnotatedVolume(_zarr(z, np.zeros((4, 8, 8), bool), (2, 4, 4)))
    with pytest.raises(ValueError, match="expected a 3D volume"):
        AnnotatedVolume(_zarr(z, np.zeros((8, 8), np.uint8), (4, 4)))
    with pytest.raises(ValueError, match="pass channel_axis"):
        AnnotatedVolume(_zarr(z, np.ones((2, 4, 8, 8), np.uint8), (1, 2, 4, 4)))
    with pytest.raises(ValueError, match="is constant"):
        AnnotatedVolume(_zarr(z, np.full((4, 8, 8), 7, np.uint8), (2, 4, 4)))
    bad = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        AnnotatedVolume(_zarr(z, bad, (2, 4, 4)))


# -- sparse chunked labels --------------------------------------------------------------------
def _random_key(rng, shape):
    kind = rng.integers(5)
    if kind == 0:
        return tuple(slice(int(a), int(a + rng.integers(0, n))) for a, n in
                     zip([rng.integers(-2, n) for n in shape], shape))
    if kind == 1:  # a brush stroke: coordinate arrays (negative indices and repeats included)
        n = rng.integers(0, 50)
        return tuple(rng.integers(-s, s, n) for s in shape)
    if kind == 2:  # a training patch: np.ix_ open grid with repeats (mirrored)
        return np.ix_(*[rng.integers(0, s, rng.integers(1, 6)) for s in shape])
    if kind == 3:
        return (int(rng.integers(0, shape[0])), slice(None), slice(3, 20, 2))
    return (rng.integers(0, shape[0], 4), slice(None), slice(5, 9))


def test_sparse_chunked_array_matches_a_dense_array():
    rng = np.random.default_rng(0)
    shape = (13, 40, 37)
    for _ in range(60):
        sparse, dense = SparseChunkedArray(shape, (4, 8, 16)), np.zeros(shape, np.uint8)
        for _ in range(20):
            key = _random_key(rng, shape)
            if rng.random() < 0.6:
                values = rng.integers(0, 4, dense[key].shape).astype(np.uint8) * (rng.random() < 0.8)
                dense[key] = values
                sparse[key] = values
            got = sparse[key]
            assert got.shape == dense[key].shape and np.array_equal(got, dense[key]), key
        assert np.array_equal(np.asarray(sparse), dense)
        assert all(np.array_equal(a, b) for a, b in zip(sparse.nonzero(), np.nonzero(dense)))
        assert all(chunk.any() for _, chunk in sparse.iter_chunks())  # erased chunks are freed
    assert (sparse.shape, sparse.dtype, sparse.ndim, sparse.size) == (shape, np.uint8, 3, dense.size)


def test_sparse_memory_follows_painted_chunks_and_refuses_to_densify():
    big = SparseChunkedArray((4096, 4096, 4096), (8, 64, 64))  # 64 Gi voxels
    big[100, 1000:1200, 2000:2100] = 2
    assert big.n_chunks == 4 * 2  # y 1000..1199 spans 4 chunks of 64, x 2000..2099 spans 2
    assert big.nbytes_allocated == 8 * 8 * 64 * 64
    assert int(big[100, 1100, 2050]) == 2 and int(big[99, 1100, 2050]) == 0
    assert big[(np.array([100, 100]), np.array([1000, 0]), np.array([2000, 0]))].tolist() == [2, 0]
    big[100, 1000:1200, 2000:2100] = 0
    assert big.n_chunks == 0
    with pytest.raises(MemoryError, match="refusing to materialise"):
        np.asarray(big)


# -- a session on a lazy volume -----------------------------------------------------------------
def test_lazy_volume_bookkeeping_equals_dense(tmp_path, image):
    dense, lazy = AnnotatedVolume(image), AnnotatedVolume(_zarr(tmp_path / "img.zarr", image, (8, 16, 16)))
    for vol in (dense, lazy):
        vol.set_labels((4, slice(None), slice(None)), np.where(image[4] > 100, 2, 1))
        vol.set_labels((slice(None), slice(None), 7), np.where(image[:, :, 7] > 100, 2, 1), Source.CORRECTED)
        pts = tuple(np.random.default_rng(3).integers(0, s, 30) for s in image.shape)
        vol.set_labels(pts, 0)
    assert np.array_equal(lazy.class_counts, dense.class_counts)
    for a, b in zip(lazy.labeled_coordinates(), dense.labeled_coordinates()):
        assert np.array_equal(a, b)
    cw = dense.class_weights(0.5)
    box = Box((2, 5, 0), (9, 30, 12)).slices
    assert np.array_equal(lazy.weights(box, cw, 2.0), dense.weights(box, cw, 2.0))
    assert lazy.changes_since(1) == dense.changes_since(1)
    assert lazy.revision == dense.revision == 3


def test_session_on_a_lazy_zarr_trains_and_predicts_a_box(tmp_path, image):
    lazy_img = _zarr(tmp_path / "img.zarr", image, (8, 16, 16))
    session = SegmentationSession(lazy_img, num_classes=1, spacing=(2.0, 1.0, 1.0), config=TINY)
    session.add_labels((8, slice(None), slice(None)), np.where(image[8] > 100, 2, 1))
    steps = [e for e in session.train(max_steps=3) if isinstance(e, TrainStep)]  # a notice may come between
    assert [e.step for e in steps] == [1, 2, 3] and all(np.isfinite(e.loss) for e in steps)
    box = Box((4, 8, 8), (12, 24, 30))
    pred = session.predict(box)
    assert pred.probabilities.shape == (2, 8, 16, 22) and np.isfinite(pred.probabilities).all()
    merged = session.merge(pred)
    assert np.array_equal(merged[4], (image[8, 8:24, 8:30] > 100).astype(np.uint8))  # z = 8 is painted
    # the same weights on the dense image predict the same box
    dense = SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), config=TINY)
    dense.trainer.load_state_dict(session.trainer.state_dict())
    assert np.allclose(dense.predict(box).probabilities, pred.probabilities, atol=1e-5)


def test_a_training_step_reads_only_the_chunks_its_patch_overlaps(tmp_path):
    data = _blobs((64, 128, 128))
    _zarr(tmp_path / "big.zarr", data, (16, 32, 32))  # 4 x 4 x 4 = 64 chunks
    store = CountingStore(LocalStore(str(tmp_path / "big.zarr"), read_only=True))
    session = SegmentationSession(zarr.open_array(store=store, mode="r"), num_classes=1, config=TINY)
    session.add_labels((30, slice(40, 90), slice(40, 90)), np.where(data[30, 40:90, 40:90] > 100, 2, 1))
    starts = []
    read_patch = session.volume.read_patch
    session.volume.read_patch = lambda start, size, *a: starts.append((start, size)) or read_patch(start, size, *a)
    for _ in range(3):
        store.keys.clear()
        next(session.train(max_steps=1))
        (start, size), = starts[-1:]
        # the bounding region of the (mirrored) patch indices, in chunk units
        idx = [mirror_index(np.arange(st, st + n), dim) for st, n, dim in zip(start, size, data.shape)]
        ranges = [range(int(ix.min()) // c, int(ix.max()) // c + 1) for ix, c in zip(idx, (16, 32, 32))]
        expected = {f"c/{i}/{j}/{k}" for i in ranges[0] for j in ranges[1] for k in ranges[2]}
        read = set(store.keys)
        assert read and len(read) <= 8 < 64
        assert read <= expected, (start, size, read - expected)
