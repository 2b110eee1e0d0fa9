"""Qt-free core of napari-sparseseg: data model, net, loss, trainer, inference.

Nothing in this package imports qtpy, napari or magicgui (tests/test_architecture.py
and the import-linter contract in pyproject.toml enforce it).
"""
