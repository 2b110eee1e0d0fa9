"""The suite fills a GPU run's baselines from a CPU run of the same file, protocol and seed, and says so."""

import importlib.util
import json
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"


def _suite():
    spec = importlib.util.spec_from_file_location("suite_under_test", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, protocol: str, seed: int, baselines: dict) -> Path:
    path = folder / f"vol__{protocol.replace(':', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": "vol", "protocol": protocol, "seed": seed, "dice_fg": 0.9,
                                "baselines": baselines}))
    return path


def test_missing_baselines_come_from_the_run_of_the_same_protocol_and_seed(tmp_path):
    suite = _suite()
    forest = {"rf": {"dice_fg": 0.8}}
    source = _run(tmp_path / "cpu" / "cpu", "z:3", 0, forest)
    _run(tmp_path / "cpu" / "cpu", "z:5", 0, {"rf": {"dice_fg": 0.85}})
    _run(tmp_path / "cpu_seed1" / "cpu", "z:3", 1, {"rf": {"dice_fg": 0.7}})
    gpu = _run(tmp_path / "gpu" / "cuda", "z:3", 0, {})
    other_seed = _run(tmp_path / "gpu" / "seed1", "z:3", 1, {})
    own = _run(tmp_path / "gpu_own" / "cuda", "z:3", 0, {"rf": {"dice_fg": 0.5}})

    assert suite.fill_baselines(tmp_path / "gpu", tmp_path / "cpu") == 1
    filled = json.loads(gpu.read_text())
    assert filled["baselines"] == forest
    assert filled["baselines_from"] == str(source)
    assert json.loads(other_seed.read_text())["baselines"] == {}  # no seed-1 run in the source: left empty
    assert suite.fill_baselines(tmp_path / "gpu_own", tmp_path / "cpu") == 0  # its own baselines are kept
    assert json.loads(own.read_text())["baselines"] == {"rf": {"dice_fg": 0.5}}
