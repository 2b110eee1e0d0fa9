"""The net learns from sparse labels on several volumes: patches from each by its share of the labels, a label
painted on another volume reaches the next batch, volumes that cannot train one net are refused, the net predicts
the one the user looks at, and a session store keeps them all."""

import numpy as np
import pytest
import zarr

from napari_sparseseg.core.annotation import Source
from napari_sparseseg.core.batches import MIN_VOLUME_SHARE
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import TrainConfig
from napari_sparseseg.core.events import Prediction, TrainStep
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.store import SessionStore
from tests.conftest import sphere_volume, tiny_config

SPACING = (1.0, 1.0, 1.0)


def _session(first_labels: str = "slice") -> tuple[SegmentationSession, np.ndarray, np.ndarray]:
    image, mask = sphere_volume()
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, config=tiny_config())
    if first_labels == "slice":
        session.add_labels((8, slice(None), slice(None)), mask[8] + 1)
    else:  # background only: every foreground label comes from the other volume
        session.add_labels((0, slice(None), slice(None)), 1)
    return session, image, mask


def _other(mask: np.ndarray, z: int = 8) -> tuple[np.ndarray, np.ndarray]:
    image, other_mask = sphere_volume(seed=1, radius=5.0)
    annotation = np.zeros(other_mask.shape, np.uint8)
    annotation[z] = other_mask[z] + 1
    return image, annotation


def test_patches_come_from_each_volume_by_its_share_of_the_labels_with_a_floor():
    session, _, mask = _session()
    batches = session.trainer.batches
    assert np.array_equal(batches.volume_shares(), [1.0])
    image, annotation = _other(mask)
    annotation[annotation > 0] = 0
    annotation[8, :2, :2] = 1  # four labeled voxels against a whole slice
    other = session.add_training_volume(image, annotation=annotation, spacing=SPACING)
    assert session.training_volumes == [session.volume, other]
    floor, first = MIN_VOLUME_SHARE / 2, 1024 / 1028  # two labeled volumes; a 32 x 32 slice against 4 voxels
    assert batches.volume_shares() == pytest.approx([first / (first + floor), floor / (first + floor)])
    other.set_labels((8, slice(None), slice(None)), 1)  # now a whole slice each: even shares
    assert batches.volume_shares() == pytest.approx([0.5, 0.5])
    other.set_labels((slice(None), slice(None), slice(None)), 0)  # unlabeled: no patches
    assert batches.volume_shares() == pytest.approx([1.0, 0.0])


@pytest.mark.parametrize("prefetch", ["never", "always"])
def test_labels_painted_on_another_volume_reach_the_next_batch(prefetch):
    session, _, mask = _session(first_labels="background")
    session.update_training(prefetch=prefetch)
    config = session.config.train
    batches = session.trainer.batches

    def foreground_in_batches(n: int = 12) -> bool:
        for _ in range(n):
            _, target, weight, _ = batches.take(False, 2, config)
            if bool(((target == 1) & (weight > 0)).any()):
                return True
        return False

    assert not foreground_in_batches()  # the session's volume holds background labels only
    image, annotation = _other(mask)
    other = session.add_training_volume(image, annotation=np.zeros_like(annotation), spacing=SPACING)
    batches.take(False, 2, config)  # one may be built ahead before the labels arrive
    other.set_labels((8, slice(None), slice(None)), annotation[8])
    assert foreground_in_batches()  # the other volume's foreground labels are trained on
    event = session.trainer.train_step()
    assert np.isfinite(event.loss)
    session.trainer.close()


def test_volumes_that_cannot_train_one_net_are_refused_and_nothing_is_added():
    session, _, mask = _session()
    image, annotation = _other(mask)
    with pytest.raises(ValueError, match=r"with 2 image channel\(s\) cannot train with one of 1$"):  # not features
        session.add_training_volume(np.stack([image, image]), channel_axis=0, spacing=SPACING)
    with pytest.raises(ValueError, match=r"voxel size \(2\.0, 1\.0, 1\.0\) differs"):  # no np.float64(...)
        session.add_training_volume(image, annotation=annotation, spacing=(2.0, 1.0, 1.0))
    too_many = annotation.copy()
    too_many[8, 0, 0] = 3  # class 2 in a one-class session
    with pytest.raises(ValueError, match="exceeds"):
        session.add_training_volume(image, annotation=too_many, spacing=SPACING)
    assert session.training_volumes == [session.volume]


def test_a_class_added_to_the_session_reaches_every_volume():
    session, _, mask = _session()
    image, annotation = _other(mask)
    other = session.add_training_volume(image, annotation=annotation, spacing=SPACING)
    session.ensure_classes(2)
    assert session.volume.num_classes == other.num_classes == 2
    other.set_labels((9, 0, slice(0, 4)), 3)  # class 2 is paintable there now
    assert session.trainer.train_step().step == 1


def test_one_volume_draws_no_volume_and_trains_as_before():
    """Seeded runs on one volume cut the same batches as before several volumes existed: no draw is spent."""
    first, _, _ = _session()
    second, _, _ = _session()
    config = TrainConfig(batch_size=2, augment=False)
    a = first.trainer.batches.build_now(False, 2, config)
    b = second.trainer.batches.sampler.sample(second.volume.class_weights(config.class_balance_power),
                                              config.correction_weight)  # the first patch, drawn directly
    np.testing.assert_array_equal(a.image[0].numpy(), b.image)


def _other_shape(z: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Another volume of another shape than the session's: a sphere in (12, 24, 28), one slice labeled."""
    image, mask = sphere_volume(shape=(12, 24, 28), seed=2, radius=4.0)
    annotation = np.zeros(mask.shape, np.uint8)
    annotation[z] = mask[z] + 1
    return image, annotation


def test_the_net_trains_on_another_volume_before_its_own_is_labeled():
    image, mask = sphere_volume()
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, config=tiny_config())
    other, annotation = _other(mask)
    session.add_training_volume(other, annotation=annotation, spacing=SPACING)
    events = list(session.train(max_steps=2))
    assert session.trainer.step == 2 and all(isinstance(e, TrainStep) for e in events)


def test_the_net_predicts_another_volume_in_its_own_shape_and_merges_its_labels():
    session, _, _ = _session()
    image, annotation = _other_shape()
    session.add_training_volume(image, annotation=annotation, spacing=SPACING, name="second")
    session.trainer.train_step()
    prediction = session.predict(volume=1)
    assert prediction.volume == 1 and prediction.labels.shape == image.shape
    merged = session.merge(prediction)
    np.testing.assert_array_equal(merged[5], annotation[5] - 1)  # its own labels win, in mask encoding
    assert session.other_volumes[0].name == "second"


def test_while_the_user_looks_at_another_volume_every_other_refresh_predicts_it():
    image, mask = sphere_volume()
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, config=tiny_config(enabled=False))
    session.add_labels((8, slice(None), slice(None)), mask[8] + 1)  # without a first responder: the net is shown
    other, annotation = _other_shape()
    session.add_training_volume(other, annotation=annotation, spacing=SPACING)
    predictions = []
    view = Box((5, 0, 0), (6, 24, 28))  # the user looks at z = 5 of the other volume
    boxes = []
    for event in session.interactive(refresh_seconds=0.0, first_refresh_steps=1, max_predict_share=1.0,
                                     view_volume=lambda: (1, view)):  # a prediction after every step
        if isinstance(event, Prediction):
            predictions.append(event.volume)
            if event.volume == 1:
                boxes.append(event.box)
        if len(predictions) == 6 or session.trainer.step > 60:
            break
    assert 1 in predictions and 0 in predictions
    assert all(a != b for a, b in zip(predictions, predictions[1:]))  # alternating: its own volume keeps refreshing
    assert boxes[:3] == [view, Box.full(other.shape), view]  # the slice in view first, then the whole volume


def test_a_store_keeps_every_volume_its_labels_sources_and_prediction_and_opens_them_again(tmp_path):
    session, _, _ = _session()
    image, annotation = _other_shape()
    path = tmp_path / "run.sparseseg"
    store = SessionStore.create(path, session)
    other = session.add_training_volume(image, annotation=annotation, spacing=SPACING, name="second",
                                        geometry={"origin": (5.0, 6.0, 7.0), "affine": None})  # where it lies
    assert (path / "volumes" / "1" / "image").is_dir()  # kept the moment it is added
    other.set_labels((7, slice(2, 6), slice(3, 9)), 2, Source.CORRECTED)  # a correction on the other volume
    session.trainer.train_step()
    store.record_prediction(session.predict(volume=1))
    store.close(checkpoint=True)
    labels, source = other.labels.copy(), other.source.copy()

    from napari_sparseseg.plugin.session_reader import store_layers

    volume_layers = [meta for _, meta, _ in store_layers(path) if meta["metadata"].get("sparseseg_volume") == 1]
    assert volume_layers and all(meta["translate"] == (5.0, 6.0, 7.0) for meta in volume_layers)  # laid there
    reopened, again = SessionStore.open(path)
    assert len(again.other_volumes) == 1 and again.other_volumes[0].name == "second"
    assert again.other_volumes[0].geometry["origin"] == [5.0, 6.0, 7.0]  # kept by a store saved from it in turn
    back = again.other_volumes[0].volume
    np.testing.assert_array_equal(back.labels, labels)
    np.testing.assert_array_equal(back.source, source)
    np.testing.assert_allclose(np.asarray(again.other_volumes[0].image), image)
    assert again.training_volumes == [again.volume, back]
    assert reopened.others[0].group["prediction"].attrs["step"] == 1
    assert np.asarray(reopened.others[0].group["prediction"][...])[7, 3, 4] == 1  # the correction merged in
    back.set_labels((1, 0, 0), 1)  # painted after reopening: reaches disk
    reopened.close()
    assert zarr.open_group(str(path / "volumes" / "1"), mode="r")["labels"][1, 0, 0] == 1


def test_a_session_with_other_volumes_is_stored_whole_and_an_add_killed_halfway_leaves_nothing(tmp_path):
    session, _, _ = _session()
    image, annotation = _other_shape()
    session.add_training_volume(image, annotation=annotation, spacing=SPACING, name="second")
    path = tmp_path / "run.sparseseg"
    SessionStore.create(path, session).close()
    half = path / "volumes" / ".2.creating-123"  # what a kill while adding a second volume leaves
    (half / "labels").mkdir(parents=True)
    store, again = SessionStore.open(path)
    assert not half.exists() and len(again.other_volumes) == 1
    np.testing.assert_array_equal(again.other_volumes[0].volume.labels, annotation)
    store.close()


def test_a_store_whose_other_volume_is_gone_or_replaced_is_refused_naming_it(tmp_path):
    session, _, _ = _session()
    image, annotation = _other_shape()
    np.savez(tmp_path / "second.npz", image=image, spacing=np.array(SPACING))
    session.add_training_volume(image, annotation=annotation, spacing=SPACING,
                                image_ref={"path": str(tmp_path / "second.npz"), "key": "image", "level": None})
    path = tmp_path / "run.sparseseg"
    SessionStore.create(path, session).close()
    assert not (path / "volumes" / "1" / "image").exists()  # referenced, not copied
    np.savez(tmp_path / "second.npz", image=image[::-1].copy(), spacing=np.array(SPACING))  # another image
    with pytest.raises(ValueError, match="volumes/1.*not the image this session was made from"):
        SessionStore.open(path)
    (tmp_path / "second.npz").unlink()
    with pytest.raises(ValueError, match="volumes/1"):
        SessionStore.open(path)


def test_a_volume_its_store_cannot_keep_is_not_trained_on_and_the_volumes_stay_in_step(tmp_path, monkeypatch):
    import napari_sparseseg.store as store_module

    session, _, _ = _session()
    image, annotation = _other_shape()
    store = SessionStore.create(tmp_path / "run.sparseseg", session)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "build_volume_folder", disk_full)
        with pytest.raises(OSError, match="No space"):
            session.add_training_volume(image, annotation=annotation, spacing=SPACING, name="lost")
    assert session.other_volumes == [] and session.training_volumes == [session.volume] and store.others == []
    kept = session.add_training_volume(image, annotation=annotation, spacing=SPACING, name="kept")
    session.trainer.train_step()
    store.record_prediction(session.predict(volume=1))
    store.close()
    stored = zarr.open_group(str(tmp_path / "run.sparseseg" / "volumes" / "1"), mode="r")
    assert stored.attrs["image_name"] == "kept" and stored["prediction"].attrs["step"] == 1
    np.testing.assert_array_equal(np.asarray(stored["labels"]), kept.labels)


@pytest.mark.parametrize("damage", ["chunks", "labels", "own chunks"])
def test_a_stored_volume_whose_arrays_do_not_fit_is_refused_naming_it(tmp_path, damage):
    session, _, _ = _session()
    image, annotation = _other_shape()
    session.add_training_volume(image, annotation=annotation, spacing=SPACING)
    path = tmp_path / "run.sparseseg"
    SessionStore.create(path, session).close()
    group = zarr.open_group(str(path / "volumes" / "1"), mode="r+")
    if damage == "chunks":
        group.attrs["chunks"] = [-4, 8, 8]  # would make the labels' chunks unreadable and later edits unsaved
    elif damage == "labels":
        del group["labels"]
        group.create_array("labels", shape=(3, 3, 3), dtype=np.float32, fill_value=0.0)
    else:  # the session's own volume
        zarr.open_group(str(path), mode="r+").attrs["chunks"] = [0, 8, "8"]
    with pytest.raises(ValueError, match="run.sparseseg: the chunk grid" if damage == "own chunks" else "volumes/1"):
        SessionStore.open(path)


def test_a_session_saved_under_a_new_name_keeps_the_other_volumes_predictions(tmp_path):
    session, _, _ = _session()
    image, annotation = _other_shape()
    session.add_training_volume(image, annotation=annotation, spacing=SPACING)
    first = SessionStore.create(tmp_path / "a.sparseseg", session)
    session.trainer.train_step()
    first.record_prediction(session.predict(volume=1))
    first.flush()
    second = SessionStore.create(tmp_path / "b.sparseseg", session)
    assert second.copy_prediction_from(first) is False  # the session's own volume has no prediction yet ...
    assert second.others[0].group["prediction"].attrs["step"] == 1  # ... the other volume's is copied all the same
    first.record_prediction(session.predict())  # given to the replaced store: recorded in its successor
    assert second.has_prediction() and not first.has_prediction()
    assert second.copy_prediction_from(first) is False  # nothing older copied over it
    np.testing.assert_array_equal(np.asarray(second.others[0].group["prediction"]),
                                  np.asarray(first.others[0].group["prediction"]))
    first.close()
    second.close()


def test_a_volume_the_trainer_refuses_after_the_store_kept_it_leaves_neither(tmp_path, monkeypatch):
    session, _, _ = _session()
    image, annotation = _other_shape()
    store = SessionStore.create(tmp_path / "run.sparseseg", session)

    def refuse(volume):
        raise ValueError("this volume is trained on already")

    monkeypatch.setattr(session.trainer, "add_volume", refuse)
    with pytest.raises(ValueError, match="trained on already"):
        session.add_training_volume(image, annotation=annotation, spacing=SPACING)
    assert session.other_volumes == [] and store.others == []
    assert not (tmp_path / "run.sparseseg" / "volumes" / "1").exists()
    store.close()


def test_an_error_writing_another_volume_still_writes_the_first_volumes_labels_and_the_checkpoint(tmp_path,
                                                                                                 monkeypatch):
    session, _, mask = _session()
    image, annotation = _other_shape()
    session.add_training_volume(image, annotation=annotation, spacing=SPACING)
    path = tmp_path / "run.sparseseg"
    store = SessionStore.create(path, session)
    session.add_labels((3, slice(None), slice(None)), 1)  # painted on the first volume
    session.add_labels((5, slice(8, 12), slice(8, 12)), 2)
    list(session.train(max_steps=1))  # a trained net: its checkpoint is written (an untrained one never is)

    def broken(other):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store, "_flush_other", broken)
    with pytest.raises(OSError, match="Input/output"):
        store.close(checkpoint=True)
    assert (np.asarray(zarr.open_group(str(path), mode="r")["labels"][3]) == 1).all()
    assert (path / "checkpoints" / "latest.pt").exists()


def test_a_save_as_that_fails_leaves_the_session_recording_into_its_store(tmp_path, monkeypatch):
    import napari_sparseseg.store as store_module

    session, _, _ = _session()
    store = SessionStore.create(tmp_path / "a.sparseseg", session)

    def full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.SessionStore, "flush", full)
    with pytest.raises(OSError):
        SessionStore.create(tmp_path / "b.sparseseg", session)
    monkeypatch.undo()
    assert session.store is store and not (tmp_path / "b.sparseseg").exists()
    store.close()
