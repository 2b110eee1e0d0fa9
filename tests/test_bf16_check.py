"""bf16 training on a CPU only where a child process showed it runs and pays (core/bf16_check.py)."""

import gc
import os
import subprocess
import sys
import threading
import time
import warnings
from collections import deque

import numpy as np
import pytest
import torch

from napari_sparseseg.core import bf16_check
from napari_sparseseg.core import trainer as trainer_module
from napari_sparseseg.core.bf16_check import bf16_for_training, run_check, training_verdict
from napari_sparseseg.core.config import ModelConfig, SessionConfig
from napari_sparseseg.core.events import Notice
from napari_sparseseg.core.net import UNet3D
from napari_sparseseg.core.session import SegmentationSession


def _child(body: str) -> list[str]:
    return [sys.executable, "-c", "import os, sys, time\n" + body]


@pytest.fixture
def fresh_verdicts(monkeypatch):
    """No verdict kept from another test."""
    monkeypatch.setattr(bf16_check, "_VERDICTS", {})
    monkeypatch.setattr(bf16_check, "_CHECKING", {})
    monkeypatch.setattr(bf16_check, "_TOLD", set())


@pytest.mark.parametrize(("body", "usable", "reason"), [
    ("print('float32 0.5', flush=True); print('bfloat16 0.2', flush=True)", True, ""),
    ("print('float32 0.5', flush=True); print('bfloat16 0.7', flush=True)", False, "not faster"),
    ("print('float32 0.5', flush=True); os.abort()", False, "stopped the check"),  # oneDNN's double free
    ("print('float32 0.01', flush=True); time.sleep(60)", False, "did not finish within 1 s"),  # its hang
    ("sys.exit(3)", False, "did not time a float32 step"),
    ("print('float32 fast', flush=True)", False, "did not time"),
])
def test_the_verdict_follows_what_the_child_did(body, usable, reason):
    verdict = run_check(_child(body), start_seconds=30, min_wait=1, patience=10)
    assert verdict.usable is usable
    assert reason in verdict.reason
    assert verdict.failed is (not usable and reason != "not faster")  # slower is no failure to tell of
    if usable:
        assert verdict.bf16_seconds < verdict.float32_seconds


@pytest.mark.parametrize("body", [
    "print('float32 0.5', flush=True); print('bfloat16 0.2', flush=True)",  # it answered
    "print('float32 0.01', flush=True); time.sleep(60)",  # it hung and was killed
])
def test_no_pipe_is_left_open_after_a_check(body):
    """The child's output pipe is closed once the check is over, not left to the garbage collector (which warns
    of an unclosed file)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        run_check(_child(body), start_seconds=30, min_wait=1, patience=10)
        for thread in [t for t in threading.enumerate() if t.name == bf16_check.READER_NAME]:
            thread.join(timeout=10)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_child_that_cannot_start_means_float32():
    verdict = run_check(["/nonexistent/python"])
    assert not verdict.usable and "could not start" in verdict.reason


def test_a_frozen_application_is_not_started_again_as_the_check(monkeypatch, fresh_verdicts):
    def must_not_run(command, **_):
        raise AssertionError("a frozen application's executable would open another window")

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(bf16_check, "run_check", must_not_run)
    model = UNet3D(ModelConfig(), (1.0, 1.0, 1.0))
    verdict = training_verdict(model, (1.0, 1.0, 1.0), (16, 64, 64), 1, 1, wait=True)
    assert not verdict.usable and "frozen" in verdict.reason


def test_the_real_child_times_both_precisions_of_the_net():
    """The child this module runs as: it builds the requested net and reports a step in each precision (whether
    bf16 is faster depends on the machine, which this does not assert)."""
    model = UNet3D(ModelConfig(base_channels=4, depth=2), (1.0, 1.0, 1.0))
    request = {"model": model.config.__dict__, "spacing": [1.0, 1.0, 1.0], "patch": [4, 8, 8], "batch": 1,
               "threads": 1}
    import json

    verdict = run_check([sys.executable, "-m", "napari_sparseseg.core.bf16_check", json.dumps(request),
                         str(os.getpid())])
    assert verdict.float32_seconds is not None and verdict.float32_seconds > 0
    assert verdict.bf16_seconds is not None and verdict.bf16_seconds > 0


def test_training_runs_float32_until_the_check_says_yes_and_asks_once_per_shape(monkeypatch, fresh_verdicts):
    calls, release = [], threading.Event()

    def judge(command, **_):
        calls.append(command)
        release.wait(30)
        return bf16_check.Verdict(True, "", False, 0.5, 0.2)

    monkeypatch.setattr(bf16_check, "run_check", judge)
    model = UNet3D(ModelConfig(), (1.0, 1.0, 1.0))
    notices: deque = deque()
    assert not bf16_for_training(True, "cpu", model, (1.0, 1.0, 1.0), (16, 64, 64), 1, notices)  # checking
    assert not bf16_for_training(True, "cpu", model, (1.0, 1.0, 1.0), (16, 64, 64), 1, notices)
    release.set()
    assert training_verdict(model, (1.0, 1.0, 1.0), (16, 64, 64), 1, torch.get_num_threads(), wait=True).usable
    assert bf16_for_training(True, "cpu", model, (1.0, 1.0, 1.0), (16, 64, 64), 1, notices)
    assert len(calls) == 1 and not notices  # one check for the shape, kept; nothing to tell
    slower = UNet3D(ModelConfig(base_channels=8), (1.0, 1.0, 1.0))
    monkeypatch.setattr(bf16_check, "run_check", lambda command, **_: bf16_check.Verdict(False, "not faster", False))
    training_verdict(slower, (1.0, 1.0, 1.0), (16, 64, 64), 1, torch.get_num_threads(), wait=True)
    assert not bf16_for_training(True, "cpu", slower, (1.0, 1.0, 1.0), (16, 64, 64), 1, notices)
    assert not notices  # bf16 merely slower: float32 without a word


def test_a_refused_shape_trains_in_float32_and_the_user_is_told_once(monkeypatch, fresh_verdicts):
    calls = []

    def refuse(command, **_):
        calls.append(command)
        return bf16_check.Verdict(False, "a bf16 step stopped the check (exit code -6)", True, 0.5)

    monkeypatch.setattr(bf16_check, "run_check", refuse)
    model = UNet3D(ModelConfig(), (8.0, 1.0, 1.0))
    threads = torch.get_num_threads()
    assert not training_verdict(model, (8.0, 1.0, 1.0), (6, 200, 200), 1, threads, wait=True).usable
    notices: deque = deque()
    for _ in range(3):
        assert not bf16_for_training(True, "cpu", model, (8.0, 1.0, 1.0), (6, 200, 200), 1, notices)
    assert len(calls) == 1
    assert len(notices) == 1 and "training in float32" in notices[0].message and "6 x 200 x 200" in notices[0].message
    training_verdict(model, (8.0, 1.0, 1.0), (8, 96, 96), 1, threads, wait=True)
    assert len(calls) == 2  # another patch is checked on its own
    # no check where bf16 is off, or on a GPU (cuDNN)
    assert not bf16_for_training(False, "cpu", model, (1.0, 1.0, 1.0), (16, 64, 64), 1, notices)
    assert bf16_for_training(True, "cuda", model, (1.0, 1.0, 1.0), (16, 64, 64), 1, notices)
    assert len(calls) == 2


def test_the_child_ends_itself_when_its_parent_is_not_there():
    """Started for a parent pid that is not its parent (as when the process that started it has died), the child
    ends at once instead of training: a hung bf16 step would otherwise spin on the user's CPU."""
    model = UNet3D(ModelConfig(base_channels=4, depth=2), (1.0, 1.0, 1.0))
    key = bf16_check._key(model, (1.0, 1.0, 1.0), (4, 8, 8), 1, 1)
    child = subprocess.run([sys.executable, "-m", "napari_sparseseg.core.bf16_check", key, str(os.getpid() + 10**6)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 3 and "float32" not in child.stdout


def test_a_check_still_running_when_its_process_exits_ends_with_it():
    script = (
        "import sys, threading, time\n"
        "from napari_sparseseg.core import bf16_check\n"
        "hang = [sys.executable, '-c', 'import time; print(\"float32 0.01\", flush=True); time.sleep(120)']\n"
        "threading.Thread(target=bf16_check.run_check, args=(hang,), daemon=True).start()\n"
        "while not bf16_check._CHILDREN: time.sleep(0.05)\n"
        "print(next(iter(bf16_check._CHILDREN)).pid, flush=True)\n"
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    pid = int(parent.stdout.split()[-1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _flat_session(amp: bool) -> SegmentationSession:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 200, 200)).astype(np.float32)
    annotation = np.zeros(image.shape, np.uint8)
    annotation[3, 50:150, 50:150] = 2  # class 1
    annotation[3, :20] = 1  # background
    config = SessionConfig.from_dict({"device": "cpu", "train": {"amp": amp}})
    return SegmentationSession(image, num_classes=1, spacing=(8.0, 1.0, 1.0), annotation=annotation, config=config)


def test_a_session_trains_in_float32_where_the_check_refused_bf16_and_says_so(monkeypatch, fresh_verdicts):
    monkeypatch.setattr(trainer_module, "fast_bf16", lambda device: True)  # as on a CPU with AMX
    monkeypatch.setattr(bf16_check, "run_check",
                        lambda command, **_: bf16_check.Verdict(False, "a bf16 step did not finish within 18 s", True,
                                                                 1.8))
    dtypes = []
    session = _flat_session(amp=True)
    session.trainer.model.head.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    events = []
    for event in session.train(max_steps=3):
        events.append(event)
        if len(dtypes) == 1:  # let the check finish before the second step
            training_verdict(session.trainer.model, (8.0, 1.0, 1.0), session.trainer.patch_size, 1,
                             torch.get_num_threads(), wait=True)
    assert dtypes == [torch.float32] * 3
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert sum("training in float32" in m and "did not finish" in m for m in notices) == 1


def test_a_flat_stack_trains_on_any_cpu():
    """The shape that crashed the process on an AMX CPU in bf16 (a 6-slice stack of 8:1:1 spacing, the whole
    volume one patch): its verdict awaited first, the steps after it run in the precision it chose (float32 on
    such a CPU; elsewhere no check, float32 anyway)."""
    session = _flat_session(amp=True)
    trainer = session.trainer
    if trainer.amp:  # a CPU with AMX
        verdict = training_verdict(trainer.model, trainer.weights.spacing, trainer.patch_size, trainer.batch_size,
                                   torch.get_num_threads(), wait=True)
        assert verdict is not None
    steps = [e for e in session.train(max_steps=2) if not isinstance(e, Notice)]
    assert len(steps) == 2 and all(np.isfinite(s.loss) for s in steps)
