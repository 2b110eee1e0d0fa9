from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# napari's settings (the widget records a reader preference in them) go to a file of this run, never to the
# user's: napari reads NAPARI_CONFIG when napari.settings is first imported, after this module.
os.environ.setdefault("NAPARI_CONFIG", str(Path(tempfile.mkdtemp(prefix="napari-settings-")) / "settings.yaml"))


def tiny_config(**responder):
    """A CPU session config with a net small enough for unit tests (and ``ResponderConfig`` overrides)."""
    from napari_sparseseg.core.config import ModelConfig, ResponderConfig, SessionConfig, TrainConfig

    return SessionConfig(model=ModelConfig(base_channels=4, depth=2), device="cpu",
                         train=TrainConfig(patch_voxels=8 * 32 * 32, batch_size=1, augment=False),
                         responder=ResponderConfig(**responder))


def sphere_volume(shape=(16, 32, 32), radius=6.0, seed=0, noise=0.1):
    """A bright sphere on a dark noisy background; returns (image float32, mask uint8)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    c = [(s - 1) / 2 for s in shape]
    mask = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2).astype(np.uint8)
    image = mask.astype(np.float32) + noise * rng.standard_normal(shape).astype(np.float32)
    return image, mask


@pytest.fixture(autouse=True)
def _sparseseg_home(tmp_path_factory, monkeypatch):
    """Sessions the widget autosaves go to a temporary home, never to ~/.napari-sparseseg."""
    monkeypatch.setenv("NAPARI_SPARSESEG_HOME", str(tmp_path_factory.mktemp("sparseseg-home")))


@pytest.fixture
def sphere():
    return sphere_volume()


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} not present")
    return path


def damaged_copies(raw: bytes, count: int, seed: int = 1):
    """``count`` damaged copies of a file's bytes ``raw``, in turn: bytes overwritten, the file cut short, a run of 16
    bytes zeroed."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        data = bytearray(raw)
        if i % 3 == 0:
            for j in rng.integers(0, len(data), 1 + i % 5):
                data[j] = int(rng.integers(0, 256))
        elif i % 3 == 1:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            j = int(rng.integers(0, max(1, len(data) - 16)))
            data[j:j + 16] = bytes(16)
        yield bytes(data)


def with_a_stored_byte_flipped(path) -> bytes:
    """The bytes of the zip archive at ``path`` (a model file) with one byte flipped in the middle of its largest
    part's data (a tensor's storage), found through the part's local header."""
    import struct
    import zipfile

    raw = bytearray(Path(path).read_bytes())
    with zipfile.ZipFile(path) as archive:
        part = max(archive.infolist(), key=lambda info: info.file_size)
    name_length, extra_length = struct.unpack("<HH", raw[part.header_offset + 26:part.header_offset + 30])
    raw[part.header_offset + 30 + name_length + extra_length + part.file_size // 2] ^= 0x40
    return bytes(raw)


@pytest.fixture
def steps_clock(monkeypatch):
    """``train`` and ``resume --seconds N`` run the window's loop for N net steps, not N seconds.

    Their budget counts everything (the first responder's bank and stages first), so on a slow or busy machine a
    budget of a few seconds can end before the net's first step, and ``--model`` writes no model (as it should).
    Tests that need a trained net count the budget in steps: what happens depends on the events, not on how fast
    this machine makes them (``core.shown.run_shown`` takes the clock; it is looked up when ``train`` runs).
    """
    from napari_sparseseg.core import shown

    real = shown.run_shown

    def run_in_steps(session, seconds, on_event=None, clock=None):
        return real(session, seconds, on_event, clock=lambda: float(session.trainer.step))

    monkeypatch.setattr(shown, "run_shown", run_in_steps)
