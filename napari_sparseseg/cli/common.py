"""What the ``napari-sparseseg`` commands share: their session settings, progress bars and error messages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: How the command line names each learner whose mask is shown.
LEARNER_NAMES = {"forest": "the first responder", "net": "the 3D U-Net", "blend": "U-Net + first responder"}


def session_config(args: argparse.Namespace):
    """The session settings a command's ``--model-size``, ``--seed`` and ``--device`` ask for."""
    from ..core.config import SessionConfig, TrainConfig, preset

    return SessionConfig(model=preset(args.model_size), train=TrainConfig(seed=args.seed), device=args.device)


def progress_bar(total: float, desc: str):
    """A tqdm bar on stderr counting seconds up to ``total`` (off when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="s", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}",
                file=sys.stderr, disable=None)


def advance_bar(bar, n: float, postfix: str) -> None:
    """Show ``bar`` at ``n`` with ``postfix`` after it (one redraw)."""
    bar.n = n
    bar.set_postfix_str(postfix, refresh=False)
    bar.refresh()


def one_line_message(exc: BaseException) -> str:
    """What went wrong, in one line that names the file where there is one (--debug shows the traceback)."""
    if isinstance(exc, MemoryError):
        return "not enough memory for this volume (an .npz header may declare a larger array than it holds)"
    if isinstance(exc, KeyError):
        return f"a required entry is missing: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check_output_path(path: str | None) -> None:
    """Refuse an output path that could not be written, before any training."""
    if not path:
        return
    from ..io import MASK_SUFFIXES

    p = Path(path)
    if not p.name.lower().endswith(MASK_SUFFIXES):
        raise ValueError(f"{path}: unsupported output type (use {', '.join(MASK_SUFFIXES)})")
    if not p.parent.is_dir():
        raise ValueError(f"{path}: the folder {p.parent} does not exist")


def check_not_an_input(path: str | None, inputs: list[str | None], flag: str) -> None:
    """Refuse to write ``path`` (the ``flag`` output) over, or into, a file or folder the command reads.

    Raises
    ------
    ValueError
        If ``path`` is one of ``inputs`` (the same file, through any link) or lies inside one (a zarr folder).
    """
    if not path:
        return
    import os

    target = Path(path).resolve()
    for given in inputs:
        if not given:
            continue
        source = Path(given).resolve()
        same = target == source or (target.exists() and source.exists() and os.path.samefile(target, source))
        if same or source in target.parents:
            raise ValueError(f"{flag} {path}: that is {given}, which this command reads: writing there would replace "
                             "it; give another path")


def read_with_channels(image_path: str, channel_paths: list[str], level: int = 0,
                       order: list[int] | None = None):
    """``io.read_volume`` of ``image_path``, with the 3D images of ``channel_paths`` (the other sequences of an MRI
    in files of their own, say) stacked after it as further channels (channel axis 0; the first file's spacing and
    affine), or in ``order`` (indices into the files, ``image_path`` 0: a model's channel order).

    Raises
    ------
    ValueError
        If the image has channels already, or a channel file is not a 3D image of its shape (or, NIfTI, of its
        affine).
    """
    from dataclasses import replace

    import numpy as np

    from ..core.channels import ChannelStack
    from ..io import read_volume

    source = read_volume(image_path, level=level)
    if str(image_path).lower().endswith(".npz"):
        from ..formats.npz import CHANNEL_PREFIX, further_channels

        named = sorted(further_channels(Path(image_path), source.shape)[0])
        if named:  # the window opens them as layers to tick; here they would be dropped without a word
            print(f"note: {image_path} also holds {', '.join(CHANNEL_PREFIX + n for n in named)}: the command line "
                  "reads 'image' alone; save the channels as one 4D 'image' (c, z, y, x) to learn from them",
                  file=sys.stderr)
    if not channel_paths:
        return source
    if source.channel_axis is not None:
        raise ValueError(f"{image_path} has channels of its own; --channel adds 3D images as further channels")
    arrays = [source.data]
    for path in channel_paths:
        other = read_volume(path, level=level)
        if other.channel_axis is not None or other.shape != source.shape:
            raise ValueError(f"--channel {path}: a 3D image of {image_path}'s shape {source.shape} is needed, got "
                             f"shape {tuple(other.data.shape)}")
        if source.affine is not None and other.affine is not None and not np.allclose(other.affine, source.affine,
                                                                                       atol=1e-3):
            raise ValueError(f"--channel {path}: its voxels lie elsewhere in the world than {image_path}'s (another "
                             "NIfTI affine): resample it onto that image's grid first")
        if not np.allclose(other.spacing, source.spacing, rtol=0.01):
            print(f"warning: --channel {path}: voxel spacing {tuple(other.spacing)}, {image_path} has "
                  f"{tuple(source.spacing)}: read on {image_path}'s grid", file=sys.stderr)
        arrays.append(other.data)
    if order is not None:
        arrays = [arrays[i] for i in order]
    return replace(source, data=np.asarray(ChannelStack(arrays)), channel_axis=0, axes="czyx")
