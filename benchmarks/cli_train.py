"""The mask `napari-sparseseg train --out` writes after a budget, scored against ground truth.

    python benchmarks/cli_train.py ../shared/data/*.npz --sample --protocols z:3 scribble:3 --seconds 30 \\
        --seeds 0 1 2 --before /tmp/before
    python benchmarks/cli_train.py --from benchmarks/results/cli_train_30s.txt

For each volume, protocol and seed the labels of the protocol are simulated from the ground truth and written
beside the image (annotation encoding), then the command line is run as a user would run it, in a fresh process
(``python -m napari_sparseseg.cli train IMAGE --annotation A --seconds S --out MASK --model M --device cpu --seed
N``: the process's start, reading, the filter bank, training and writing all happen, only ``--seconds`` of the
loop is budgeted). Printed: the foreground Dice of the mask written (labels kept where painted, as written), the
learner it says it wrote, and the process's wall-clock seconds. ``--before DIR`` runs the same command, in the
same run and alternating with the current code, from another checkout of the package (``PYTHONPATH=DIR``;
``git worktree add DIR REV``), for a before/after on the same machine. ``--from`` prints the mean of each column
of a printed run as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from helpers import load_volumes

from napari_sparseseg.evaluation.protocols import simulate_annotation

ROOT = Path(__file__).resolve().parents[1]


def dice_fg(truth: np.ndarray, pred: np.ndarray) -> float:
    """Foreground (any class > 0) Dice."""
    t, p = truth > 0, pred > 0
    return float(2 * np.logical_and(t, p).sum() / max(1, t.sum() + p.sum()))


def run_train(code: Path, folder: Path, seconds: float, seed: int) -> tuple[float, str, np.ndarray]:
    """Run ``train`` of the package in ``code`` on ``folder``'s image and annotation: (seconds, what it said, mask)."""
    out = folder / "mask.npz"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(code)}
    argv = [sys.executable, "-m", "napari_sparseseg.cli", "train", str(folder / "image.npz"), "--annotation",
            str(folder / "annotation.npz"), "--seconds", str(seconds), "--out", str(out), "--model",
            str(folder / "model.pt"), "--device", "cpu", "--seed", str(seed)]
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0 and not (done.returncode == 1 and "no model written" in done.stderr):  # the mask is
        raise RuntimeError(f"train failed ({done.returncode}): {done.stderr[-2000:]}")  # what is measured here
    said = re.search(r"wrote the segmentation shown at the end \((.*?)\) to", done.stdout)
    whose = said.group(1) if said else "the net"  # before the window's loop, train wrote the net's
    with np.load(out) as d:
        return wall, whose, d[d.files[0]] if "labels" not in d.files else d["labels"]


def summarise(path: str) -> None:
    """Mean over seeds of each code's Dice and process seconds, per volume and protocol, as a markdown table."""
    rows: dict[tuple[str, str], list[list[float]]] = {}
    labels: list[str] = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("volume "):
            labels = [c.split(":")[0].strip() for c in line.split("|")[1:]]
            continue
        if "|" not in line or not labels:
            continue
        name, protocol, _ = line.split("|")[0].split()
        cells = [re.match(r"\s*([\d.]+) \((.*), (\d+)\)", c).groups() for c in line.split("|")[1:]]
        rows.setdefault((name, protocol), []).append([float(v) for d, _, t in cells for v in (d, t)])
    print("| volume | protocol | " + " | ".join(f"{label} Dice | {label} s" for label in labels) + " | seeds |")
    print("|---|---|" + "---|---|" * len(labels) + "---|")
    for (name, protocol), values in rows.items():
        mean = np.mean(values, axis=0)
        cells = " | ".join(f"{mean[i]:.3f} | {mean[i + 1]:.0f}" for i in range(0, len(mean), 2))
        print(f"| {name} | {protocol} | {cells} | {len(values)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--protocols", nargs="+", default=["z:3", "scribble:3"])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--before", help="another checkout of the package, run beside the current one")
    ap.add_argument("--from", dest="from_file", help="summarise this printed run instead")
    args = ap.parse_args()
    if args.from_file:
        summarise(args.from_file)
        return
    codes = [("now", ROOT)] + ([("before", Path(args.before).resolve())] if args.before else [])
    print("volume protocol seed | " + " | ".join(f"{label}: Dice (whose, process s)" for label, _ in codes))
    for name, image, truth, spacing in load_volumes(args.files, args.sample):
        for protocol in args.protocols:
            annotation = simulate_annotation(truth, protocol)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                np.savez(folder / "image.npz", image=image, spacing=np.asarray(spacing, np.float32))
                np.savez(folder / "annotation.npz", labels=annotation)
                for seed in args.seeds:
                    cells = []
                    for _, code in codes:
                        wall, whose, mask = run_train(code, folder, args.seconds, seed)
                        cells.append(f"{dice_fg(truth, mask):.3f} ({whose}, {wall:.0f})")
                    print(f"{name} {protocol} {seed} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
