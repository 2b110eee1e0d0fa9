import threading

import numpy as np
import pytest
import torch

from napari_sparseseg.core.annotation import Box
from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.events import Prediction, TrainStep, Waiting
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
    s = _session(sphere, config=SessionConfig(model=TINY.model, device="cpu", train=TrainConfig(
        patch_voxels=8 * 16 * 16, batch_size=1, foreground_share=1.0, random_share=0.0)))
    s.add_labels((8, slice(None), slice(None)), 1)  # background only
    gen = s.train()
    first = next(gen)
    assert isinstance(first, TrainStep) and first.revision == 1
    assert s.trainer.sampler._coords[1].size == 0
    # the user paints foreground while the generator is suspended between steps
    idx = np.nonzero(mask[8])
    s.add_labels((np.full(idx[0].size, 8), *idx), 2)
    second = next(gen)
    assert second.revision == 2 == s.volume.revision
    assert s.trainer.last_revision == 2
    # the sampler re-indexed the new labels, and with foreground_share=1 the patch centre is on them
    assert len(s.trainer.sampler._coords[1]) == idx[0].size
    centre = s.trainer.sampler.center()
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


@pytest.mark.parametrize("clean_tail", [0.0, 0.25, 1.0])
def test_clean_tail_trains_the_end_of_a_budgeted_run_without_augmentation(sphere, monkeypatch, clean_tail):
    import napari_sparseseg.core.trainer as trainer_module

    calls = []
    augment = trainer_module.augment_batch
    monkeypatch.setattr(trainer_module, "augment_batch", lambda *a, **k: calls.append(1) or augment(*a, **k))
    _image, mask = sphere
    config = SessionConfig(model=TINY.model, train=TrainConfig(patch_voxels=8 * 16 * 16, clean_tail=clean_tail,
                                                               clean_tail_drift=0.0), device="cpu")  # no gate
    s = _session(sphere, config=config)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    augmented = []
    for progress in (0.0, 0.5, 0.74, 0.76, 0.99, None):  # None: open-ended (interactive) training
        before = len(calls)
        assert isinstance(s.trainer.train_step(progress), TrainStep)
        augmented.append(len(calls) > before)
    expected = [p is None or p < 1 - clean_tail for p in (0.0, 0.5, 0.74, 0.76, 0.99, None)]
    assert augmented == expected


def test_clean_tail_waits_until_the_prediction_has_settled(sphere, monkeypatch):
    import napari_sparseseg.core.trainer as trainer_module

    calls = []
    augment = trainer_module.augment_batch
    monkeypatch.setattr(trainer_module, "augment_batch", lambda *a, **k: calls.append(1) or augment(*a, **k))
    monkeypatch.setattr(trainer_module, "DRIFT_PROBE_EVERY", 1)  # probe at every step in the window
    _image, mask = sphere
    config = SessionConfig(model=TINY.model, train=TrainConfig(patch_voxels=8 * 16 * 16, clean_tail=0.5,
                                                               clean_tail_drift=0.15, fit_guard=0),
                           device="cpu")
    s = _session(sphere, config=config)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    trainer = s.trainer
    drifts = iter([0.9, 0.6, 0.3, 0.1, 0.9])  # what the probe region's drift reads at each probe
    probed = []
    monkeypatch.setattr(trainer, "_probe", lambda: probed.append(trainer.step) or
                        setattr(trainer, "drift", next(drifts)))
    augmented, notices = [], []
    for progress in (0.1, 0.34, 0.5, 0.6, 0.7, 0.8, 0.9):
        before = len(calls)
        assert isinstance(trainer.train_step(progress), TrainStep)
        augmented.append(len(calls) > before)
    # no probe before 0.5 - DRIFT_PROBE_LEAD; past its share the tail waits for a drift below 0.15 (the 4th probe)
    assert len(probed) == 4
    assert augmented == [True, True, True, True, True, False, False]
    assert trainer.clean_since == 5
    notices = list(trainer.notices)
    assert len(notices) == 1 and "without augmentation" in notices[0].message and "0.100" in notices[0].message


def test_drift_probe_compares_predictions_100_steps_apart(sphere):
    from napari_sparseseg.core.trainer import DRIFT_LAG_PROBES

    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    trainer = s.trainer
    for _ in range(DRIFT_LAG_PROBES):
        trainer._probe()
        assert trainer.drift is None  # not enough probes yet
    trainer._probe()
    assert trainer.drift == 0.0  # the weights did not change: same prediction
    s.add_labels((2, slice(None), slice(None)), 1)  # new labels: start over
    trainer._probe()
    assert trainer.drift is None


def _stroke_session(sphere, **train):
    """A session (``train``: TrainConfig fields) whose only label is a three-voxel foreground stroke on slice 8."""
    _image, mask = sphere
    config = SessionConfig(model=TINY.model, train=TrainConfig(patch_voxels=8 * 16 * 16, **train), device="cpu")
    s = _session(sphere, config=config)
    zz, yy, xx = np.nonzero(mask[8:9])
    s.add_labels((zz[:3] + 8, yy[:3], xx[:3]), 2)  # far from a whole slice: the boundaries are unlabeled
    return s, config


def test_clean_tail_shrinks_with_the_plane_coverage_of_strokes(sphere):
    s, _ = _stroke_session(sphere, clean_tail=0.5)
    coverage = s.volume.plane_coverage()
    assert 0 < coverage < 0.1
    assert s.trainer.clean_tail() == pytest.approx(0.5 * coverage)
    s.add_labels((4, slice(None), slice(None)), 1)  # plus a whole slice
    assert s.trainer.clean_tail() > 0.5 * coverage


def test_smoothness_acts_on_strokes_and_not_on_whole_slices(sphere):
    from napari_sparseseg.core.trainer import SMOOTHNESS_RAMP_STEPS

    _image, mask = sphere
    s, config = _stroke_session(sphere, smoothness=4.0)
    assert s.trainer.smoothness() == 0.0  # ramps in from step 0
    s.trainer.step = SMOOTHNESS_RAMP_STEPS // 2
    assert s.trainer.smoothness() == pytest.approx(2.0 * (1 - s.volume.plane_coverage()))
    s.trainer.step = SMOOTHNESS_RAMP_STEPS
    assert s.trainer.smoothness() == pytest.approx(4.0 * (1 - s.volume.plane_coverage()))
    assert s.trainer.smoothness() > 3.6
    for _ in s.train(max_steps=1):
        pass  # a step with the term runs
    whole = _session(sphere, config=config)
    whole.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))  # a whole slice marks them
    whole.trainer.step = SMOOTHNESS_RAMP_STEPS
    assert whole.trainer.smoothness() == 0.0


def test_hardest_term_ramps_in_with_the_labeled_error_rate(sphere):
    """Off while the net fits its labels, full while it contradicts more than one in fifty of them."""
    from napari_sparseseg.core.trainer import HARDEST_FROM_STEP, HARDEST_RAMP

    _image, mask = sphere
    config = SessionConfig(model=TINY.model, train=TrainConfig(patch_voxels=8 * 16 * 16, hardest_weight=2.0),
                           device="cpu")
    s = _session(sphere, config=config)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    trainer = s.trainer
    assert trainer.hardest_weight() == 0.0  # nothing measured yet
    trainer.fit_error_rate = 0.5
    assert trainer.hardest_weight() == 0.0  # not before HARDEST_FROM_STEP: an untrained net gets a third wrong
    trainer.step = HARDEST_FROM_STEP
    lo, hi = HARDEST_RAMP
    for rate, expected in [(lo / 2, 0.0), ((lo + hi) / 2, 1.0), (hi * 2, 2.0)]:
        trainer.fit_error_rate = rate
        assert trainer.hardest_weight() == pytest.approx(expected)
    # the rate a step measures: 3 of 8 labeled voxels wrong, unlabeled ones ignored
    logits = torch.zeros(1, 2, 1, 2, 5)
    logits[:, 1] = 1.0  # predicts class 1 everywhere
    target = torch.tensor([[[[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]]])
    weight = torch.tensor([[[[1.0, 1, 1, 1, 1], [1, 1, 1, 0, 0]]]])
    trainer.fit_error_rate = None
    assert trainer._track_fit(logits, target, weight) == pytest.approx(3 / 8)
    assert trainer.fit_error_rate == pytest.approx(3 / 8)
    events = [e for e in s.train(max_steps=2) if isinstance(e, TrainStep)]
    assert all(0 <= e.labeled_error_rate <= 1 for e in events) and len(events) == 2
    assert events[-1].labeled_error_rate == trainer.fit_error_rate  # the running mean travels with the step


@pytest.mark.parametrize("terms", [{}, {"smoothness": 4.0}, {"hardest_weight": 1.0}])
def test_a_step_optimises_the_label_loss_plus_the_terms_switched_on(sphere, terms):
    """The trainer passes its smoothness and hardest-voxel weights to the loss; TrainStep reports both sums."""
    _image, mask = sphere
    train = {"smoothness": 0.0, "hardest_weight": 0.0, **terms}
    config = SessionConfig(model=TINY.model, device="cpu",
                           train=TrainConfig(patch_voxels=8 * 16 * 16, warmup_steps=1, **train))
    s = _session(sphere, config=config)
    zz, yy, xx = np.nonzero(mask[8:9])
    s.add_labels((zz[:20] + 8, yy[:20], xx[:20]), 2)  # a stroke: smoothness applies
    s.add_labels((8, slice(0, 2), slice(None)), 1)
    trainer = s.trainer
    trainer.step = 1_000  # past the smoothness ramp
    trainer.fit_error_rate = 0.5  # the hardest-voxel gate fully open
    event = trainer.train_step()
    assert np.isfinite(event.label_loss)
    if terms:
        assert event.loss > event.label_loss + 1e-6
    else:
        assert event.loss == pytest.approx(event.label_loss)


def test_loading_weights_forgets_the_running_error_rate(sphere):
    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    trainer = s.trainer
    state = trainer.state_dict()
    trainer.fit_error_rate = 0.5
    trainer.load_state_dict(state)
    assert trainer.fit_error_rate is None


@pytest.mark.parametrize("field", ["smoothness", "hardest_weight"])
def test_the_config_rejects_negative_loss_weights(field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: -1.0})


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_the_config_rejects_a_clean_tail_outside_0_1(value):
    with pytest.raises(ValueError, match="clean_tail"):
        TrainConfig(clean_tail=value)


def test_error_pool_holds_labeled_voxels_the_net_got_wrong(sphere):
    """Hard-example sampling: misclassified labeled voxels reach the sampler, in volume coordinates."""
    _image, mask = sphere
    config = SessionConfig(model=TINY.model, device="cpu", train=TrainConfig(
        patch_voxels=8 * 16 * 16, batch_size=2, warmup_steps=1, error_share=0.4))
    s = _session(sphere, config=config)
    # a scattered tenth of the voxels: a coordinate off by one would mostly land on an unlabeled voxel
    picked = np.random.default_rng(0).random(mask.shape) < 0.1
    s.add_labels(np.nonzero(picked), mask[picked].astype(np.uint8) + 1)
    for _ in s.train(max_steps=3):
        pass
    pool = list(s.trainer.sampler._errors)
    assert len(pool) == 3 and all(len(p) <= 64 for p in pool)
    points = np.concatenate(pool)
    assert len(points) > 0  # an untrained net gets some labeled voxels wrong
    assert (s.volume.labels[tuple(points.T)] > 0).all()  # only labeled voxels, at their own coordinates
    # a sampler that centres every patch on the pool picks one of those voxels
    sampler = s.trainer.sampler
    sampler.foreground_share, sampler.random_share, sampler.error_share = 0.0, 0.0, 1.0
    centre = sampler.center()
    assert any((centre == p).all(1).any() for p in pool)
    s.add_labels((0, 0, 0), 1)  # new labels: the pooled errors may no longer be labeled voxels
    sampler.center()
    assert len(sampler._errors) == 0


def test_no_error_pool_by_default(sphere):
    _image, mask = sphere
    s = _session(sphere)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    for _ in s.train(max_steps=2):
        pass
    assert len(s.trainer.sampler._errors) == 0


def test_sampling_shares_must_fit_in_one():
    with pytest.raises(ValueError, match="error_share"):
        TrainConfig(foreground_share=0.5, random_share=0.1, error_share=0.5)
    with pytest.raises(ValueError, match="error_share"):
        TrainConfig(error_share=-0.1)


def _probing_session(sphere, monkeypatch, **train):
    """A session that probes at every step, slice 8 labeled; ``train``: TrainConfig fields."""
    from napari_sparseseg.core import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "DRIFT_PROBE_EVERY", 1)
    _image, mask = sphere
    config = SessionConfig(model=TINY.model, train=TrainConfig(patch_voxels=8 * 16 * 16, **train), device="cpu")
    s = _session(sphere, config=config)
    s.add_labels((8, slice(None), slice(None)), mask_to_annotation(mask[8]))
    return s


def _guarded_run(sphere, monkeypatch, rates, *, edit_before_end=False):
    """A budgeted run of 6 steps, clocked at one second a step; the probes (steps 3, 4, 5 and the end) read ``rates``.

    Returns the trainer, the events after the last step and the prediction weights at each probe.
    """
    s = _probing_session(sphere, monkeypatch, warmup_steps=1, clean_tail=0)
    trainer = s.trainer
    real_probe, real_step, readings, at_probe = trainer._probe, trainer.train_step, iter(rates), {}

    def probe():
        real_probe()
        trainer.probe_error_rate = next(readings)
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
    import torch

    # probes in the guarded half at steps 3, 4, 5 (0.05, 0.01, 0.03); the final weights read 0.04 > 1.25 * 0.01
    trainer, after, at_probe = _guarded_run(sphere, monkeypatch, [0.05, 0.01, 0.03, 0.04])
    assert sorted(at_probe) == [3, 4, 5, 6]
    assert trainer.fit_restored_from == 4
    state = trainer.ema_model.state_dict()
    assert all(torch.equal(state[k], at_probe[4][k]) for k in state)
    assert not all(torch.equal(state[k], at_probe[6][k]) for k in state)  # the final weights were replaced
    assert len(after) == 1 and "keeping those of step 4" in after[0].message


def test_fit_guard_keeps_final_weights_that_fit_about_as_well(sphere, monkeypatch):
    import torch

    trainer, after, at_probe = _guarded_run(sphere, monkeypatch, [0.05, 0.01, 0.03, 0.012])  # within 1.25x
    assert trainer.fit_restored_from is None and after == []
    state = trainer.ema_model.state_dict()
    assert all(torch.equal(state[k], at_probe[6][k]) for k in state)  # still the final weights


def test_fit_guard_forgets_weights_trained_on_other_labels(sphere, monkeypatch):
    # the user painted after the best probe: its weights answer another question, so nothing is swapped
    trainer, after, _ = _guarded_run(sphere, monkeypatch, [0.05, 0.01, 0.03, 0.04], edit_before_end=True)
    assert trainer.fit_restored_from is None and after == []


def test_probe_error_rate_is_the_share_of_labeled_voxels_predicted_wrong(sphere):
    import torch

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
    assert trainer.probe_error_rate == pytest.approx(expected)


def test_drift_gate_and_fit_guard_share_one_probe_per_step(sphere, monkeypatch):
    s = _probing_session(sphere, monkeypatch, clean_tail=0.5, clean_tail_drift=0.15)
    trainer, probed = s.trainer, []
    real_probe = trainer._probe
    monkeypatch.setattr(trainer, "_probe", lambda: probed.append(trainer.step) or real_probe())
    for progress in (0.5, 0.6, 0.7):  # inside both the gate's and the guard's windows
        trainer.train_step(progress)
    assert probed == [0, 1, 2]


def test_open_ended_training_is_never_guarded(sphere, monkeypatch):
    s = _probing_session(sphere, monkeypatch)
    probed = []
    monkeypatch.setattr(s.trainer, "_probe", lambda: probed.append(1))
    list(s.train(max_steps=3))
    assert probed == [] and s.trainer.fit_restored_from is None


def test_fit_guard_is_zero_or_at_least_one():
    with pytest.raises(ValueError, match="fit_guard"):
        TrainConfig(fit_guard=0.5)
    assert TrainConfig(fit_guard=0).fit_guard == 0
