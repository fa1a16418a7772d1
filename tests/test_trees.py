"""Tests of napari_topo.trees: centerline graphs, NMS, radii, sources, reconstruction."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_topo.data import make_vessel_volume
from napari_topo.topology.metrics import tree_accuracy
from napari_topo.topology.skeleton import skeletonize
from napari_topo.trees import (
    NEIGHBOURS_26,
    TreeResult,
    branches,
    centerline_points_nms,
    detect_sources,
    label_switches,
    propagate_labels,
    radius_at,
    reconstruct_trees,
    skeleton_graph,
    trees_from_skeleton,
)


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def vol():
    # seed 3 has a tree whose thick branch passes next to a face, as thick as its root
    return make_vessel_volume((64, 64, 64), n_trees=3, seed=3, randomize_image=False)


@pytest.fixture(scope="module")
def near():
    # many near-contacts: dilating the mask by 2 merges the three trees into one
    return make_vessel_volume(
        (48, 48, 48), n_trees=3, seed=5, randomize_image=False, near_touch_prob=0.5
    )


def _centerline_points(v):
    pts = np.argwhere(v.centerline)
    return pts, v.trees[tuple(pts.T)]


def _oracle_embedding(tree_ids):
    """8-d embedding: one-hot tree id times 10, so trees are 10*sqrt(2) apart."""
    return np.eye(8)[tree_ids] * 10.0


def _cheb(a, b):
    """Chebyshev distance matrix between two point sets."""
    return np.abs(np.asarray(a)[:, None, :] - np.asarray(b)[None, :, :]).max(axis=-1)


# ---------------------------------------------------------------------- skeleton graph
def test_skeleton_graph_lengths_and_attributes():
    skel = np.zeros((3, 5, 6), bool)
    skel[1, 2, :3] = True  # (1,2,0)-(1,2,1)-(1,2,2)
    skel[1, 1, 3] = True  # diagonal step in (y, x)
    skel[2, 1, 4] = True  # diagonal step in (z, x)
    g = skeleton_graph(skel, spacing=(3.0, 1.0, 2.0))
    assert set(g.nodes) == {tuple(p) for p in np.argwhere(skel).tolist()}
    assert g.number_of_edges() == 4
    assert g.nodes[(1, 2, 0)]["coord"] == (1, 2, 0)
    assert g.edges[(1, 2, 0), (1, 2, 1)]["length"] == pytest.approx(2.0)
    assert g.edges[(1, 2, 2), (1, 1, 3)]["length"] == pytest.approx(math.sqrt(1 + 4))
    assert g.edges[(1, 1, 3), (2, 1, 4)]["length"] == pytest.approx(math.sqrt(9 + 4))
    assert g.graph["spacing"] == (3.0, 1.0, 2.0) and g.graph["shape"] == (3, 5, 6)
    assert skeleton_graph(np.zeros((4, 4, 4), bool)).number_of_nodes() == 0


def test_skeleton_graph_of_synthetic_centerline_is_one_tree_per_vessel_tree(vol):
    g = skeleton_graph(vol.centerline)
    assert g.number_of_nodes() == np.count_nonzero(vol.centerline)
    # a subgraph of the full 26-neighbour graph, with the same lengths ...
    for u, w, d in g.edges(data=True):
        assert vol.graph.edges[u, w]["length"] == pytest.approx(d["length"])

    # ... from which skan's spanning trees of junction clusters remove most triangles
    def n_cycles(h):
        return h.number_of_edges() - h.number_of_nodes() + nx.number_connected_components(h)

    assert n_cycles(g) < n_cycles(vol.graph) / 4
    comps = list(nx.connected_components(g))
    assert len(comps) == vol.n_trees
    for c in comps:
        assert len({int(vol.trees[n]) for n in c}) == 1


def test_branches_table():
    skel = np.zeros((3, 9, 9), bool)
    skel[1, 4, :] = True
    skel[1, :4, 4] = True  # a T: three arms of 4 voxel steps meeting at (1, 4, 4)
    t = branches(skel, spacing=(1.0, 1.0, 2.0))
    assert list(t.columns) == [
        "branch_id", "skeleton_id", "src_z", "src_y", "src_x",
        "dst_z", "dst_y", "dst_x", "length", "euclidean_length", "type",
    ]  # fmt: skip
    assert len(t) == 3 and set(t["type"]) == {"tip-junction"}
    ends = {tuple(r) for r in t[["src_z", "src_y", "src_x"]].to_numpy().tolist()}
    ends |= {tuple(r) for r in t[["dst_z", "dst_y", "dst_x"]].to_numpy().tolist()}
    assert ends == {(1, 0, 4), (1, 4, 0), (1, 4, 8), (1, 4, 4)}
    # the arm along y is 4 long, the two arms along x are 4 voxels of 2 units
    assert sorted(t["length"]) == pytest.approx([4.0, 8.0, 8.0])
    total = sum(d["length"] for *_, d in skeleton_graph(skel, (1, 1, 2)).edges(data=True))
    assert t["length"].sum() == pytest.approx(total)
    empty = branches(np.zeros((4, 4, 4), bool))
    assert len(empty) == 0 and list(empty.columns) == list(t.columns)


# ------------------------------------------------------------------------------- NMS
def test_nms_finds_the_minima_of_a_hand_made_map():
    d = np.full((3, 5, 12), 9.0)
    mask = np.zeros(d.shape, bool)
    mask[:, 1:4, :] = True
    d[1, 2, :] = [0.8, 0.5, 0.7, 0.9, 0.9, 0.3, 0.6, 0.9, 0.95, 0.9, 0.4, 0.8]
    d[1, 0, 10] = 0.0  # lower, but outside the mask: must neither count nor suppress
    pts = centerline_points_nms(d, mask, size=3, max_distance=1.0)
    assert pts.tolist() == [[1, 2, 1], [1, 2, 5], [1, 2, 10]]
    assert len(centerline_points_nms(d, mask, size=3, max_distance=None)) == 3
    assert centerline_points_nms(d, mask, size=3, max_distance=0.45).tolist() == [
        [1, 2, 5],
        [1, 2, 10],
    ]
    # a wider window suppresses the minima within size // 2 of a smaller one
    assert len(centerline_points_nms(d, mask, size=7)) == 3  # 0.5 is 4 from 0.3
    assert centerline_points_nms(d, mask, size=9).tolist() == [[1, 2, 5], [1, 2, 10]]
    assert centerline_points_nms(d, mask, size=11).tolist() == [[1, 2, 5]]


def test_nms_on_the_true_distance_returns_the_centerline(vol):
    dist = ndi.distance_transform_edt(~vol.centerline)
    pts = centerline_points_nms(dist, vol.mask)
    # the distance is 0 on a plateau, the whole centerline: every voxel of it is kept
    assert np.array_equal(pts, np.argwhere(vol.centerline))


def test_nms_on_a_noisy_distance_gives_sparse_points_near_the_centerline(vol):
    dist = ndi.distance_transform_edt(~vol.centerline)
    noisy = dist + np.random.default_rng(0).uniform(0.0, 0.3, dist.shape)
    pts = centerline_points_nms(noisy, vol.mask, size=5, max_distance=1.0)
    n_line = np.count_nonzero(vol.centerline)
    assert 0.1 * n_line < len(pts) < 0.5 * n_line
    assert (dist[tuple(pts.T)] <= 1.0).all()  # near the true centerline
    # no two minima inside one 5x5x5 window (continuous noise: no ties)
    cheb = _cheb(pts, pts)
    np.fill_diagonal(cheb, 99)
    assert cheb.min() > 2
    # and they cover it: most centerline voxels have a point within 4 voxels
    seeds = np.zeros(vol.shape, bool)
    seeds[tuple(pts.T)] = True
    gap = ndi.distance_transform_edt(~seeds)[vol.centerline]
    assert np.median(gap) <= 2.5 and np.quantile(gap, 0.95) <= 5.0


# ----------------------------------------------------------------------------- radius
def test_radius_at_reads_the_edt_with_spacing():
    slab = np.zeros((9, 4, 4), bool)
    slab[2:7] = True  # 5 voxels thick along z, open in y and x (border is no background)
    assert radius_at([[4, 1, 1]], slab).tolist() == [3.0]
    assert radius_at([[4, 1, 1]], slab, spacing=(2.0, 1.0, 1.0)).tolist() == [6.0]
    assert radius_at([[4, 1, 1], [0, 0, 0]], slab, spacing=0.5).tolist() == [1.5, 0.0]


def test_radius_at_matches_the_synthetic_radius(vol):
    pts, _ = _centerline_points(vol)
    err = radius_at(pts, vol.mask) - vol.radius[tuple(pts.T)]
    assert abs(np.median(err)) < 0.5
    assert np.quantile(np.abs(err), 0.95) < 1.5


# ---------------------------------------------------------------------------- sources
def test_detect_sources_finds_the_true_roots(vol):
    pts, _ = _centerline_points(vol)
    rad = radius_at(pts, vol.mask)
    for n in (vol.n_trees, None):
        found = detect_sources(pts, rad, vol.shape, n=n, neighbourhood=NEIGHBOURS_26)
        assert len(found) == vol.n_trees
        d = _cheb(pts[found], vol.sources)
        assert (d.min(axis=0) <= 2).all() and (d.min(axis=1) <= 2).all()
    # with n larger than the number of trees, extra roots come after one root per tree
    extra = detect_sources(pts, rad, vol.shape, n=vol.n_trees + 1)
    assert len(extra) == vol.n_trees + 1
    assert (_cheb(pts[extra[: vol.n_trees]], vol.sources).min(axis=0) <= 2).all()


def test_detect_sources_on_a_skeleton_that_stops_short_of_the_face(vol):
    # a skeleton retracts about one radius from the face a vessel leaves by
    pts = np.argwhere(skeletonize(vol.mask))
    assert _cheb(pts, vol.sources).min(axis=0).min() >= 3
    rad = radius_at(pts, vol.mask)
    found = detect_sources(pts, rad, vol.shape)
    # one root per tree, at a face; on this volume one tree's first branch leaves the
    # volume as thick as its root and is taken for it (the heuristic's known limit)
    assert sorted(vol.trees[tuple(pts[found].T)]) == [1, 2, 3]
    assert (np.minimum(pts[found], 63 - pts[found]).min(axis=1) <= rad[found] + 3).all()
    assert (_cheb(pts[found], vol.sources).min(axis=0) <= 6).sum() >= 2
    # without the radius allowance, the roots are missed
    thin = detect_sources(pts, np.zeros(len(pts)), vol.shape, n=vol.n_trees)
    assert (_cheb(pts[thin], vol.sources).min(axis=0) > 6).all()


def test_detect_sources_prefers_a_vessel_entering_through_a_face():
    root = [[15, 15, x] for x in range(15)]  # enters through the face x = 0
    branch = [[15, y, 14] for y in range(16, 27)]  # thicker, stops 3 voxels from y = 29
    pts = np.array(root + branch)
    rad = np.r_[np.full(len(root), 3.0), np.full(len(branch), 3.2)]
    assert detect_sources(pts, rad, (30, 30, 30)).tolist() == [0]
    # both are border patches; the root still ranks first when two are asked for
    assert detect_sources(pts, rad, (30, 30, 30), n=2).tolist() == [0, len(pts) - 1]


def test_detect_sources_second_root_in_a_merged_group():
    # one connected group with two vessels entering through opposite faces
    line = [[5, 5, x] for x in range(20)]
    pts = np.array(line)
    rad = np.r_[np.full(10, 3.0), np.full(10, 2.0)]
    one = detect_sources(pts, rad, (11, 11, 20), border=0)
    two = detect_sources(pts, rad, (11, 11, 20), n=2, border=0)
    assert one.tolist() == [0]
    assert two.tolist() == [0, 19]
    assert len(detect_sources(pts, rad, (11, 11, 20), n=5, border=0)) == 2  # 2 patches


# ----------------------------------------------------------------------- reconstruction
def test_oracle_embedding_reconstructs_the_trees_exactly(vol):
    pts, tid = _centerline_points(vol)
    res = reconstruct_trees(pts, _oracle_embedding(tid), vol.sources)
    assert isinstance(res, TreeResult) and res.n_trees == vol.n_trees
    # sources row k is tree k + 1 in both the ground truth and the result
    assert np.array_equal(res.labels, tid)
    labels = propagate_labels(res.labels, pts, vol.mask)
    assert tree_accuracy(labels, vol.trees, vol.centerline) == 1.0
    assert np.array_equal(labels > 0, vol.mask)
    assert label_switches(labels, vol.graph) == 0
    # the same with the embedding given as an (E, Z, Y, X) volume
    emb_vol = np.moveaxis(_oracle_embedding(vol.trees), -1, 0)
    again = reconstruct_trees(pts, emb_vol, vol.sources)
    assert np.array_equal(again.labels, res.labels)


def test_embedding_separates_trees_that_a_merged_mask_joins(near):
    merged = ndi.binary_dilation(near.mask, iterations=2)
    assert ndi.label(merged, np.ones((3, 3, 3)))[1] == 1  # the prediction merged them
    base = trees_from_skeleton(merged, near.sources)
    base_vol = base.to_volume(merged)
    assert tree_accuracy(base_vol, near.trees, near.centerline) < 0.9
    assert label_switches(base_vol, near.graph) > 0
    # oracle embedding at the same skeleton points: the tree of the nearest true voxel
    nearest = ndi.distance_transform_edt(near.trees == 0, return_indices=True)[1]
    tid = near.trees[tuple(nearest)][tuple(base.points.T)]
    res = reconstruct_trees(
        base.points, _oracle_embedding(tid), near.sources, neighbourhood=NEIGHBOURS_26
    )
    labels = res.to_volume(merged)
    assert tree_accuracy(labels, near.trees, near.centerline) == 1.0
    assert label_switches(labels, near.graph) == 0


def test_two_touching_lines_need_the_embedding():
    a = [[0, 0, x] for x in range(10)]
    b = [[0, 1, x] for x in range(10)]
    pts = np.array(a + b)
    emb = np.repeat([[0.0, 0.0], [0.0, 3.0]], 10, axis=0)  # 3 apart: above threshold 2
    truth = np.repeat([1, 2], 10)
    srcs = [0, 19]  # opposite ends
    assert np.array_equal(reconstruct_trees(pts, emb, srcs).labels, truth)
    assert not np.array_equal(reconstruct_trees(pts, None, srcs).labels, truth)
    # a threshold above the embedding gap keeps the bridging edges again
    loose = reconstruct_trees(pts, emb, srcs, embedding_threshold=3.5).labels
    assert not np.array_equal(loose, truth)


def test_result_fields_forest_and_graph():
    pts = np.array([[0, 0, x] for x in range(8)] + [[0, 5, 0], [0, 5, 1]])
    res = reconstruct_trees(pts, sources=[[0, 0, 0]], spacing=(1.0, 1.0, 0.5))
    # the far pair is not reached by the one source
    assert res.labels.tolist() == [1] * 8 + [0, 0]
    assert np.isinf(res.distance[8:]).all() and (res.predecessors[8:] == -1).all()
    assert res.predecessors[0] == -1 and res.distance[0] == 0.0
    # neighbourhood 3 voxels = 1.5 units along x: shortest path hops 3 voxels at a time
    assert res.distance[7] == pytest.approx(3.5)
    node = 7
    while res.predecessors[node] >= 0:  # walk back to the root
        node = res.predecessors[node]
    assert node == res.sources[0]
    g = res.graph
    assert g.number_of_nodes() == 10
    assert g.number_of_edges() == res.adjacency.nnz // 2
    assert g.nodes[3]["coord"] == (0, 0, 3) and g.nodes[3]["label"] == 1
    assert g.edges[0, 3]["length"] == pytest.approx(1.5)
    assert g.graph["sources"] == [0]


def test_without_sources_each_component_is_a_tree_largest_first():
    pts = np.array([[0, 0, x] for x in range(3)] + [[0, 9, x] for x in range(6)])
    res = reconstruct_trees(pts)
    assert res.labels.tolist() == [2, 2, 2, 1, 1, 1, 1, 1, 1]
    assert res.sources.tolist() == [3, 0]


def test_sources_as_coordinates_snap_to_points():
    pts = np.array([[0, 0, x] for x in range(6)])
    by_index = reconstruct_trees(pts, sources=[0, 5]).labels
    by_coord = reconstruct_trees(pts, sources=[[0.2, 0.4, -1.0], [0, 1, 6]]).labels
    assert np.array_equal(by_index, by_coord)
    assert by_index.tolist() == [1, 1, 1, 2, 2, 2]


def test_sources_snap_in_physical_units():
    """Thick slices: the point one slice away is farther than the one two pixels away."""
    pts = np.array([[1, 0, x] for x in range(6)] + [[0, 0, x] for x in range(8, 12)])
    # the root at (0, 0, 6): voxel-nearest is (1, 0, 5) one slice up (1 voxel), but 5 mm
    # away; physically nearest is (0, 0, 8), 1.2 mm along the slice
    root = [[0, 0, 6]]
    assert reconstruct_trees(pts, sources=root).sources.tolist() == [5]
    res = reconstruct_trees(pts, sources=root, spacing=(5.0, 0.6, 0.6))
    assert res.sources.tolist() == [6]


# ------------------------------------------------------------------------- propagation
def test_propagate_labels_nearest_point_and_spacing():
    mask = np.ones((1, 5, 5), bool)
    pts = [[0, 0, 2], [0, 2, 0]]
    assert propagate_labels([1, 2], pts, mask, spacing=(1, 1, 3))[0, 2, 2] == 1
    assert propagate_labels([1, 2], pts, mask, spacing=(1, 3, 1))[0, 2, 2] == 2
    # unlabelled points are no seeds; nothing outside the mask is labelled
    mask[0, 4, 4] = False
    out = propagate_labels([0, 2], pts, mask)
    assert out.dtype == np.int32
    assert set(np.unique(out[mask])) == {2} and out[0, 4, 4] == 0


def test_propagate_labels_per_component():
    mask = np.zeros((1, 3, 12), bool)
    mask[0, 1, 0:5] = True
    mask[0, 1, 7:12] = True  # a second piece, with no point of its own
    free = propagate_labels([3], [[0, 1, 4]], mask)
    kept = propagate_labels([3], [[0, 1, 4]], mask, per_component=True)
    assert (free[mask] == 3).all()
    assert (kept[0, 1, 0:5] == 3).all() and (kept[0, 1, 7:12] == 0).all()


# ----------------------------------------------------------------------- label switches
def test_label_switches_zero_for_truth_and_counts_a_relabelled_branch(vol):
    assert label_switches(vol.trees, vol.graph) == 0
    # relabel the far half (along the vessel) of tree 1
    geo = vol.geodesic_distances(vol.sources[:1])
    tree1 = [n for n in geo if vol.graph.nodes[n]["tree"] == 1]
    cut = np.median([geo[n] for n in tree1])
    far = {n for n in tree1 if geo[n] > cut}
    pred = vol.trees.copy()
    pred[tuple(np.array(sorted(far)).T)] = 7
    expected = nx.cut_size(vol.graph, far, set(vol.graph) - far)
    assert expected > 0
    assert label_switches(pred, vol.graph) == expected
    # a missed (0) end is not a switch
    pred[tuple(np.array(sorted(far)).T)] = 0
    assert label_switches(pred, vol.graph) == 0


# --------------------------------------------------------------------- skeleton baseline
def test_trees_from_skeleton_on_separate_trees(vol):
    for sources in (vol.sources, None):
        res = trees_from_skeleton(vol.mask, sources)
        assert res.n_trees == vol.n_trees
        labels = res.to_volume(vol.mask)
        assert tree_accuracy(labels, vol.trees, vol.centerline) >= 0.99
        assert label_switches(labels, vol.graph) == 0


def test_vessels_inside_a_region_that_reach_no_border_still_make_trees():
    # segment --roi liver without roots: no vessel of the cut mask reaches the volume's
    # faces, no root was detected and every voxel was left unassigned (0 trees; the CLI's
    # metrics, on the tree labels, read Dice 0)
    mask = np.zeros((16, 20, 40), bool)
    mask[5:8, 4:7, 5:35] = True
    mask[9:12, 13:16, 8:30] = True
    res = trees_from_skeleton(mask)
    assert res.n_trees == 2 and (res.labels > 0).all()
    labels = res.to_volume(mask)
    assert np.array_equal(labels > 0, mask) and len(np.unique(labels[mask])) == 2


def test_trees_from_skeleton_labels_unreached_pieces_by_nearest_source():
    mask = np.zeros((12, 12, 30), bool)
    mask[1:4, 1:4, :] = True  # tube 1, root at x = 0
    mask[7:10, 7:10, :] = True  # tube 2, root at x = 29
    mask[8:11, 1:4, 20:26] = True  # an inner fragment, nearer to tube 2's root
    res = trees_from_skeleton(mask, sources=[[2, 2, 0], [8, 8, 29]])
    vol = res.to_volume(mask, per_component=True)
    assert vol[2, 2, 15] == 1 and vol[8, 8, 15] == 2
    assert (vol[8:11, 1:4, 20:26] == 2).all()
    in_fragment = (res.points[:, 0] >= 8) & (res.points[:, 1] < 5)
    assert in_fragment.any()
    assert np.isinf(res.distance[in_fragment]).all()
    assert np.isfinite(res.distance[~in_fragment]).all()


def test_trees_from_skeleton_follows_a_broken_vessel_across_its_gaps():
    # Tube 1 (root x = 0) broken twice; its last piece ends near tube 2's root, but the
    # smallest gap joins it to its own tree's previous piece, not the nearest root.
    mask = np.zeros((6, 16, 61), bool)
    for lo, hi in ((0, 9), (11, 29), (31, 61)):
        mask[1:4, 1:4, lo:hi] = True
    mask[1:4, 11:14, 54:61] = True  # tube 2, a stub rooted at x = 60
    res = trees_from_skeleton(mask, sources=[[2, 2, 0], [2, 12, 60]])
    vol = res.to_volume(mask, per_component=True)
    assert (vol[1:4, 1:4, :][mask[1:4, 1:4, :]] == 1).all()
    assert (vol[1:4, 11:14, 54:61] == 2).all()


# ------------------------------------------------------------------------------ errors
_PTS = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2]])
_MASK = np.ones((2, 3, 4), bool)


@pytest.mark.parametrize(
    "call",
    [
        lambda: skeleton_graph(np.zeros((2, 2, 2, 2), bool)),
        lambda: skeleton_graph(np.full((3, 3, 3), 0.5)),
        lambda: skeleton_graph(np.zeros((3, 3, 3), bool), spacing=(1, 1)),
        lambda: branches(np.zeros((3, 3, 3), bool), spacing=-1),
        lambda: centerline_points_nms(np.zeros((2, 3, 4)), np.ones((2, 3, 5), bool)),
        lambda: centerline_points_nms(np.zeros((2, 3, 4)), _MASK, size=4),
        lambda: centerline_points_nms(np.zeros((2, 3, 4)), _MASK, max_distance=-1),
        lambda: centerline_points_nms(np.full((2, 3, 4), np.nan), _MASK),
        lambda: radius_at([[5, 0, 0]], _MASK),
        lambda: radius_at([[0, 0]], _MASK),
        lambda: detect_sources(_PTS, [1.0, 2.0], (4, 4, 4)),
        lambda: detect_sources(_PTS, [1.0, -2.0, 1.0], (4, 4, 4)),
        lambda: detect_sources(_PTS, [1.0, 2.0, 1.0], (4, 4)),
        lambda: detect_sources(_PTS, [1.0, 2.0, 1.0], (4, 4, 4), n=-1),
        lambda: detect_sources(_PTS, [1.0, 2.0, 1.0], (4, 4, 2)),
        lambda: reconstruct_trees(np.zeros((3, 4))),
        lambda: reconstruct_trees(_PTS, np.zeros((2, 8))),
        lambda: reconstruct_trees(_PTS, np.full((3, 8), np.nan)),
        lambda: reconstruct_trees(_PTS, sources=[3]),
        lambda: reconstruct_trees(_PTS, sources=[0.0, 1.0]),
        lambda: reconstruct_trees(_PTS, sources=[0, 0]),
        lambda: reconstruct_trees(_PTS, sources=[[0, 0, 0], [0, 0, 0.1]]),
        lambda: reconstruct_trees(_PTS, neighbourhood=0),
        lambda: reconstruct_trees(_PTS, embedding_threshold=-1),
        lambda: reconstruct_trees(np.array([[0, 0, 0], [0, 0, 0]]), sources=[0]),
        lambda: propagate_labels([1, 2], _PTS, _MASK),
        lambda: propagate_labels([1, -2, 1], _PTS, _MASK),
        lambda: propagate_labels([1.5, 2, 1], _PTS, _MASK),
        lambda: label_switches(np.zeros((3, 3, 3), int), nx.path_graph(3)),
        lambda: label_switches(np.zeros((3, 3, 3), int), nx.path_graph([(0, 0, 0), (0, 0, 5)])),
        lambda: label_switches(np.zeros((3, 3, 3), int), [((0, 0, 0), (0, 0, 1))]),
        lambda: trees_from_skeleton(np.zeros((3, 3, 3), bool), sources=[[0, 0, 0]]),
        lambda: trees_from_skeleton(_MASK, sources=[0, 1]),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_empty_inputs_give_empty_results():
    none = np.zeros((0, 3), int)
    res = reconstruct_trees(none)
    assert res.labels.shape == (0,) and res.n_trees == 0
    assert detect_sources(none, np.zeros(0), (4, 4, 4)).shape == (0,)
    assert centerline_points_nms(np.zeros((4, 4, 4)), np.zeros((4, 4, 4), bool)).shape == (0, 3)
    assert not propagate_labels([], none, np.ones((4, 4, 4), bool)).any()
    assert trees_from_skeleton(np.zeros((8, 8, 8), bool)).n_trees == 0
