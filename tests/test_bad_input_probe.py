"""The bad-input probe: every bad file, argument or value a user can hand the CLI or the Python API gets one clear
answer (CLI: one line on stderr, exit code 2; API: a ValueError-family exception naming the problem), never a
traceback and never a silently wrong result (success where there should be a refusal).

Run it as a report too: ``python -m tests.test_bad_input_probe`` prints each case and the tallies.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sparseseg.cli import main
from tests.conftest import sphere_volume, tiny_config, with_a_stored_byte_flipped

SHAPE = (16, 32, 32)
SPACING = np.array([2.0, 1.0, 1.0], np.float32)


class _RunsCode:
    """Unpickles into a call of ``exec`` that writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def make_files(folder: Path) -> dict[str, Path]:
    """Good and bad inputs, written once into ``folder``."""
    from napari_sparseseg.core.checkpoint import save_model
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.store import SessionStore

    image, mask = sphere_volume(SHAPE, radius=6)
    f: dict[str, Path] = {}

    def npz(name: str, **arrays) -> None:
        f[name] = folder / f"{name}.npz"
        np.savez(f[name], **arrays)

    npz("good", image=image, labels=mask, spacing=SPACING)
    ann = np.zeros(SHAPE, np.uint8)
    ann[8] = mask[8] + 1
    npz("ann", labels=ann)
    npz("no_labels", image=image, spacing=SPACING)
    npz("small_image", image=image[:8], spacing=SPACING)
    npz("flat", image=image[0], labels=mask[0], spacing=SPACING)
    npz("other_shape", image=image, labels=mask[:8], spacing=SPACING)
    npz("nan", image=np.where(mask > 0, np.nan, image).astype(np.float32), labels=mask, spacing=SPACING)
    npz("inf", image=np.where(mask > 0, np.inf, image).astype(np.float32), labels=mask, spacing=SPACING)
    npz("constant", image=np.ones(SHAPE, np.float32), labels=mask, spacing=SPACING)
    npz("no_foreground", image=image, labels=np.zeros(SHAPE, np.uint8), spacing=SPACING)
    npz("complex", image=image.astype(np.complex64), labels=mask, spacing=SPACING)
    npz("four_d", image=np.stack([image] * 3), labels=mask, spacing=SPACING)
    npz("bad_spacing", image=image, labels=mask, spacing=np.array([0.0, 1.0, 1.0], np.float32))
    npz("nan_spacing", image=image, labels=mask, spacing=np.array([np.nan, 1.0, 1.0], np.float32))
    npz("empty_ann", labels=np.zeros(SHAPE, np.uint8))
    npz("small_ann", labels=ann[4:12])  # labeled, but 8 slices for a 16-slice image
    npz("fraction_ann", labels=ann.astype(np.float32) * 0.5)
    npz("negative_ann", labels=ann.astype(np.int16) - 3)
    npz("two_channel", image=np.stack([image, image]), labels=mask, spacing=SPACING)  # (c, z, y, x)
    f["text_npz"] = folder / "text.npz"
    f["text_npz"].write_text("this is not a zip file")
    f["empty_npz"] = folder / "empty.npz"
    f["empty_npz"].write_bytes(b"")
    # an .npz whose header declares a 256 GiB array
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (4096, 4096, 4096)})
    f["huge"] = folder / "huge.npz"
    with zipfile.ZipFile(f["huge"], "w") as z:
        z.writestr("image.npy", header.getvalue() + b"\0" * 64)
        z.writestr("labels.npy", header.getvalue() + b"\0" * 64)
    # a model, a NaN model, a malicious model
    session = SegmentationSession(image, num_classes=1, spacing=tuple(SPACING), config=tiny_config())
    session.add_labels((8, slice(None), slice(None)), mask[8] + 1)
    f["model"] = folder / "model.pt"
    save_model(session.trainer, f["model"])
    payload = torch.load(f["model"], weights_only=True)
    evil = dict(payload, config=dict(payload["config"], payload=_RunsCode(folder / "RAN")))
    f["evil_model"] = folder / "evil.pt"
    torch.save(evil, f["evil_model"])
    f["nan_model"] = folder / "nan.pt"
    nan = torch.load(f["model"], weights_only=True)
    next(iter(nan["state"]["model"].values())).fill_(float("nan"))
    torch.save(nan, f["nan_model"])
    f["names_model"] = folder / "names.pt"
    torch.save({**payload, "channel_names": ["flair", {"not": "a name"}]}, f["names_model"])
    f["text_model"] = folder / "text.pt"
    f["text_model"].write_text("not a model")
    giant = copy.deepcopy(payload)  # a net of the widest layers any file may declare, over the tiny net's weights
    for settings in (giant["config"]["model"], giant["state"]["model_config"]):
        settings["base_channels"] = settings["max_channels"] = 512
    f["giant_model"] = folder / "giant.pt"
    torch.save(giant, f["giant_model"])
    f["huge_batch_model"] = folder / "batch.pt"
    torch.save({**payload, "config": {**payload["config"], "inference": {"batch_size": 10**6}}},
               f["huge_batch_model"])
    f["damaged_model"] = folder / "damaged.pt"
    f["damaged_model"].write_bytes(with_a_stored_byte_flipped(f["model"]))
    # stores: a good one, one with a broken zarr.json, one missing num_classes, an evil checkpoint
    f["store"] = folder / "s.zarr"
    store = SessionStore.create(f["store"], session)
    store.close()
    for name, damage in (("store_json", "json"), ("store_attrs", "attrs"), ("store_evil", "evil")):
        import shutil

        shutil.copytree(f["store"], folder / f"{name}.zarr")
        f[name] = folder / f"{name}.zarr"
        if damage == "json":
            (f[name] / "labels" / "zarr.json").write_text('{"zarr_format": 3, ')
        elif damage == "attrs":
            meta = json.loads((f[name] / "zarr.json").read_text())
            del meta["attributes"]["num_classes"]
            (f[name] / "zarr.json").write_text(json.dumps(meta))
        else:
            (f[name] / "checkpoints").mkdir(exist_ok=True)
            torch.save(evil, f[name] / "checkpoints" / "latest.pt")
    f["plain_dir"] = folder / "plain"
    f["plain_dir"].mkdir()
    import tifffile

    tif = folder / "cut.tif"
    tifffile.imwrite(tif, image.astype(np.float32), imagej=True, metadata={"axes": "ZYX"})
    data = tif.read_bytes()
    tif.write_bytes(data[: len(data) // 2])
    f["cut_tif"] = tif
    return f


#: ``(name, CLI arguments)``; ``{name}`` is replaced by the path of that file from :func:`make_files`.
TRAIN = ["train", "{good}", "--model", "{folder}/m.pt"]
CLI_CASES: list[tuple[str, list[str]]] = [
    ("missing file", ["evaluate", "{folder}/missing.npz"]),
    ("a folder as data", ["evaluate", "{plain_dir}"]),
    ("text renamed .npz", ["evaluate", "{text_npz}"]),
    ("empty .npz", ["evaluate", "{empty_npz}"]),
    ("no labels in the ground truth", ["evaluate", "{no_labels}"]),
    ("2D image", ["evaluate", "{flat}"]),
    ("labels of another shape", ["evaluate", "{other_shape}"]),
    ("NaN in the image", ["evaluate", "{nan}"]),
    ("inf in the image", ["evaluate", "{inf}"]),
    ("constant image", ["evaluate", "{constant}"]),
    ("ground truth without foreground", ["evaluate", "{no_foreground}"]),
    ("complex image", ["evaluate", "{complex}"]),
    ("4D image without a channel axis", ["evaluate", "{four_d}"]),
    ("zero spacing", ["evaluate", "{bad_spacing}"]),
    ("NaN spacing", ["evaluate", "{nan_spacing}"]),
    ("too many protocol slices", ["evaluate", "{good}", "--protocol", "z:99"]),
    ("unknown protocol", ["evaluate", "{good}", "--protocol", "axial:3"]),
    ("zero budget", ["evaluate", "{good}", "--budget-seconds", "0"]),
    ("negative budget", ["evaluate", "{good}", "--budget-seconds", "-5"]),
    ("NaN budget", ["evaluate", "{good}", "--budget-seconds", "nan"]),
    ("unknown baseline", ["evaluate", "{good}", "--baselines", "svm"]),
    ("huge declared .npz", ["evaluate", "{huge}"]),
    ("truncated TIFF", ["predict", "{cut_tif}", "--model", "{model}", "--out", "{folder}/p.tif"]),
    ("missing annotation", [*TRAIN, "--annotation", "{folder}/none.npz", "--seconds", "1"]),
    ("annotation of another shape", [*TRAIN, "--annotation", "{small_ann}", "--seconds", "1"]),
    ("empty annotation", [*TRAIN, "--annotation", "{empty_ann}", "--seconds", "1"]),
    ("fractional labels", [*TRAIN, "--annotation", "{fraction_ann}", "--seconds", "1"]),
    ("negative labels", [*TRAIN, "--annotation", "{negative_ann}", "--seconds", "1"]),
    ("zero training seconds", [*TRAIN, "--annotation", "{ann}", "--seconds", "0"]),
    ("output in a missing folder", [*TRAIN, "--annotation", "{ann}", "--seconds", "1", "--out",
                                    "{folder}/nowhere/m.tif"]),
    ("unsupported output type", [*TRAIN, "--annotation", "{ann}", "--seconds", "1", "--out",
                                 "{folder}/m.png"]),
    ("a channel of another shape", [*TRAIN, "--annotation", "{ann}", "--seconds", "1", "--channel",
                                    "{small_image}"]),
    ("NaN in a channel", [*TRAIN, "--annotation", "{ann}", "--seconds", "1", "--channel", "{nan}"]),
    ("a channel for a folder", ["predict", "{folder}", "--channel", "{good}", "--model", "{model}", "--out",
                                "{folder}/masks"]),
    ("missing model", ["predict", "{good}", "--model", "{folder}/none.pt", "--out", "{folder}/p.tif"]),
    ("text as a model", ["predict", "{good}", "--model", "{text_model}", "--out", "{folder}/p.tif"]),
    ("model that runs code", ["predict", "{good}", "--model", "{evil_model}", "--out", "{folder}/p.tif"]),
    ("model with NaN weights", ["predict", "{good}", "--model", "{nan_model}", "--out", "{folder}/p.tif"]),
    ("model with malformed channel names", ["predict", "{good}", "--model", "{names_model}", "--out",
                                            "{folder}/p.tif"]),
    ("model for another channel count", ["predict", "{two_channel}", "--model", "{model}", "--out",
                                         "{folder}/p.tif"]),
    ("model declaring a giant net", ["predict", "{good}", "--model", "{giant_model}", "--out", "{folder}/p.tif"]),
    ("model asking a million windows a batch", ["predict", "{good}", "--model", "{huge_batch_model}", "--out",
                                                "{folder}/p.tif"]),
    ("model with a damaged byte", ["predict", "{good}", "--model", "{damaged_model}", "--out", "{folder}/p.tif"]),
    ("zero block", ["predict", "{good}", "--model", "{model}", "--out", "{folder}/p.zarr", "--block", "0", "0",
                    "0"]),
    ("pyramid level of an .npz", ["predict", "{good}", "--model", "{model}", "--out", "{folder}/p.tif", "--level",
                                  "3"]),
    ("a folder without images", ["predict", "{plain_dir}", "--model", "{model}", "--out", "{folder}/masks"]),
    ("resume a plain folder", ["resume", "{plain_dir}", "--seconds", "1"]),
    ("resume a missing store", ["resume", "{folder}/none.zarr", "--seconds", "1"]),
    ("resume a store with broken metadata", ["resume", "{store_json}", "--seconds", "1"]),
    ("resume a store missing its class count", ["resume", "{store_attrs}", "--seconds", "1"]),
]


#: What each CLI refusal must say (a regular expression searched in its one line).
EXPECTED = {
    "missing file": "missing.npz", "a folder as data": "plain", "text renamed .npz": "cannot read as .npz",
    "empty .npz": "cannot read as .npz", "no labels in the ground truth": "'labels' array",
    "2D image": "3D volume", "labels of another shape": "do not match", "NaN in the image": "NaN/inf",
    "inf in the image": "NaN/inf", "constant image": "constant", "ground truth without foreground": "no foreground",
    "complex image": "dtype complex", "4D image without a channel axis": "channel_axis", "zero spacing": "spacing",
    "NaN spacing": "spacing", "too many protocol slices": "only 16", "unknown protocol": "unknown protocol",
    "zero budget": "must be > 0", "negative budget": "must be > 0", "NaN budget": "finite",
    "unknown baseline": "unknown baselines",
    "huge declared .npz": "memory", "truncated TIFF": "truncated", "missing annotation": "none.npz",
    "annotation of another shape": "shape", "empty annotation": "no labeled voxels",
    "fractional labels": "whole numbers", "negative labels": "0..255", "zero training seconds": "must be > 0",
    "output in a missing folder": "does not exist", "unsupported output type": "unsupported output type",
    "a channel of another shape": "shape", "NaN in a channel": "NaN/inf", "a channel for a folder": "one image",
    "missing model": "none.pt", "text as a model": "not a model checkpoint", "model that runs code": "refused",
    "model with NaN weights": "not finite", "model with malformed channel names": "channel names",
    "model for another channel count": "channel", "model declaring a giant net": "declared net",
    "model asking a million windows a batch": "batch_size must be in", "model with a damaged byte": "damaged",
    "zero block": "--block", "pyramid level of an .npz": "level 3", "a folder without images": "no image files",
    "resume a plain folder": "not a napari-sparseseg session store", "resume a missing store": "does not exist",
    "resume a store with broken metadata": "zarr.json", "resume a store missing its class count": "damaged",
}


def _api_cases() -> list[tuple[str, Callable[[dict[str, Path]], object]]]:
    from napari_sparseseg.core.checkpoint import read_model
    from napari_sparseseg.core.config import TrainConfig
    from napari_sparseseg.core.estimate import expected_dice
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.io import save_mask
    from napari_sparseseg.store import SessionStore

    image, _ = sphere_volume(SHAPE, radius=6)

    def session() -> SegmentationSession:
        return SegmentationSession(image, num_classes=1, spacing=tuple(SPACING), config=tiny_config())

    return [
        ("2D image to a session", lambda f: SegmentationSession(image[0], num_classes=1)),
        ("zero classes", lambda f: SegmentationSession(image, num_classes=0)),
        ("a label beyond the classes", lambda f: session().add_labels((8, slice(None), slice(None)), 9)),
        ("labels of the wrong shape", lambda f: session().add_labels((8, slice(None), slice(None)),
                                                                     np.ones((4, 4), np.uint8))),
        ("open a plain folder as a store", lambda f: SessionStore.open(f["plain_dir"])),
        ("read a model that runs code", lambda f: read_model(f["evil_model"])),
        ("mask to an unsupported suffix", lambda f: save_mask(f["folder"] / "m.png", np.zeros(SHAPE, np.uint8),
                                                               (1.0, 1.0, 1.0))),
        ("negative learning rate", lambda f: TrainConfig(learning_rate=-1.0)),
        ("estimate of mismatched shapes", lambda f: expected_dice(np.ones((2, 4, 4, 4), np.float32),
                                                                  np.zeros((2, 2, 2), np.uint8))),
        ("open a store whose checkpoint runs code", lambda f: _no_code_ran(f, SessionStore.open(f["store_evil"]))),
    ]


def _no_code_ran(files: dict[str, Path], opened) -> None:
    """Opening the store is fine (the checkpoint is refused and training starts afresh); code must not run."""
    store, _session = opened
    store.close()
    if (files["folder"] / "RAN").exists():
        raise AssertionError("code in the checkpoint ran")
    raise ValueError(store.resume_error or "the checkpoint was loaded")


def run_cli(args: list[str], files: dict[str, Path]) -> tuple[int, str, bool]:
    """``(exit code, stderr, traceback seen)`` of the CLI on ``args`` with file names filled in."""
    argv = [a.format(**files) if "{" in a else a for a in args]
    out, err = io.StringIO(), io.StringIO()
    crashed = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv + ["--device", "cpu"] if argv[0] in ("train", "predict", "resume", "evaluate") else argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        except BaseException:  # noqa: BLE001 (what the probe counts)
            traceback.print_exc(file=err)
            code, crashed = 1, True
    text = err.getvalue()
    return code, text, crashed or "Traceback" in text


def _files_for(folder: Path) -> dict[str, Path]:
    files = make_files(folder)
    files["folder"] = folder
    return files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.set_num_threads(1)
    return _files_for(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name, args", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_the_cli_answers_bad_input_in_one_line_with_exit_code_2(files, name, args):
    code, err, crashed = run_cli(args, files)
    assert not crashed, err
    assert code == 2, f"{name}: exit {code} (a refusal was due), stderr: {err!r}"
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1 and len(lines[0]) < 400, err
    assert re.search(EXPECTED[name], lines[0]), f"{name}: the refusal does not say why: {lines[0]!r}"
    assert not (files["folder"] / "RAN").exists()


@pytest.mark.parametrize("case", range(len(_api_cases())), ids=[c[0] for c in _api_cases()])
def test_the_api_refuses_bad_input_with_a_value_error(files, case):
    name, call = _api_cases()[case]
    with pytest.raises(ValueError):  # includes VolumeFileError, UnsafeCheckpointError, StoreInUseError
        call(files)
    assert not (files["folder"] / "RAN").exists()


def report() -> int:
    """Run every case and print it with the tallies (the issue's figures)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = _files_for(Path(tmp))
        tracebacks = wrong = 0
        for name, args in CLI_CASES:
            code, err, crashed = run_cli(args, files)
            tracebacks += crashed
            wrong += code == 0
            last = err.strip().splitlines()[-1] if err.strip() else ""
            print(f"cli  {name:42s} exit {code}  {last[:110]}")
        for name, call in _api_cases():
            try:
                call(files)
                wrong += 1
                print(f"api  {name:42s} ACCEPTED")
            except ValueError as exc:
                print(f"api  {name:42s} {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
            except Exception as exc:  # noqa: BLE001
                tracebacks += 1
                print(f"api  {name:42s} CRASH {type(exc).__name__}: {exc}")
        ran = (files["folder"] / "RAN").exists()
        total = len(CLI_CASES) + len(_api_cases())
        print(f"\n{total} bad inputs: {tracebacks} tracebacks, {wrong} silently accepted, code from a file ran: {ran}")
    return 0 if not (tracebacks or wrong or ran) else 1


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.exit(report())
