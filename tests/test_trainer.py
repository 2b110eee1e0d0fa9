import threading

import numpy as np
import pytest
import torch

from napari_sparseseg.core.box import Box
from napari_sparseseg.core.clean_tail import CleanTail
from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.events import Prediction, TrainStep, Waiting
from napari_sparseseg.core.probe import ProbeMonitor
from napari_sparseseg.core.sampler import Sampling
from napari_sparseseg.core.schedule import LossSchedule
from napari_sparseseg.core.session import SegmentationSession

TINY = SessionConfig(model=ModelConfig(base_channels=4, depth=3),
                     train=TrainConfig(patch_voxels=8 * 16 * 16, batch_size=1, warmup_steps=1), device="cpu")


def _session(sphere, **kw):
    image, _ = sphere
    return SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), config=kw.pop("config", TINY), **kw)


def test_waits_until_something_is_labeled(sphere):
    s = _session(sphere)
    event = next(s.train(max_steps=1, idle_sleep=0))
    assert isinstance(event, Waiting)
    assert s.trainer.step == 0


def test_edit_made_while_training_reaches_the_next_step(sphere):
    _image, mask = sphere
    s = _session(sphere)
    s.trainer.batches.sampling = Sampling(foreground_share=1.0, random_share=0.0)
    s.add_labels((8, slice(None), slice(None)), 1)  # background only
    gen = s.train()
    first = next(gen)
    assert isinstance(first, TrainStep) and first.revision == 1
    assert s.trainer.batches.sampler._coords[1].size == 0
    # the user paints foreground while the generator is suspended between steps
    idx = np.nonzero(mask[8])
    s.add_labels((np.full(idx[0].size, 8), *idx), 2)
    second = next(gen)
    assert second.revision == 2 == s.volume.revision
    assert s.trainer.last_revision == 2
    # the sampler re-indexed the new labels, and with a foreground share of 1 the patch centre is on them
    assert len(s.trainer.batches.sampler._coords[1]) == idx[0].size
    centre = s.trainer.batches.sampler.center()
    assert mask[tuple(centre)] == 1


def test_training_from_another_thread_sees_edits(sphere):
    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    stop = threading.Event()
    seen = []
    t = threading.Thread(target=lambda: seen.extend(s.train(should_stop=stop.is_set)))
    t.start()
    while s.trainer.step < 2:
        pass
    rev = s.add_labels((4, slice(None), slice(None)), 1) and s.volume.revision
    while s.trainer.last_revision < rev:
        pass
    stop.set()
    t.join(timeout=30)
    assert not t.is_alive()
    assert any(isinstance(e, TrainStep) and e.revision == rev for e in seen)


def test_seeded_cpu_training_is_reproducible(sphere):
    _, mask = sphere
    losses = []
    for _ in range(2):
        s = _session(sphere, annotation=np.where(np.arange(16)[:, None, None] == 8, mask_to_annotation(mask), 0))
        losses.append([e.loss for e in s.train(max_steps=3)])
    assert losses[0] == losses[1]


def test_learns_a_sphere_from_three_slices(sphere):
    _image, mask = sphere
    ann = np.zeros_like(mask)
    for z in (4, 8, 12):
        ann[z] = mask_to_annotation(mask[z])
    s = _session(sphere, annotation=ann, config=SessionConfig(model=ModelConfig(base_channels=8, depth=3),
                 train=TrainConfig(patch_voxels=8 * 16 * 16, batch_size=2), device="cpu"))
    list(s.train(max_steps=150))
    seg = s.segment()
    dice = 2 * np.sum((seg == 1) & (mask == 1)) / (np.sum(seg == 1) + np.sum(mask == 1))
    assert dice > 0.8
    # labeled voxels are returned as labeled, whatever the net says
    assert np.array_equal(seg[4], mask[4])


def test_interactive_streams_view_first_then_whole_volume(sphere):
    _image, mask = sphere
    s = _session(sphere, annotation=np.where(np.arange(16)[:, None, None] == 8, mask_to_annotation(mask), 0))
    view = Box((8, 0, 0), (9, 32, 32))
    preds = []
    for event in s.interactive(lambda: view, first_refresh_steps=2, refresh_seconds=0.0, max_predict_share=1.0):
        if isinstance(event, Prediction):
            preds.append(event)
        if len(preds) == 2:
            break
    assert preds[0].box == view and preds[0].labels.shape == (1, 32, 32)
    assert preds[1].box == Box.full(s.volume.shape)
    assert preds[1].probabilities.shape == (2, 16, 32, 32)
    assert np.allclose(preds[1].probabilities.sum(0), 1, atol=1e-4)
    assert preds[1].uncertainty.min() >= 0 and preds[1].uncertainty.max() <= 1


def test_adding_a_class_grows_the_head(sphere):
    _, mask = sphere
    s = _session(sphere, annotation=np.where(np.arange(16)[:, None, None] == 8, mask_to_annotation(mask), 0))
    list(s.train(max_steps=1))
    s.volume.add_class()
    s.add_labels((2, slice(0, 3), slice(0, 3)), 3)
    list(s.train(max_steps=1))
    assert s.predict().probabilities.shape[0] == 3


def test_model_save_load_round_trip(sphere, tmp_path):
    from napari_sparseseg.core.checkpoint import config_of, load_into, read_model, save_model

    _, mask = sphere
    s = _session(sphere, annotation=np.where(np.arange(16)[:, None, None] == 8, mask_to_annotation(mask), 0))
    list(s.train(max_steps=2))
    path = save_model(s.trainer, tmp_path / "m.pt")
    payload = read_model(path)
    other = _session(sphere, config=config_of(payload))
    load_into(other.trainer, payload)
    assert np.allclose(other.predict().probabilities, s.predict().probabilities, atol=1e-5)
    image, _ = sphere
    wrong = SegmentationSession(image, num_classes=2, config=TINY)
    with pytest.raises(ValueError, match="foreground classes"):
        load_into(wrong.trainer, payload)


def test_a_model_saved_while_another_thread_trains_holds_the_weights_of_one_step(sphere, tmp_path):
    from napari_sparseseg.core.checkpoint import read_model, save_model

    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    list(s.train(max_steps=1))
    state = s.trainer.state_dict()
    name = next(iter(state["model"]))
    kept = state["model"][name].clone()
    list(s.train(max_steps=1))
    assert torch.equal(state["model"][name], kept)  # a copy: the next step does not reach into it
    held, saved, early = threading.Event(), threading.Event(), []

    def step_in_progress():  # the training thread, in the middle of a step
        with s.trainer.weights.lock:
            held.set()
            early.append(saved.wait(0.5))  # the save waits for the step: never done meanwhile

    stepping = threading.Thread(target=step_in_progress)
    stepping.start()
    assert held.wait(60)
    saver = threading.Thread(target=lambda: (save_model(s.trainer, tmp_path / "m.pt"), saved.set()))
    saver.start()
    stepping.join(60)
    saver.join(60)
    assert early == [False] and saved.is_set() and read_model(tmp_path / "m.pt")["state"]["step"] == 2


def test_correction_weight_changes_on_a_live_session(sphere):
    _, mask = sphere
    s = _session(sphere, annotation=np.where(np.arange(16)[:, None, None] == 8, mask_to_annotation(mask), 0))
    s.add_correction((3, slice(0, 2), slice(0, 2)), 1)
    cw = s.volume.class_weights(s.config.train.class_balance_power)
    before = s.volume.weights((3, 0, 0), cw, s.trainer.config.train.correction_weight)
    s.update_training(correction_weight=5.0)
    after = s.volume.weights((3, 0, 0), cw, s.trainer.config.train.correction_weight)
    assert after == pytest.approx(before * 5.0 / 2.0)


def test_model_keeps_its_planned_layout_on_a_volume_of_other_spacing(sphere):
    """A model trained at one spacing (one OME-Zarr level) predicts an image of another spacing."""
    image, mask = sphere
    annotation = mask_to_annotation(mask) * (np.arange(mask.shape[0]) == 8)[:, None, None]
    src = SegmentationSession(image, num_classes=1, spacing=(3.0, 1.0, 1.0), annotation=annotation, config=TINY)
    list(src.train(max_steps=2))
    state = src.trainer.state_dict()
    # Spacing (3, 1, 1) plans no z pooling at the first level; the isotropic level 1 below would pool z.
    dst = SegmentationSession(image[:, ::2, ::2].copy(), num_classes=1, spacing=(3.0, 3.0, 3.0), config=TINY)
    assert dst.trainer.model.strides != src.trainer.model.strides
    dst.trainer.load_state_dict(state)
    assert dst.trainer.model.strides == src.trainer.model.strides
    pred = dst.predict()
    assert pred.labels.shape == dst.volume.shape
    assert dst.trainer.state_dict()["spacing"] == state["spacing"]


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_clean_tail_trains_the_end_of_a_budgeted_run_without_augmentation(sphere, monkeypatch, share):
    import napari_sparseseg.core.batches as batches_module

    calls = []
    augment = batches_module.augment_batch
    monkeypatch.setattr(batches_module, "augment_batch", lambda *a, **k: calls.append(1) or augment(*a, **k))
    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    s.trainer.clean_tail = CleanTail(share=share, max_drift=0.0)  # no gate
    augmented = []
    progress = (0.0, 0.5, 0.74, 0.76, 0.99, None)  # None: open-ended (interactive) training
    for p in progress:
        before = len(calls)
        assert isinstance(s.trainer.train_step(p), TrainStep)
        augmented.append(len(calls) > before)
    assert augmented == [p is None or p < 1 - share for p in progress]
    notices = list(s.trainer.notices)  # the user is told once when the tail begins
    assert len(notices) == (1 if share else 0)
    assert all("without augmentation" in n.message for n in notices)


def test_drift_probe_compares_predictions_lag_probes_apart(sphere):
    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    trainer = s.trainer
    for _ in range(trainer.monitor.lag):
        trainer._probe()
        assert trainer.monitor.drift is None  # not enough probes yet
    trainer._probe()
    assert trainer.monitor.drift == 0.0  # the weights did not change: same prediction
    s.add_labels((2, slice(None), slice(None)), 1)  # new labels: start over
    trainer._probe()
    assert trainer.monitor.drift is None


@pytest.mark.parametrize("terms", [{}, {"smoothness": 4.0}, {"hardest": 1.0}])
def test_a_step_optimises_the_label_loss_plus_the_terms_switched_on(sphere, terms):
    """The trainer passes its smoothness and hardest-voxel weights to the loss; TrainStep reports both sums."""
    _image, mask = sphere
    config = SessionConfig(model=TINY.model, device="cpu", train=TrainConfig(patch_voxels=8 * 16 * 16, warmup_steps=1))
    s = _session(sphere, config=config)
    zz, yy, xx = np.nonzero(mask[8:9])
    s.add_labels((zz[:20] + 8, yy[:20], xx[:20]), 2)  # a stroke: smoothness applies
    s.add_labels((8, slice(0, 2), slice(None)), 1)
    trainer = s.trainer
    trainer.losses = LossSchedule(**{"smoothness": 0.0, "hardest": 0.0, **terms})
    trainer.step = 1_000  # past the smoothness ramp
    trainer.fit_error_rate = 0.5  # the hardest-voxel gate fully open
    event = trainer.train_step()
    assert np.isfinite(event.label_loss)
    if terms:
        assert event.loss > event.label_loss + 1e-6
    else:
        assert event.loss == pytest.approx(event.label_loss)


def test_a_step_measures_the_share_of_labeled_voxels_it_got_wrong(sphere):
    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    trainer = s.trainer
    # 3 of 8 labeled voxels wrong, unlabeled ones ignored
    logits = torch.zeros(1, 2, 1, 2, 5)
    logits[:, 1] = 1.0  # predicts class 1 everywhere
    target = torch.tensor([[[[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]]])
    weight = torch.tensor([[[[1.0, 1, 1, 1, 1], [1, 1, 1, 0, 0]]]])
    assert trainer._track_fit(logits, target, weight) == pytest.approx(3 / 8)
    assert trainer.fit_error_rate == pytest.approx(3 / 8)
    events = [e for e in s.train(max_steps=2) if isinstance(e, TrainStep)]
    assert all(0 <= e.labeled_error_rate <= 1 for e in events) and len(events) == 2
    assert events[-1].labeled_error_rate == trainer.fit_error_rate  # the running mean travels with the step


def test_loading_weights_forgets_the_running_error_rate(sphere):
    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    trainer = s.trainer
    state = trainer.state_dict()
    trainer.fit_error_rate = 0.5
    trainer.load_state_dict(state)
    assert trainer.fit_error_rate is None


def _probing_session(sphere):
    """A session whose guards probe at every step, slice 8 labeled."""
    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    s.trainer.monitor = ProbeMonitor(every=1)
    return s


def _guarded_run(sphere, monkeypatch, rates, *, edit_before_end=False):
    """A budgeted run of 6 steps, clocked at one second a step; the probes (steps 3, 4, 5 and the end) read ``rates``.

    Returns the trainer, the events after the last step and the prediction weights at each probe.
    """
    s = _probing_session(sphere)
    trainer = s.trainer
    trainer.clean_tail = CleanTail(share=0.0)
    real_probe, real_step, readings, at_probe = trainer._probe, trainer.train_step, iter(rates), {}

    def probe():
        real_probe()
        trainer.monitor.error_rate = next(readings)
        at_probe[trainer.step] = {k: v.clone() for k, v in trainer.ema_model.state_dict().items()}

    def clocked_step(progress=None):
        event = real_step(progress)
        trainer.elapsed = float(trainer.step)
        return event

    monkeypatch.setattr(trainer, "_probe", probe)
    monkeypatch.setattr(trainer, "train_step", clocked_step)
    run, after = trainer.run(max_steps=6, decay_until=6.0), []
    for event in run:
        if isinstance(event, TrainStep) and event.step == 6:
            if edit_before_end:
                s.add_labels((4, slice(None), slice(None)), 1)
            after = list(run)
    return trainer, after, at_probe


def test_fit_guard_ends_a_budgeted_run_on_the_best_fitting_weights(sphere, monkeypatch):
    # probes in the guarded half at steps 3, 4, 5 (0.05, 0.01, 0.03); the final weights read 0.04 > 1.25 * 0.01
    trainer, after, at_probe = _guarded_run(sphere, monkeypatch, [0.05, 0.01, 0.03, 0.04])
    assert sorted(at_probe) == [3, 4, 5, 6]
    assert trainer.fit_guard.restored_from == 4
    state = trainer.ema_model.state_dict()
    assert all(torch.equal(state[k], at_probe[4][k]) for k in state)
    assert not all(torch.equal(state[k], at_probe[6][k]) for k in state)  # the final weights were replaced
    assert len(after) == 1 and "keeping those of step 4" in after[0].message


def test_fit_guard_forgets_weights_trained_on_other_labels(sphere, monkeypatch):
    # the user painted after the best probe: its weights answer another question, so nothing is swapped
    trainer, after, _ = _guarded_run(sphere, monkeypatch, [0.05, 0.01, 0.03, 0.04], edit_before_end=True)
    assert trainer.fit_guard.restored_from is None and after == []


def test_probe_error_rate_is_the_share_of_labeled_voxels_predicted_wrong(sphere):
    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    trainer = s.trainer
    with torch.no_grad():  # a net that calls every voxel background
        trainer.ema_model.head.weight.zero_()
        trainer.ema_model.head.bias.copy_(torch.tensor([20.0, -20.0]))
    trainer._probe()
    from napari_sparseseg.core.convergence import probe_box

    box = probe_box(s.volume.shape, trainer.patch_size, s.volume.labeled_centre(), windows=1)
    labels = s.volume.labels[box.slices]
    expected = np.count_nonzero(labels == 2) / np.count_nonzero(labels > 0)
    assert 0 < expected < 1
    assert trainer.monitor.error_rate == pytest.approx(expected)


def test_drift_gate_and_fit_guard_share_one_probe_per_step(sphere, monkeypatch):
    s = _probing_session(sphere)
    trainer, probed = s.trainer, []
    real_probe = trainer._probe
    monkeypatch.setattr(trainer, "_probe", lambda: probed.append(trainer.step) or real_probe())
    for progress in (0.5, 0.6, 0.7):  # inside both the gate's and the guard's windows
        trainer.train_step(progress)
    assert probed == [0, 1, 2]


def test_open_ended_training_is_never_guarded(sphere, monkeypatch):
    s = _probing_session(sphere)
    probed = []
    monkeypatch.setattr(s.trainer, "_probe", lambda: probed.append(1))
    list(s.train(max_steps=3))
    assert probed == [] and s.trainer.fit_guard.restored_from is None


@pytest.mark.parametrize("bad", [{"foreground_share": 1.5}, {"random_share": -0.1}, {"centre_margin": 0.6},
                                 {"foreground_share": 0.6, "random_share": 0.5}])
def test_sampling_shares_are_validated(bad):
    with pytest.raises(ValueError):
        Sampling(**bad)
