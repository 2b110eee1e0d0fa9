"""``python -m napari_sparseseg.cli``: the same as the ``napari-sparseseg`` command."""

import sys

from .parser import main

sys.exit(main())
