"""A correction stops at the edges of the predicted region it began on; other regions under the brush stay.

The unit tests drive the rule on strokes read from a real napari Labels layer; the GUI test drags napari's own
brush across the prediction layer (press, moves, release: the path a mouse takes) in the docked widget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

from napari_sparseseg.core.annotation import Source
from napari_sparseseg.core.encoding import layer_to_annotation
from napari_sparseseg.plugin.edge_stop import start_region
from napari_sparseseg.plugin.paint_atoms import read_paint_item
from tests.test_widget import TEST_CONFIG, start_and_wait_for_session, stop_and_wait

pytestmark = pytest.mark.gui

Z = 5
BLOB = (Z, slice(10, 20), slice(10, 20))  # a false positive
LINE = (Z, 30, slice(5, 60))  # a thin structure, one voxel wide, the same class


def predicted(shape=(8, 64, 64)) -> np.ndarray:
    pred = np.zeros(shape, np.uint8)
    pred[BLOB] = 1
    pred[LINE] = 1
    return pred


def drag_stroke(layer, label: int, points, brush: int = 7):
    """Paint ``points`` (data coordinates) as one stroke with napari's ``paint()``; the stroke as the widget reads
    it."""
    from napari.layers import Labels

    assert isinstance(layer, Labels)
    items = []
    layer.events.paint.connect(lambda e: items.append(e.value))
    layer.brush_size = brush
    with layer.block_history():
        for p in points:
            layer.paint(p, label)
    assert len(items) == 1
    return read_paint_item(items[0], layer.data.shape)


def test_a_stroke_records_what_it_painted_over_and_in_which_order():
    from napari.layers import Labels

    layer = Labels(predicted())
    stroke = drag_stroke(layer, 0, [(Z, 15, 15), (Z, 30, 15)])
    assert stroke is not None and stroke.old is not None
    assert (stroke.old == 1).all() and (stroke.new == 0).all()  # erasing changes only what was not background
    first = stroke.order == 0
    assert (stroke.coords[1][first] < 20).all()  # the first dab is in the blob
    assert ((stroke.coords[1] == 30) & ~first).any()  # a later dab took the line


@pytest.mark.parametrize("start", [((Z, 15, 15), 1), ((Z, 24, 15), 0), None])
def test_erasing_a_false_positive_keeps_the_thin_structure_beside_it(start):
    from napari.layers import Labels

    layer = Labels(predicted())
    stroke = drag_stroke(layer, 0, [(Z, 15, 15), (Z, 24, 15), (Z, 30, 15)])
    keep = start_region(stroke, start)
    on_line = stroke.coords[1] == 30
    assert on_line.any() and (~on_line).any()
    if start is None:  # written from code: every voxel counts
        assert keep.all()
    else:  # begun inside the blob, or on the background (erasing paints it): the blob, the first region changed
        assert keep[~on_line].all() and not keep[on_line].any()


def test_painting_a_class_outwards_changes_only_the_background_it_began_on():
    from napari.layers import Labels

    pred = predicted()
    pred[Z, 40:50, 10:20] = 2  # another class the brush will reach
    layer = Labels(pred)
    stroke = drag_stroke(layer, 2, [(Z, 36, 15), (Z, 30, 15)])
    keep = start_region(stroke, ((Z, 36, 15), 0))
    assert stroke.old is not None
    assert (stroke.old[keep] == 0).all() and not keep[stroke.old == 1].any()
    assert keep[stroke.old == 0].any()


# -- the widget, with napari's brush driven by mouse events ------------------------------------------------------
@dataclass
class _Mouse:
    type: str
    position: tuple
    is_dragging: bool = False
    button: int = 1
    modifiers: list = field(default_factory=list)
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    view_direction: list | None = None
    up_direction: list | None = None
    dims_displayed: list = field(default_factory=lambda: [1, 2])
    delta: tuple | None = None
    native: object = None
    handled: bool = False


class _Event:
    """What napari hands drag callbacks: a proxy whose ``__wrapped__`` it swaps for each move."""

    def __init__(self, event: _Mouse) -> None:
        self.__wrapped__ = event

    def __getattr__(self, name):
        return getattr(self.__wrapped__, name)


def mouse_drag(layer, points) -> None:
    world = [tuple(layer.data_to_world(p)) for p in points]
    mouse_press_callbacks(layer, _Event(_Mouse("mouse_press", world[0])))
    for w in world[1:]:
        mouse_move_callbacks(layer, _Event(_Mouse("mouse_move", w, is_dragging=True)))
    mouse_release_callbacks(layer, _Event(_Mouse("mouse_release", world[-1])))


@pytest.fixture
def stopped(make_napari_viewer, qtbot):
    from napari_sparseseg.plugin.sample import make_sample_data
    from napari_sparseseg.plugin.widget import SparseSegWidget

    viewer = make_napari_viewer()
    (image, image_meta, _), (ann, ann_meta, _) = make_sample_data((8, 64, 64))[:2]
    viewer.add_image(image, **image_meta)
    viewer.add_labels(ann.copy(), **ann_meta)
    widget = SparseSegWidget(viewer, config=TEST_CONFIG, refresh_seconds=1.0, first_refresh_steps=5)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    start_and_wait_for_session(widget, qtbot)
    stop_and_wait(widget, qtbot)
    viewer.dims.set_current_step(0, Z)
    yield viewer, widget
    widget.close_session()


@pytest.mark.parametrize("stop_at_edges", [True, False])
def test_an_erase_stroke_across_a_thin_structure_leaves_it(stopped, qtbot, stop_at_edges):
    _viewer, widget = stopped
    widget.training_panel.edge_check.setChecked(stop_at_edges)
    session, pred, annotation = widget.session, widget.prediction_layer, widget.annotation_layer
    pred.data[...] = predicted()
    pred.refresh()
    pred.brush_size = 7
    pred.mode = "erase"
    mouse_drag(pred, [(Z, 15, 15), (Z, 22, 15), (Z, 30, 15), (Z, 34, 15)])
    qtbot.wait(50)  # the stroke's other regions get their class back once napari has written it

    line = pred.data[LINE]
    corrected = session.volume.source == Source.CORRECTED
    assert (pred.data[Z, 13:20, 13:18] == 0).all()  # the false positive under the brush is erased ...
    assert (session.volume.labels[Z, 13:20, 13:18] == 1).all()  # ... as a background correction
    if stop_at_edges:
        assert (line == 1).all()  # the line keeps its class ...
        assert not corrected[LINE].any()  # ... and is no correction
    else:
        assert (line[8:12] == 0).all() and corrected[LINE].sum() >= 5
    np.testing.assert_array_equal(session.volume.labels, layer_to_annotation(annotation.data))

    pred.undo()
    assert session.volume.n_labeled == 0
    assert (pred.data[LINE] == 1).all() and (pred.data[BLOB] == 1).all()
    pred.redo()  # napari redoes the whole stroke; the line gets its class back again
    assert (pred.data[LINE] == 1).all() == stop_at_edges
    assert (pred.data[Z, 13:20, 13:18] == 0).all()
    np.testing.assert_array_equal(session.volume.labels, layer_to_annotation(annotation.data))
