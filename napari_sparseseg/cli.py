"""Command line: ``napari-sparseseg evaluate | train | resume | predict | gui | demo``.

Label encoding on the command line is the mask encoding of ground-truth files
(0 = background, 1..K = classes) for ``evaluate`` and outputs, and the
annotation encoding (0 = unlabeled, 1 = background, k+1 = class k) for the
sparse labels given to ``train``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _config(args: argparse.Namespace):
    from .core.config import SessionConfig, TrainConfig, preset

    return SessionConfig(model=preset(args.model_size), train=TrainConfig(seed=args.seed), device=args.device)


def _progress_bar(total: float, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="s", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}",
                file=sys.stderr, disable=None)


def _table(result: dict[str, Any]) -> str:
    rows = [(f"shown: {result.get('learner') or 'none'}", result)] + [
        (n, r) for n, r in result.get("baselines", {}).items() if "all" in r]
    lines = [(f"protocol {result['protocol']}  device {result['device']}  net steps {result['steps']}  "
             f"{result['wall_seconds']:.0f} s  annotated {100 * result['annotated_fraction']:.1f}% of voxels"),
             f"{'method':<18}{'dice_fg':>9}{'mIoU':>8}{'PA':>8}{'MPA':>8}{'dice_fg unannot.':>18}  dice per class"]
    for name, r in rows:
        a, u = r["all"], r["unannotated"]
        per = " ".join(f"{d:.3f}" for d in a["dice"])
        lines.append(f"{name:<18}{a['dice_fg']:>9.3f}{a['miou']:>8.3f}{a['pa']:>8.3f}{a['mpa']:>8.3f}"
                     f"{u['dice_fg']:>18.3f}  {per}")
    if result.get("dice_fg_net") is not None:
        lines.append(f"the 3D U-Net alone: dice_fg {result['dice_fg_net']:.3f}")
    lines.append("dice_fg of the mask shown, seconds after the labels: " + ", ".join(
        f"{p['seconds']:.0f}s {p['dice_fg']:.3f} ({p['learner'] or '-'})" for p in result["curve"]))
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_volume
    from .io import load_npz

    image, labels, spacing = load_npz(args.data)
    if labels is None:
        raise ValueError(f"{args.data}: evaluate needs a 'labels' array with the ground truth")
    baselines = [b for b in args.baselines.split(",") if b] if args.baselines else []
    bar = _progress_bar(args.budget_seconds, f"training {Path(args.data).stem} {args.protocol}")

    def progress(stage: str, fraction: float, info: dict[str, Any]) -> None:
        if stage == "train":
            bar.n = fraction * args.budget_seconds
            bar.set_postfix_str(f"step {info['step']} loss {info['loss']:.3f}", refresh=False)
            bar.refresh()
        elif stage == "curve":
            bar.write(f"  {info['seconds']:6.0f} s  net step {info['step']:5d}  dice_fg {info['dice_fg']:.3f}  "
                      f"shown: {info['learner'] or 'nothing yet'}")
        elif stage == "baseline":
            bar.write(f"  baseline {info['name']}: dice_fg {info['dice_fg']:.3f}")

    result = evaluate_volume(image, labels, spacing=spacing, protocol=args.protocol,
                             budget_seconds=args.budget_seconds, config=_config(args), baselines=baselines,
                             progress=progress)
    bar.close()
    result["data"] = str(args.data)
    print(_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .core.checkpoint import save_model
    from .core.session import SegmentationSession
    from .io import read_volume

    source = read_volume(args.image, level=args.level)
    image, spacing = source.data, source.spacing
    annotation = _read_annotation(args.annotation, args.level)
    k = args.classes or max(int(annotation.max()) - 1, 1)
    if not args.model and not args.session:
        raise ValueError("train needs --model and/or --session to keep what it learns")
    if args.seconds <= 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds:g}")
    _check_output(args.out)
    if args.model and not Path(args.model).parent.is_dir():
        raise ValueError(f"{args.model}: the folder {Path(args.model).parent} does not exist")
    for warning in annotation_warnings(annotation, args.classes):
        print(f"warning: {args.annotation}: {warning}", file=sys.stderr)
    if not np.any(annotation > 0) and not (args.session and Path(args.session).exists()):
        raise ValueError(f"{args.annotation}: no labeled voxels; the annotation encoding is 0 = unlabeled, "
                         "1 = background, 2.. = classes: label some background and some of each class")
    if args.session and Path(args.session).exists():
        from .store import SessionStore

        store, session = SessionStore.open(args.session, device=args.device)
        painted = np.nonzero(annotation > 0)  # the file's strokes are painted over the stored labels
        session.add_labels(painted, annotation[painted])
    else:
        session = SegmentationSession(image, num_classes=k, spacing=spacing, annotation=annotation,
                                      channel_axis=source.channel_axis, config=_config(args))
        store = _create_store(args.session, session, args.image, args.level) if args.session else None
    interrupted = _train_for(session, store, args.seconds)
    if store is not None:
        store.close(checkpoint=True)
        print(f"session saved after {session.trainer.step} steps to {args.session}")
    if args.model:
        save_model(session.trainer, args.model)
        print(f"saved model after {session.trainer.step} steps to {args.model}")
    if interrupted:
        return 130
    if args.out:
        from .io import save_mask

        save_mask(args.out, session.segment(), session.volume.spacing, affine=source.affine)
        print(f"wrote segmentation to {args.out}")
    return 0


def _train_for(session, store, seconds: float) -> bool:
    """Train a budgeted run with a progress bar; True if Ctrl-C ended it (what was learned is kept for saving)."""
    bar = _progress_bar(seconds, "training")
    t0 = session.trainer.elapsed
    events = session.train(max_seconds=seconds, decay_until=t0 + seconds)
    try:
        for event in events:
            _record(store, session, event)
            bar.n = session.trainer.elapsed - t0
            bar.set_postfix_str(f"step {session.trainer.step} loss {getattr(event, 'loss', float('nan')):.3f}",
                                refresh=False)
            bar.refresh()
    except KeyboardInterrupt:
        bar.write(f"interrupted at step {session.trainer.step}: saving what was learned", file=sys.stderr)
        return True
    finally:
        events.close()
        bar.close()
    return False


def _read_annotation(path: str, level: int) -> np.ndarray:
    """Sparse labels (``npz`` key ``labels``); read at ``level`` only if the file is itself a multiscale OME-Zarr.

    Raises
    ------
    ValueError
        For labels that are not whole numbers in 0..255.
    """
    from .io import read_volume

    vol = read_volume(path, key="labels", lazy=True)
    if level and vol.n_levels > 1:
        vol = read_volume(path, key="labels", level=level, lazy=True)
    labels = np.asarray(vol.data)
    if labels.dtype.kind == "f" and (not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels))):
        raise ValueError(f"{path}: labels must be whole numbers (0 = unlabeled, 1 = background, 2.. = classes), "
                         f"got {labels.dtype} values with fractions")
    if labels.dtype.kind not in "uif":
        raise ValueError(f"{path}: labels must be integers in 0..255, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: labels must be integers in 0..255, got values {labels.min()}..{labels.max()}")
    return labels.astype(np.uint8)


def annotation_warnings(annotation: np.ndarray, classes: int | None = None) -> list[str]:
    """What a user should hear about sparse labels before training on them (annotation encoding)."""
    values, counts = np.unique(annotation, return_counts=True)
    present = {int(v) for v in values}
    labeled = present - {0}
    warnings = []
    if 0 not in present:
        warnings.append("every voxel is labeled: is this a ground-truth mask? The annotation encoding is "
                        "0 = unlabeled, 1 = background, 2.. = classes (a mask has 0 = background)")
    if labeled == {1}:
        warnings.append("only background (value 1) is labeled: the model will learn no class. If this is a mask "
                        "with 0 = background and 1 = object, add 1 to it (0 stays unlabeled)")
    elif labeled and 1 not in labeled:
        warnings.append("no background (value 1) is labeled: the model cannot learn where the classes end")
    if classes is None and labeled:
        missing = sorted(set(range(2, max(labeled) + 1)) - labeled)
        if missing:
            warnings.append(f"values {missing} do not occur, yet the largest value {max(labeled)} makes "
                            f"{max(labeled) - 1} classes: a stray label? Pass --classes K to say how many")
    return warnings


def _create_store(path: str, session, image_path: str, level: int = 0):
    """A session store for the CLI, referencing the image file (and pyramid level) instead of copying it."""
    from .store import SessionStore

    store = SessionStore.create(path, session, image_ref={"path": image_path, "key": "image", "level": level},
                                image_name=Path(image_path).name.split(".")[0])
    store.start_autosave()
    return store


def _record(store, session, event) -> None:
    """History and a checkpoint every ~30 s of training, when a session store is kept; notices to stderr."""
    from .core.events import Notice, TrainStep

    if store is not None and isinstance(event, TrainStep):
        store.on_step(session.trainer, event)
    elif isinstance(event, Notice):
        from tqdm import tqdm

        tqdm.write(f"{event.level}: {event.message}", file=sys.stderr)


def cmd_resume(args: argparse.Namespace) -> int:
    from .store import SessionStore

    _check_output(args.out)
    store, session = SessionStore.open(args.store, device=args.device)
    if store.resume_error:
        print(f"warning: {store.resume_error}", file=sys.stderr)
    start = session.trainer.step
    print(f"resuming {args.store} at step {start} ({session.volume.n_labeled} labeled voxels)")
    store.start_autosave()
    interrupted = _train_for(session, store, args.seconds)
    store.close(checkpoint=True)
    print(f"saved checkpoint at step {session.trainer.step} (+{session.trainer.step - start}) to {args.store}")
    if interrupted:
        return 130
    if args.out:
        from .io import save_mask

        save_mask(args.out, session.segment(), session.volume.spacing)
        print(f"wrote segmentation to {args.out}")
    return 0


def _is_zarr_array_path(path: str) -> bool:
    """A plain ``.zarr`` output (written block by block); ``.ome.zarr`` goes through ``save_mask``."""
    name = path.lower().rstrip("/")
    return name.endswith(".zarr") and not name.endswith(".ome.zarr")


def _predict_distributed(args: argparse.Namespace) -> int:
    from .distributed import predict_distributed

    bar = _progress_bar(0, "blocks")
    bar.bar_format = "{l_bar}{bar}| {n}/{total} blocks"

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    result = predict_distributed(args.image, args.model, args.out, scheduler=args.scheduler,
                                 block=args.block or (64, 256, 256), level=args.level,
                                 device=args.device, progress=progress)
    bar.close()
    print(f"wrote {args.out}: classes {result.classes} ({result.blocks} blocks on {result.workers} workers, "
          f"{result.seconds:.1f} s)")
    return 0


#: Image suffixes, longest first: a mask written for an image keeps its format (``embryo.tif`` -> ``embryo_mask.tif``).
_IMAGE_SUFFIXES = (".ome.zarr", ".nii.gz", ".tiff", ".tif", ".nii", ".npz", ".zarr")


def image_files(spec: str) -> list[Path] | None:
    """The image files a folder or a glob pattern names, sorted (None when ``spec`` names one file or store).

    Raises
    ------
    ValueError
        If the folder or pattern holds no image file.
    """
    import glob

    from .io import volume_format

    path = Path(spec)
    if path.is_dir() and volume_format(path) is None:  # a plain folder (a zarr store is one image)
        candidates = list(path.iterdir())
    elif any(ch in spec for ch in "*?["):
        candidates = [Path(p) for p in glob.glob(spec)]
    else:
        return None
    files = sorted(p for p in candidates if not p.name.startswith(".") and p.name.lower().endswith(_IMAGE_SUFFIXES)
                   and volume_format(p) is not None)
    if not files:
        raise ValueError(f"{spec}: no image files ({', '.join(_IMAGE_SUFFIXES)}) found there")
    return files


def _tagged(path: Path, tag: str, suffixes: tuple[str, ...]) -> str:
    """``path``'s file name with ``tag`` before its suffix (the longest of ``suffixes`` it ends with)."""
    name = path.name
    suffix = next((s for s in sorted(suffixes, key=len, reverse=True) if name.lower().endswith(s)), "")
    return f"{name[: len(name) - len(suffix)]}{tag}{suffix}"


def mask_path(image: Path, out_dir: Path) -> Path:
    """Where the mask of ``image`` goes in ``out_dir``: its name with ``_mask`` before the suffix."""
    return out_dir / _tagged(image, "_mask", _IMAGE_SUFFIXES)


def instances_path(mask_out: str | Path) -> Path:
    """Where the separate objects of the mask written to ``mask_out`` go: its name with ``_instances`` before the
    suffix, in the same format."""
    from .io import MASK_SUFFIXES

    out = Path(mask_out)
    return out.with_name(_tagged(out, "_instances", MASK_SUFFIXES))


def _predict_file(model: dict[str, Any], image: str | Path, out: str | Path, args: argparse.Namespace) -> str:
    """Predict one image with a loaded model and write its mask; returns what was written, in words."""
    from .core.session import SegmentationSession
    from .io import read_volume, save_mask

    source = read_volume(image, level=args.level)
    spacing = source.spacing
    trained = model["state"].get("spacing")
    if trained is not None and not np.allclose(trained, spacing, rtol=0.25):
        print(f"warning: {image} has voxel spacing {tuple(spacing)}, the model was trained at "
              f"{tuple(trained)}: objects will look another size to it (resample, or pick a pyramid level)",
              file=sys.stderr)
    session = SegmentationSession.from_model(source.data, model, spacing=spacing,
                                             channel_axis=source.channel_axis, device=args.device)
    if _is_zarr_array_path(str(out)):  # block by block, each block written as whole chunks
        if getattr(args, "instances", False):
            raise ValueError(f"{out}: --instances splits the whole mask in memory, not a block-wise .zarr mask")
        from .core.blockwise import predict_to_array
        from .distributed import open_mask_output

        arr = open_mask_output(str(out), session.volume.shape, args.block or (64, 256, 256), spacing)
        predict_to_array(session.trainer, arr, final=True)
        return f"{out}: {arr.nchunks} chunks"
    mask = session.segment()
    save_mask(out, mask, spacing, affine=source.affine)  # NIfTI in, NIfTI out: the source geometry
    written = f"{out}: classes {np.unique(mask).tolist()}"
    if getattr(args, "instances", False):
        from .core.instances import split_instances

        objects, objects_out = split_instances(mask, spacing), instances_path(out)
        save_mask(objects_out, objects, spacing, affine=source.affine)
        written += f"; {objects_out}: {int(objects.max())} objects"
    return written


def _predict_many(model: dict[str, Any], files: list[Path], args: argparse.Namespace) -> int:
    """Predict every file into the folder ``args.out``; masks already there are kept (a rerun resumes)."""
    from tqdm import tqdm

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: with a folder or pattern of images, --out must be a folder")
    if not out_dir.parent.is_dir():
        raise ValueError(f"{out_dir}: the folder {out_dir.parent} does not exist")
    out_dir.mkdir(exist_ok=True)
    failed, skipped = [], 0
    bar = tqdm(files, desc="predicting", unit="file", file=sys.stderr, disable=None)
    for image in bar:
        out = mask_path(image, out_dir)
        bar.set_postfix_str(image.name, refresh=True)
        if out.exists() and (not args.instances or instances_path(out).exists()):
            skipped += 1
            continue
        try:
            bar.write(f"wrote {_predict_file(model, image, out, args)}")
        except (ValueError, OSError, MemoryError, KeyError) as exc:  # one bad file does not stop the others
            failed.append(image)
            bar.write(f"error: {_one_line(exc)}", file=sys.stderr)
    bar.close()
    done = len(files) - len(failed) - skipped
    print(f"{done} mask(s) written to {out_dir}, {skipped} already there (kept), {len(failed)} failed")
    if failed:
        print(f"error: {len(failed)} of {len(files)} images failed: {', '.join(p.name for p in failed)}",
              file=sys.stderr)
        return 2
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.block is not None and (len(args.block) != 3 or min(args.block) < 1):
        raise ValueError(f"--block needs three positive sizes Z Y X, got {args.block}")
    files = image_files(args.image)
    if files is None:
        _check_output(args.out)
    elif args.scheduler:
        raise ValueError("--scheduler predicts one image; run one predict per image on the cluster")
    if args.instances and (args.scheduler or (files is None and _is_zarr_array_path(str(args.out)))):
        raise ValueError("--instances splits the whole mask in memory: write a .npz, .tif or .nii.gz mask "
                         "(not a block-wise .zarr or a cluster run)")
    if args.scheduler:
        return _predict_distributed(args)
    from .core.checkpoint import read_model

    model = read_model(args.model)
    if files is not None:
        return _predict_many(model, files, args)
    print(f"wrote {_predict_file(model, args.image, args.out, args)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_volume
    from .sample_data import make_cells_volume

    vol = make_cells_volume(seed=args.seed)
    print(f"synthetic volume {vol.image.shape} spacing {vol.spacing}; painted 3 axial slices from the "
          f"ground truth ({', '.join(vol.class_names)}); running {args.seconds:.0f} s on device {args.device}")
    bar = _progress_bar(args.seconds, "running")

    def progress(stage: str, fraction: float, info: dict[str, Any]) -> None:
        if stage == "train":
            bar.n = fraction * args.seconds
            bar.set_postfix_str(f"net step {info['step']}", refresh=False)
            bar.refresh()
        elif stage == "curve":
            estimate = info.get("estimated_dice")
            bar.write(f"  {info['seconds']:5.0f} s  showing {LEARNER_NAMES.get(info['learner'], 'nothing yet'):<26}"
                      f"Dice {info['dice_fg']:.3f}"
                      + (f"  (estimated without ground truth: {estimate:.3f})" if estimate is not None else ""))

    result = evaluate_volume(vol.image, vol.labels, spacing=vol.spacing, protocol="z:3", budget_seconds=args.seconds,
                             config=_config(args), progress=progress)
    bar.close()
    a = result["all"]
    print(f"device: {result['device']}; the net trained {result['steps']} steps")
    print(f"final mask ({LEARNER_NAMES.get(result['learner'], 'nothing')}): foreground Dice {a['dice_fg']:.3f}, "
          f"mean IoU {a['miou']:.3f}; per class: "
          + ", ".join(f"{n} {d:.3f}" for n, d in zip(vol.class_names, a["dice"][1:])))
    if result["dice_fg_net"] is not None:
        print(f"the 3D U-Net alone: foreground Dice {result['dice_fg_net']:.3f}")
    return 0


#: How the command line names each learner.
LEARNER_NAMES = {"forest": "the first responder", "net": "the 3D U-Net", "blend": "U-Net + first responder"}


def cmd_gui(args: argparse.Namespace) -> int:
    import os

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ValueError("no display to open a window on (DISPLAY is not set): run 'napari-sparseseg demo' for "
                         "the headless demo, or start napari under a virtual display (xvfb-run napari-sparseseg gui)")
    from .plugin.launch import launch

    launch(args.path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-sparseseg", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--model-size", default="small", choices=["small", "medium", "large"])

    p = sub.add_parser("evaluate", help="simulate a user on a ground-truth .npz and score the result")
    p.add_argument("data", help=".npz with image, labels (0 = background) and spacing")
    p.add_argument("--protocol", default="z:3",
                   help="z:K (K axial slices), ortho:K (K per axis), scribble:K (strokes on K axial slices), "
                   "suggest:K (the middle axial slice, then K-1 suggested slices, any orientation), "
                   "suggest-scribble:K (a scribble, then only the uncertain region of K-1 suggested slices) "
                   "or full (every voxel: the fully supervised bound)")
    p.add_argument("--budget-seconds", type=float, default=300.0)
    p.add_argument("--baselines", default="", help="comma list of rf,interp")
    p.add_argument("--json", help="write results as JSON here")
    common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="train on an image and sparse annotation file; save the model")
    p.add_argument("image")
    p.add_argument("--annotation", required=True,
                   help="sparse labels (0 = unlabeled, 1 = background, k+1 = class k); npz key 'labels'")
    p.add_argument("--classes", type=int, default=0, help="foreground classes (default: from the annotation)")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--model", help="where to save the model (.pt); needed unless --session is given")
    p.add_argument("--out", help="also write the dense segmentation here (.npz, .tif, .nii.gz, .zarr, .ome.zarr)")
    p.add_argument("--level", type=int, default=0,
                   help="OME-Zarr pyramid level of the image to train on (0 = full resolution)")
    p.add_argument("--session", help="session store (.zarr) to create, or to update when it exists (autosaved)")
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="reopen a session store and continue training from its checkpoint")
    p.add_argument("store", help="session store directory (.zarr)")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--out", help="also write the dense segmentation here (.npz, .tif, .nii.gz)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("predict", help="apply a saved model to an image file, or to every image in a folder")
    p.add_argument("image", help="an image file, a folder of images, or a quoted glob pattern ('scans/*.nii.gz')")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="output mask (.npz, .tif, .nii.gz, .zarr, .ome.zarr); for a folder "
                   "or pattern, a folder: NAME_mask.SUFFIX per image, in the image's format; masks already "
                   "there are kept, so a rerun resumes")
    p.add_argument("--level", type=int, default=0, help="OME-Zarr pyramid level of the image (0 = full resolution)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--scheduler", metavar="ADDRESS|local",
                   help="predict on a dask.distributed cluster: a scheduler address (tcp://host:8786) or 'local' "
                   "(2 single-threaded worker processes); results equal the single-process prediction")
    p.add_argument("--block", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="block (and .zarr output chunk) shape, default 64 256 256")
    p.add_argument("--instances", action="store_true",
                   help="also write the separate objects (touching ones split by a watershed) beside each mask: "
                   "NAME_instances.SUFFIX, one id per object")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("gui", help="open napari with the plugin docked and a volume (default: the sample)")
    p.add_argument("path", nargs="?", default=None, help="volume file (.npz, .tif, .nii.gz, .zarr)")
    p.set_defaults(func=cmd_gui)

    p = sub.add_parser("demo", help="headless demo on a synthetic volume")
    p.add_argument("--seconds", type=float, default=60.0)
    common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line(exc: BaseException) -> str:
    """What went wrong, in one line that names the file where there is one (--debug shows the traceback)."""
    if isinstance(exc, MemoryError):
        return "not enough memory for this volume (an .npz header may declare a larger array than it holds)"
    if isinstance(exc, KeyError):
        return f"a required entry is missing: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_output(path: str | None) -> None:
    """Refuse an output path that could not be written, before any training."""
    if not path:
        return
    from .io import MASK_SUFFIXES

    p = Path(path)
    if not p.name.lower().endswith(MASK_SUFFIXES):
        raise ValueError(f"{path}: unsupported output type (use {', '.join(MASK_SUFFIXES)})")
    if not p.parent.is_dir():
        raise ValueError(f"{path}: the folder {p.parent} does not exist")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, MemoryError, KeyError) as exc:
        if args.debug:
            raise
        print(f"napari-sparseseg {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
