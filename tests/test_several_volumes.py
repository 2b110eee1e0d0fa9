"""The net learns from sparse labels on several volumes: patches from each by its share of the labels, a label
painted on another volume reaches the next batch, and volumes that cannot train one net are refused."""

import numpy as np
import pytest

from napari_sparseseg.core.batches import MIN_VOLUME_SHARE
from napari_sparseseg.core.config import TrainConfig
from napari_sparseseg.core.session import SegmentationSession
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
    with pytest.raises(ValueError, match="channel"):
        session.add_training_volume(np.stack([image, image]), channel_axis=0, spacing=SPACING)
    with pytest.raises(ValueError, match="voxel size"):
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
