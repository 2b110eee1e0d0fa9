"""Saving and loading trained models: weights plus the config that built them.

A checkpoint is a ``torch.save`` dict ``{"format": FORMAT, "version": VERSION,
"config": SessionConfig.to_dict(), "state": Trainer.state_dict(),
"num_classes": K, "in_channels": C}`` (and ``"channel_names"``, one string per image channel, where there
are several) that holds only tensors and plain values
(dicts, lists, strings, numbers). It is written to a temporary file and
renamed, so a crash never leaves a half-written checkpoint.

Model files and session stores are shared, so a checkpoint is untrusted input:
it is read with ``torch.load(weights_only=True)``, which unpickles tensors and
plain containers only and refuses any other Python object (a pickle that would
call ``os.system`` is rejected before anything runs). Its structure, class and
channel counts are then checked, and weights that are not finite are refused
both when writing and when reading.
"""

from __future__ import annotations

import os
import pickle  # for pickle.UnpicklingError only: nothing is unpickled with this module
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpoint_state import check_state
from .config import SessionConfig
from .file_mode import as_new_file
from .limits import MAX_CHANNELS, MAX_CLASSES
from .trainer import Trainer
from .typed_fields import is_int

FORMAT = "napari-sparseseg-model"
VERSION = 1
#: Longest channel name a checkpoint may hold.
MAX_NAME_LENGTH = 255
#: What PyTorch's weights-only reader says of a Python object it refused to create (not of a damaged stream).
_REFUSED_OBJECT = re.compile(r"GLOBAL|[Gg]lobal|unrecognized function")


class UnsafeCheckpointError(ValueError):
    """A file that holds Python objects other than tensors and plain values (it could run code when loaded)."""


def _tensors(tree: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nested dict/list/tuple."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _tensors(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _tensors(value)


def all_finite(tree: Any) -> bool:
    """Whether every floating-point tensor in ``tree`` (a state dict, nested) is free of NaN and inf."""
    return all(bool(torch.isfinite(t).all()) for t in _tensors(tree) if t.is_floating_point())


def save_model(trainer: Trainer, path: str | Path, channel_names: Sequence[str] | None = None) -> Path:
    """Atomically write the trainer's model, optimiser state and config.

    ``channel_names``: what each image channel was (its layer or file name), recorded when there are several so
    that a model is fed its channels in the same order later (:func:`~.channels.channel_order`); ignored unless
    one per image channel.

    Raises
    ------
    FloatingPointError
        If the weights are not finite (the file at ``path`` is left as it was).
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, "config": trainer.config.to_dict(),
               "state": trainer.state_dict(), "num_classes": trainer.volume.num_classes,
               "in_channels": int(trainer.volume.features.shape[0])}
    names = [str(n)[:MAX_NAME_LENGTH] for n in channel_names or ()]
    if len(names) == trainer.volume.image_channels > 1:
        payload["channel_names"] = names
    if not all_finite(payload["state"]):
        raise FloatingPointError(f"not saving {path}: the model's weights are not finite (NaN or inf)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        as_new_file(tmp)  # a model to share: not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _check_int(payload: dict[str, Any], key: str, low: int, high: int, path: str | Path) -> None:
    value = payload.get(key)
    if not is_int(value) or not low <= value <= high:
        raise ValueError(f"{path}: '{key}' must be an integer in [{low}, {high}], got {value!r}")


def _first_sentence(exc: BaseException | str, limit: int = 120) -> str:
    """The start of an exception's message: torch's unpickling errors run to many lines of advice."""
    text = " ".join(str(exc).split())
    cut = text.find(". ")
    text = text[: cut + 1] if 0 < cut < limit else text[:limit]
    return text.rstrip()


def _damage(path: str | Path) -> str | None:
    """Why a checkpoint's zip archive is damaged (a part whose checksum fails, unreadable headers); None if intact.

    PyTorch's reader does not check the archive's checksums: a flipped byte in the weights loads as another
    weight without a word. Reading the archive once more to check them takes a fraction of a second.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # noqa: BLE001 - damaged headers make zipfile raise many kinds
        return f"its archive is unreadable: {type(exc).__name__}"
    return None if bad is None else f"the checksum of its part {bad!r} fails"


def read_model(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint without running code from it.

    Raises
    ------
    UnsafeCheckpointError
        If the file holds Python objects other than tensors and plain values.
    ValueError
        If it is not a readable napari-sparseseg checkpoint (damaged: a checksum fails), declares impossible
        class or channel counts, holds non-finite weights, or holds settings or tensors that do not fit the net
        it declares (:func:`.checkpoint_state.check_state`).
    """
    if Path(path).is_file():
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
            raise ValueError(f"{path}: not a model checkpoint (napari-sparseseg models are files torch.save wrote)")
        damage = _damage(path)
        if damage is not None:
            raise ValueError(f"{path}: the file is damaged ({damage}); use another copy of it")
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = next((line for line in str(exc).splitlines() if _REFUSED_OBJECT.search(line)), None)
        if refused is None:  # a stream the reader cannot follow, not an object it refused
            raise ValueError(f"{path}: not a readable model checkpoint (damaged: {_first_sentence(exc)})") from exc
        raise UnsafeCheckpointError(
            f"{path}: refused: the file holds Python objects other than tensors and plain values, which could run "
            "code when loaded. Only open model files you trust; napari-sparseseg's own models never hold them "
            f"({_first_sentence(refused)})") from exc
    except Exception as exc:  # a damaged stream makes the reader raise IndexError, KeyError, TypeError and others
        raise ValueError(f"{path}: not a readable model checkpoint ({type(exc).__name__}: "
                         f"{_first_sentence(exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a napari-sparseseg model")
    version = payload.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(f"{path}: model format version {version!r} is newer than this "
                         f"napari-sparseseg understands ({VERSION}); upgrade the package")
    _check_int(payload, "num_classes", 1, MAX_CLASSES, path)
    _check_int(payload, "in_channels", 1, MAX_CHANNELS, path)
    state = payload.get("state")
    if (not isinstance(payload.get("config"), dict) or not isinstance(state, dict)
            or not isinstance(state.get("model"), dict) or not isinstance(state.get("model_config"), dict)):
        raise ValueError(f"{path}: the checkpoint lacks its config or weights")
    try:  # before anything reads the tensors: only those of the declared net's shapes are read
        check_state(payload, config_of(payload))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not all_finite(state):
        raise ValueError(f"{path}: the checkpoint's weights are not finite (NaN or inf); use an earlier checkpoint")
    names = payload.get("channel_names")
    if names is not None:
        try:
            expected = image_channels(payload)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: the checkpoint's config is malformed ({_first_sentence(exc)})") from exc
        if (not isinstance(names, list) or len(names) != expected
                or not all(isinstance(n, str) and len(n) <= MAX_NAME_LENGTH for n in names)):
            raise ValueError(f"{path}: the checkpoint's channel names are malformed (one short string per image "
                             "channel expected)")
    return payload


def channel_names(payload: dict[str, Any]) -> tuple[str, ...] | None:
    """The names of the image channels a model (:func:`read_model`) was trained on, in its order; None when it
    has one channel or did not record them."""
    names = payload.get("channel_names")
    return tuple(names) if names else None


def load_into(trainer: Trainer, payload: dict[str, Any]) -> None:
    """Load checkpoint weights into ``trainer``, refusing mismatched classes, channels or tensor shapes."""
    k, c = payload["num_classes"], payload["in_channels"]
    if k != trainer.volume.num_classes:
        raise ValueError(f"model was trained for {k} foreground classes, the volume has "
                         f"{trainer.volume.num_classes}")
    image_channels = trainer.volume.image_channels
    per_channel = trainer.volume.features.shape[0] // max(image_channels, 1)
    if c != trainer.volume.features.shape[0]:
        raise ValueError(f"model expects {c // max(per_channel, 1)} image channel(s), the image has "
                         f"{image_channels}")
    try:
        trainer.load_state_dict(payload["state"])
    except (RuntimeError, KeyError, TypeError) as exc:  # a tensor of the wrong shape, a missing entry
        raise ValueError(f"the model's weights do not fit its declared architecture ({exc})") from exc


def config_of(payload: dict[str, Any]) -> SessionConfig:
    """The SessionConfig stored in a checkpoint."""
    try:
        return SessionConfig.from_dict(payload["config"], legacy=True)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"the model's settings are not readable ({exc})") from exc


def image_channels(payload: dict[str, Any]) -> int:
    """The image channels a model reads: its input channels over the intensity views of each
    (``TrainConfig.intensity_views``)."""
    return max(1, int(payload["in_channels"]) // len(config_of(payload).train.intensity_views))
