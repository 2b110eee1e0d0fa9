"""Saving and loading trained models: weights plus the config that built them.

A checkpoint is a ``torch.save`` dict ``{"format": FORMAT, "version": VERSION,
"config": SessionConfig.to_dict(), "state": Trainer.state_dict(),
"num_classes": K, "in_channels": C}``. It is written to a temporary file and
renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import SessionConfig
from .trainer import Trainer

FORMAT = "napari-sparseseg-model"
VERSION = 1


def save_model(trainer: Trainer, path: str | Path) -> Path:
    """Atomically write the trainer's model, optimiser state and config."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, "config": trainer.config.to_dict(),
               "state": trainer.state_dict(), "num_classes": trainer.volume.num_classes,
               "in_channels": int(trainer.volume.features.shape[0])}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_model(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint; ``ValueError`` if it is not one of ours."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable model checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a napari-sparseseg model")
    if payload.get("version", 0) > VERSION:
        raise ValueError(f"{path}: model format version {payload['version']} is newer than this "
                         f"napari-sparseseg understands ({VERSION}); upgrade the package")
    return payload


def load_into(trainer: Trainer, payload: dict[str, Any]) -> None:
    """Load checkpoint weights into ``trainer``, refusing mismatched classes or channels."""
    k, c = payload["num_classes"], payload["in_channels"]
    if k != trainer.volume.num_classes:
        raise ValueError(f"model was trained for {k} foreground classes, the volume has "
                         f"{trainer.volume.num_classes}")
    if c != trainer.volume.features.shape[0]:
        raise ValueError(f"model expects {c} input channels, the image gives {trainer.volume.features.shape[0]}")
    trainer.load_state_dict(payload["state"])


def config_of(payload: dict[str, Any]) -> SessionConfig:
    """The SessionConfig stored in a checkpoint."""
    return SessionConfig.from_dict(payload["config"])
