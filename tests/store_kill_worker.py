"""Worker for tests/test_store_kill.py: trains on a tiny volume and paints strokes into a session store.

Run as ``python -u store_kill_worker.py STORE SEED``: creates the store of a session with one other
volume (or reopens it when it exists), starts autosave, then loops forever: a training step, a few
random strokes (some on the other volume), now and then a prediction of a small box and a checkpoint.
Just before each stroke it prints ``STROKE i z0 y0 x0 z1 y1 x1 value time source volume`` (value in
annotation encoding, 0 erases; volume 0 the session's own, 1 the other) and once
the stroke is applied ``ACK i time``; after each checkpoint ``CKPT step time``; each line in one
write. The test kills it with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from napari_sparseseg.core.annotation import Source
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.store import SessionStore

SHAPE = (16, 48, 48)
CHUNKS = (8, 16, 16)


def _say(*fields: object) -> None:
    """One line on stdout in a single write, flushed: a pipe takes it whole or not at all."""
    sys.stdout.write(" ".join(map(str, fields)) + "\n")
    sys.stdout.flush()


def main(path: str, seed: int) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    if Path(path).exists():
        store, session = SessionStore.open(path, device="cpu")
    else:
        image = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
        image[:, 16:32, 16:32] += 3.0
        config = SessionConfig(model=ModelConfig(base_channels=4, depth=2),
                               train=TrainConfig(patch_voxels=8 * 32 * 32, batch_size=1, augment=False),
                               device="cpu")
        session = SegmentationSession(image, num_classes=2, spacing=(2.0, 1.0, 1.0), config=config)
        session.add_labels((4, slice(None), slice(None)), 1)
        session.add_training_volume(np.flip(image, axis=2).copy(), spacing=(2.0, 1.0, 1.0), name="other")
        store = SessionStore.create(path, session, class_names=["a", "b"], chunks=CHUNKS)
    volumes = session.training_volumes
    store.start_autosave()
    _say("READY", session.trainer.step, time.time())
    i = 0
    last_ckpt = time.monotonic()
    while True:
        for event in session.train(max_steps=1):
            store.record_step(event)
        for _ in range(int(rng.integers(1, 4))):
            size = rng.integers(1, (4, 14, 14))
            start = rng.integers(0, np.array(SHAPE) - size + 1)
            stop = start + size
            value = int(rng.integers(0, 4))
            source = Source.CORRECTED if rng.random() < 0.3 else Source.PAINTED
            volume = int(rng.random() < 0.3)
            # announced before it is applied (a kill never leaves a stroke applied but unannounced), and
            # acknowledged once applied: the durability clock starts at the acknowledgement, as for a user, whose
            # stroke is acknowledged when it is on screen. Each line is one write (atomic on a pipe).
            _say("STROKE", i, *start.tolist(), *stop.tolist(), value, repr(time.time()), int(source), volume)
            volumes[volume].set_labels(Box(tuple(start), tuple(stop)).slices, value, source)
            _say("ACK", i, repr(time.time()))
            i += 1
            time.sleep(float(rng.uniform(0.0, 0.05)))
        if rng.random() < 0.2:
            z = int(rng.integers(0, SHAPE[0] - 4))
            store.record_prediction(session.predict(Box((z, 0, 0), (z + 4, 32, 32))))
        if time.monotonic() - last_ckpt > 0.5:
            store.save_checkpoint(session.trainer)
            _say("CKPT", session.trainer.step, repr(time.time()))
            last_ckpt = time.monotonic()


# ---------------------------------------------------------------- the killing side (tests and benchmarks)
#: A stroke acknowledged this long before a kill must be in the store.
DURABLE_AFTER = 1.0


def run_until_killed(path: Path, seed: int, delay: float, log: Path, ready_within: float = 60.0,
                     min_old_acks: int = 0) -> tuple[list[list[str]], float]:
    """Start this worker on ``path``, wait for READY, sleep ``delay`` s (and on, until ``min_old_acks`` strokes were
    acknowledged :data:`DURABLE_AFTER` ago: as many strokes to check on a slow machine as on a fast one), SIGKILL it.

    Returns its stdout lines (split into fields; a line cut by the kill is dropped) and the kill time. Raises
    ``RuntimeError`` if the worker dies by itself or is not ready within ``ready_within`` s.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    lines: list[list[str]] = []
    ready = threading.Event()
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-u", __file__, str(path), str(seed)], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env)

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                if not line.endswith("\n"):
                    break  # cut by the kill: never a whole announcement
                lines.append(line.split())
                if line.startswith("READY"):
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.time() + ready_within
        while not ready.wait(0.05):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"worker not ready: {log.read_text()[-2000:]}")
        time.sleep(delay)
        while (sum(1 for r in list(lines) if r[0] == "ACK" and time.time() - float(r[2]) >= DURABLE_AFTER)
               < min_old_acks and time.time() < deadline + delay):
            time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError(f"worker died by itself: {log.read_text()[-2000:]}")
        kill_time = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(10)
    return lines, kill_time


def replay(lines: list[list[str]], kill_time: float, labels: np.ndarray, source: np.ndarray, volume: int = 0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """What the store must hold of ``volume`` after a kill: ``labels`` and ``source`` (the store before this worker
    ran) with every stroke on it acknowledged :data:`DURABLE_AFTER` before ``kill_time`` applied in order.

    Returns the expected labels and source, the mask of voxels a younger (or unacknowledged) stroke touched (not
    checked), and the number of strokes checked.
    """
    labels, source = labels.copy(), source.copy()
    young = np.zeros(labels.shape, bool)
    acked = {r[1]: float(r[2]) for r in lines if r[0] == "ACK"}
    checked = 0
    for row in (r for r in lines if r[0] == "STROKE" and (int(r[11]) if len(r) > 11 else 0) == volume):
        z0, y0, x0, z1, y1, x1, value = map(int, row[2:9])
        box = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        if kill_time - acked.get(row[1], kill_time) >= DURABLE_AFTER:  # acknowledged long enough ago
            labels[box] = value
            source[box] = int(row[10]) if value > 0 else 0
            checked += 1
        else:
            young[box] = True
    return labels, source, young, checked


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
