"""Which learner should the user see? Record the held-back scores and the true Dice of every learner, then replay rules.

    python benchmarks/handover_replay.py record --sample ../shared/data/*.npz --seconds 120 --seeds 0 \\
        --out benchmarks/results/handover_replay
    python benchmarks/handover_replay.py replay benchmarks/results/handover_replay/*.json

``record`` runs the product's loop (:meth:`SegmentationSession.interactive`, float32 on the CPU, 2 threads, the
feature stack computed before the clock starts, as ``evaluate`` does) for each volume, protocol and seed, and
writes one JSON file per run with its timeline: every update of the hand-over (the held-back score of each
learner and its bootstrap resamples) and, after every new prediction of a learner, the true foreground Dice of
the forest's, the net's and the blend's masks (labels merged in). The time spent scoring against ground truth
is not counted. Which learner is shown does not change what the learners learn (the distillation weight depends
on the scores, not on the choice), so one recording replays every rule exactly.

``replay`` feeds each recorded run's score updates to every rule of :data:`RULES` and prints the Dice of the
mask each rule would have shown at 5, 15, 30, 60, 120 and 300 s (those within the run), beside the forest's
alone and an oracle that always shows the learner that is truly best; and per rule the worst shortfall against
the forest from 30 s on and the mean over instants.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from helpers import load_volumes

from napari_sparseseg.core.config import SessionConfig, TrainConfig
from napari_sparseseg.core.handover import HandOver, HeldBackScore, blend
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.metrics import evaluate_masks
from napari_sparseseg.evaluation.protocols import protocol_mask, simulate_annotation

PROTOCOLS = ("z:1", "z:3", "scribble:3")
INSTANTS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0)


def record(name: str, image: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], protocol: str, seed: int,
           seconds: float) -> dict:
    """Run the loop for ``seconds`` and return its timeline (see the module docstring)."""
    k = int(truth.max())
    labeled = protocol_mask(truth.shape, protocol, truth)
    annotation = simulate_annotation(truth, protocol, labeled)
    config = SessionConfig(train=TrainConfig(amp=False, seed=seed), device="cpu")
    session = SegmentationSession(image, num_classes=k, spacing=spacing, annotation=annotation, config=config)
    session.warm_up()
    timeline: list[dict] = []
    paused = 0.0
    start = time.perf_counter()

    def now() -> float:
        return time.perf_counter() - start - paused

    def true_dice() -> dict[str, float | None]:
        latest = {name: session.display.latest(name) for name in ("forest", "net")}
        latest = {n: p for n, p in latest.items() if p is not None and p.shape[0] == k + 1}
        if "forest" in latest and "net" in latest and latest["forest"].shape == latest["net"].shape:
            latest["blend"] = blend(latest["forest"], latest["net"])
        out = {}
        for n, p in latest.items():
            mask = np.where(labeled, truth, p.argmax(0)).astype(np.uint8)
            out[n] = evaluate_masks(truth, mask, k + 1)["dice_fg"]
        return out

    def snapshot(original):
        # Instruments the display's hooks: after each new prediction of a learner, score every learner.
        def wrapped(*args, **kwargs):
            nonlocal paused
            result = original(*args, **kwargs)
            t0 = time.perf_counter()
            timeline.append({"t": round(now(), 3), "truth": true_dice()})
            paused += time.perf_counter() - t0
            return result
        return wrapped

    update = session.handover.update

    def recorded_update(scores):
        t = now()
        kept = {n: {"dice": s.dice, "interval": list(s.interval), "samples": np.round(s.samples, 5).tolist()}
                for n, s in scores.items() if isinstance(s, HeldBackScore)}
        timeline.append({"t": round(t, 3), "scores": kept})
        return update(scores)

    session.handover.update = recorded_update
    session.display.set_forest = snapshot(session.display.set_forest)
    session.display.show_net = snapshot(session.display.show_net)
    events = session.interactive(should_stop=lambda: now() >= seconds)
    for _ in events:
        if now() >= seconds:
            break
    events.close()
    return {"volume": name, "protocol": protocol, "seed": seed, "seconds": seconds, "steps": session.trainer.step,
            "timeline": timeline}


# -- rules --------------------------------------------------------------------------------------------------------
class BlendUnlessWorse:
    """Show the blend while it scores at least the forest's score less ``delta`` on the held-back labels (and, with
    ``net_delta``, the net at least the forest's less that), else the forest; no hysteresis. A rule that would show
    the net's help wherever the held-back labels do not speak against it."""

    def __init__(self, delta: float, net_delta: float | None = None) -> None:
        self.delta, self.net_delta = delta, net_delta
        self.scores: dict[str, float] = {}
        self.shown: str | None = None

    def update(self, scores: dict) -> str | None:
        self.scores.update({n: s.dice for n, s in scores.items() if s is not None})
        forest, mixed, net = (self.scores.get(n) for n in ("forest", "blend", "net"))
        if forest is None:
            return self.shown
        ok = mixed is not None and mixed >= forest - self.delta
        if ok and self.net_delta is not None:
            ok = net is not None and net >= forest - self.net_delta
        self.shown = "blend" if ok else "forest"
        return self.shown


#: Name to a factory of the hand-over rule replayed.
RULES = {
    "symmetric 0.9": lambda: HandOver(margin=0.005, confidence=0.9, home=None),  # the rule before this one
    "forest 0.9": lambda: HandOver(margin=0.005, confidence=0.9, home="forest"),
    "forest 0.95": lambda: HandOver(margin=0.005, confidence=0.95, home="forest"),
    "forest 0.99": lambda: HandOver(margin=0.005, confidence=0.99, home="forest"),  # the product's
    "blend 0.9": lambda: HandOver(margin=0.005, confidence=0.9, home="blend"),
    "blend >= forest": lambda: BlendUnlessWorse(0.0),
    "blend >= forest, net >= forest - 0.02": lambda: BlendUnlessWorse(0.0, 0.02),
}


def replay(run: dict, rule) -> list[float | None]:
    """The true Dice of the mask ``rule`` would have shown at each of :data:`INSTANTS` within the run.

    ``rule`` is a factory of :class:`HandOver`, a learner's name (always shown) or ``"oracle"`` (the learner truly
    best at each instant).
    """
    handover = rule() if callable(rule) else None
    truth: dict[str, float] = {}
    shown: str | None = None
    out = []
    events = iter(run["timeline"])
    pending = next(events, None)
    for instant in [t for t in INSTANTS if t <= run["seconds"]]:
        while pending is not None and pending["t"] <= instant:
            if "truth" in pending:
                truth.update(pending["truth"])
            elif handover is not None:
                scores = {n: HeldBackScore(s["dice"], tuple(s["interval"]), np.asarray(s["samples"]))
                          for n, s in pending["scores"].items()}
                shown = handover.update(scores)
            pending = next(events, None)
        if rule == "oracle":
            out.append(max(truth.values()) if truth else None)
            continue
        learner = shown if handover is not None else rule
        learner = learner if learner in truth else "forest"
        out.append(truth.get(learner))
    return out


def print_replay(runs: list[dict]) -> None:
    rules = {"forest": "forest", "net": "net", "blend": "blend", **RULES, "oracle": "oracle"}
    instants = [t for t in INSTANTS if t <= min(r["seconds"] for r in runs)]
    header = " | ".join(f"{t:g} s" for t in instants)
    shortfall = {name: [] for name in rules}
    mean_gain = {name: [] for name in rules}
    for run in sorted(runs, key=lambda r: (r["volume"], r["protocol"], r["seed"])):
        print(f"\n{run['volume']} {run['protocol']} seed {run['seed']} ({run['steps']} steps)   {header}")
        forest = replay(run, rules["forest"])
        for name, rule in rules.items():
            dice = replay(run, rule)
            print(f"  {name:12s} " + " | ".join("  -  " if d is None else f"{d:.3f}" for d in dice))
            later = [(d - f) for t, d, f in zip(instants, dice, forest) if t >= 30 and d is not None and f is not None]
            if later:
                shortfall[name].append(min(later))
                mean_gain[name].append(float(np.mean(later)))
    print(f"\n{len(runs)} runs. Per rule, the shown mask's Dice less the forest's, from 30 s on: the worst over runs, "
          "the mean of each run's worst, the mean over runs and instants, and the runs where it falls more than "
          "0.01 below the forest at some instant")
    for name in rules:
        if shortfall[name]:
            below = sum(v < -0.01 for v in shortfall[name])
            print(f"  {name:14s} worst {min(shortfall[name]):+.3f} | mean worst {np.mean(shortfall[name]):+.4f} | "
                  f"mean {np.mean(mean_gain[name]):+.4f} | {below} runs below by > 0.01")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("files", nargs="*")
    rec.add_argument("--sample", action="store_true")
    rec.add_argument("--protocols", nargs="+", default=list(PROTOCOLS))
    rec.add_argument("--seeds", type=int, nargs="+", default=[0])
    rec.add_argument("--seconds", type=float, default=120.0)
    rec.add_argument("--out", type=Path, required=True)
    rep = sub.add_parser("replay")
    rep.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    if args.command == "replay":
        print_replay([json.loads(p.read_text()) for p in args.runs])
        return
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, image, truth, spacing in load_volumes(args.files, args.sample):
        for protocol in args.protocols:
            for seed in args.seeds:
                path = args.out / f"{name}__{protocol.replace(':', '')}__s{seed}.json"
                if path.exists():
                    continue  # a rerun resumes
                run = record(name, image, truth, spacing, protocol, seed, args.seconds)
                path.write_text(json.dumps(run))
                print(f"{path.name}: {run['steps']} steps, {len(run['timeline'])} events", flush=True)


if __name__ == "__main__":
    main()
