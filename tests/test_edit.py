"""Tests of napari_topo.trees.edit: centerline forest, branches, undoable tree edits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.sparse.csgraph import connected_components

from napari_topo.analysis import VesselAnalysis
from napari_topo.data import make_vessel_volume
from napari_topo.trees import propagate_labels, reconstruct_trees
from napari_topo.trees.edit import (
    Branch,
    Delta,
    TreeEditor,
    centerline_forest,
    subtree,
    tree_branches,
)

SHAPE = (5, 24, 18)


# ------------------------------------------------------------------------------ fixtures
def _hand_points():
    """Two trees in the plane z = 2, as named runs of points.

    Tree 1: a trunk along x ending in the junction J = (2, 12, 10); branch A goes up in
    y to a second junction (2, 7, 10) where C (x up) and D (x down) start; branch B goes
    down in y. Tree 2: a separate line at y = 21.
    """
    runs = {
        "trunk": [(2, 12, x) for x in range(1, 11)],
        "A": [(2, 12 - k, 10) for k in range(1, 6)],
        "B": [(2, 12 + k, 10) for k in range(1, 6)],
        "C": [(2, 7, 10 + k) for k in range(1, 5)],
        "D": [(2, 7, 10 - k) for k in range(1, 5)],
        "other": [(2, 21, x) for x in range(1, 16)],
    }
    pts, index, start = [], {}, 0
    for key, run in runs.items():
        pts += run
        index[key] = np.arange(start, start + len(run))
        start += len(run)
    return np.array(pts), index


def _hand_case(spacing=None, neighbourhood=1.01):
    pts, index = _hand_points()
    seeds = np.zeros(SHAPE, bool)
    seeds[tuple(pts.T)] = True
    mask = ndi.binary_dilation(seeds, np.ones((3, 3, 3), bool))
    res = reconstruct_trees(
        pts,
        sources=[index["trunk"][0], index["other"][0]],
        neighbourhood=neighbourhood,
        spacing=spacing,
    )
    return res, res.to_volume(mask), mask, index


@pytest.fixture
def case():
    return _hand_case()


@pytest.fixture(scope="module")
def topnet_analysis():
    vol = make_vessel_volume((40, 40, 40), n_trees=2, seed=2, randomize_image=False)
    outputs = {
        "vessel": vol.mask.astype(np.float32),
        "centerness": ndi.distance_transform_edt(~vol.centerline).astype(np.float32),
        "embedding": np.moveaxis(np.eye(8, dtype=np.float32)[vol.trees] * 10.0, -1, 0),
    }
    return VesselAnalysis.from_outputs(outputs, sources=vol.sources, centerline="nms")


# ------------------------------------------------------------------------ forest/branches
def test_forest_is_the_centerline_tree_not_the_shortest_path_star(case):
    res, _, _, index = case
    parents = centerline_forest(res)
    roots = np.flatnonzero(parents < 0)
    assert roots.tolist() == [index["trunk"][0], index["other"][0]]
    # every non-root point hangs off a 6-neighbour: the forest follows the vessels
    child = np.flatnonzero(parents >= 0)
    steps = np.abs(res.points[child] - res.points[parents[child]]).sum(axis=1)
    assert (steps == 1).all()
    # joined up to 3 voxels apart (as TopNet's points are), the same forest comes out,
    # while the Dijkstra predecessors become a star of long hops
    wide = _hand_case(neighbourhood=3.0)[0]
    assert np.array_equal(centerline_forest(wide), parents)
    hops = np.abs(wide.points[child] - wide.points[wide.predecessors[child]]).max(axis=1)
    assert hops.max() >= 2


def test_tree_branches_split_at_junctions(case):
    res, _, _, index = case
    found = tree_branches(res)
    assert all(isinstance(b, Branch) for b in found)
    by_set = {frozenset(b.points.tolist()): b for b in found}
    expected = {key: frozenset(index[key].tolist()) for key in index}
    assert set(by_set) == set(expected.values())  # exactly the six named runs
    junction, junction2 = index["trunk"][-1], index["A"][-1]
    assert by_set[expected["trunk"]].upstream == -1
    assert by_set[expected["A"]].upstream == junction
    assert by_set[expected["B"]].upstream == junction
    assert by_set[expected["C"]].upstream == junction2
    assert by_set[expected["D"]].upstream == junction2
    assert by_set[expected["other"]].tree == 2 and by_set[expected["A"]].tree == 1
    # points run upstream to downstream, and every point is in exactly one branch
    parents = centerline_forest(res)
    for b in found:
        assert np.array_equal(parents[b.points[1:]], b.points[:-1])
        assert len(b.path(res.points)) == len(b) + (b.upstream >= 0)
    assert sorted(np.concatenate([b.points for b in found]).tolist()) == list(
        range(len(res.points))
    )


def test_subtree_function():
    parents = [-1, 0, 1, 1, 0, 4, -1]
    assert subtree(parents, 0).tolist() == [0, 1, 2, 3, 4, 5]
    assert subtree(parents, 4).tolist() == [4, 5]
    assert subtree(parents, 6).tolist() == [6]
    with pytest.raises(ValueError, match="point"):
        subtree(parents, 7)
    with pytest.raises(ValueError, match="parents"):
        subtree([0.5, -1], 0)


# --------------------------------------------------------------------------- branch_at
def test_branch_at_returns_the_branch_under_a_voxel(case):
    res, trees, _, index = case
    ed = TreeEditor(res, trees)
    on_a = ed.branch_at((2, 9, 10))
    assert set(on_a.points.tolist()) == set(index["A"].tolist())
    assert on_a.tree == 1
    assert ed.branch_at((2, 9, 11)).index == on_a.index  # beside the centerline
    assert ed.branch_at((2.3, 9.4, 9.6)).index == on_a.index  # float click coordinates
    # a junction belongs to the branch that leads into it
    assert set(ed.branch_at((2, 12, 10)).points.tolist()) == set(index["trunk"].tolist())
    assert set(ed.branch_at((2, 21, 14)).points.tolist()) == set(index["other"].tolist())
    assert ed.branch_at((0, 0, 17), max_distance=1.0) is None
    assert ed.branch_at((0, 0, 17)) is not None
    with pytest.raises(ValueError, match="voxel"):
        ed.branch_at((1, 2))


# ------------------------------------------------------------------------------ edits
@pytest.mark.parametrize("spacing", [None, (2.0, 1.0, 0.5)])
def test_reassign_changes_exactly_the_branch(spacing):
    res, trees, mask, index = _hand_case(spacing=spacing)
    ed = TreeEditor(res, trees)
    before = trees.copy()
    a = ed.branch_at((2, 9, 10))
    delta = ed.reassign(a, 2)
    assert isinstance(delta, Delta) and ed.can_undo
    assert np.array_equal(delta.points, np.sort(index["A"]))
    assert (delta.old_labels == 1).all() and (delta.new_labels == 2).all()
    expected = res.labels.copy()
    expected[index["A"]] = 2
    assert np.array_equal(ed.labels, expected)
    # the volume is what propagating the new point labels gives, and only the changed
    # voxels are stored
    again = propagate_labels(expected, res.points, mask, spacing=spacing)
    assert np.array_equal(ed.trees, again)
    assert np.array_equal(np.flatnonzero(ed.trees != before), np.sort(delta.voxels))
    assert (delta.old_values == 1).all() and (delta.new_values == 2).all()
    assert 0 < delta.size < 0.1 * trees.size
    assert np.array_equal(trees, before)  # the caller's volume was copied
    assert np.array_equal(res.labels[index["A"]], [1] * 5)  # and the result untouched


def test_prepare_builds_what_edits_need_and_changes_no_result(case):
    """prepare() (what the Tree editor runs in a worker) gives the same edits."""
    res, trees, _, _ = case
    plain, prepared = TreeEditor(res, trees), TreeEditor(res, trees)
    assert not prepared.prepared
    assert prepared.prepare() is prepared and prepared.prepared
    assert np.array_equal(prepared.trees, trees)  # nothing edited
    for ed in (plain, prepared):
        ed.reassign(ed.branch_at((2, 9, 10)), 2)
    assert plain.prepared  # a first edit builds it too
    assert np.array_equal(plain.trees, prepared.trees)
    assert np.array_equal(plain.labels, prepared.labels)
    assert np.array_equal(plain.history[-1].voxels, prepared.history[-1].voxels)


def test_erased_voxels_stay_erased(case):
    # a user erases part of a branch (napari's eraser on the edited layer), then gives
    # the branch, and then everything by re-partition, to other trees
    res, trees, mask, index = case
    vol = trees.copy()
    ed = TreeEditor(res, vol, copy=False)
    a = ed.branch_at((2, 9, 10))
    owned = np.flatnonzero(vol == 1)
    erased = owned[: owned.size // 3]
    vol.flat[erased] = 0
    ed.reassign(a, 2, subtree=True)
    assert (vol.flat[erased] == 0).all()
    ed.repartition(res.points[res.sources][::-1])  # roots swapped: every id changes
    assert (vol.flat[erased] == 0).all()
    ed.undo()
    ed.undo()
    assert (vol.flat[erased] == 0).all() and (vol[mask].size - np.count_nonzero(vol)) == erased.size


def test_reassign_subtree_takes_everything_downstream(case):
    res, trees, mask, index = case
    ed = TreeEditor(res, trees)
    a = ed.branch_at((2, 10, 10))
    new = ed.new_tree_id()
    assert new == 3
    delta = ed.reassign(a, new, subtree=True)
    down = np.sort(np.r_[index["A"], index["C"], index["D"]])
    assert np.array_equal(delta.points, down)
    assert np.array_equal(np.flatnonzero(ed.labels == 3), down)
    assert (ed.labels[index["B"]] == 1).all() and (ed.labels[index["trunk"]] == 1).all()
    assert np.array_equal(ed.trees, propagate_labels(ed.labels, res.points, mask))
    assert ed.new_tree_id() == 4
    assert ed.branch(a).tree == 3  # the branch reports its current tree


def test_undo_restores_bit_for_bit_and_redo_reapplies(case):
    res, trees, _, index = case
    ed = TreeEditor(res, trees)
    states = [(ed.labels.copy(), ed.trees.copy())]
    ed.reassign(ed.branch_at((2, 14, 10)), 2)
    states.append((ed.labels.copy(), ed.trees.copy()))
    ed.reassign(ed.branch_at((2, 9, 10)), ed.new_tree_id(), subtree=True)
    states.append((ed.labels.copy(), ed.trees.copy()))
    ed.merge_trees(1, 3)
    states.append((ed.labels.copy(), ed.trees.copy()))
    assert len(ed.history) == 3 and not ed.can_redo
    for labels, vol in reversed(states[:-1]):
        assert ed.undo() is not None
        assert np.array_equal(ed.labels, labels) and np.array_equal(ed.trees, vol)
        assert ed.trees.dtype == trees.dtype
    assert ed.undo() is None and not ed.can_undo
    assert np.array_equal(ed.trees, trees) and np.array_equal(ed.labels, res.labels)
    for labels, vol in states[1:]:
        assert ed.redo() is not None
        assert np.array_equal(ed.labels, labels) and np.array_equal(ed.trees, vol)
    assert ed.redo() is None
    # a new edit after an undo drops the redo stack
    ed.undo()
    assert ed.can_redo
    ed.reassign(ed.branch_at((2, 21, 3)), 1)
    assert not ed.can_redo


def test_merge_trees(case):
    res, trees, _, index = case
    ed = TreeEditor(res, trees)
    delta = ed.merge_trees(1, 2)
    assert np.array_equal(delta.points, index["other"])
    assert (ed.labels == 1).all()
    assert np.array_equal(ed.trees, (trees > 0).astype(trees.dtype))
    assert delta.voxels.size == np.count_nonzero(trees == 2)
    with pytest.raises(ValueError, match="itself"):
        ed.merge_trees(1, 1)
    with pytest.raises(ValueError, match="nothing to merge"):
        ed.merge_trees(1, 2)  # tree 2 is gone now
    ed.undo()
    assert np.array_equal(ed.trees, trees)


def test_apply_checks_the_delta_fits_the_state(case):
    res, trees, _, _ = case
    ed = TreeEditor(res, trees)
    a = ed.branch_at((2, 9, 10))
    preview = ed.reassign(a, 2, apply=False)
    assert not preview.empty and not ed.can_undo
    assert np.array_equal(ed.trees, trees)  # nothing applied yet
    ed.apply(preview)
    assert ed.can_undo and (ed.labels[preview.points] == 2).all()
    with pytest.raises(ValueError, match="current state"):
        ed.apply(preview)  # already applied: its old values no longer match
    with pytest.raises(ValueError, match="Delta"):
        ed.apply("not a delta")
    # an edit that changes nothing is returned but not pushed
    ed2 = TreeEditor(res, trees)
    same = ed2.reassign(a, 1)
    assert same.empty and not ed2.can_undo


def test_in_place_editing_and_validation(case):
    res, trees, _, _ = case
    vol = trees.copy()
    ed = TreeEditor(res, vol, copy=False)
    ed.reassign(ed.branch_at((2, 9, 10)), 2)
    assert ed.trees is vol and not np.array_equal(vol, trees)
    with pytest.raises(ValueError, match="TreeResult"):
        TreeEditor("labels", trees)
    with pytest.raises(ValueError, match="integer label volume"):
        TreeEditor(res, trees.astype(float))
    with pytest.raises(ValueError, match="writable"):
        TreeEditor(res, trees.tolist(), copy=False)
    with pytest.raises(ValueError, match="tree_id"):
        ed.reassign(0, 0)
    with pytest.raises(ValueError, match="dtype"):
        TreeEditor(res, trees.astype(np.uint8)).reassign(0, 300)
    with pytest.raises(ValueError, match="branch"):
        ed.branch(len(ed.branches))


# ------------------------------------------------------------------ synthetic pipeline
def test_editing_a_topnet_analysis(topnet_analysis):
    an = topnet_analysis
    assert (an.result.labels > 0).all()
    ed = TreeEditor(an)
    # a branch of tree 1 that hangs off a junction: split its subtree into a new tree
    b = next(b for b in ed.branches if b.upstream >= 0 and b.tree == 1 and len(b) > 3)
    mid = an.points[b.points[len(b) // 2]]
    assert ed.branch_at(mid).index == b.index
    new = ed.new_tree_id()
    delta = ed.reassign(b, new, subtree=True)
    # exactly the points whose parent chain passes through the branch's first point
    parents = ed.parents
    below = []
    for i in range(len(parents)):
        j = i
        while j >= 0 and j != b.points[0]:
            j = parents[j]
        below.append(j == b.points[0])
    assert np.array_equal(delta.points, np.flatnonzero(below))
    assert np.array_equal(ed.trees, propagate_labels(ed.labels, an.points, an.mask))
    assert delta.size < 0.1 * an.trees.size
    assert np.count_nonzero(ed.trees == new) == delta.voxels.size > 0
    edited = ed.to_analysis()
    assert np.array_equal(edited.trees, ed.trees) and (edited.result.labels == new).any()
    assert not (an.trees == new).any()  # the analysis itself is not modified
    ed.undo()
    assert np.array_equal(ed.trees, an.trees) and np.array_equal(ed.labels, an.result.labels)


# ------------------------------------------------------------------------ repartition
def _state(ed):
    return ed.labels.copy(), ed.trees.copy(), ed.sources.copy()


def _same_state(ed, state):
    labels, vol, sources = state
    return (
        np.array_equal(ed.labels, labels)
        and np.array_equal(ed.trees, vol)
        and ed.trees.dtype == vol.dtype
        and np.array_equal(ed.sources, sources)
    )


def test_repartition_from_deleted_added_and_moved_sources(case):
    res, trees, mask, index = case
    pts = res.points
    ed = TreeEditor(res, trees)
    start = _state(ed)
    trunk0, other0 = pts[index["trunk"][0]], pts[index["other"][0]]

    # deleted: one root left; the separate line has none and joins the nearest root
    d = ed.repartition([trunk0])
    assert (ed.labels == 1).all()
    assert np.array_equal(ed.trees, (trees > 0).astype(trees.dtype))
    assert np.array_equal(np.sort(d.points), np.sort(index["other"]))
    assert np.array_equal(d.voxels, np.flatnonzero(trees == 2))
    assert ed.sources.tolist() == [index["trunk"][0]]
    assert ed.undo() is d and _same_state(ed, start)

    # added: a third root at the tip of C (float coordinates snap to the nearest point)
    c_tip = index["C"][-1]
    d = ed.repartition([trunk0, other0, pts[c_tip] + [0.3, -0.2, 0.4]])
    assert ed.sources.tolist() == [index["trunk"][0], index["other"][0], c_tip]
    again = reconstruct_trees(pts, sources=ed.sources, neighbourhood=1.01)
    assert np.array_equal(ed.labels, again.labels)  # the same multi-source Dijkstra
    assert (ed.labels[index["C"]] == 3).all() and (ed.labels[index["D"]] == 3).all()
    # the junction J is 9 steps from both roots (a tie); upstream of it stays tree 1
    assert (ed.labels[index["trunk"][:-1]] == 1).all() and ed.labels[index["A"][-1]] == 3
    assert (ed.labels[index["other"]] == 2).all()
    assert np.array_equal(ed.trees, propagate_labels(ed.labels, pts, mask))
    assert np.array_equal(np.flatnonzero(ed.trees != trees), d.voxels)
    assert (d.new_values == 3).all() and (d.old_values == 1).all()
    after_add = _state(ed)
    ed.undo()
    assert _same_state(ed, start)
    ed.redo()
    assert _same_state(ed, after_add)
    ed.undo()

    # moved: tree 2's root onto the tip of B. Tree 2 now grows down B from the tip and
    # the separate line, with no root left, goes to the straight-line nearest root (B's)
    b_tip = index["B"][-1]
    d = ed.repartition([trunk0, pts[b_tip]], tree_ids=[1, 2])
    assert (ed.labels[index["other"]] == 2).all()
    # along the graph B's tip is nearer than the trunk's start to B, A, C and D (5 vs 9
    # steps to the junction J), so they all go to tree 2; the trunk splits halfway
    for key in ("A", "B", "C", "D"):
        assert (ed.labels[index[key]] == 2).all()
    assert (ed.labels[index["trunk"][:5]] == 1).all() and ed.labels[index["trunk"][-1]] == 2
    assert np.array_equal(ed.trees, propagate_labels(ed.labels, pts, mask))
    ed.undo()
    assert _same_state(ed, start)

    # a root moved along its own tree keeps the tree's id and changes nothing else
    d = ed.repartition([trunk0, pts[index["other"][-1]]])
    assert d.size == 0 and not d.empty and ed.can_undo
    assert np.array_equal(ed.labels, start[0])
    ed.undo()
    assert _same_state(ed, start)


def test_repartition_validation_and_preview(case):
    res, trees, _, index = case
    ed = TreeEditor(res, trees)
    pts = res.points
    preview = ed.repartition([pts[index["trunk"][0]]], apply=False)
    assert not ed.can_undo and np.array_equal(ed.trees, trees)
    ed.apply(preview)
    assert (ed.labels == 1).all()
    with pytest.raises(ValueError, match="current state"):
        ed.apply(preview)
    ed.undo()
    # explicit ids; <= 0 asks for a new one
    ed.repartition([pts[index["trunk"][0]], pts[index["other"][0]]], tree_ids=[5, 0])
    assert set(np.unique(ed.labels).tolist()) == {5, 6}
    with pytest.raises(ValueError, match="at least one root"):
        ed.repartition(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="same one|distinct"):
        ed.repartition([pts[0], pts[0] + 0.1])
    with pytest.raises(ValueError, match="repeat"):
        ed.repartition([pts[0], pts[-1]], tree_ids=[2, 2])
    with pytest.raises(ValueError, match="one per source"):
        ed.repartition([pts[0], pts[-1]], tree_ids=[2])
    with pytest.raises(ValueError, match="finite"):
        ed.repartition([[np.nan, 0, 0]])


# ------------------------------------------------------------------------ from_labels
def test_from_labels_keeps_any_label_volume():
    vol = make_vessel_volume((32, 32, 32), n_trees=2, seed=1, randomize_image=False)
    user = np.where(vol.trees == 2, 7, vol.trees).astype(np.uint16)  # ids 1 and 7
    ed = TreeEditor.from_labels(user, spacing=(2.0, 1.0, 1.0))
    assert np.array_equal(ed.trees, user) and ed.trees is not user
    assert ed.trees.dtype == np.uint16
    assert np.array_equal(ed.labels, user[tuple(ed.points.T)])  # every point keeps its id
    assert sorted(ed.labels[ed.sources].tolist()) == [1, 7]
    assert (ed.labels > 0).all()
    # an edit changes only the voxels of the branch, and undo restores bit for bit
    b = next(b for b in ed.branches if b.tree == 7 and len(b) > 2)
    d = ed.reassign(b, 1)
    assert d.voxels.size > 0 and (ed.trees.flat[d.voxels] == 1).all()
    changed = np.flatnonzero(ed.trees != user)
    assert np.array_equal(changed, np.sort(d.voxels))
    ed.undo()
    assert np.array_equal(ed.trees, user)
    # repartition from the editor's own roots keeps the ids (default tree_ids)
    ed.repartition(ed.points[ed.sources])
    assert set(np.unique(ed.labels).tolist()) == {1, 7}
    # the graph exports work through the analysis it was built on
    an = ed.to_analysis()
    assert an.method == "labels" and an.spacing == (2.0, 1.0, 1.0)
    # in place, for a napari layer's data
    data = user.copy()
    ed2 = TreeEditor.from_labels(data, copy=False)
    ed2.reassign(next(b for b in ed2.branches if b.tree == 1), ed2.new_tree_id())
    assert ed2.trees is data and not np.array_equal(data, user)
    with pytest.raises(ValueError, match="integer label volume"):
        TreeEditor.from_labels(user.astype(float))
    with pytest.raises(ValueError, match="non-negative"):
        TreeEditor.from_labels(-np.ones((4, 4, 4), int))


def test_repartition_with_unchanged_roots_changes_nothing():
    # a segmentation broken into pieces (two slabs cut out of the true mask, as a model
    # that misses faint stretches does): the re-run must attach the pieces exactly as the
    # reconstruction did
    from napari_topo.analysis import VesselAnalysis

    v = make_vessel_volume((48, 48, 48), n_trees=3, seed=3)
    prob = v.mask.astype(np.float32)
    prob[20:22] = 0.0
    prob[:, 30:32] = 0.0
    a = VesselAnalysis.from_outputs({"vessel": prob}, sources=v.sources, min_size=0)
    res = a.result
    assert (connected_components(res.adjacency, directed=False)[0]) > len(res.sources)
    ed = TreeEditor(a)
    delta = ed.repartition(res.points[res.sources])
    assert delta.points.size == 0 and delta.voxels.size == 0
