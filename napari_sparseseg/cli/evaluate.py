"""The ``evaluate`` and ``demo`` commands: a simulated user paints, the model trains, the result is scored.

``evaluate`` reads the ground truth from an ``.npz`` (mask encoding:
0 = background, 1..K = classes); ``demo`` makes a synthetic volume.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from .common import LEARNER_NAMES, advance_bar, check_not_an_input, progress_bar, session_config


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.simulated_user import evaluate_volume
    from ..io import load_npz

    if not str(args.data).lower().endswith(".npz"):
        raise ValueError(f"{args.data}: evaluate reads a .npz holding 'image', 'labels' (the ground truth, 0 = "
                         "background) and 'spacing'; save your image and its full mask into one with numpy.savez")
    check_not_an_input(args.json, [args.data], "--json")
    image, labels, spacing = load_npz(args.data)
    if labels is None:
        raise ValueError(f"{args.data}: evaluate needs a 'labels' array with the ground truth")
    baselines = [b for b in args.baselines.split(",") if b] if args.baselines else []
    bar = progress_bar(args.budget_seconds, f"training {Path(args.data).stem} {args.protocol}")

    def progress(stage: str, fraction: float, info: dict[str, Any]) -> None:
        if stage == "train":
            advance_bar(bar, fraction * args.budget_seconds, f"step {info['step']} loss {info['loss']:.3f}")
        elif stage == "curve":
            bar.write(f"  {info['seconds']:6.0f} s  net step {info['step']:5d}  dice_fg {info['dice_fg']:.3f}  "
                      f"shown: {LEARNER_NAMES.get(info['learner'], 'nothing yet')}")
        elif stage == "baseline":
            bar.write(f"  baseline {info['name']}: dice_fg {info['dice_fg']:.3f}")

    result = evaluate_volume(image, labels, spacing=spacing, protocol=args.protocol,
                             budget_seconds=args.budget_seconds, config=session_config(args), baselines=baselines,
                             progress=progress)
    bar.close()
    result["data"] = str(args.data)
    print(_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
    return 0


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a score of no voxels) as None: strict JSON, ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _table(result: dict[str, Any]) -> str:
    from ..evaluation.simulated_user import suggest_count

    rows = [(f"shown: {LEARNER_NAMES.get(result.get('learner'), 'nothing')}", result)] + [
        (n, r) for n, r in result.get("baselines", {}).items() if "all" in r]
    width = max(18, *(len(n) + 2 for n, _ in rows))
    lines = [(f"protocol {result['protocol']}  device {result['device']}  net steps {result['steps']}  "
             f"{result['wall_seconds']:.0f} s  annotated {100 * result['annotated_fraction']:.1f}% of voxels"),
             f"{'method':<{width}}{'dice_fg':>9}{'mIoU':>8}{'PA':>8}{'MPA':>8}{'dice_fg unannot.':>18}  dice per class"]
    wanted = suggest_count(result["protocol"]) if "painted" in result else None
    if wanted and len(result["painted"]) + 1 < wanted:  # the start and each suggestion painted in time
        lines.insert(1, f"note: {len(result['painted']) + 1} of the {wanted} slices painted: no suggestion came in "
                        "time for the others (give more --budget-seconds)")
    for name, r in rows:
        a, u = r["all"], r["unannotated"]
        per = " ".join(f"{d:.3f}" for d in a["dice"])
        lines.append(f"{name:<{width}}{a['dice_fg']:>9.3f}{a['miou']:>8.3f}{a['pa']:>8.3f}{a['mpa']:>8.3f}"
                     f"{u['dice_fg']:>18.3f}  {per}")
    for name, r in result.get("baselines", {}).items():
        if "all" not in r:  # a baseline that could not run on this protocol says why
            lines.append(f"{name}: not run ({r.get('reason') or 'no result'})")
    if result.get("dice_fg_net") is not None:
        lines.append(f"the 3D U-Net alone: dice_fg {result['dice_fg_net']:.3f}")
    lines.append("dice_fg of the mask shown, seconds after the labels: " + ", ".join(
        f"{p['seconds']:.0f}s {p['dice_fg']:.3f} ({LEARNER_NAMES.get(p['learner'], '-')})" for p in result["curve"]))
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..evaluation.simulated_user import evaluate_volume
    from ..sample_data import make_cells_volume

    vol = make_cells_volume(seed=args.seed)
    print(f"synthetic volume {vol.image.shape} spacing {vol.spacing}; painted 3 axial slices from the "
          f"ground truth ({', '.join(vol.class_names)}); running {args.seconds:.0f} s on device {args.device}")
    print("the first responder (a pixel classifier on filter features, as in ilastik) answers in seconds; the 3D "
          "U-Net trains beside it and is shown once it scores better on labels held back from both. The filter "
          "features are computed before the clock starts, as the window does while you paint.")
    bar = progress_bar(args.seconds, "running")

    def progress(stage: str, fraction: float, info: dict[str, Any]) -> None:
        if stage == "train":
            advance_bar(bar, fraction * args.seconds, f"net step {info['step']}")
        elif stage == "curve":
            estimate = info.get("estimated_dice")
            bar.write(f"  {info['seconds']:5.0f} s  showing {LEARNER_NAMES.get(info['learner'], 'nothing yet'):<26}"
                      f"Dice {info['dice_fg']:.3f}"
                      + (f"  (estimated without ground truth: {estimate:.3f})" if estimate is not None else ""))

    result = evaluate_volume(vol.image, vol.labels, spacing=vol.spacing, protocol="z:3", budget_seconds=args.seconds,
                             config=session_config(args), progress=progress)
    bar.close()
    a = result["all"]
    print(f"device: {result['device']}; the net trained {result['steps']} steps")
    print(f"final mask ({LEARNER_NAMES.get(result['learner'], 'nothing')}): foreground Dice {a['dice_fg']:.3f}, "
          f"mean IoU {a['miou']:.3f}; per class: "
          + ", ".join(f"{n} {d:.3f}" for n, d in zip(vol.class_names, a["dice"][1:])))
    if result["dice_fg_net"] is not None:
        print(f"the 3D U-Net alone: foreground Dice {result['dice_fg_net']:.3f}")
    return 0

