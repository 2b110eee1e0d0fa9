"""Plots of the accuracy suite: Dice versus annotated slices, and Dice versus training time.

    python benchmarks/plots.py --results benchmarks/results/suite --out-dir docs

reads the run JSONs that ``benchmarks/suite.py`` wrote and draws

* ``benchmark_dice_vs_slices.png``: per file, foreground Dice against the number of annotated slices (z:K at K,
  ortho:K at 3 K, scribble:K at K) for ours, the random forest and slice interpolation, with the fully supervised
  bound as a dashed line;
* ``benchmark_dice_vs_time.png``: per file, our Dice against training seconds for every protocol, with the random
  forest's Dice on the same labels as a dotted horizontal reference in the same colour;
* for runs of the product's loop (curves that carry each learner's Dice), ``benchmark_learners_vs_time.png``
  instead: per file and protocol, the mask shown, the net and the first responder against seconds after the
  labels, with the 100-tree forest baseline.

Devices are drawn side by side in the same axes (``cpu`` solid, ``cuda`` with open markers).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from suite import ROOT, load_results

#: Colour per method and line style per protocol family in the slices plot.
METHOD_COLOURS = {"ours": "tab:blue", "rf": "tab:orange", "interp": "tab:green"}
METHOD_LABELS = {"ours": "3D U-Net (ours)", "rf": "random forest", "interp": "slice interpolation"}
FAMILY_STYLES = {"z": ("-", "o"), "ortho": ("--", "s"), "scribble": (":", "^")}


def _family(protocol: str) -> str:
    return protocol.split(":")[0]


def _tag(r: dict[str, Any]) -> str:
    return r.get("device_tag", r.get("device", "cpu"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(plt, n: int):
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
    return fig, axes[0]


def _label_axes(ax: Any, title: str, xlabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("foreground Dice (all voxels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _baseline_tag(runs: list[dict[str, Any]]) -> str:
    """The device whose runs draw the baselines: the CPU's when there are any (baselines run there), else the first."""
    tags = sorted({_tag(r) for r in runs})
    return "cpu" if "cpu" in tags else tags[0]


def plot_dice_vs_slices(runs: list[dict[str, Any]], path: Path) -> Path:
    """Dice against annotated slices per file; returns ``path``."""
    plt = _pyplot()
    files = sorted({r["data"] for r in runs})
    fig, axes = _grid(plt, len(files))
    for ax, name in zip(axes, files):
        rs = [r for r in runs if r["data"] == name]
        baseline_tag = _baseline_tag(rs)
        for tag in sorted({_tag(r) for r in rs}):
            mine = [r for r in rs if _tag(r) == tag]
            suffix = "" if tag == "cpu" else f" ({tag})"
            fill = "full" if tag == "cpu" else "none"
            for family, (style, marker) in FAMILY_STYLES.items():
                fam = sorted((r for r in mine if _family(r["protocol"]) == family), key=lambda r: r["annotated_slices"])
                if not fam:
                    continue
                for method in ("ours", "rf", "interp"):
                    pts = [(r["annotated_slices"], r["dice_fg"] if method == "ours"
                            else r["baselines"].get(method, {}).get("dice_fg")) for r in fam]
                    pts = [(x, y) for x, y in pts if y is not None]
                    if not pts:
                        continue
                    if method != "ours" and tag != baseline_tag:
                        continue  # the baselines are the same labels' whatever the device: draw them once
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, linestyle=style, marker=marker, fillstyle=fill, color=METHOD_COLOURS[method],
                            label=f"{METHOD_LABELS[method]}, {family}{suffix if method == 'ours' else ''}")
            for r in mine:
                if r["protocol"] == "full":
                    ax.axhline(r["dice_fg"], color="k", linestyle="--", linewidth=1,
                               label=f"fully supervised bound{suffix}")
        _label_axes(ax, name, "annotated slices (z:K = K, ortho:K = 3K, scribble:K = K)")
    return _save(plt, fig, path)


def plot_dice_vs_time(runs: list[dict[str, Any]], path: Path) -> Path:
    """Our Dice against training seconds per file and protocol, RF as dotted references; returns ``path``."""
    plt = _pyplot()
    files = sorted({r["data"] for r in runs})
    fig, axes = _grid(plt, len(files))
    cmap = plt.get_cmap("tab10")
    for ax, name in zip(axes, files):
        rs = [r for r in runs if r["data"] == name]
        protocols = list(dict.fromkeys(r["protocol"] for r in rs))
        baseline_tag = _baseline_tag(rs)
        for r in rs:
            colour = cmap(protocols.index(r["protocol"]) % 10)
            tag = _tag(r)
            suffix = "" if tag == "cpu" else f" ({tag})"
            xs = [p["seconds"] for p in r["curve"]]
            ys = [p["dice_fg"] for p in r["curve"]]
            ax.plot(xs, ys, marker="o" if tag == "cpu" else "s", fillstyle="full" if tag == "cpu" else "none",
                    linestyle="-" if tag == "cpu" else "--", color=colour, label=f"ours {r['protocol']}{suffix}")
            rf = r.get("baselines", {}).get("rf", {}).get("dice_fg")
            if rf is not None and tag == baseline_tag:
                ax.axhline(rf, color=colour, linestyle=":", linewidth=1)
        ax.plot([], [], color="grey", linestyle=":", label="random forest, same labels")
        _label_axes(ax, name, "training seconds")
    return _save(plt, fig, path)


def plot_learners_vs_time(runs: list[dict[str, Any]], path: Path) -> Path:
    """Per file (rows) and protocol (columns): the Dice of the mask shown against seconds after the labels, beside
    the net's and the first responder's own, and the 100-tree forest baseline; returns ``path``."""
    plt = _pyplot()
    runs = [r for r in runs if r["protocol"] != "full" and any("dice_fg_net" in p for p in r.get("curve", []))]
    files = sorted({r["data"] for r in runs})
    protocols = list(dict.fromkeys(r["protocol"] for r in sorted(runs, key=lambda r: r["protocol"])))
    fig, axes = plt.subplots(len(files), len(protocols), figsize=(4.2 * len(protocols), 3.2 * len(files)),
                             squeeze=False)
    for i, name in enumerate(files):
        for j, protocol in enumerate(protocols):
            ax = axes[i][j]
            found = [r for r in runs if r["data"] == name and r["protocol"] == protocol]
            if not found:
                ax.axis("off")
                continue
            curve = found[0]["curve"]
            xs = [p["seconds"] for p in curve]
            for key, label, style in (("dice_fg", "shown", dict(color="black", linewidth=2.2, marker="o")),
                                      ("dice_fg_net", "3D U-Net", dict(color="tab:blue", linestyle="--", marker=".")),
                                      ("dice_fg_forest", "first responder",
                                       dict(color="tab:orange", linestyle=":", marker="."))):
                pts = [(x, p.get(key)) for x, p in zip(xs, curve) if p.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), label=label, **style)
            rf = found[0].get("baselines", {}).get("rf", {}).get("dice_fg")
            if rf is not None:
                ax.axhline(rf, color="grey", linestyle="-.", linewidth=1, label="forest baseline (100 trees)")
            ax.set_xscale("log")
            ax.set_title(f"{name[:28]} {protocol}", fontsize=9)
            ax.set_xlabel("seconds after the labels")
            ax.set_ylabel("foreground Dice")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="lower right")
    return _save(plt, fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "suite"))
    ap.add_argument("--out-dir", default=str(ROOT / "docs"))
    ap.add_argument("--device", default=None, help="only runs tagged with this device (default: all)")
    ap.add_argument("--name-suffix", default="", help="appended to the file names, e.g. _cuda")
    args = ap.parse_args(argv)
    runs = [r for r in load_results(Path(args.results)) if args.device in (None, _tag(r))]
    if not runs:
        print(f"no suite results under {args.results}", file=sys.stderr)
        return 1
    out = Path(args.out_dir)
    if any("dice_fg_net" in p for r in runs for p in r.get("curve", [])):  # runs of the product's loop
        print(f"wrote {plot_learners_vs_time(runs, out / f'benchmark_learners_vs_time{args.name_suffix}.png')}")
        return 0
    for p in (plot_dice_vs_slices(runs, out / f"benchmark_dice_vs_slices{args.name_suffix}.png"),
              plot_dice_vs_time(runs, out / f"benchmark_dice_vs_time{args.name_suffix}.png")):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
