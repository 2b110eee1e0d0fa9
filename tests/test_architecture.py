"""The layers of the package: the core never imports Qt, napari or magicgui (napari's own rule for components/),
the import-linter contracts hold, no modules import each other in a cycle, and ruff's rules hold."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT_FREE = ["napari_sparseseg.core.session", "napari_sparseseg.core.checkpoint",
           "napari_sparseseg.evaluation.simulated_user", "napari_sparseseg.cli", "napari_sparseseg.io",
           "napari_sparseseg.baselines.random_forest",
           "napari_sparseseg.sample_data"]
FORBIDDEN = ("qtpy", "napari.", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6")


@pytest.mark.parametrize("module", QT_FREE)
def test_importing_core_modules_pulls_in_no_gui(module):
    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}) "
            "or m == 'napari'); print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_package_import_is_light():
    code = "import sys, napari_sparseseg; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_import_linter_contract():
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency"
    out = subprocess.run([exe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_finds_nothing():
    """The style and bug rules of ``[tool.ruff]`` hold over everything committed in Python (ruff is pinned in the
    test extra, so that a new release's rules cannot fail a clean clone)."""
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "napari_sparseseg", "tests",
                          "benchmarks", "scripts", "sample_data"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_import_cycles():
    import grimp  # comes with import-linter

    graph = grimp.build_graph("napari_sparseseg")
    cycles = sorted({tuple(sorted((a, b))) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                     if graph.find_shortest_chain(importer=b, imported=a)})
    assert cycles == [], f"modules that import each other (directly or through others): {cycles}"


def test_every_subpackage_is_packaged():
    """A subpackage missing from ``[tool.setuptools] packages`` works in an editable install and is absent from
    the wheel a user installs."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "napari_sparseseg").rglob("__init__.py")}
    assert found == listed
