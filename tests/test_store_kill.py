"""A session store survives SIGKILL at random moments: strokes acknowledged over 1 s before are on disk.

A worker process (``store_kill_worker.py``) trains a tiny model, paints random strokes, writes
predictions and checkpoints into a store with autosave on; it is killed with SIGKILL at seeded
random moments, six times in a row on the same store (round 0 creates it, later rounds reopen it).
After each kill the store is reopened and checked against a replay of the printed strokes, on the
session's volume and on the other volume it learns from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from napari_sparseseg.core.checkpoint import load_into, read_model
from napari_sparseseg.store import SessionStore

from .store_kill_worker import SHAPE, replay, run_until_killed


def test_store_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(2026)
    path = tmp_path / "session.zarr"
    base_labels = np.zeros(SHAPE, np.uint8)
    base_labels[4] = 1  # the worker labels slice 4 as background when it creates the store
    base_source = np.where(base_labels > 0, 1, 0).astype(np.uint8)
    other_labels, other_source = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)  # the other volume's
    checked_strokes, partial_files, ckpt_step = 0, 0, -1
    delays = [0.3, 0.9, 1.6, 2.2, 2.9, 3.5]
    rng.shuffle(delays)
    for round_ in range(len(delays)):
        delay = float(delays[round_] + rng.uniform(0, 0.2))
        lines, kill_time = run_until_killed(path, 100 + round_, delay, tmp_path / f"worker{round_}.log",
                                             min_old_acks=6)
        partial_files += len(list(path.glob("**/*.partial"))) + len(list(path.glob("checkpoints/*.tmp")))

        store, session = SessionStore.open(path, device="cpu")
        labels, source = session.volume.labels, session.volume.source
        np.testing.assert_array_equal(labels, store.read("labels"))
        expected_l, expected_s, young, checked = replay(lines, kill_time, base_labels, base_source)
        checked_strokes += checked
        old = ~young
        mismatch = np.count_nonzero(labels[old] != expected_l[old])
        assert mismatch == 0, f"round {round_} (kill after {delay:.2f} s): {mismatch} voxels of old strokes lost"
        np.testing.assert_array_equal(source[old], expected_s[old])
        weights = store.read("weights")
        np.testing.assert_array_equal(weights[old] > 0, labels[old] > 0)
        other = session.other_volumes[0].volume
        expected_l, expected_s, young, checked = replay(lines, kill_time, other_labels, other_source, volume=1)
        checked_strokes += checked
        old = ~young
        mismatch = np.count_nonzero(other.labels[old] != expected_l[old])
        assert mismatch == 0, f"round {round_}: {mismatch} voxels of old strokes on the other volume lost"
        np.testing.assert_array_equal(other.source[old], expected_s[old])
        other_labels, other_source = other.labels.copy(), other.source.copy()

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
