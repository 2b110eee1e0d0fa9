"""Does the user's work survive, however busy the machine? Flush latency, kills under load, and a long soak.

    python benchmarks/durability.py latency --load 10 --seconds 120 --json out.json
    python benchmarks/durability.py kills --load 8 --kills 50 --json out.json
    python benchmarks/durability.py soak --minutes 30 --json out.json

``--load N`` starts N busy processes (a pure-Python loop each) for the run: load N on this machine.

* ``latency``: a session with a session store autosaving (as the plugin does) trains in a thread
  while the main thread paints a stroke every 0.05-0.3 s. For each stroke, the time from the edit being
  acknowledged (``add_labels`` returned) to the end of the first flush that wrote its revision: p50, p99, max.
* ``kills``: the store-kill worker of the tests (``tests/store_kill_worker.py``: trains, paints random strokes,
  autosaves, checkpoints) is killed with SIGKILL at random instants, again and again on the same store. After
  each kill the store is reopened and every stroke acknowledged (applied) more than 1 s before the kill must be
  in it.
  Counts the strokes lost (target 0) and the stores that did not open (target 0).
* ``soak``: the session API with a store for ``--minutes``: training steps, a stroke every 0.5 s, a prediction
  every 10 s; the resident memory every 10 s, and its slope over the second half (target: under 1 MiB/min).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "store_kill_worker.py"


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy(processes: int):
    """``processes`` busy loops for the duration of the block."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_spin, daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()


def _session(shape=(16, 64, 64), seed: int = 0):
    from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
    from napari_sparseseg.core.session import SegmentationSession

    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape).astype(np.float32)
    config = SessionConfig(model=ModelConfig(base_channels=8, depth=3),
                           train=TrainConfig(patch_voxels=16 * 32 * 32, seed=seed), device="cpu")
    session = SegmentationSession(image, num_classes=2, spacing=(2.0, 1.0, 1.0), config=config)
    session.add_labels((shape[0] // 2, slice(None), slice(None)), 1)
    return session, rng


def _stroke(session, rng) -> None:
    shape = np.array(session.volume.shape)
    size = rng.integers(1, (4, 12, 12))
    start = rng.integers(0, shape - size + 1)
    sl = tuple(slice(int(a), int(a + s)) for a, s in zip(start, size))
    session.add_labels(sl, int(rng.integers(0, 4)))


def latency(args: argparse.Namespace) -> dict:
    """Acknowledged-to-disk latency of strokes while training runs, under ``args.load`` busy processes."""
    import torch

    from napari_sparseseg.store import SessionStore

    torch.set_num_threads(1)
    session, rng = _session(seed=args.seed)
    flushed: list[tuple[float, int]] = []  # (time the flush ended, revision it wrote)
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore.create(Path(tmp) / "s.zarr", session)
        flush_labels = store._flush_labels

        def timed_flush():
            revision = session.volume.revision
            box = flush_labels()
            flushed.append((time.perf_counter(), revision))
            return box

        store._flush_labels = timed_flush
        stop = threading.Event()

        def train() -> None:
            for _ in session.train(should_stop=stop.is_set, idle_sleep=0.01):
                pass

        acked: list[tuple[float, int]] = []
        with busy(args.load):
            store.start_autosave()
            trainer = threading.Thread(target=train, daemon=True)
            trainer.start()
            end = time.perf_counter() + args.seconds
            while time.perf_counter() < end:
                _stroke(session, rng)
                acked.append((time.perf_counter(), session.volume.revision))
                time.sleep(float(rng.uniform(0.05, 0.3)))
            time.sleep(1.0)
            stop.set()
            trainer.join()
            store.close()
    done = np.array(flushed)
    delays = []
    for t, revision in acked:
        later = done[(done[:, 1] >= revision) & (done[:, 0] >= t)]
        delays.append(float(later[:, 0].min() - t) if len(later) else float("inf"))
    d = np.array(delays)
    return {"mode": "latency", "load": args.load, "seconds": args.seconds, "strokes": len(d),
            "steps": session.trainer.step, "p50_s": float(np.percentile(d, 50)), "p99_s": float(np.percentile(d, 99)),
            "max_s": float(d.max()), "over_1s": int((d > 1.0).sum())}


def _kill_worker():
    """The tests' store-kill worker module (its runner and its replay of strokes), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("store_kill_worker", WORKER)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def kills(args: argparse.Namespace) -> dict:
    """SIGKILL the store-kill worker at random instants under load; count lost strokes and unopenable stores."""
    from napari_sparseseg.store import SessionStore

    worker = _kill_worker()
    rng = np.random.default_rng(args.seed)
    shape = worker.SHAPE
    lost, unopenable, checked, young_total = 0, 0, 0, 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp, busy(args.load):
        path = Path(tmp) / "session.zarr"
        base_labels = np.zeros(shape, np.uint8)
        base_labels[4] = 1  # the worker labels slice 4 as background when it creates the store
        for k in range(args.kills):
            delay = float(rng.uniform(0.2, 4.0))
            lines, kill_time = worker.run_until_killed(path, 1000 + k, delay, Path(tmp) / f"worker{k}.log",
                                                       ready_within=300)
            try:
                store, session = SessionStore.open(path, device="cpu")
            except Exception as exc:  # noqa: BLE001 (counted: a store that does not open is a failure)
                unopenable += 1
                rows.append({"kill": k, "delay": delay, "error": str(exc)})
                print(f"kill {k + 1}: the store does not open: {exc}", flush=True)
                import shutil

                shutil.rmtree(path, ignore_errors=True)  # start the next round on a new store
                base_labels = np.zeros(shape, np.uint8)
                base_labels[4] = 1
                continue
            labels = session.volume.labels
            strokes = [r for r in lines if r[0] == "STROKE" and r[11:12] in ([], ["0"])]  # on the session's volume
            acked = {r[1]: float(r[2]) for r in lines if r[0] == "ACK"}
            expected, _, young, n = worker.replay(lines, kill_time, base_labels, np.zeros(shape, np.uint8))
            checked += n
            young_total += len(strokes) - n
            old = ~young
            wrong = old & (labels != expected)
            missing = int(np.count_nonzero(wrong))
            lost += int(missing > 0)
            row = {"kill": k, "delay": round(delay, 2), "strokes": len(strokes), "voxels_lost": missing}
            if missing:  # how long before the kill the newest stroke on a lost voxel was acknowledged
                ages = [kill_time - acked[r[1]] for r in strokes if r[1] in acked
                        and wrong[tuple(slice(int(a), int(b)) for a, b in zip(r[2:5], r[5:8]))].any()]
                row["youngest_lost_stroke_age_s"] = round(min(ages), 3) if ages else None
            rows.append(row)
            base_labels = labels.copy()
            store.close()
            print(f"kill {k + 1}/{args.kills} after {delay:.2f} s: {len(strokes)} strokes, {missing} voxels of old "
                  "strokes lost", flush=True)
    return {"mode": "kills", "load": args.load, "kills": args.kills, "strokes_checked": checked,
            "strokes_young": young_total, "kills_losing_old_strokes": lost, "stores_not_opening": unopenable,
            "rows": rows}


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def soak(args: argparse.Namespace) -> dict:
    """The session API with a store for ``args.minutes``: training, a stroke every 0.5 s, resident memory."""
    import torch

    from napari_sparseseg.core.events import TrainStep
    from napari_sparseseg.store import SessionStore

    torch.set_num_threads(1)
    session, rng = _session(seed=args.seed)
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore.create(Path(tmp) / "s.zarr", session)
        store.start_autosave()
        t0 = time.perf_counter()
        end = t0 + 60 * args.minutes
        next_stroke, next_sample, next_prediction, strokes = t0, t0, t0 + 10, 0
        while time.perf_counter() < end:
            for event in session.train(max_steps=1):
                if isinstance(event, TrainStep):
                    store.on_step(session.trainer, event)
            now = time.perf_counter()
            if now >= next_stroke:
                _stroke(session, rng)
                strokes += 1
                next_stroke += 0.5
            if now >= next_prediction:
                store.record_prediction(session.predict())
                next_prediction += 10
            if now >= next_sample:
                samples.append(((now - t0) / 60, _rss_mib()))
                next_sample += 10
        store.close(checkpoint=True)
    minutes, rss = np.array(samples).T
    half = minutes >= minutes[-1] / 2
    slope = float(np.polyfit(minutes[half], rss[half], 1)[0])
    return {"mode": "soak", "minutes": args.minutes, "strokes": strokes, "steps": session.trainer.step,
            "rss_start_mib": float(rss[0]), "rss_end_mib": float(rss[-1]), "rss_max_mib": float(rss.max()),
            "slope_second_half_mib_per_min": slope, "samples": [[round(m, 2), round(r, 1)] for m, r in samples]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("latency", "kills", "soak"):
        p = sub.add_parser(name)
        p.add_argument("--load", type=int, default=0, help="busy processes during the run")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--json", help="write the result here")
    sub.choices["latency"].add_argument("--seconds", type=float, default=120.0)
    sub.choices["kills"].add_argument("--kills", type=int, default=50)
    sub.choices["soak"].add_argument("--minutes", type=float, default=30.0)
    args = ap.parse_args(argv)
    result = {"latency": latency, "kills": kills, "soak": soak}[args.mode](args)
    result.update(machine=f"{os.cpu_count()} cores", python=sys.version.split()[0])
    summary = {k: v for k, v in result.items() if k not in ("rows", "samples")}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
