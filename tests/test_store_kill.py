"""A session store survives SIGKILL at random moments: strokes acknowledged over 1 s before are on disk.

A worker process (``store_kill_worker.py``) trains a tiny model, paints random strokes, writes
predictions and checkpoints into a store with autosave on; it is killed with SIGKILL at seeded
random moments, six times in a row on the same store (round 0 creates it, later rounds reopen it).
After each kill the store is reopened and checked against a replay of the printed strokes.
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

from napari_sparseseg.core.checkpoint import load_into, read_model
from napari_sparseseg.store import SessionStore

WORKER = Path(__file__).with_name("store_kill_worker.py")
SHAPE = (16, 48, 48)
#: A stroke printed this long before the kill must be in the store.
DURABLE_AFTER = 1.0


def _run_until_killed(path: Path, seed: int, delay: float, log: Path) -> tuple[list[str], float]:
    """Start the worker, wait for READY, sleep ``delay`` s, SIGKILL it; return its stdout lines and the kill time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-u", str(WORKER), str(path), str(seed)], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env)
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                if not line.endswith("\n"):
                    break  # cut by the kill: never a whole announcement
                lines.append(line.split())
                if line.startswith("READY"):
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.time() + 60
        while not ready.wait(0.05):
            assert proc.poll() is None, f"worker died before READY:\n{log.read_text()}"
            assert time.time() < deadline, "worker not ready after 60 s"
        time.sleep(delay)
        assert proc.poll() is None, f"worker died by itself:\n{log.read_text()}"
        kill_time = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(10)
    assert proc.returncode == -signal.SIGKILL
    return lines, kill_time


def test_store_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(2026)
    path = tmp_path / "session.zarr"
    base_labels = np.zeros(SHAPE, np.uint8)
    base_labels[4] = 1  # the worker labels slice 4 as background when it creates the store
    base_source = np.where(base_labels > 0, 1, 0).astype(np.uint8)
    checked_strokes, partial_files, ckpt_step = 0, 0, -1
    delays = [0.3, 0.9, 1.6, 2.2, 2.9, 3.5]
    rng.shuffle(delays)
    for round_ in range(len(delays)):
        delay = float(delays[round_] + rng.uniform(0, 0.2))
        lines, kill_time = _run_until_killed(path, 100 + round_, delay, tmp_path / f"worker{round_}.log")
        partial_files += len(list(path.glob("**/*.partial"))) + len(list(path.glob("checkpoints/*.tmp")))

        store, session = SessionStore.open(path, device="cpu")
        labels, source = session.volume.labels, session.volume.source
        np.testing.assert_array_equal(labels, store.read("labels"))
        expected_l, expected_s = base_labels.copy(), base_source.copy()
        young = np.zeros(SHAPE, bool)
        acked = {r[1]: float(r[2]) for r in lines if r[0] == "ACK"}
        for row in (r for r in lines if r[0] == "STROKE"):
            z0, y0, x0, z1, y1, x1, value = map(int, row[2:9])
            src = int(row[10])
            box = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
            if kill_time - acked.get(row[1], kill_time) >= DURABLE_AFTER:  # acknowledged long enough ago
                expected_l[box] = value
                expected_s[box] = src if value > 0 else 0
                checked_strokes += 1
            else:
                young[box] = True
        old = ~young
        mismatch = np.count_nonzero(labels[old] != expected_l[old])
        assert mismatch == 0, f"round {round_} (kill after {delay:.2f} s): {mismatch} voxels of old strokes lost"
        np.testing.assert_array_equal(source[old], expected_s[old])
        weights = store.read("weights")
        np.testing.assert_array_equal(weights[old] > 0, labels[old] > 0)

        ckpts = [int(r[1]) for r in lines if r[0] == "CKPT"]
        ckpt_step = max([ckpt_step] + ckpts)
        latest = path / "checkpoints" / "latest.pt"
        if ckpt_step >= 0:
            assert latest.exists()
            assert store.resume_error is None, store.resume_error
            load_into(session.trainer, read_model(latest))
            assert session.trainer.step >= ckpt_step  # training resumes at (or after) the last printed checkpoint
        assert not list(path.glob("**/*.partial"))  # open cleaned up what the kill left
        base_labels, base_source = labels.copy(), source.copy()
        store.close()
    assert checked_strokes >= 30, f"only {checked_strokes} strokes were old enough to check"
    assert ckpt_step > 0
    print(f"{checked_strokes} strokes checked over {len(delays)} kills; {partial_files} partial files left by kills")
