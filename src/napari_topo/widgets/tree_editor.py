"""Dock widget to correct vessel trees by hand: select a branch, give it to a tree.

The bookkeeping is :class:`napari_topo.trees.edit.TreeEditor` (Qt-free): branch under a
voxel, branch/subtree reassignment, merges, re-partition from moved roots, undo/redo as
deltas. This module only wires it to napari:

* the Labels layer's data is edited in place (``copy=False``), then ``layer.refresh()``
  and ``layer.events.paint(value=atoms)`` in napari's own history format (a list of
  ``(indices, old_values, new_values)`` atoms, as ``Labels.data_setitem`` records), so
  anything listening to the layer's paint events (the live Metrics widget) updates;
* a click (not a drag) on the layer selects the branch under the cursor: in 2D the
  clicked data coordinate, in 3D the first labelled voxel along the view ray;
* keys 1-9, Ctrl+Z and Ctrl+Shift+Z are bound on that layer (instance keymap, which
  napari consults before the class and app shortcuts) only while editing, and restored
  when editing stops or the widget closes.

Undo policy: Undo / Ctrl+Z undoes the *last change to the layer*, whichever tool made
it. Tree edits are undone by the editor (deltas); a brush stroke painted with napari's
own tools while editing is undone by napari's ``layer.undo()``. One timeline keeps the
two in order, so napari's label undo keeps working for strokes and a tree edit is never
undone under a later stroke. (Brush strokes are not seen by the editor's point labels;
a later tree edit rewrites only the voxels of the points it changes.)

The expensive part of starting on a plain labels layer (skeleton and graph,
:meth:`TreeEditor.from_labels`) runs in a worker thread; the edits themselves touch only
the changed voxels and run on the GUI thread.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container
from napari.layers import Labels, Points
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_topo.layers import (
    METADATA_KEY,
    UNASSIGNED_COLOR,
    layer_kind,
    tree_colormap,
    tree_colors,
)
from napari_topo.trees.edit import Delta, TreeEditor
from napari_topo.trees.reconstruct import CoincidingSourcesError
from napari_topo.widgets._common import (
    check_folder,
    coinciding_roots_message,
    count_duplicates,
    duplicate_roots_message,
    follow_layer_list,
    install_view_defaults,
    is_roots_layer,
    made_by_plugin,
    one_line,
    os_error_message,
    placement,
    plugin_info,
    rebuild_picker,
    require_viewer,
    scrolling_body,
    select_layer,
    share_dock_column,
    unwrap,
)

if TYPE_CHECKING:
    import napari

    from napari_topo.trees.edit import Branch

__all__ = ["TreeEditorWidget", "first_labelled_on_ray"]

_LOG = logging.getLogger(__name__)
#: This dock's weight when a window's dock column is shared
#: (:func:`~napari_topo.widgets._common.share_dock_column`): the least:
#: it is used after a run, and scrolls.
DOCK_SHARE = 3
#: Its weight while editing: then the most (the edit controls show; the metrics table
#: of a heavier dock scrolls meanwhile).
EDITING_SHARE = 20
_HIGHLIGHT = "yellow"
_NEW_TREE = -1  # item data of the "new tree" entry of the tree picker
#: A press followed by at most this many mouse moves still counts as a click.
_CLICK_MOVES = 2
_TREE_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff", ".npy")
_GRAPH_SUFFIXES = (".graphml", ".swc", ".csv")


# --------------------------------------------------------------------------------------
# Qt-free helpers
# --------------------------------------------------------------------------------------
def first_labelled_on_ray(data, start, end, step: float = 0.5):
    """The first voxel with a non-zero label on the segment ``start -> end``.

    Parameters
    ----------
    data : (Z, Y, X) array_like of int
        Label volume.
    start, end : sequence of float
        Data coordinates of the ray's entry and exit points (e.g. from
        ``layer.get_ray_intersections``), ``start`` nearest to the camera.
    step : float, optional
        Sampling step in voxels.

    Returns
    -------
    ndarray of intp or None
        Voxel index of the first hit, None if the ray crosses no label.

    Examples
    --------
    >>> vol = np.zeros((5, 5, 5), int); vol[3, 2, 2] = 4
    >>> first_labelled_on_ray(vol, (0, 2, 2), (4, 2, 2)).tolist()
    [3, 2, 2]
    """
    a, b = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    n = max(int(np.ceil(np.linalg.norm(b - a) / step)), 1) + 1
    samples = np.rint(a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)).astype(np.intp)
    shape = np.asarray(data.shape)
    inside = ((samples >= 0) & (samples < shape)).all(axis=1)
    samples = samples[inside]
    if not len(samples):
        return None
    hit = np.flatnonzero(np.asarray(data[tuple(samples.T)]) > 0)
    return samples[hit[0]] if hit.size else None


def _atoms(delta: Delta, shape, *, undo: bool = False) -> list:
    """napari Labels history atoms ``[(indices, old_values, new_values)]`` of a delta."""
    idx = np.unravel_index(delta.voxels, shape)
    old, new = (
        (delta.new_values, delta.old_values) if undo else (delta.old_values, delta.new_values)
    )
    return [(idx, old.copy(), new.copy())]


def _colours(ids) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    out = np.tile(np.asarray(UNASSIGNED_COLOR), (ids.size, 1))
    top = int(ids.max(initial=0))
    if top > 0:
        pos = ids > 0
        out[pos] = tree_colors(top)[ids[pos] - 1]
    return out


# --------------------------------------------------------------------------------------
# the widget
# --------------------------------------------------------------------------------------
class TreeEditorWidget(QWidget):
    """Correct the tree labels of a vessel-trees Labels layer.

    Pick the layer and press *Start editing*. Click a vessel to select its branch
    (highlighted in yellow), then press 1-9 or *Assign* to give it (or, with *Whole
    downstream subtree*, everything below it) to a tree. *New tree*, *Merge*, *Undo*,
    *Redo*, *Re-run partition* from a Points layer of sources, and *Save trees…* /
    *Save graph…* complete the set.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    parent : QWidget, optional
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        require_viewer(napari_viewer, "TreeEditorWidget")
        self._viewer = napari_viewer
        self.editor: TreeEditor | None = None
        self.layer: Labels | None = None
        self.selected: Branch | None = None
        self._analysis = None
        self._worker = None
        self._highlight: Points | None = None
        self._saved_keys: dict[str, Any] = {}
        self._timeline: list[str] = []  # "tree" or "paint", oldest first
        self._redo_timeline: list[str] = []
        self._emitting = False
        self._extra_ids: set[int] = set()

        # -- layer
        self.layer_picker = ComboBox(
            label="Trees layer",
            choices=self._labels_choices,
            nullable=True,
            tooltip=(
                "Labels layer of vessel trees (from Segment, or any labels volume). Only "
                "a trees layer is picked by itself; pick another Labels layer by hand."
            ),
        )
        self.sources_picker = ComboBox(
            label="Sources",
            choices=self._points_choices,
            nullable=True,
            tooltip="Points layer of tree roots for 'Re-run partition'.",
        )
        self._pickers = Container(widgets=[self.layer_picker], labels=True)
        self._pickers.margins = (0, 0, 0, 0)
        # A layer the plugin did not make (a ground truth, the user's own labels) is
        # edited on a copy unless the user ticks this: never changed by surprise.
        self.in_place_checkbox = QCheckBox("Edit this layer itself, not a copy")
        self.in_place_checkbox.setToolTip(
            "The picked layer was not made by the plugin: Start editing works on a copy "
            "(named '<layer> edited') unless this is ticked."
        )
        self.in_place_checkbox.toggled.connect(lambda _on: self._update_controls())
        self._auto_pick = True  # the picker shows the widget's choice, not the user's
        self._auto_sources = True  # the same for the Sources picker
        self._choosing = False
        self.start_button = QPushButton("Start editing")
        self.start_button.setToolTip(
            "Edit the picked layer (a layer the plugin did not make: a copy of it); "
            "computes its skeleton if it has no analysis."
        )
        self.start_button.clicked.connect(self._on_start_clicked)
        self._idle_prompt = "Pick a trees layer and press Start editing."
        self.status_label = QLabel(self._idle_prompt)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # -- assign
        self.tree_picker = QComboBox()
        self.tree_picker.setToolTip("Tree to give the selected branch to (or press 1-9).")
        self.tree_picker.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.tree_picker.setMinimumContentsLength(12)
        self.assign_button = QPushButton("Assign")
        self.assign_button.clicked.connect(lambda: self._guard(self.assign))
        self.subtree_checkbox = QCheckBox("Whole downstream subtree")
        self.subtree_checkbox.setToolTip("Also reassign every branch downstream of the selection.")
        self.new_tree_button = QPushButton("New tree")
        self.new_tree_button.setToolTip("Give the selected branch to a new tree.")
        self.new_tree_button.clicked.connect(lambda: self._guard(self.new_tree))
        self.merge_into = QSpinBox()
        self.merge_from = QSpinBox()
        for box in (self.merge_into, self.merge_from):
            box.setRange(1, 2**31 - 1)
            box.setMinimumWidth(72)  # room for napari's +/- buttons and a few digits
        self.merge_into.setValue(1)
        self.merge_from.setValue(2)
        self.merge_button = QPushButton("Merge")
        self.merge_button.setToolTip("Merge the second tree into the first.")
        self.merge_button.clicked.connect(
            lambda: self._guard(self.merge, self.merge_into.value(), self.merge_from.value())
        )
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Undo the last change to the layer (Ctrl+Z on the layer).")
        self.undo_button.clicked.connect(lambda: self._guard(self.undo))
        self.redo_button = QPushButton("Redo")
        self.redo_button.setToolTip("Redo (Ctrl+Shift+Z on the layer).")
        self.redo_button.clicked.connect(lambda: self._guard(self.redo))

        edit_box = QGroupBox("Edit")
        grid = QGridLayout(edit_box)
        grid.addWidget(QLabel("Tree"), 0, 0)
        grid.addWidget(self.tree_picker, 0, 1)
        grid.addWidget(self.assign_button, 0, 2)
        grid.addWidget(self.subtree_checkbox, 1, 0, 1, 2)
        grid.addWidget(self.new_tree_button, 1, 2)
        # two rows, so that narrow docks (several tabs side by side) stay readable
        grid.addWidget(QLabel("Merge tree"), 2, 0)
        grid.addWidget(self.merge_from, 2, 1)
        grid.addWidget(QLabel("into tree"), 3, 0)
        grid.addWidget(self.merge_into, 3, 1)
        grid.addWidget(self.merge_button, 3, 2)
        grid.addWidget(self.undo_button, 4, 1)
        grid.addWidget(self.redo_button, 4, 2)
        grid.setColumnStretch(1, 1)

        # -- sources
        self.add_sources_button = QPushButton("Add sources layer")
        self.add_sources_button.setToolTip("A Points layer seeded with the current roots.")
        self.add_sources_button.clicked.connect(lambda: self._guard(self.add_sources_layer))
        self.repartition_button = QPushButton("Re-run partition")
        self.repartition_button.setToolTip(
            "Re-assign every point to its nearest source along the centerline graph."
        )
        self.repartition_button.clicked.connect(lambda: self._guard(self.repartition))
        src_box = QGroupBox("Sources")
        src_layout = QVBoxLayout(src_box)
        src_pick = Container(widgets=[self.sources_picker], labels=True)
        src_pick.margins = (0, 0, 0, 0)
        src_layout.addWidget(src_pick.native)
        row = QHBoxLayout()
        row.addWidget(self.add_sources_button)
        row.addWidget(self.repartition_button)
        src_layout.addLayout(row)

        # -- save
        self.save_trees_button = QPushButton("Save trees…")
        self.save_trees_button.clicked.connect(self._on_save_trees_clicked)
        self.save_graph_button = QPushButton("Save graph…")
        self.save_graph_button.clicked.connect(self._on_save_graph_clicked)
        save_row = QHBoxLayout()
        save_row.addWidget(self.save_trees_button)
        save_row.addWidget(self.save_graph_button)

        layout = QVBoxLayout()
        layout.addWidget(self._pickers.native)
        layout.addWidget(self.in_place_checkbox)
        layout.addWidget(self.start_button)
        layout.addWidget(self.status_label)
        layout.addWidget(edit_box)
        layout.addWidget(src_box)
        layout.addLayout(save_row)
        layout.addStretch(1)
        self.scroll_area = scrolling_body(self, layout, share=DOCK_SHARE)

        follow_layer_list(self, napari_viewer, self._refresh_choices)
        install_view_defaults(napari_viewer, self)
        self.destroyed.connect(partial(_teardown, self))
        self.layer_picker.changed.connect(self._on_layer_picked)
        self.sources_picker.changed.connect(self._on_sources_picked)
        self._refresh_choices()
        self._update_controls()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.stop_editing()
        super().closeEvent(event)

    # ------------------------------------------------------------------ start / stop
    @property
    def is_editing(self) -> bool:
        return self.editor is not None

    @property
    def is_starting(self) -> bool:
        """True while the skeleton of a plain labels layer is computed."""
        return self._worker is not None

    def start_editing(self, layer: Labels | None = None, *, in_place: bool | None = None) -> bool:
        """Start editing ``layer`` (default: the picked one).

        A layer the plugin made (Segment's trees, an earlier copy) is edited itself. Any
        other layer (a ground truth, the user's labels) is copied first, unless
        ``in_place`` is True (default: the *Edit this layer itself* check box): the copy,
        ``"<name> edited"``, is added above it and edited instead, so a reference never
        changes by surprise.

        With a VesselAnalysis in ``layer.metadata["napari_topo"]["analysis"]`` (set by
        the Segment widget) the editor is built at once; otherwise
        :meth:`TreeEditor.from_labels` computes the skeleton in a worker thread.

        Returns
        -------
        bool
            True if editing started or is starting; False if the layer was rejected
            (the reason is in the status label and a notification).
        """
        if self.is_starting:
            return False
        if self.is_editing:
            self.stop_editing()
        layer = unwrap(layer if layer is not None else self.layer_picker.value)
        try:
            self._check_layer(layer)
        except ValueError as exc:
            self._report(str(exc), error=True)
            return False
        if in_place is None:
            in_place = self.in_place_checkbox.isChecked()
        if not made_by_plugin(layer) and not in_place:
            layer = self._copy_for_editing(layer)
        analysis = plugin_info(layer).get("analysis")
        if analysis is not None and not len(getattr(analysis, "points", ())):
            analysis = None  # an empty result: vessels painted since get a skeleton
        if (
            analysis is not None
            and getattr(analysis, "mask", None) is not None
            and (analysis.mask.shape == layer.data.shape)
        ):
            try:
                # the layer's mask now, not the analysis's: brush strokes made since
                # the segmentation stay (an erased voxel must not come back on an edit)
                editor = TreeEditor(analysis, layer.data, mask=layer.data > 0, copy=False)
            except ValueError as exc:
                self._report(str(exc), error=True)
                return False
            self._begin(layer, editor, analysis)
            return True
        spacing = tuple(float(s) for s in layer.scale[-layer.data.ndim :])
        self._set_status(f"Computing the skeleton of '{layer.name}'…")
        self.start_button.setEnabled(False)
        self._worker = create_worker(
            _from_labels,
            layer.data,
            spacing,
            _connect={
                "returned": partial(self._on_built, layer),
                "errored": self._on_build_error,
                "finished": self._on_build_finished,
            },
            _start_thread=True,
        )
        return True

    def stop_editing(self) -> None:
        """Stop editing: unbind the keys and the click, drop the highlight.

        The edited point labels stay with the layer (in its metadata analysis), so
        editing can resume where it stopped.
        """
        layer, editor = self.layer, self.editor
        if layer is None or editor is None:
            return
        if self._on_mouse_drag in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.remove(self._on_mouse_drag)
        for key, previous in self._saved_keys.items():
            layer.bind_key(key, previous, overwrite=True)
        self._saved_keys = {}
        layer.events.paint.disconnect(self._on_layer_paint)
        layer.events.data.disconnect(self._on_layer_data)
        if self._analysis is not None:
            info = layer.metadata.setdefault(METADATA_KEY, {})
            info["analysis"] = self._analysis.replace(result=editor.result, trees=layer.data)
        if self._highlight is not None and self._highlight in self._viewer.layers:
            self._viewer.layers.remove(self._highlight)
        self._highlight = None
        self.editor = self.layer = self.selected = self._analysis = None
        self._timeline, self._redo_timeline = [], []
        self._set_status("Editing stopped.")
        self._update_controls()

    def _on_layer_data(self, _event=None) -> None:
        """The edited layer got a new array (Segment ran again on its image, or the user
        replaced it): the editor's array no longer shows, so stop editing, keeping the
        new data and its analysis (found by the random-use soak, issue 14)."""
        layer, editor = self.layer, self.editor
        if layer is None or editor is None or np.shares_memory(editor.trees, layer.data):
            return
        self._analysis = None  # never write the old result over the new data
        name = layer.name
        self.stop_editing()
        self._set_status(
            f"Editing stopped: '{name}' was replaced (a new segmentation?); press Start "
            "editing to edit what it holds now."
        )

    def _copy_for_editing(self, layer: Labels) -> Labels:
        """Add ``"<name> edited"``, a copy of ``layer`` the plugin owns, above it."""
        source = plugin_info(layer)
        data = np.array(layer.data, copy=True)
        name = f"{layer.name} edited"
        info = {
            "kind": "trees",
            "name": name,
            "widget": "tree_editor",
            "source": layer.name,
            "n_trees": int(source.get("n_trees", data.max(initial=0))),
            "palette": str(source.get("palette", "prediction")),
        }
        analysis = source.get("analysis")
        if analysis is not None and getattr(analysis, "trees", None) is not None:
            info["analysis"] = analysis.replace(trees=data)
        index = self._viewer.layers.index(layer) + 1
        copy = Labels(
            data,
            name=name,
            scale=layer.scale,
            translate=layer.translate,
            colormap=layer.colormap,
            opacity=layer.opacity,
            blending=layer.blending,
            axis_labels=layer.axis_labels,
            metadata={METADATA_KEY: info},
            **placement(layer),  # an oblique reference's copy lies on it too
        )
        copy.contour = layer.contour  # a reference's copy keeps its outline look
        self._choosing = True
        try:
            self._viewer.layers.insert(index, copy)
            select_layer(self.layer_picker, copy)
        finally:
            self._choosing = False
        self._auto_pick = True
        return copy

    def _check_layer(self, layer) -> None:
        if layer is None:
            raise ValueError("Pick a Labels layer of vessel trees.")
        if not isinstance(layer, Labels):
            raise ValueError(f"'{layer.name}' is not a Labels layer.")
        if layer.multiscale:
            raise ValueError(f"'{layer.name}' is multiscale; edit a single-scale layer.")
        data = layer.data
        if not isinstance(data, np.ndarray) or not data.flags.writeable:
            raise ValueError(
                f"'{layer.name}' holds a {type(data).__name__}; the editor needs a writable "
                "numpy array (load the volume into memory first)."
            )
        if data.ndim not in (2, 3):
            raise ValueError(f"'{layer.name}' is {data.ndim}D; expected 2D or 3D labels.")
        if not data.any():
            raise ValueError(
                f"'{layer.name}' has no vessels to edit (every voxel is 0); run Segment "
                "with a lower Threshold or paint vessels, then press Start editing."
            )

    def _on_built(self, layer, outcome) -> None:
        editor, error = outcome
        if error is not None:
            self._report(error, error=True)
            return
        if layer not in self._viewer.layers:
            self._report(f"'{layer.name}' was removed while its skeleton was computed.", error=True)
            return
        self._begin(layer, editor, editor.to_analysis(copy=False))

    def _on_build_error(self, exc: BaseException) -> None:
        self._report(f"Building the editor failed ({type(exc).__name__}: {exc}).", error=True)

    def _on_build_finished(self) -> None:
        self._worker = None
        self._update_controls()

    def _begin(self, layer: Labels, editor: TreeEditor, analysis) -> None:
        self.layer, self.editor, self._analysis = layer, editor, analysis
        self.selected = None
        self._extra_ids = set()
        self._timeline, self._redo_timeline = [], []
        layer.mouse_drag_callbacks.append(self._on_mouse_drag)
        bindings = {str(k): _key_handler(self, "assign", k) for k in range(1, 10)}
        bindings["Control-Z"] = _key_handler(self, "undo")
        bindings["Control-Shift-Z"] = _key_handler(self, "redo")
        self._saved_keys = {k: layer.bind_key(k, f, overwrite=True) for k, f in bindings.items()}
        layer.events.paint.connect(self._on_layer_paint)
        layer.events.data.connect(self._on_layer_data)
        layer.mode = "pan_zoom"  # clicks select branches instead of painting
        self._viewer.layers.selection.active = layer
        # the voxel ownership and the k-d tree the first click and edit need, built in
        # a worker now instead of on the GUI thread then (TreeEditor.prepare; an edit
        # made before it is done builds its own, with the same result)
        create_worker(editor.prepare, _start_thread=True)
        self._refresh_trees()
        n_pts = len(editor.labels)
        copied = plugin_info(layer).get("widget") == "tree_editor"
        what = f" (a copy of '{plugin_info(layer).get('source')}')" if copied else ""
        click = (
            "Click a vessel to select its branch."
            if n_pts
            else "It has no centerline (its pieces are too small to thin): there is no "
            "branch to select."
        )
        n_br = len(editor.branches)
        self._set_status(
            f"Editing '{layer.name}'{what}: {n_br} branch{'' if n_br == 1 else 'es'}, "
            f"{n_pts} centerline point{'' if n_pts == 1 else 's'}. {click}"
        )
        self._update_controls()

    # ------------------------------------------------------------------ selection
    def select_at(self, data_coord) -> Branch | None:
        """Select the branch nearest to a data coordinate (what a click does).

        Parameters
        ----------
        data_coord : sequence of float
            Coordinates in the layer's data space (z, y, x).

        Returns
        -------
        Branch or None
            None (and the selection cleared) when no centerline point lies within a few
            voxels of the coordinate.
        """
        editor = self._need_editor()
        c = np.asarray(data_coord, dtype=float)[-editor.points.shape[1] :]
        sp = np.asarray(editor.result.spacing)
        branch = editor.branch_at(c, max_distance=float(5.0 * sp.max()))
        self.selected = branch
        self._show_selection()
        return branch

    def _on_mouse_drag(self, layer, event):
        if event.button != 1 or self.editor is None:
            return
        moves = 0
        yield
        while event.type == "mouse_move":
            moves += 1
            yield
        if moves > _CLICK_MOVES:
            return  # a drag (pan or rotate), not a click
        coord = self._clicked_voxel(layer, event)
        if coord is None:
            self.selected = None
            self._show_selection()
            return
        self.select_at(coord)

    def _clicked_voxel(self, layer, event):
        dims = list(event.dims_displayed)
        if len(dims) == 3:
            start, end = layer.get_ray_intersections(
                event.position, event.view_direction, dims, world=True
            )
            if start is None or end is None:
                return None
            return first_labelled_on_ray(layer.data, start, end)
        return np.asarray(layer.world_to_data(event.position), dtype=float)

    def _show_selection(self) -> None:
        b, editor, layer = self.selected, self.editor, self.layer
        if b is None or editor is None:
            if self._highlight is not None and self._highlight in self._viewer.layers:
                self._highlight.data = np.zeros((0, self._highlight.ndim))
            if editor is not None:
                self._set_status("No branch there; click closer to a vessel.")
            return
        b = editor.branch(b)
        self.selected = b
        path = b.path(editor.points).astype(float)
        sp = np.asarray(editor.result.spacing)
        length = float(np.linalg.norm(np.diff(path, axis=0) * sp, axis=1).sum())
        if self._highlight is None or self._highlight not in self._viewer.layers:
            self._highlight = self._viewer.add_points(
                path,
                name=f"{layer.name} selected branch",
                scale=layer.scale,
                translate=layer.translate,
                size=2.5,
                face_color=_HIGHLIGHT,
                blending="translucent_no_depth",  # seen through the vessel in 3D
                border_color="black",
                border_width=0.1,
                metadata={METADATA_KEY: {"kind": "selected_branch", "name": layer.name}},
            )
            self._viewer.layers.selection.active = layer  # keep keys and clicks on it
        else:
            self._highlight.data = path
        self._set_status(
            f"Branch {b.index}: tree {b.tree}, {len(b)} points, length {length:.3g} "
            f"(physical units). Press 1-9 or Assign."
        )

    # ------------------------------------------------------------------ edits
    def assign(self, tree_id: int | None = None) -> Delta | None:
        """Give the selected branch (or its subtree) to ``tree_id`` (default: picker).

        Returns
        -------
        Delta or None
            None when no branch is selected.
        """
        editor = self._need_editor()
        if self.selected is None:
            self._set_status("Select a branch first (click a vessel).")
            return None
        if tree_id is None:
            tree_id = self.tree_picker.currentData()
            if tree_id is None or tree_id == _NEW_TREE:
                return self.new_tree()
        delta = editor.reassign(
            self.selected, int(tree_id), subtree=self.subtree_checkbox.isChecked()
        )
        self._after_edit(delta, "tree")
        return delta

    def new_tree(self) -> int:
        """A new tree id; the selected branch (or subtree), if any, is given to it."""
        editor = self._need_editor()
        new = max([editor.new_tree_id(), *(i + 1 for i in self._extra_ids)])
        self._extra_ids.add(new)
        if self.selected is not None:
            delta = editor.reassign(self.selected, new, subtree=self.subtree_checkbox.isChecked())
            self._after_edit(delta, "tree")
        else:
            self._refresh_trees()
        self._select_tree(new)
        return new

    def merge(self, a: int, b: int) -> Delta:
        """Merge tree ``b`` into tree ``a``."""
        delta = self._need_editor().merge_trees(int(a), int(b))
        self._after_edit(delta, "tree")
        return delta

    def repartition(self, sources: Points | None = None) -> Delta:
        """Re-run the partition from the roots in a Points layer (default: picked one).

        A ``tree`` feature on the points (as :meth:`add_sources_layer` makes) gives each
        root its tree id; points added by hand (``tree`` 0 or missing) start new trees.
        """
        editor = self._need_editor()
        layer = unwrap(sources if sources is not None else self.sources_picker.value)
        if not isinstance(layer, Points) or not len(layer.data):
            raise ValueError("Pick a Points layer with at least one source (or add one).")
        if not is_roots_layer(layer):
            kind = str(layer_kind(layer)).replace("_", " ")
            raise ValueError(
                f"'{layer.name}' is a {kind} layer, not tree roots; pick a Points layer with "
                "one point per root (Add sources layer makes one)."
            )
        duplicates = count_duplicates(layer.data)
        if duplicates:
            raise ValueError(duplicate_roots_message(duplicates, len(layer.data), layer.name))
        coords = np.array(
            [self.layer.world_to_data(layer.data_to_world(p)) for p in layer.data], dtype=float
        )[:, -editor.points.shape[1] :]
        ids = None
        if "tree" in layer.features:
            t = np.asarray(layer.features["tree"], dtype=float)
            ids = np.where(np.isfinite(t), t, 0).astype(np.int64)
        try:
            delta = editor.repartition(coords, tree_ids=ids)
        except CoincidingSourcesError as exc:
            raise ValueError(coinciding_roots_message(exc, layer.name)) from exc
        if "tree" in layer.features:
            layer.features = {"tree": editor.labels[editor.sources].astype(np.int64)}
            layer.face_color = _colours(layer.features["tree"])
        self._after_edit(delta, "tree")
        return delta

    def add_sources_layer(self) -> Points:
        """Add a Points layer with the current roots (one per tree, ``tree`` feature)."""
        editor, layer = self._need_editor(), self.layer
        src = editor.sources
        tid = editor.labels[src].astype(np.int64)
        pts = self._viewer.add_points(
            np.asarray(editor.points, dtype=float)[src],
            name=f"{layer.name} sources",
            scale=layer.scale,
            translate=layer.translate,
            size=4,
            symbol="star",
            face_color=_colours(tid),
            border_color="white",
            features={"tree": tid},
            feature_defaults={"tree": 0},
            metadata={METADATA_KEY: {"kind": "sources", "name": layer.name}},
        )
        self._viewer.layers.selection.active = layer
        self._refresh_choices()
        select_layer(self.sources_picker, pts)
        return pts

    def undo(self) -> str | None:
        """Undo the last change to the layer: a tree edit, or a napari brush stroke.

        Returns
        -------
        str or None
            ``"tree"`` or ``"paint"``; None when there is nothing to undo.
        """
        editor = self._need_editor()
        if not self._timeline:
            return None
        kind = self._timeline.pop()
        if kind == "paint":
            self.layer.undo()
        else:
            delta = editor.undo()
            self._notify(delta, undo=True)
        self._redo_timeline.append(kind)
        self._refresh_after()
        return kind

    def redo(self) -> str | None:
        """Redo the last undone change (see :meth:`undo`)."""
        editor = self._need_editor()
        if not self._redo_timeline:
            return None
        kind = self._redo_timeline.pop()
        if kind == "paint":
            self.layer.redo()
        else:
            self._notify(editor.redo())
        self._timeline.append(kind)
        self._refresh_after()
        return kind

    def _after_edit(self, delta: Delta, kind: str) -> None:
        if delta.empty:
            self._set_status(f"Nothing changed ({delta.description}).")
            return
        self._timeline.append(kind)
        self._redo_timeline.clear()
        self._notify(delta)
        self._refresh_after()
        self._set_status(
            f"{delta.description}: {delta.points.size} points, {delta.voxels.size} voxels."
        )

    def _notify(self, delta: Delta | None, *, undo: bool = False) -> None:
        if delta is None or self.layer is None:
            return
        layer = self.layer
        layer.refresh()
        if delta.voxels.size:
            self._emitting = True
            try:
                layer.events.paint(value=_atoms(delta, layer.data.shape, undo=undo))
            finally:
                self._emitting = False

    def _on_layer_paint(self, event) -> None:
        if self._emitting:
            return
        # a stroke of napari's own tools: keep it in the timeline for Undo
        self._timeline.append("paint")
        self._redo_timeline.clear()
        self._update_controls()

    def _refresh_after(self) -> None:
        self._refresh_trees()
        self._sync_companions()
        if self.selected is not None:
            self._show_selection()
        self._update_controls()

    # ------------------------------------------------------------------ colours
    def _tree_ids(self) -> list[int]:
        ids = set(np.unique(self.editor.labels).tolist()) | self._extra_ids
        ids.discard(0)
        return sorted(ids)

    def _refresh_trees(self) -> None:
        if self.editor is None:
            return
        current = self.tree_picker.currentData()
        ids = self._tree_ids()
        layer = self.layer
        info = plugin_info(layer)
        top = max(ids, default=0)
        if layer_kind(layer) == "trees" and top > int(info.get("n_trees", 0)):
            from napari.utils.colormaps import DirectLabelColormap

            palette = str(info.get("palette", "prediction"))
            layer.colormap = DirectLabelColormap(color_dict=tree_colormap(top, palette))
            info["n_trees"] = top
        self.tree_picker.blockSignals(True)
        self.tree_picker.clear()
        for i in ids:  # with a swatch of the tree's colour in the layer: the legend
            self.tree_picker.addItem(self._swatch(i), f"tree {i}", i)  # keys 1-9
        self.tree_picker.addItem("new tree", _NEW_TREE)
        self.tree_picker.blockSignals(False)
        self._select_tree(current if current in ids else (ids[0] if ids else _NEW_TREE))

    def _swatch(self, tree_id: int) -> QIcon:
        """A small square of tree ``tree_id``'s colour in the edited layer.

        The colour of one Python ``int`` (a dictionary look-up in a
        ``DirectLabelColormap``): mapping an int64 array instead made napari compile a
        numba typed dictionary on the GUI thread, 1-3 s at the first *Start editing*.
        """
        pixmap = QPixmap(14, 14)
        try:
            rgba = np.asarray(self.layer.colormap.map(int(tree_id))).reshape(-1)[:4]
            color = QColor.fromRgbF(*(float(np.clip(v, 0, 1)) for v in rgba[:3]), 1.0)
        except Exception:  # noqa: BLE001 - a colormap without map(): no swatch colour
            color = QColor(128, 128, 128)
        pixmap.fill(color)
        return QIcon(pixmap)

    def _select_tree(self, tree_id) -> None:
        index = self.tree_picker.findData(tree_id)
        if index >= 0:
            self.tree_picker.setCurrentIndex(index)

    def _sync_companions(self) -> None:
        """Recolour the plugin's centerline points and branch paths of the same result."""
        editor, layer = self.editor, self.layer
        name = plugin_info(layer).get("name")
        if name is None:
            return
        labels = editor.labels
        for other in list(self._viewer.layers):
            info = plugin_info(other)
            if other is layer or info.get("name") != name:
                continue
            kind = info.get("kind")
            if kind in ("centerline", "points") and isinstance(other, Points):
                if other.data.shape != editor.points.shape or not np.allclose(
                    other.data, editor.points
                ):
                    continue
                feats = other.features.copy()
                feats["tree"] = labels.astype(np.int64)
                other.features = feats
                other.face_color = _colours(labels)
            elif kind == "branches" and "branch" in other.features:
                branch = np.asarray(other.features["branch"], dtype=np.intp)
                if branch.size and branch.max() >= len(editor.branches):
                    continue
                tree = np.array([editor.branch(int(i)).tree for i in branch], dtype=np.int64)
                # parent and generation were counted from the roots before the edit: a
                # reassigned branch's parent can lie in another tree now (review)
                feats = other.features.drop(columns=["parent", "generation"], errors="ignore")
                feats["tree"] = tree
                other.features = feats
                if len(tree):
                    other.edge_color = _colours(tree)

    # ------------------------------------------------------------------ saving
    def save_trees(self, path) -> Path:
        """Write the edited labels where the layer lies (its scale, translate and affine
        as the file's geometry); format by suffix."""
        from napari_topo.data.io import write_volume
        from napari_topo.geometry import layer_geometry

        layer = self.layer if self.layer is not None else unwrap(self.layer_picker.value)
        if layer is None:
            raise ValueError("Pick a trees layer first.")
        data = layer.data
        return write_volume(check_folder(path), data, geometry=layer_geometry(layer, data.ndim))

    def save_graph(self, path) -> tuple[Path, ...]:
        """Write the edited centerline graph (.graphml, .swc or .csv nodes + edges), its
        world coordinates where the trees layer lies (its scale, translate, rotate,
        shear and affine)."""
        from napari_topo.geometry import layer_geometry

        editor = self._need_editor()
        path = check_folder(path)
        analysis = (
            self._analysis.replace(result=editor.result, trees=editor.trees)
            if self._analysis is not None
            else editor.to_analysis(copy=False)
        )
        layer = self.layer if self.layer is not None else unwrap(self.layer_picker.value)
        if layer is not None and np.ndim(layer.data) == analysis.ndim:
            placed = layer_geometry(layer, analysis.ndim)
            if placed.known != "none":
                analysis = analysis.replace(geometry=placed)
        return analysis.save(path)

    def _on_save_trees_clicked(self) -> None:
        name = self.layer.name if self.layer is not None else "trees"
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Save trees",
            f"{name}.nii.gz",
            "NIfTI (*.nii.gz *.nii);;TIFF (*.tif *.tiff);;NumPy (*.npy)",
        )
        if path:
            self._guard(lambda: self._set_status(f"Saved {self.save_trees(path)}."))

    def _on_save_graph_clicked(self) -> None:
        name = self.layer.name if self.layer is not None else "trees"
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Save graph",
            f"{name}.graphml",
            "GraphML (*.graphml);;SWC (*.swc);;CSV (*.csv)",
        )
        if path:
            self._guard(
                lambda: self._set_status(
                    "Saved " + ", ".join(str(p) for p in self.save_graph(path)) + "."
                )
            )

    # ------------------------------------------------------------------ pickers
    def _labels_choices(self, _widget: Any = None) -> list:
        """Labels layers, the plugin's own trees first (newest first), then other trees
        layers (a ground truth), then the rest, each group in layer-list order."""
        labels = [lay for lay in self._viewer.layers if isinstance(lay, Labels)]
        ours = [lay for lay in labels if layer_kind(lay) == "trees" and made_by_plugin(lay)]
        ranked = ours[::-1]
        ranked += [lay for lay in labels if layer_kind(lay) == "trees" and lay not in ours]
        ranked += [lay for lay in labels if layer_kind(lay) != "trees"]
        return [(lay.name, lay) for lay in ranked]

    def _points_choices(self, _widget: Any = None) -> list:
        pts = [lay for lay in self._viewer.layers if isinstance(lay, Points)]
        ranked = [lay for lay in pts if layer_kind(lay) == "sources"]
        ranked += [lay for lay in pts if layer_kind(lay) != "sources" and is_roots_layer(lay)]
        return [(lay.name, lay) for lay in ranked]

    def _refresh_choices(self, _event: Any = None) -> None:
        self._choosing = True
        try:
            for picker in (self.layer_picker, self.sources_picker):
                rebuild_picker(picker)
            if self._auto_pick and not self.is_editing:
                # the plugin's newest trees, else another trees layer (a ground truth's),
                # else none: a newcomer was offered the liver mask opened for Segment's
                # Inside, with "Start editing a copy"
                trees = [
                    c
                    for c in self.layer_picker.choices
                    if c is not None and layer_kind(c) == "trees"
                ]
                if trees:
                    select_layer(self.layer_picker, trees[0])
                else:
                    self.layer_picker.value = None
            # the roots a tree was grown from (a newcomer found '-----' there after
            # segmenting with a roots layer): the plugin's sources layers first
            roots = [c for c in self.sources_picker.choices if c is not None]
            if self._auto_sources and roots and self.sources_picker.value is None:
                select_layer(self.sources_picker, roots[0])
        finally:
            self._choosing = False
        self._update_controls()
        if self.layer is not None and self.layer not in self._viewer.layers:
            self._report(f"'{self.layer.name}' was removed; editing stopped.", error=False)
            self._drop_editor()

    def _on_layer_picked(self, _value: Any = None) -> None:
        if not self._choosing:
            self._auto_pick = False
        self._update_controls()

    def _on_sources_picked(self, _value: Any = None) -> None:
        if not self._choosing:  # the user's choice (None included) is kept
            self._auto_sources = False

    def _drop_editor(self) -> None:
        self.editor = self.layer = self.selected = self._analysis = None
        self._saved_keys = {}
        if self._highlight is not None and self._highlight in self._viewer.layers:
            self._viewer.layers.remove(self._highlight)
        self._highlight = None
        self._update_controls()

    # ------------------------------------------------------------------ helpers
    def _need_editor(self) -> TreeEditor:
        if self.editor is None:
            raise ValueError("Press Start editing first.")
        return self.editor

    def _guard(self, func, *args) -> Any:
        """Run a button's action; a ValueError or OSError becomes a one-line message."""
        try:
            return func(*args)
        except OSError as exc:
            self._report(os_error_message(exc), error=True)
            return None
        except ValueError as exc:
            self._report(str(exc), error=True)
            return None

    def _update_controls(self) -> None:
        editing = self.editor is not None
        area = getattr(self, "scroll_area", None)
        share = EDITING_SHARE if editing else DOCK_SHARE
        if area is not None and area.dock_share != share:
            # At 1366 x 768 the dock had ~85 px: after Start editing its tree picker,
            # Assign and Undo were below the fold and the dock did not grow.
            area.dock_share = share
            QTimer.singleShot(0, partial(share_dock_column, self))
        picked = unwrap(self.layer_picker.value)
        foreign = picked is not None and not made_by_plugin(picked)
        self.in_place_checkbox.setVisible(foreign and not editing)
        if editing:
            self.start_button.setText("Stop editing")
        elif foreign and not self.in_place_checkbox.isChecked():
            self.start_button.setText("Start editing a copy")
        else:
            self.start_button.setText("Start editing")
        self.start_button.setEnabled(self._worker is None and (editing or picked is not None))
        if not editing and self._worker is None and self.status_label.text() == self._idle_prompt:
            # the idle prompt follows the picker (it said "Pick a trees layer" beside one)
            label = self.start_button.text()
            self._idle_prompt = (
                f"Press {label} to edit '{picked.name}'."
                if picked is not None
                else "Pick a trees layer and press Start editing."
            )
            self.status_label.setText(self._idle_prompt)
        for w in (
            self.tree_picker,
            self.assign_button,
            self.subtree_checkbox,
            self.new_tree_button,
            self.merge_button,
            self.merge_from,
            self.merge_into,
            self.add_sources_button,
            self.repartition_button,
            self.save_graph_button,
        ):
            w.setEnabled(editing)
        self.undo_button.setEnabled(editing and bool(self._timeline))
        self.redo_button.setEnabled(editing and bool(self._redo_timeline))

    def _on_start_clicked(self) -> None:
        if self.is_editing:
            self.stop_editing()
        else:
            self.start_editing()

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _report(self, message: str, *, error: bool) -> None:
        message = one_line(message)
        self._set_status(("Error: " if error else "") + message)
        (show_error if error else show_info)(message)


# --------------------------------------------------------------------------------------
# module-level callables (no reference cycles through bound methods in keymaps)
# --------------------------------------------------------------------------------------
def _from_labels(data, spacing):
    """Worker body: build the editor on a plain labels volume. Never raises, no Qt."""
    try:
        return TreeEditor.from_labels(data, spacing, copy=False), None
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - reported to the user, traceback logged
        _LOG.exception("TreeEditor.from_labels failed")
        return None, f"Building the editor failed ({type(exc).__name__}: {exc})."


def _key_handler(widget: TreeEditorWidget, action: str, *args):
    """A named function for ``layer.bind_key`` (napari's keymaps read ``__name__``)."""

    def handler(_layer=None):
        widget._guard(getattr(widget, action), *args)

    handler.__name__ = handler.__qualname__ = f"tree_editor_{action}" + "".join(
        f"_{a}" for a in args
    )
    handler.__doc__ = {
        "assign": f"Give the selected branch to tree {args[0] if args else ''}",
        "undo": "Undo the last change to the trees layer",
        "redo": "Redo the last undone change to the trees layer",
    }[action]
    return handler


def _teardown(widget: TreeEditorWidget, *_: Any) -> None:
    try:
        widget.stop_editing()
    except RuntimeError:  # Qt parts already gone
        pass
