"""Training memory: patch/batch sizing from free memory (GPU, and the machine's for CPU training) and the out-of-memory
back-off (exercised on CPU)."""

import numpy as np
import pytest
import torch

from napari_sparseseg.core.config import InferenceConfig, ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.events import Notice, TrainStep
from napari_sparseseg.core.memory import MIN_PATCH_VOXELS, fit_patch_and_batch, training_bytes
from napari_sparseseg.core.session import SegmentationSession

from .conftest import sphere_volume

GiB = 2**30
NET = ModelConfig(base_channels=32, depth=4)
TINY = SessionConfig(model=ModelConfig(base_channels=4, depth=2),
                     train=TrainConfig(patch_voxels=12 * 24 * 24, batch_size=2, warmup_steps=1),
                     inference=InferenceConfig(batch_size=2), device="cpu")


def test_the_estimate_grows_with_patch_batch_and_width():
    base = training_bytes(NET, 2, 2, 64**3, 2, amp=True)
    assert training_bytes(NET, 2, 2, 96**3, 2, amp=True) > base
    assert training_bytes(NET, 2, 2, 64**3, 4, amp=True) > base
    assert training_bytes(NET, 2, 2, 64**3, 2, amp=False) > base
    assert training_bytes(ModelConfig(base_channels=64, depth=4), 2, 2, 64**3, 2, amp=True) > base
    # the design notes' H100 run (32 channels, 96^3, batch 2, bf16) plans a few GiB, not tens
    assert 1 * GiB < training_bytes(NET, 2, 2, 96**3, 2, amp=True) < 16 * GiB


def test_fit_is_monotone_in_free_memory_and_never_exceeds_the_request():
    request = (128**3, 8)
    previous = (0, 0)
    for free in np.geomspace(0.25 * GiB, 200 * GiB, 60):
        pv, bs = fit_patch_and_batch(int(free), NET, 2, 3, *request, amp=True)
        assert pv <= request[0] and bs <= request[1] and pv >= MIN_PATCH_VOXELS and bs >= 1
        assert pv >= previous[0] and bs >= previous[1]
        previous = (pv, bs)
    assert fit_patch_and_batch(200 * GiB, NET, 2, 3, *request, amp=True) == request
    # the batch goes first, the patch only once the batch is 1
    pv, bs = fit_patch_and_batch(6 * GiB, NET, 2, 3, *request, amp=True)
    assert bs < request[1] and (pv == request[0] or bs == 1)
    assert fit_patch_and_batch(0, NET, 2, 3, *request, amp=True) == (MIN_PATCH_VOXELS, 1)  # floor, no loop
    with pytest.raises(ValueError, match="positive"):
        fit_patch_and_batch(GiB, NET, 2, 3, 0, 1, amp=True)


@pytest.fixture
def session():
    torch.set_num_threads(1)
    image, mask = sphere_volume((16, 32, 32))
    annotation = np.zeros_like(mask)
    annotation[8] = mask_to_annotation(mask[8])
    return SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), annotation=annotation, config=TINY)


def _fail(times: list[int], real):
    """A forward that raises CUDA out-of-memory while ``times[0] > 0`` (a RuntimeError subclass: works on CPU)."""
    def forward(x):
        if times[0] > 0:
            times[0] -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x)
    return forward


def test_out_of_memory_in_training_halves_the_batch_then_the_patch_and_carries_on(session):
    trainer = session.trainer
    times = [1]
    trainer._forward = _fail(times, trainer.model)
    patch = trainer.patch_size
    events = list(session.train(max_steps=2))
    steps = [e for e in events if isinstance(e, TrainStep)]
    notices = [e for e in events if isinstance(e, Notice)]
    assert len(steps) == 2 and trainer.step == 2 and np.isfinite(steps[-1].loss)
    assert trainer.batch_size == 1 and trainer.patch_size == patch
    assert len(notices) == 1 and "batch 1" in notices[0].message and notices[0].level == "warning"
    times[0] = 1  # at batch 1 the patch shrinks
    events = list(session.train(max_steps=1))
    assert np.prod(trainer.patch_size) < np.prod(patch) and trainer.batches.sampler.size == trainer.patch_size
    assert any(isinstance(e, Notice) and "patches" in e.message for e in events)
    assert [type(e) for e in events] == [TrainStep, Notice]  # the step is done, then the notice
    # a user changing the training settings does not undo the memory cap
    session.update_training(correction_weight=3.0)
    assert trainer.batch_size == 1


def test_out_of_memory_at_the_floor_is_a_clear_error_not_a_loop(session):
    session.trainer._forward = _fail([10**9], session.trainer.model)
    with pytest.raises(RuntimeError, match="out of GPU memory during training even at batch 1"):
        list(session.train(max_steps=1))


def test_out_of_memory_in_prediction_halves_the_batch_then_the_window(session):
    trainer = session.trainer
    list(session.train(max_steps=1))
    expected = trainer.predict()
    times = [1]
    trainer.ema_model.forward = _fail(times, trainer.ema_model.forward)
    again = trainer.predict()
    assert trainer._predict_batch == 1 and np.allclose(again.probabilities, expected.probabilities, atol=1e-5)
    times[0] = 1
    smaller = trainer.predict()
    assert np.prod(trainer._predict_window) < np.prod(trainer.patch_size)
    assert smaller.probabilities.shape == expected.probabilities.shape
    notices = [e for e in session.train(max_steps=1) if isinstance(e, Notice)]
    assert [("batch 1" in n.message, "windows" in n.message) for n in notices] == [(True, False), (False, True)]
    times[0] = 10**9
    with pytest.raises(RuntimeError, match="during prediction"):
        trainer.predict()


@pytest.mark.gui
def test_a_notice_shows_as_a_napari_notification(make_napari_viewer, monkeypatch):
    import napari_sparseseg.plugin.widget as w

    shown = []
    monkeypatch.setattr(w, "show_warning", lambda m: shown.append(("warning", m)))
    monkeypatch.setattr(w, "show_info", lambda m: shown.append(("info", m)))
    widget = w.SparseSegWidget(make_napari_viewer())
    widget._on_event(Notice("out of GPU memory during training: carrying on with batch 1"))
    widget._on_event(Notice("4.0 GiB free", "info"))
    assert shown == [("warning", "sparseseg: out of GPU memory during training: carrying on with batch 1"),
                     ("info", "sparseseg: 4.0 GiB free")]


def test_back_off_halves_the_batch_then_the_patch_and_refuses_at_the_floor():
    from napari_sparseseg.core.memory import back_off

    shape, spacing, multiple = (64, 128, 128), (1.0, 1.0, 1.0), (8, 8, 8)
    batch, size, change = back_off("training", 4, (32, 64, 64), shape, spacing, multiple)
    assert (batch, size, change) == (2, (32, 64, 64), "batch 2")
    batch, size, change = back_off("prediction", 1, (32, 64, 64), shape, spacing, multiple)
    assert batch == 1 and np.prod(size) < 32 * 64 * 64 and change.endswith("windows")
    with pytest.raises(RuntimeError, match="even at batch 1"):
        back_off("training", 1, (16, 16, 16), shape, spacing, multiple)


def test_fit_to_free_memory_tells_the_user_only_when_it_shrinks():
    from napari_sparseseg.core.memory import fit_to_free_memory

    config = ModelConfig(in_channels=2, num_classes=3)
    voxels, batch, told = fit_to_free_memory(80 * 2**30, config, 64**3, 2, amp=True, where="cuda:0")
    assert (voxels, batch, told) == (64**3, 2, None)
    voxels, batch, told = fit_to_free_memory(2**30, config, 128**3, 8, amp=False, where="cuda:0")
    assert voxels * batch < 128**3 * 8 and "1.0 GiB free on cuda:0" in told


def test_cpu_training_shrinks_a_batch_the_machine_cannot_hold_and_says_so(monkeypatch):
    """A batch of a million patches in a model file's settings filled 24 GiB until the kernel killed the process;
    such a batch is now refused (``core/limits.py``), and the trainer plans the batch it takes with the memory the
    machine has available, as on a GPU."""
    from napari_sparseseg.core import device, trainer
    from napari_sparseseg.core.limits import MAX_BATCH

    assert device.free_memory(torch.device("cpu"))[0] > 0
    monkeypatch.setattr(trainer, "free_memory", lambda d: (700 * 2**20, "this machine"))
    image, mask = sphere_volume()
    large = SessionConfig(model=TINY.model, train=TrainConfig(patch_voxels=12 * 24 * 24, batch_size=MAX_BATCH,
                                                              warmup_steps=1, amp=False), device="cpu")
    with pytest.raises(ValueError, match="batch_size must be an integer in"):
        TrainConfig(batch_size=10**6)
    session = SegmentationSession(image, num_classes=1, config=large)
    session.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    events = list(session.train(max_steps=1))
    assert session.trainer._max_batch < MAX_BATCH
    assert any(isinstance(e, Notice) and "0.7 GiB free on this machine" in e.message for e in events)
    assert any(isinstance(e, TrainStep) for e in events)
