"""One writer per store (a lock naming the process, stale locks taken over) and stores created whole or not at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from napari_sparseseg import store_lock
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.store import SessionStore
from napari_sparseseg.store_lock import StoreInUseError
from tests.conftest import sphere_volume, tiny_config

SHAPE = (8, 32, 32)
CONFIG = tiny_config()


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _store(path) -> SessionStore:
    image, mask = sphere_volume(SHAPE, radius=5)
    session = SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), config=CONFIG)
    session.add_labels((4, slice(None), slice(None)), mask[4] + 1)
    return SessionStore.create(path, session)


def test_a_second_process_is_told_who_holds_the_store_and_a_killed_holder_is_taken_over(tmp_path):
    path = tmp_path / "s.zarr"
    _store(path).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from napari_sparseseg.store import SessionStore
        SessionStore.open({str(path)!r}, device="cpu")
        print("open", flush=True)
        time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreInUseError, match=f"process {holder.pid}"):
            SessionStore.open(path)
        image, _ = sphere_volume(SHAPE, radius=5)  # Save session... over it: the other process's store stays
        with pytest.raises(StoreInUseError, match=f"process {holder.pid}"):
            SessionStore.create(path, SegmentationSession(image, num_classes=1, config=CONFIG), overwrite=True)
        assert store_lock.holder(path)["pid"] == holder.pid and (path / "zarr.json").is_file()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    store, session = SessionStore.open(path)  # the holder is gone: its lock is stale
    assert store_lock.holder(path)["pid"] == os.getpid()
    assert session.volume.n_labeled == SHAPE[1] * SHAPE[2]
    store.close()
    assert store_lock.holder(path) is None


def test_a_store_whose_creation_fails_leaves_nothing_behind(tmp_path, monkeypatch):
    def disk_full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SessionStore, "flush", disk_full)
    with pytest.raises(OSError):
        _store(tmp_path / "s.zarr")
    assert list(tmp_path.iterdir()) == []


def test_the_lock_of_another_machine_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "s.zarr"
    _store(path).close()
    (path / store_lock.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": time.time()}))
    with pytest.raises(StoreInUseError, match="elsewhere.*delete"):
        SessionStore.open(path)


@pytest.mark.parametrize("damage", ["labels/zarr.json", "attributes"])
def test_a_damaged_store_is_refused_naming_what_is_wrong_and_left_unlocked(tmp_path, damage):
    path = tmp_path / "s.zarr"
    _store(path).close()
    if damage == "labels/zarr.json":
        (path / "labels" / "zarr.json").write_text('{"zarr_format": 3, "node_type": ')  # truncated by a crash
        expected = str(path / "labels" / "zarr.json")
    else:
        meta = json.loads((path / "zarr.json").read_text())
        del meta["attributes"]["num_classes"]
        (path / "zarr.json").write_text(json.dumps(meta))
        expected = "damaged"
    with pytest.raises(ValueError, match="restore it") as info:
        SessionStore.open(path)
    assert expected in str(info.value)
    assert store_lock.holder(path) is None  # the failed open did not leave the store locked


def test_a_script_that_exits_without_closing_its_store_still_saves_its_last_edit(tmp_path):
    path = tmp_path / "s.zarr"
    script = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        from napari_sparseseg.core.session import SegmentationSession
        from napari_sparseseg.store import SessionStore
        from tests.conftest import sphere_volume, tiny_config
        image, mask = sphere_volume({SHAPE}, radius=5)
        session = SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), config=tiny_config())
        session.add_labels((4, slice(None), slice(None)), mask[4] + 1)
        store = SessionStore.create({str(path)!r}, session)
        store.start_autosave(interval=60.0)  # no periodic flush before the exit
        session.add_labels((6, slice(None), slice(None)), 2)
        # the script ends here without store.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "failed" not in done.stderr and "cannot schedule" not in done.stderr, done.stderr
    import zarr

    assert (zarr.open_array(str(path / "labels"), mode="r")[6] == 2).all()  # the last edit reached the disk
