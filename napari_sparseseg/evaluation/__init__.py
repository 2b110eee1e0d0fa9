"""Evaluation beside the core: simulated users and the scores of what the product shows. Qt-free.

* :mod:`.protocols`: how a simulated user labels a volume from its ground truth (``z:K``, ``ortho:K``,
  ``scribble:K``, ``full``).
* :mod:`.metrics`: confusion matrix, Dice, IoU, pixel accuracy, object-level scores.
* :mod:`.simulated_user`: the product's loop run on simulated labels, the mask shown scored against the truth
  over time (``napari-sparseseg evaluate`` and the benchmarks).

The core never imports this package (the layers contract in ``pyproject.toml``).
"""
