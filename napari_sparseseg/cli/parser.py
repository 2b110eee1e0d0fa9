"""The ``napari-sparseseg`` argument parser, and :func:`main`: run a command, report its errors in one line."""

from __future__ import annotations

import argparse
import sys

from .common import one_line_message
from .evaluate import cmd_demo, cmd_evaluate
from .gui import cmd_gui
from .predict import cmd_predict
from .train import cmd_resume, cmd_train

#: What ``napari-sparseseg --help`` says first.
DESCRIPTION = "Command line: ``napari-sparseseg evaluate | train | resume | predict | gui | demo``."


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0 (``nan`` ran a budget that never ends)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"seconds must be > 0 and finite, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-sparseseg", description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--model-size", default="small", choices=["small", "medium", "large"])

    p = sub.add_parser("evaluate", help="simulate a user on a ground-truth .npz and score the result")
    p.add_argument("data", help=".npz with image, labels (0 = background) and spacing")
    p.add_argument("--protocol", default="z:3",
                   help="z:K (K axial slices; y:K and x:K the other axes), ortho:K (K per axis), "
                   "scribble:K (strokes on K axial slices), "
                   "suggest:K (the middle axial slice, then K-1 suggested slices, any orientation), "
                   "suggest-scribble:K (a scribble, then only the uncertain region of K-1 suggested slices) "
                   "or full (every voxel: the fully supervised bound)")
    p.add_argument("--budget-seconds", type=seconds, default=300.0)
    p.add_argument("--baselines", default="", help="comma list of rf,interp")
    p.add_argument("--json", help="write results as JSON here")
    common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="train on an image and sparse annotation file; save the model")
    p.add_argument("image")
    p.add_argument("--annotation", required=True,
                   help="sparse labels (see --encoding); npz key 'labels'")
    p.add_argument("--classes", type=int, default=0, help="foreground classes (default: from the annotation)")
    p.add_argument("--encoding", choices=("auto", "annotation", "layer"), default="auto",
                   help="of --annotation: annotation = 0 unlabeled, 1 background, k+1 class k; layer = an "
                        "annotation layer saved from napari (class k is k, background 255); auto (default): layer "
                        "if the file holds 255, else annotation")
    add_seconds(p)
    p.add_argument("--model", help="where to save the model (.pt); needed unless --session is given. Not written "
                   "(exit code 1, --out still written) when the net trained no step within --seconds")
    p.add_argument("--out", help="also write the dense segmentation the window would show at the end (the first "
                   "responder's until the net scores better on held-back labels) here (.npz, .tif, .nii.gz, .zarr, "
                   ".ome.zarr)")
    p.add_argument("--level", type=int, default=0,
                   help="OME-Zarr pyramid level of the image to train on (0 = full resolution)")
    p.add_argument("--channel", action="append", metavar="FILE",
                   help="a further channel of IMAGE, a 3D image of its grid (the other sequences of an MRI, say; "
                        "repeatable); predict then needs the same --channel files of each image")
    p.add_argument("--session", help="session store folder (e.g. run.sparseseg) to create, or to update when it "
                                     "exists (autosaved)")
    p.add_argument("--also", nargs=2, action="append", default=[], metavar=("IMAGE", "ANNOTATION"),
                   help="another volume of the same kind and its sparse labels to learn from too (repeatable; "
                        "same channels and voxel size within 10 %%; the model file holds what is learned from all, a "
                        "new --session keeps every volume and its labels, referencing the image files)")
    p.add_argument("--also-folder", metavar="DIR",
                   help="learn from every image in DIR with a sparse annotation beside it, NAME.SUFFIX and "
                        "NAME_annotation.SUFFIX (any readable format), as --also each")
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="reopen a session store and continue training from its checkpoint")
    p.add_argument("store", help="session store folder (e.g. run.sparseseg)")
    add_seconds(p)
    p.add_argument("--out", help="also write the dense segmentation the window would show at the end here (.npz, "
                   ".tif, .nii.gz, .zarr, .ome.zarr)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("predict", help="apply a saved model to an image file, or to every image in a folder")
    p.add_argument("image", help="an image file, a folder of images, or a quoted glob pattern ('scans/*.nii.gz')")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="output mask (.npz, .tif, .nii.gz, .zarr, .ome.zarr); for a folder "
                   "or pattern, a folder: NAME_mask.SUFFIX per image, in the image's format; masks already "
                   "there are kept, so a rerun resumes")
    p.add_argument("--level", type=int, default=0, help="OME-Zarr pyramid level of the image (0 = full resolution)")
    p.add_argument("--channel", action="append", metavar="FILE",
                   help="a further channel of the image, a 3D image of its grid, as the model was trained with "
                        "(repeatable; one image only)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--scheduler", metavar="ADDRESS|local",
                   help="predict on a dask.distributed cluster: a scheduler address (tcp://host:8786) or 'local' "
                   "(2 single-threaded worker processes); results equal the single-process prediction")
    p.add_argument("--block", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="block (and .zarr output chunk) shape, default 64 256 256")
    p.add_argument("--instances", action="store_true",
                   help="also write the separate objects (touching ones split by a watershed) beside each mask: "
                   "NAME_instances.SUFFIX, one id per object (the mask is then made in memory, a .zarr too)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("gui", help="open napari with the plugin docked and a volume (default: the sample)")
    p.add_argument("path", nargs="?", default=None, help="volume file (.npz, .tif, .nii.gz, .zarr)")
    p.set_defaults(func=cmd_gui)

    p = sub.add_parser("demo", help="headless demo on a synthetic volume")
    p.add_argument("--seconds", type=seconds, default=60.0)
    common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def add_seconds(p: argparse.ArgumentParser) -> None:
    """``--seconds`` of ``train`` and ``resume``: the budget of the window's loop (``core.shown.run_shown``)."""
    p.add_argument("--seconds", type=seconds, default=120.0,
                   help="wall-clock seconds of the window's loop, everything counted (default 120); if they end "
                        "before the first mask of the whole volume, it goes on until there is one, 10 minutes "
                        "at most")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, MemoryError, KeyError, FloatingPointError) as exc:
        if args.debug:
            raise
        print(f"napari-sparseseg {args.command}: error: {one_line_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
