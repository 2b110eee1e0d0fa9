"""Command line: ``napari-sparseseg evaluate | train | resume | predict | gui | demo``.

Label encoding on the command line is the mask encoding of ground-truth files
(0 = background, 1..K = classes) for ``evaluate`` and outputs, and the
annotation encoding (0 = unlabeled, 1 = background, k+1 = class k) for the
sparse labels given to ``train``, or, with ``--encoding layer`` (or a file that
holds 255), the layer encoding of an annotation layer saved from napari.

Modules: :mod:`.parser` (the argument parser and :func:`main`), :mod:`.train`
(``train``, ``resume``), :mod:`.predict` (``predict``), :mod:`.evaluate`
(``evaluate``, ``demo``), :mod:`.gui` (``gui``), and :mod:`.common` (what
the commands share).
"""

from __future__ import annotations

from .common import LEARNER_NAMES
from .evaluate import cmd_demo, cmd_evaluate
from .gui import cmd_gui
from .parser import build_parser, main
from .predict import cmd_predict, image_files, instances_path, mask_path
from .train import annotation_warnings, cmd_resume, cmd_train

__all__ = ["LEARNER_NAMES", "annotation_warnings", "build_parser", "cmd_demo", "cmd_evaluate", "cmd_gui",
           "cmd_predict", "cmd_resume", "cmd_train", "image_files", "instances_path", "main", "mask_path"]
