"""Tests of napari_topo.topology.metrics and .skeleton (numpy only, no Qt).

Known shapes with hand-derived answers, plus cross-checks against independent
implementations: scikit-image (Euler number), CubicalRipser (persistent homology) and
MONAI (HD95).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_topo.topology import metrics as M
from napari_topo.topology.skeleton import skeletonize

# ------------------------------------------------------------------------------ shapes


def solid_torus(shape=(12, 32, 32), R=9.0, r=3.0, center=None):
    z, y, x = np.indices(shape, dtype=float)
    cz, cy, cx = center if center is not None else [(s - 1) / 2 for s in shape]
    return (np.hypot(y - cy, x - cx) - R) ** 2 + (z - cz) ** 2 <= r**2


def hollow_sphere(shape=(24, 24, 24), r_in=5.0, r_out=8.0, center=None):
    c = center if center is not None else [(s - 1) / 2 for s in shape]
    d = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(np.indices(shape, dtype=float), c, strict=True)))
    return (d >= r_in) & (d <= r_out)


def tube(shape=(12, 12, 40), z=5, y=5, r=2.5, x0=3, x1=37):
    zz, yy, xx = np.indices(shape)
    return ((zz - z) ** 2 + (yy - y) ** 2 <= r**2) & (xx >= x0) & (xx < x1)


def annulus(shape=(30, 30), r_in=5.0, r_out=10.0):
    y, x = np.indices(shape, dtype=float)
    d = np.hypot(y - (shape[0] - 1) / 2, x - (shape[1] - 1) / 2)
    return (d >= r_in) & (d <= r_out)


def blobs(shape, seed, frac=0.3, sigma=1.5):
    """Smoothed Gaussian noise thresholded to ``frac`` foreground: rich random topology,
    touching the array border."""
    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return f > np.quantile(f, 1.0 - frac)


# ---------------------------------------------------------------------------- overlap


def test_overlap_metrics_hand_computed():
    g = np.zeros((6, 6), bool)
    g[1:5, 1:5] = True  # 16 voxels
    p = np.zeros((6, 6), np.uint8)
    p[1:5, 3:6] = 1  # 12 voxels, 8 inside g
    assert M.dice(p, g) == pytest.approx(2 * 8 / 28)
    assert M.precision(p, g) == pytest.approx(8 / 12)
    assert M.recall(p, g) == pytest.approx(8 / 16)
    assert M.volume_error(p, g) == pytest.approx((12 - 16) / 16)
    assert M.volume_error(g, p) == pytest.approx((16 - 12) / 12)


def test_binary_inputs_of_any_dtype_agree():
    g = blobs((20, 20, 20), 1)
    p = blobs((20, 20, 20), 2)
    ref = M.dice(p, g)
    assert M.dice(p.astype(np.float32), g.astype(np.int64)) == ref
    assert 0.0 < ref < 1.0


# --------------------------------------------------------------------------- skeleton


def test_skeleton_of_tube_is_thin_centred_line():
    t = tube()
    s = skeletonize(t)
    assert s.dtype == bool and s.shape == t.shape
    assert not np.any(s & ~t)
    assert s[5, 5, 8:32].all()  # runs along the axis
    # thin: each x column crossed at most a couple of times
    assert s.sum(axis=(0, 1)).max() <= 2
    assert s.sum() < 0.1 * t.sum()


def test_skeleton_preserves_topology_and_crop_is_exact():
    torus = solid_torus()
    s = skeletonize(torus)
    assert M.betti_numbers(s) == (1, 1, 0)
    big = np.zeros((30, 50, 50), bool)
    big[9:21, 7:39, 11:43] = torus
    assert np.array_equal(skeletonize(big)[9:21, 7:39, 11:43], s)
    assert skeletonize(big).sum() == s.sum()


def test_skeleton_2d_and_empty():
    a = annulus()
    s = skeletonize(a)
    assert M.betti_numbers(s)[:2] == (1, 1)
    assert not skeletonize(np.zeros((5, 5, 5), bool)).any()


def test_skeleton_validation():
    with pytest.raises(ValueError, match="2D"):
        skeletonize(np.zeros(5, bool))
    with pytest.raises(ValueError, match="binary"):
        skeletonize(np.full((5, 5), 0.5))
    with pytest.raises(ValueError, match="binary"):
        skeletonize(np.full((5, 5), 2))


def _x_extent(s: np.ndarray) -> int:
    xs = np.flatnonzero(s.any(axis=(0, 1)))
    return 0 if xs.size == 0 else int(xs[-1] - xs[0] + 1)


@pytest.mark.parametrize("cross", [(2, 1), (2, 2), (4, 3), (4, 4), (6, 6)])
def test_skeleton_of_straight_even_bar_is_not_lost(cross):
    """scikit-image's 3D thinning returns nothing for these bars (its issue #3757)."""
    from skimage.morphology import skeletonize as skimage_skeletonize

    bar = np.zeros((14, 14, 40), bool)
    bar[3 : 3 + cross[0], 3 : 3 + cross[1], 2:38] = True
    assert not skimage_skeletonize(bar).any()  # the upstream failure this works around
    s = skeletonize(bar)
    assert not np.any(s & ~bar)
    assert _x_extent(s) >= 36 - 2 * max(cross)  # a centerline along the bar
    assert M.betti_numbers(s) == (1, 0, 0)
    assert s[:, :, 5:35].sum(axis=(0, 1)).max() <= 2  # one voxel wide (the tips may hook)


def test_skeleton_keeps_a_lost_branch_of_a_tree():
    """A 2 x 2 bar with a 3 x 3 stem across its middle: upstream loses one arm."""
    from skimage.morphology import skeletonize as skimage_skeletonize

    tee = np.zeros((14, 14, 40), bool)
    tee[3:5, 3:5, 2:38] = True
    tee[3:12, 4:7, 20:23] = True
    assert _x_extent(skimage_skeletonize(tee)[:, :5]) <= 16
    s = skeletonize(tee)
    assert _x_extent(s[:, :5]) >= 32  # both arms of the bar
    assert M.betti_numbers(s) == (1, 0, 0)


def test_skeleton_of_straight_thin_tubes_at_any_placement():
    rng = np.random.default_rng(3)
    zz, yy = np.mgrid[0:14, 0:14]
    for r in (0.9, 1.2, 2.0, 2.5):
        for _ in range(8):
            cz, cy = rng.uniform(6, 7, 2)
            disc = (zz - cz) ** 2 + (yy - cy) ** 2 <= r * r
            t = np.zeros((14, 14, 40), bool)
            t[:, :, 3:37] = disc[:, :, None]
            s = skeletonize(t)
            assert M.betti_numbers(s)[0] == 1, (r, cz, cy)
            assert _x_extent(s) >= 34 - 2 * r - 3, (r, cz, cy)


def test_skeleton_leaves_a_correct_thinning_alone():
    from skimage.morphology import skeletonize as skimage_skeletonize

    for m in (tube(), solid_torus(), blobs((20, 24, 28), seed=5, frac=0.2)):
        assert np.array_equal(skeletonize(m), skimage_skeletonize(m))


def test_skeletonize_box_repairs_only_pieces_clear_of_cut_faces():
    from napari_topo.topology.skeleton import skeletonize_box

    box = np.zeros((10, 10, 30), bool)
    box[2:4, 2:4, 0:12] = True  # touches the low x face
    box[6:8, 6:8, 15:27] = True  # clear of every face
    open_x = skeletonize_box(box, [(False, False), (False, False), (True, False)])
    assert open_x[:, :5].sum() == 0 and _x_extent(open_x[:, 5:]) >= 10
    closed = skeletonize_box(box, [(False, False)] * 3)  # the volume's own faces
    assert np.array_equal(closed, skeletonize(box))
    with pytest.raises(ValueError, match="cut"):
        skeletonize_box(box, [(True, True)])
    flat = box[2]  # a 2D box: the plain 2D thinning
    assert np.array_equal(skeletonize_box(flat, [(True, True)] * 2), skeletonize(flat))


def test_cldice_of_disjoint_thin_bars_is_zero():
    """Both skeletons used to be empty, which clDice scored as a perfect match."""
    p = np.zeros((12, 12, 30), bool)
    g = np.zeros_like(p)
    p[2:4, 2:4, 2:28] = True
    g[7:9, 7:9, 2:28] = True
    assert M.cldice(p, g)[0] == 0.0
    assert M.cldice(p, p)[0] == 1.0


# ----------------------------------------------------------------------------- clDice


def test_cldice_identity_and_broken_tube():
    t = tube()
    assert M.cldice(t, t) == (1.0, 1.0, 1.0)
    broken = t.copy()
    broken[:, :, 19:22] = False
    cl, tprec, tsens = M.cldice(broken, t)
    assert tprec == 1.0  # the broken skeleton still lies in the intact tube
    assert tsens < 1.0  # the gap leaves part of the true centerline uncovered
    assert cl < 1.0
    assert cl == pytest.approx(2 * tprec * tsens / (tprec + tsens))


def test_cldice_punishes_spurious_branch_through_tprec():
    t = tube()
    extra = t.copy()
    extra[5, 5:12, 20] = True  # a thin spur sticking out of the tube
    extra[4:7, 8:12, 19:22] = True
    cl, tprec, tsens = M.cldice(extra, t)
    assert tsens == 1.0
    assert tprec < 1.0


# --------------------------------------------------------------------------- topology


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (solid_torus(), (1, 1, 0)),
        (hollow_sphere(), (1, 0, 1)),
        (tube() | tube(y=9, r=1.5), (1, 0, 0)),  # touching tubes merge
        (tube(z=3, r=1.5) | tube(z=8, r=1.5), (2, 0, 0)),  # two disjoint tubes
        (np.ones((4, 5, 6), bool), (1, 0, 0)),
        (np.zeros((4, 5, 6), bool), (0, 0, 0)),
    ],
    ids=["torus", "hollow-sphere", "merged-tubes", "two-tubes", "full", "empty"],
)
def test_betti_numbers_known_shapes(mask, expected):
    assert M.betti_numbers(mask) == expected
    b0, b1, b2 = expected
    assert M.euler_characteristic(mask) == b0 - b1 + b2


def test_betti_26_6_connectivity():
    # Two voxels touching at a corner form ONE 26-connected component.
    a = np.zeros((4, 4, 4), bool)
    a[1, 1, 1] = a[2, 2, 2] = True
    assert M.betti_numbers(a) == (1, 0, 0)
    # A 3x3x3 cube with its centre removed encloses a 6-connected cavity ...
    c = np.zeros((5, 5, 5), bool)
    c[1:4, 1:4, 1:4] = True
    c[2, 2, 2] = False
    assert M.betti_numbers(c) == (1, 0, 1)
    # ... and a loop of 8 voxels in a plane that is only corner-connected is a loop.
    ring = np.zeros((3, 5, 5), bool)
    ring[1, [1, 2, 3, 2], [2, 1, 2, 3]] = True
    assert M.betti_numbers(ring) == (1, 1, 0)


def test_betti_2d_annulus_and_8_4_connectivity():
    assert M.betti_numbers(annulus()) == (1, 1, 0)
    assert M.euler_characteristic(annulus()) == 0
    diamond = np.zeros((5, 5), bool)
    diamond[[1, 2, 3, 2], [2, 1, 2, 3]] = True  # 8-connected ring, 4-connected hole
    assert M.betti_numbers(diamond) == (1, 1, 0)
    two_holes = np.ones((5, 9), bool)
    two_holes[2, 2] = two_holes[2, 6] = False
    assert M.betti_numbers(two_holes) == (1, 2, 0)


def test_outside_of_array_is_background():
    # A torus centred on the x = 0 face: the array keeps one C-shaped half, no loop.
    half = solid_torus(shape=(12, 32, 20), center=(5.5, 15.5, 0.0))
    assert half[:, :, 0].any()
    assert M.betti_numbers(half) == (1, 0, 0)
    # A ring wider than the array along x loses both sides: two separate arcs.
    arcs = solid_torus(shape=(12, 32, 10))
    assert arcs[:, :, 0].any() and arcs[:, :, -1].any()
    assert M.betti_numbers(arcs) == (2, 0, 0)
    # A hollow sphere cut by the border through its cavity: the cavity opens.
    sphere = hollow_sphere()
    assert M.betti_numbers(sphere[:, :, 4:]) == (1, 0, 1)  # only the outer wall touched
    assert M.betti_numbers(sphere[:, :, 9:]) == (1, 0, 0)
    # A 2D frame whose hole reaches the border is no loop.
    frame = np.ones((6, 6), bool)
    frame[2:, 2:4] = False
    assert M.betti_numbers(frame) == (1, 0, 0)
    # A tube spanning the whole array, touching two faces.
    assert M.betti_numbers(tube(x0=0, x1=40)) == (1, 0, 0)


def _blob_cases():
    cases = []
    for seed in range(4):
        for frac in (0.15, 0.35, 0.6):
            cases.append((seed, frac))
    return cases


@pytest.mark.parametrize(("seed", "frac"), _blob_cases())
def test_euler_matches_skimage(seed, frac):
    from skimage.measure import euler_number

    m3 = blobs((22, 24, 20), seed, frac)
    assert M.euler_characteristic(m3) == euler_number(m3, connectivity=3)
    m2 = blobs((40, 36), seed, frac)
    assert M.euler_characteristic(m2) == euler_number(m2, connectivity=2)


def _persistent_betti(mask):
    """Betti numbers at level 0 of the sublevel filtration foreground=0, background=1."""
    import cripser

    arr = np.where(np.pad(mask, 1), 0.0, 1.0)  # pad with background: outside = background
    ph = cripser.compute_ph(arr, filtration="T", maxdim=mask.ndim - 1)
    alive = (ph[:, 1] <= 0) & (ph[:, 2] > 0)
    return tuple(int(np.sum(alive & (ph[:, 0] == d))) for d in range(3))


def test_cripser_t_construction_is_the_26_6_pair():
    """Which CubicalRipser construction matches our convention (checked, not assumed).

    T-construction (voxels are top cubes, lower cells take the min of their cofaces)
    gives the closed-voxel union: corner-touching foreground voxels are connected
    (26-connectivity). V-construction (voxels are vertices) connects only face
    neighbours, i.e. a 6-connected foreground.
    """
    import cripser

    a = np.zeros((4, 4, 4), bool)
    a[1, 1, 1] = a[2, 2, 2] = True
    assert _persistent_betti(a) == (1, 0, 0) == M.betti_numbers(a)
    ph_v = cripser.compute_ph(np.where(np.pad(a, 1), 0.0, 1.0), filtration="V", maxdim=2)
    n_v = int(np.sum((ph_v[:, 0] == 0) & (ph_v[:, 1] <= 0) & (ph_v[:, 2] > 0)))
    assert n_v == 2


@pytest.mark.parametrize(("seed", "frac"), _blob_cases())
def test_betti_matches_persistent_homology(seed, frac):
    m3 = blobs((24, 24, 24), seed + 10, frac)
    assert m3[0].any() or m3[-1].any()  # touches the border
    assert M.betti_numbers(m3) == _persistent_betti(m3)
    m2 = blobs((40, 40), seed + 20, frac)
    assert M.betti_numbers(m2) == _persistent_betti(m2)


def test_betti_matches_persistent_homology_with_cavities():
    # Sparse background inside dense foreground creates cavities (b2 > 0).
    m = ~blobs((24, 24, 24), 3, frac=0.12, sigma=1.0)
    b = M.betti_numbers(m)
    assert b[2] > 0
    assert b == _persistent_betti(m)


def test_betti_and_euler_errors():
    g = solid_torus()
    p = g.copy()
    p[:, 15:17, :14] = False  # cut the ring once: the loop is gone
    assert M.betti_numbers(p) == (1, 0, 0)
    assert M.betti_errors(p, g) == (0, 1, 0)
    assert M.euler_error(p, g) == 1
    p2 = g.copy()
    p2[:, 15:17, :] = False  # cut it twice: two arcs
    assert M.betti_errors(p2, g) == (1, 1, 0)
    assert M.euler_error(p2, g) == 2


# ------------------------------------------------------------------------------- CCE


def test_broken_tube_errors():
    t = tube()
    broken = t.copy()
    broken[:, :, 19:22] = False
    assert M.betti_errors(broken, t) == (1, 0, 0)
    assert M.cce_3d(broken, t) == 1
    assert M.cldice(broken, t)[0] < 1.0
    # slices across the tube (axis 2, x) see one component or none: the gap slices are
    # empty in pred only -> error 1 on 3 of the 34 used slices
    assert M.cce_2d(broken, t, axis=2) == pytest.approx(3 / 34)
    # axial slices (axis 0) through the tube each see two pieces instead of one
    used = np.flatnonzero(t.any(axis=(1, 2)))
    assert M.cce_2d(broken, t, axis=0) == pytest.approx(1.0)
    assert used.size == 5


def test_cce_2d_hand_computed_and_axis():
    g = np.zeros((4, 6, 6), bool)
    g[0:3, 1:5, 2] = True
    p = g.copy()
    p[0, 3, 2] = False  # slice 0: 2 components instead of 1
    p[3, 0, 0] = True  # slice 3: 1 spurious component, empty in gt
    assert M.cce_2d(p, g) == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert M.cce_2d(p, g, axis=-3) == M.cce_2d(p, g, axis=0)
    # along x only slices x=0 and x=2 hold foreground
    assert M.cce_2d(p, g, axis=2) == pytest.approx((1 + 0) / 2)


def test_cce_2d_uses_8_connectivity_and_2d_input():
    g = np.zeros((1, 5, 5), bool)
    g[0, 1, 1] = g[0, 2, 2] = True  # diagonal neighbours: one 8-component
    p = g.copy()
    p[0, 2, 2] = False
    p[0, 3, 3] = True  # not touching (1, 1): two components
    assert M.cce_2d(g, g) == 0.0
    assert M.cce_2d(p, g) == 1.0
    assert M.cce_2d(p[0], g[0]) == 1.0
    assert M.cce_3d(p[0], g[0]) == 1


# ------------------------------------------------------------------------------ HD95


def test_hd95_hand_computed_and_spacing():
    g = np.zeros((3, 5, 30), bool)
    g[1, 2, 3] = True
    p = np.zeros_like(g)
    p[1, 2, 13] = True
    assert M.hd95(p, g) == pytest.approx(10.0)
    assert M.hd95(p, g, spacing=(4.0, 1.0, 0.25)) == pytest.approx(2.5)
    assert M.hd95(p, g, spacing=0.5) == pytest.approx(5.0)
    assert M.hd95(g, g) == 0.0


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("seed", range(4))
def test_hd95_matches_monai_anisotropic(seed):
    import torch
    from monai.metrics import compute_hausdorff_distance

    shape, spacing = ((20, 26, 22), (2.5, 0.7, 1.3)) if seed % 2 == 0 else ((40, 34), (0.4, 1.7))
    p = blobs(shape, seed, frac=0.15, sigma=2.0)
    g = blobs(shape, seed + 50, frac=0.15, sigma=2.0)
    # MONAI wants one-hot (batch, channel, *spatial); one foreground channel, keep it.
    ref = compute_hausdorff_distance(
        torch.from_numpy(p[None, None].astype(np.float32)),
        torch.from_numpy(g[None, None].astype(np.float32)),
        include_background=True,
        percentile=95,
        spacing=list(spacing),
    ).item()
    ours = M.hd95(p, g, spacing=spacing)
    assert ours > 0
    assert ours == pytest.approx(ref, rel=1e-5)
    assert M.hd95(p, g) != pytest.approx(ours)  # spacing matters


# ----------------------------------------------------------------------- tree accuracy


def two_trees():
    """Two 'trees' in a (6, 20, 30) volume: tree 1 is a T, tree 2 a straight tube."""
    lab = np.zeros((6, 20, 30), np.int32)
    lab[2:4, 3:5, 2:28] = 1  # trunk of tree 1
    lab[2:4, 5:12, 14:16] = 1  # its branch
    lab[2:4, 15:17, 2:28] = 2  # tree 2
    return lab


def test_tree_accuracy_perfect_swapped_and_relabelled():
    gt = two_trees()
    assert M.tree_accuracy(gt, gt) == 1.0
    swapped = np.where(gt == 1, 7, np.where(gt == 2, 3, 0))
    assert M.tree_accuracy(swapped, gt) == 1.0
    wrong = gt.copy()
    wrong[2:4, 5:12, 14:16] = 2  # branch of tree 1 given to tree 2
    acc = M.tree_accuracy(wrong, gt)
    assert 0.5 < acc < 1.0
    centre = skeletonize(gt > 0)
    branch = np.zeros_like(centre)
    branch[:, 5:12, 14:16] = True
    expected = 1.0 - np.count_nonzero(centre & branch) / np.count_nonzero(centre)
    assert acc == pytest.approx(expected)


def test_tree_accuracy_with_centerline_and_missing_tree():
    gt = two_trees()
    line = np.zeros(gt.shape, bool)
    line[2, 3, 2:28] = True  # trunk of tree 1
    line[2, 15, 2:28] = True  # tree 2
    only_one = np.where(gt == 2, 2, 0)  # tree 1 not predicted at all
    assert M.tree_accuracy(only_one, gt, centerline=line) == pytest.approx(0.5)
    assert M.tree_accuracy(gt, gt, centerline=line) == 1.0
    # all voxels in one predicted tree: only one gt tree can be matched
    merged = (gt > 0).astype(np.uint8)
    assert M.tree_accuracy(merged, gt, centerline=line) == pytest.approx(0.5)
    assert math.isnan(M.tree_accuracy(gt, np.zeros_like(gt)))
    assert M.tree_accuracy(np.zeros_like(gt), gt) == 0.0


# ------------------------------------------------------------------------ all at once

EXPECTED_KEYS = [
    "Dice",
    "Precision",
    "Recall",
    "Volume error",
    "clDice",
    "Tprec",
    "Tsens",
    "Betti-0 error",
    "Betti-1 error",
    "Betti-2 error",
    "Euler error",
    "CCE 3D",
    "CCE 2D",
    "HD95",
]


def test_compute_metrics_matches_single_functions():
    g = solid_torus()
    p = g.copy()
    p[:, 15:17, :14] = False
    p[0:3, 0:3, 0:3] = True
    sp = (2.0, 0.5, 0.5)
    res = M.compute_metrics(p, g, spacing=sp, axis=1)
    assert list(res) == EXPECTED_KEYS
    assert all(type(v) is float for v in res.values())
    cl, tprec, tsens = M.cldice(p, g)
    be = M.betti_errors(p, g)
    expected = [
        M.dice(p, g),
        M.precision(p, g),
        M.recall(p, g),
        M.volume_error(p, g),
        cl,
        tprec,
        tsens,
        *be,
        M.euler_error(p, g),
        M.cce_3d(p, g),
        M.cce_2d(p, g, axis=1),
        M.hd95(p, g, spacing=sp),
    ]
    assert [res[k] for k in EXPECTED_KEYS] == pytest.approx(expected)
    assert res["Betti-0 error"] == 1.0 and res["Betti-1 error"] == 1.0
    assert set(M.METRIC_DESCRIPTIONS) == {*EXPECTED_KEYS, "Tree accuracy"}
    assert all(isinstance(v, str) and v for v in M.METRIC_DESCRIPTIONS.values())


def test_compute_metrics_labels_tree_accuracy_and_2d():
    gt = two_trees()
    pred = np.where(gt == 1, 9, np.where(gt == 2, 4, 0)).astype(np.uint16)
    res = M.compute_metrics(pred, gt)
    assert res["Tree accuracy"] == 1.0
    assert res["Dice"] == 1.0 and res["HD95"] == 0.0
    # one tree id only in the prediction: no tree accuracy
    assert "Tree accuracy" not in M.compute_metrics((gt > 0).astype(np.uint8), gt)
    assert "Tree accuracy" not in M.compute_metrics(gt > 0, gt > 0)
    # every tree merged into one, given as tree labels: scored (the larger tree's share)
    merged = (gt > 0).astype(np.uint8)
    res1 = M.compute_metrics(gt > 0, gt, labels=merged)
    skel = skeletonize(gt > 0)
    share = max(np.count_nonzero(skel & (gt == k)) for k in (1, 2)) / np.count_nonzero(skel)
    assert res1["Tree accuracy"] == pytest.approx(share) and 0.0 < share < 1.0
    # a mask scored whole, its tree labels for tree accuracy only (segment --gt): trees
    # that miss part of the mask do not lower its Dice
    half = np.where(np.arange(gt.shape[-1]) < gt.shape[-1] // 2, pred, 0)
    both = M.compute_metrics(gt > 0, gt, labels=half)
    assert both["Dice"] == 1.0 and both["Tree accuracy"] < 1.0
    assert M.compute_metrics(half, gt)["Dice"] < 1.0
    with pytest.raises(ValueError, match="labels"):
        M.compute_metrics(gt > 0, gt, labels=half[..., :-1])
    res2 = M.compute_metrics(annulus(), annulus(r_in=4.0), spacing=(1.0, 2.0))
    assert list(res2) == EXPECTED_KEYS
    assert res2["Betti-2 error"] == 0.0 and res2["Dice"] < 1.0 and res2["HD95"] > 0


def test_empty_inputs_defined_and_silent():
    z = np.zeros((8, 10, 12), bool)
    t = tube(shape=(8, 10, 12), z=4, y=5, r=2, x0=2, x1=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = M.compute_metrics(z, z)
        no_pred = M.compute_metrics(z, t)
        no_gt = M.compute_metrics(t, z)
        cl_zz = M.cldice(z, z)
        hd_zz = M.hd95(z, t)
    assert cl_zz[0] == 1.0 and math.isnan(cl_zz[1]) and math.isnan(cl_zz[2])
    assert math.isnan(hd_zz)
    assert both["Dice"] == 1.0 and both["clDice"] == 1.0 and both["HD95"] == 0.0
    assert math.isnan(both["Precision"]) and math.isnan(both["Recall"])
    assert math.isnan(both["Volume error"])
    assert both["Betti-0 error"] == both["Euler error"] == both["CCE 2D"] == 0.0

    assert no_pred["Dice"] == 0.0 and no_pred["clDice"] == 0.0 and no_pred["Recall"] == 0.0
    assert math.isnan(no_pred["Precision"]) and math.isnan(no_pred["Tprec"])
    assert no_pred["Tsens"] == 0.0 and no_pred["Volume error"] == -1.0
    assert math.isnan(no_pred["HD95"])
    assert no_pred["Betti-0 error"] == 1.0 and no_pred["CCE 2D"] == 1.0

    assert no_gt["Precision"] == 0.0 and math.isnan(no_gt["Recall"])
    assert math.isnan(no_gt["Tsens"]) and no_gt["Tprec"] == 0.0
    assert math.isnan(no_gt["Volume error"]) and math.isnan(no_gt["HD95"])
    assert M.betti_numbers(z) == (0, 0, 0) and M.euler_characteristic(z) == 0


# -------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.dice(np.zeros((4, 4), bool), np.zeros((4, 5), bool)),
        lambda: M.hd95(np.zeros((4, 4, 4)), np.zeros((4, 4, 3))),
        lambda: M.compute_metrics(np.zeros((4, 4)), np.zeros((4, 4, 1))),
        lambda: M.tree_accuracy(
            np.zeros((4, 4), int), np.zeros((4, 4), int), centerline=np.zeros((4, 5), bool)
        ),
    ],
)
def test_shape_mismatch_raises(call):
    with pytest.raises(ValueError, match="same shape"):
        call()


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5), ()])
def test_wrong_ndim_raises(shape):
    a = np.zeros(shape, bool)
    with pytest.raises(ValueError, match=r"2D \(y, x\) or 3D"):
        M.betti_numbers(a)
    with pytest.raises(ValueError, match="ndim"):
        M.compute_metrics(a, a)


def test_non_binary_and_bad_arguments_raise():
    prob = np.full((4, 4), 0.3)
    zeros = np.zeros((4, 4))
    for fn in (
        M.dice,
        M.precision,
        M.recall,
        M.volume_error,
        M.cldice,
        M.betti_errors,
        M.euler_error,
        M.cce_3d,
        M.cce_2d,
        M.hd95,
    ):
        with pytest.raises(ValueError, match="binary"):
            fn(prob, zeros)
    labels = np.full((4, 4), 2)
    with pytest.raises(ValueError, match="binary"):
        M.dice(labels, zeros)  # label volumes only where documented
    with pytest.raises(ValueError, match="binary"):
        M.compute_metrics(prob, zeros)
    with pytest.raises(ValueError, match="non-negative"):
        M.compute_metrics(np.full((4, 4), -1), zeros)
    with pytest.raises(ValueError, match="dtype"):
        M.dice(np.full((4, 4), "a"), zeros)
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(zeros, zeros, spacing=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="spacing"):
        M.compute_metrics(zeros, zeros, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="axis"):
        M.cce_2d(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), axis=3)
    with pytest.raises(ValueError, match="axis"):
        M.compute_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), axis=1.0)
