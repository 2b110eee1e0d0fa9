"""The ``gui`` command: open napari with the plugin docked (Qt is imported only when it runs)."""

from __future__ import annotations

import argparse
import sys


def cmd_gui(args: argparse.Namespace) -> int:
    import os

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ValueError("no display to open a window on (DISPLAY is not set): run 'napari-sparseseg demo' for "
                         "the headless demo, or start napari under a virtual display (xvfb-run napari-sparseseg gui)")
    from ..plugin.launch import launch

    launch(args.path)
    return 0
