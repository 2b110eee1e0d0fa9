"""Worker for tests/test_store_kill.py: trains on a tiny volume and paints strokes into a session store.

Run as ``python -u store_kill_worker.py STORE SEED``: creates the store (or reopens it when it
exists), starts autosave, then loops forever: a training step, a few random strokes, now and then
a prediction of a small box and a checkpoint. Just before each stroke it prints
``STROKE i z0 y0 x0 z1 y1 x1 value time source`` (value in annotation encoding, 0 erases) and once
the stroke is applied ``ACK i time``; after each checkpoint ``CKPT step time``; each line in one
write. The test kills it with SIGKILL.
"""

from __future__ import annotations

import sys
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
        store = SessionStore.create(path, session, class_names=["a", "b"], chunks=CHUNKS)
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
            # announced before it is applied (a kill never leaves a stroke applied but unannounced), and
            # acknowledged once applied: the durability clock starts at the acknowledgement, as for a user, whose
            # stroke is acknowledged when it is on screen. Each line is one write (atomic on a pipe).
            _say("STROKE", i, *start.tolist(), *stop.tolist(), value, repr(time.time()), int(source))
            session.add_labels(Box(tuple(start), tuple(stop)).slices, value, source)
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


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
