"""The CI regression guard (benchmarks/regression.py): its checks, and one real run on the synthetic sample."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUARD = ROOT / "benchmarks" / "regression.py"


def _guard_module():
    spec = importlib.util.spec_from_file_location("regression_guard", GUARD)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GOOD = {"dice_fg": 0.9, "rf_dice_fg": 0.92, "loss_ratio": 0.5, "train_ratio": 0.9, "infer_ratio": 1.1}


def test_check_passes_good_numbers():
    guard = _guard_module()
    assert all(ok for *_, ok in guard.check(GOOD))


@pytest.mark.parametrize("key, value, failing", [
    ("dice_fg", 0.4, {"dice_fg", "dice_fg - rf_dice_fg"}),
    ("rf_dice_fg", 0.96, {"dice_fg - rf_dice_fg"}),
    ("loss_ratio", 0.95, {"loss last/first"}),
    ("train_ratio", 0.3, {"train throughput ours/ref"}),
    ("infer_ratio", 0.2, {"inference throughput ours/ref"}),
    ("infer_ratio", float("nan"), {"inference throughput ours/ref"}),
])
def test_check_flags_each_regression(key, value, failing):
    guard = _guard_module()
    rows = guard.check({**GOOD, key: value})
    assert {name for name, _, _, ok in rows if not ok} == failing


@pytest.mark.slow
def test_guard_passes_on_the_sample(tmp_path):
    out = tmp_path / "guard.json"
    proc = subprocess.run([sys.executable, str(GUARD), "--json", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    assert "train throughput ours/ref" in proc.stdout
