"""Tests for napari_topo.data.synthetic (pure numpy/scipy/networkx, no Qt)."""

import math

import networkx as nx
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_topo.data import (
    SyntheticVessels,
    SyntheticVesselSet,
    geodesic_distances,
    make_vessel_volume,
    sample_vessels,
)
from napari_topo.data import test_set as make_test_set

FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity

CASES = {
    "iso-2": dict(shape=(48, 48, 48), n_trees=2, seed=0),
    "iso-3": dict(shape=(56, 56, 56), n_trees=3, seed=7),
    "aniso": dict(shape=(32, 56, 56), n_trees=2, seed=3, spacing=(2.0, 1.0, 1.0)),
    "one-tree": dict(shape=(40, 48, 40), n_trees=1, seed=5, spacing=(1.0, 0.8, 0.8)),
}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def vol(request) -> SyntheticVessels:
    return make_vessel_volume(**CASES[request.param])


@pytest.fixture(scope="module")
def vol2() -> SyntheticVessels:
    return make_vessel_volume(**CASES["iso-2"])


# --------------------------------------------------------------------------------------
# determinism and randomisation
# --------------------------------------------------------------------------------------
def _assert_same(a: SyntheticVessels, b: SyntheticVessels) -> None:
    for name in ("image", "mask", "trees", "centerline", "radius", "sources", "near_touches"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.params == b.params
    assert a.seed == b.seed and a.spacing == b.spacing
    assert sorted(a.graph.edges) == sorted(b.graph.edges)


def test_same_seed_gives_identical_volumes(vol2):
    _assert_same(vol2, make_vessel_volume(**CASES["iso-2"]))


def test_seed_none_records_a_seed_that_regenerates():
    a = make_vessel_volume((32, 32, 32), seed=None)
    assert isinstance(a.seed, int) and a.seed >= 0
    _assert_same(a, make_vessel_volume((32, 32, 32), seed=a.seed))


def test_different_seeds_give_different_images_and_params(vol2):
    other = make_vessel_volume((48, 48, 48), n_trees=2, seed=1)
    assert not np.array_equal(vol2.image, other.image)
    assert not np.array_equal(vol2.trees, other.trees)
    assert vol2.params != other.params
    for key in (
        "polarity",
        "background",
        "amplitude",
        "edge_width",
        "psf_sigma",
        "bias_strength",
        "texture_amplitude",
        "gaussian_noise_std",
        "poisson_photons",
        "stenoses",
        "normalisation",
    ):
        assert key in vol2.params, key
    assert vol2.params["polarity"] in (-1, 1)
    assert vol2.seed == 0


def test_rendering_never_changes_ground_truth(vol2):
    clean = make_vessel_volume(**CASES["iso-2"], randomize_image=False)
    stenosed = make_vessel_volume(**CASES["iso-2"], stenosis_prob=1.0)
    for other in (clean, stenosed):
        np.testing.assert_array_equal(other.trees, vol2.trees)
        np.testing.assert_array_equal(other.centerline, vol2.centerline)
        np.testing.assert_array_equal(other.radius, vol2.radius)
    assert not np.array_equal(clean.image, vol2.image)
    assert clean.params["gaussian_noise_std"] == 0.0
    assert clean.params["poisson_photons"] is None
    assert clean.params["stenoses"] == []
    assert len(stenosed.params["stenoses"]) > 0
    for s in stenosed.params["stenoses"]:
        assert 0 < s["contrast"] < 1 and 0 < s["narrowing"] < 1
        assert s["tree"] in (1, 2)


def test_clean_image_is_bright_on_vessels():
    v = make_vessel_volume((40, 40, 40), seed=2, randomize_image=False)
    assert v.image[v.centerline].mean() > v.image[~v.mask].mean() + 0.5


# --------------------------------------------------------------------------------------
# ground-truth invariants (every case)
# --------------------------------------------------------------------------------------
def test_dtypes_and_shapes(vol):
    shape = vol.shape
    assert vol.image.dtype == np.float32 and vol.image.shape == shape
    assert np.isfinite(vol.image).all()
    assert vol.mask.dtype == bool and vol.centerline.dtype == bool
    assert vol.trees.dtype == np.int32 and vol.radius.dtype == np.float32
    assert vol.trees.shape == vol.centerline.shape == vol.radius.shape == shape
    assert vol.sources.shape == (vol.n_trees, 3)
    assert vol.near_touches.ndim == 3 and vol.near_touches.shape[1:] == (2, 3)
    assert set(np.unique(vol.trees)) == set(range(vol.n_trees + 1))


def test_mask_is_union_of_trees(vol):
    np.testing.assert_array_equal(vol.trees > 0, vol.mask)


def test_each_tree_is_one_component_containing_its_source(vol):
    for k in range(1, vol.n_trees + 1):
        labels, n = ndi.label(vol.trees == k, structure=FULL)
        assert n == 1, f"tree {k} has {n} components"
        src = tuple(vol.sources[k - 1])
        assert vol.trees[src] == k
        assert vol.centerline[src]
        # the source lies on a face of the volume
        assert any(c in (0, s - 1) for c, s in zip(src, vol.shape, strict=True))


def test_trees_never_touch(vol):
    # one 26-component per tree: there is background between different trees
    _, n = ndi.label(vol.mask, structure=FULL)
    assert n == vol.n_trees


def test_centerline_inside_mask_with_right_tree_id(vol):
    assert vol.centerline.any()
    assert not (vol.centerline & ~vol.mask).any()
    for node, tree in vol.graph.nodes(data="tree"):
        assert vol.trees[node] == tree


def test_radius_in_documented_range(vol):
    r = vol.radius[vol.centerline]
    lo, hi = vol.params["min_radius"], vol.params["root_radius"]
    assert lo <= hi <= 6.0
    assert r.min() >= lo - 1e-5 and r.max() <= hi + 1e-5
    assert not vol.radius[~vol.centerline].any()
    # the thinnest tubes stay above half a voxel diagonal (connectivity on the grid)
    assert lo > 0.5 * math.dist((0, 0, 0), vol.spacing)
    # radii shrink along the trees: thick roots, thin twigs
    assert r.max() > 2.5 * r.min()


def test_graph_matches_centerline_and_trees(vol):
    g = vol.graph
    sp = np.asarray(vol.spacing)
    assert g.graph["shape"] == vol.shape and g.graph["spacing"] == vol.spacing
    assert set(g.nodes) == {tuple(c) for c in np.argwhere(vol.centerline).tolist()}
    for node, data in g.nodes(data=True):
        assert data["coord"] == node
        assert data["radius"] == pytest.approx(float(vol.radius[node]))
    for u, v, length in g.edges(data="length"):
        off = np.subtract(v, u)
        assert np.abs(off).max() == 1
        assert g.nodes[u]["tree"] == g.nodes[v]["tree"]
        assert length == pytest.approx(float(np.linalg.norm(off * sp)))
    # every 26-neighbour pair of same-tree centerline voxels is an edge
    n_pairs = 0
    cl, tr = vol.centerline, vol.trees
    for off in [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]:
        if off <= (0, 0, 0):
            continue
        src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(off, cl.shape, strict=True))
        dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(off, cl.shape, strict=True))
        n_pairs += int((cl[src] & cl[dst] & (tr[src] == tr[dst])).sum())
    assert n_pairs == g.number_of_edges()
    for k in range(1, vol.n_trees + 1):
        nodes = [n for n, t in g.nodes(data="tree") if t == k]
        assert tuple(vol.sources[k - 1]) in nodes
        assert nx.is_connected(g.subgraph(nodes)), f"tree {k} centerline graph is split"


def test_near_touches_are_close_but_separate(vol):
    lo, hi = vol.params["near_touch_gap"]
    assert vol.params["n_near_touches"] == len(vol.near_touches)
    assert all(lo <= gap < hi for gap in vol.params["near_touch_gaps"])
    diag = math.dist((0, 0, 0), vol.spacing)
    for a, b in vol.near_touches:
        ta = vol.trees[tuple(np.rint(a).astype(int))]
        tb = vol.trees[tuple(np.rint(b).astype(int))]
        assert ta != tb and ta > 0 and tb > 0
        centre = np.rint((a + b) / 2).astype(int)
        box = tuple(slice(max(c - 12, 0), c + 13) for c in centre)
        dist = ndi.distance_transform_edt(vol.trees[box] != ta, sampling=vol.spacing)
        closest = dist[vol.trees[box] == tb].min()
        assert diag < closest <= hi + 2 * diag


def test_near_touches_happen():
    total = sum(make_vessel_volume((48, 48, 48), seed=s).params["n_near_touches"] for s in (0, 1))
    assert total > 0


# --------------------------------------------------------------------------------------
# geodesic distances
# --------------------------------------------------------------------------------------
def test_geodesic_distances_from_sources(vol2):
    dist = vol2.geodesic_distances()
    sp = np.asarray(vol2.spacing)
    assert set(dist) == set(vol2.graph.nodes)  # every node reaches its own source
    for k, src in enumerate(vol2.sources, start=1):
        assert dist[tuple(src)] == 0.0
        for node in (n for n, t in vol2.graph.nodes(data="tree") if t == k):
            euclid = np.linalg.norm((np.asarray(node) - src) * sp)
            assert dist[node] >= euclid - 1e-9


def test_geodesic_distances_single_source_cutoff_and_separate(vol2):
    src = tuple(vol2.sources[0])
    d = geodesic_distances(vol2.graph, vol2.sources[0], cutoff=15.0)
    assert d[src] == 0.0 and max(d.values()) <= 15.0
    assert all(vol2.graph.nodes[n]["tree"] == 1 for n in d)
    sep = geodesic_distances(vol2.graph, vol2.sources, separate=True)
    assert set(sep) == {tuple(s) for s in vol2.sources}
    assert all(vol2.graph.nodes[n]["tree"] == 2 for n in sep[tuple(vol2.sources[1])])
    # a neighbour along an edge is exactly one edge length away
    nb = next(iter(vol2.graph[src]))
    assert sep[src][nb] == pytest.approx(vol2.graph.edges[src, nb]["length"])


@pytest.mark.parametrize(
    ("sources", "cutoff", "match"),
    [
        ((-1, 0, 0), None, "centerline nodes"),
        ([[0, 0]], None, r"\(N, 3\)"),
        ((0.5, 1.0, 2.0), None, "integer"),
        (None, -1.0, "cutoff"),
    ],
)
def test_geodesic_distances_bad_input(vol2, sources, cutoff, match):
    if sources is None:
        sources = vol2.sources[0]
    with pytest.raises(ValueError, match=match):
        geodesic_distances(vol2.graph, sources, cutoff)


# --------------------------------------------------------------------------------------
# argument validation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(shape=(48, 48)), "3 integers"),
        (dict(shape=(48, 48, 48, 1)), "3 integers"),
        (dict(shape="abc"), "3 integers"),
        (dict(shape=(48.0, 48, 48)), "3 integers"),
        (dict(shape=(8, 48, 48)), "at least 16"),
        (dict(n_trees=0), "between 1 and 6"),
        (dict(n_trees=7), "between 1 and 6"),
        (dict(n_trees=1.5), "n_trees must be an integer"),
        (dict(spacing=(1.0, 1.0)), "3 entries"),
        (dict(spacing=(1.0, 0.0, 1.0)), "> 0"),
        (dict(spacing=(1.0, -1.0, 1.0)), "> 0"),
        (dict(spacing=(1.0, float("nan"), 1.0)), "finite"),
        (dict(spacing="a"), "spacing"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(radius_range=(0.0, 3.0)), "radius_range"),
        (dict(radius_range=(4.0, 2.0)), "radius_range"),
        (dict(radius_range=3.0), "radius_range"),
        (dict(clearance=0.5), "clearance"),
        (dict(near_touch_prob=1.5), "near_touch_prob"),
        (dict(stenosis_prob=-0.1), "stenosis_prob"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    args = dict(shape=(48, 48, 48))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_vessel_volume(**args)


def test_too_many_trees_for_a_tiny_volume_raise():
    with pytest.raises(ValueError, match="cannot fit"):
        make_vessel_volume((16, 16, 16), n_trees=6, radius_range=(1.0, 6.0), clearance=8.0)


# --------------------------------------------------------------------------------------
# test set and sample
# --------------------------------------------------------------------------------------
def test_test_set_regenerates_from_seeds():
    ts = make_test_set(n=2, shape=(32, 32, 32), base_seed=123)
    assert isinstance(ts, SyntheticVesselSet)
    assert len(ts) == 2 and ts.seeds == [123, 124]
    vols = list(ts)
    assert [v.seed for v in vols] == [123, 124]
    _assert_same(ts[-1], make_vessel_volume((32, 32, 32), seed=124))
    _assert_same(ts[0], vols[0])
    with pytest.raises(IndexError):
        ts[2]
    with pytest.raises(ValueError, match="seed"):
        make_test_set(n=2, shape=(32, 32, 32), seed=3)
    with pytest.raises(ValueError, match="n must be"):
        make_test_set(n=-1)


def test_default_test_set_is_fixed():
    ts = make_test_set()
    assert len(ts) == 10 and ts.shape == (96, 96, 96) and ts.seeds[0] == 10_000


def test_sample_vessels():
    v = sample_vessels()
    assert v.shape == (64, 64, 64) and v.n_trees == 2
    assert v.mask.any() and v.centerline.any()
