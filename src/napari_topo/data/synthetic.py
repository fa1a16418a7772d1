"""Synthetic vascular volumes with complete ground truth.

Each volume holds several vessel trees that grow from their own source on a face of
the volume, bifurcate recursively with curved branches and thin out following Murray's
law.  Trees interleave but never overlap; now and then a branch of one tree is steered
to stop one or two voxels short of another tree, which is the case where segmentation
models wrongly bridge two trees.

Ground truth (mask, tree labels, centerline, radius, sources, centerline graph) is
exact and is never touched by the domain randomisation, which acts on ``image`` only:
polarity and contrast, partial-volume edges, point-spread blur, a smooth multiplicative
bias field, background texture, Gaussian and Poisson noise, and low-contrast narrowings
(stenoses) that leave the mask connected.

Everything is plain numpy/scipy/networkx, deterministic from ``seed`` and fast enough
to run on the fly in a training loop.  Arrays are ``(z, y, x)``; geometry is grown in
physical units so that anisotropic ``spacing`` gives anisotropic voxel grids.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import networkx as nx
import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "SyntheticVessels",
    "SyntheticVesselSet",
    "geodesic_distances",
    "make_vessel_volume",
    "sample_vessels",
    "test_set",
]

# --- growth constants (lengths in units of the smallest spacing unless noted) -------
_STEP = 0.5  # growth step; < 1 so rounded centerline samples stay 26-connected
_STORE_EVERY = 2  # keep every n-th growth sample for clearance checks
_CHECK_CHUNK = 16  # growth samples per vectorised clearance check
_RASTER_STRIDE = 4  # growth samples per rasterised tube segment
_LENGTH_PER_RADIUS = (5.0, 10.0)  # branch length = U(*) * start radius + offset
_LENGTH_OFFSET = (2.0, 6.0)
_TAPER = (0.9, 1.0)  # radius at branch end / radius at branch start
_CURVATURE = (0.04, 0.12)  # turning rate (rad per unit length) of a radius-1 branch
_CURVE_CORRELATION = 8.0  # correlation length of the turning direction
_ANGLE_JITTER_DEG = 8.0
_ROOT_TILT_DEG = 30.0
_BOUNDARY_PUSH = 0.15  # inward steering per step inside the boundary margin
_KISS_PULL = 0.12  # steering per step of a branch sent towards another tree
_MAX_GENERATION = 12
_MAX_BRANCHES_PER_TREE = 400
_ROOT_TRIES = 8
_REAIM = 0.6  # how hard a retried branch turns away from what blocked it
_SOURCE_TRIES = 200
_BRANCH_TRIES = 3
_MAX_TREES = 6  # one source per face of the volume
#: Contrast factor range (log-uniform) of a faint branch (``faint_branch_prob``).
FAINT_BRANCH_GAIN = (0.25, 0.6)
_MIN_SHAPE = 16
_APPEARANCES = ("classic", "random", "ct", "microscopy", "generic")
#: growth regimes: branch length per start radius, generations, curvature range
_GROWTH = {
    "murray": {
        "length_per_radius": _LENGTH_PER_RADIUS,
        "max_generation": _MAX_GENERATION,
        "curvature": _CURVATURE,
    },
    "sparse": {"length_per_radius": (15.0, 40.0), "max_generation": 2, "curvature": (0.01, 0.05)},
    "tortuous": {"length_per_radius": (2.5, 6.0), "max_generation": 12, "curvature": (0.15, 0.35)},
}
_FACES = ("z-", "z+", "y-", "y+", "x-", "x+")
# the 13 "forward" offsets of the 26-neighbourhood: each neighbour pair once
_HALF_NEIGHBOURHOOD = np.array(
    [
        (dz, dy, dx)
        for dz in (-1, 0, 1)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dz, dy, dx) > (0, 0, 0)
    ]
)


# --------------------------------------------------------------------------------------
# result container
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SyntheticVessels:
    """A synthetic vessel volume and its ground truth.

    Attributes
    ----------
    image : ndarray of float32, shape (Z, Y, X)
        Rendered intensities after domain randomisation, rescaled so that the 0.5th and
        99.5th percentiles map to 0 and 1 (values outside [0, 1] are kept).
    mask : ndarray of bool, shape (Z, Y, X)
        Vessel mask; exactly ``trees > 0``.
    trees : ndarray of int32, shape (Z, Y, X)
        Tree id per voxel: 0 is background, ``1..n_trees`` are the trees.  Each tree is
        a single 26-connected component that contains its source, and no two trees
        touch (there is at least one background voxel between them).
    centerline : ndarray of bool, shape (Z, Y, X)
        Thin, 26-connected centerline voxels; always inside ``mask``.
    radius : ndarray of float32, shape (Z, Y, X)
        Vessel radius in physical units at centerline voxels, 0 elsewhere.  Values lie in
        ``[params["min_radius"], params["root_radius"]]``.
    sources : ndarray of int64, shape (n_trees, 3)
        Voxel index ``(z, y, x)`` of the root of each tree; row ``k`` is tree ``k + 1``.
        Sources lie on a face of the volume and are centerline voxels.
    graph : networkx.Graph
        Centerline graph.  Nodes are voxel tuples ``(z, y, x)`` with attributes
        ``coord`` (the same tuple), ``radius`` (float) and ``tree`` (int).  Edges join
        26-neighbouring centerline voxels of the same tree and carry ``length``, the
        Euclidean distance in physical units.  ``graph.graph`` holds ``shape`` and
        ``spacing``.  Each tree's subgraph is connected; as in any 26-neighbour graph,
        bifurcations form small triangles (use ``networkx.minimum_spanning_tree(graph,
        weight="length")`` where a strict tree is needed).
    near_touches : ndarray of float64, shape (K, 2, 3)
        For each deliberate near-contact between two trees, the voxel coordinates of the
        tip of the approaching branch and of the closest centerline point of the other
        tree.
    spacing : tuple of 3 floats
        Physical voxel size ``(dz, dy, dx)``.
    seed : int
        Seed that regenerates this volume exactly.
    params : dict
        Geometry settings and every randomised rendering parameter, as plain Python
        values (see :func:`make_vessel_volume`).
    """

    image: np.ndarray
    mask: np.ndarray
    trees: np.ndarray
    centerline: np.ndarray
    radius: np.ndarray
    sources: np.ndarray
    graph: nx.Graph
    near_touches: np.ndarray
    spacing: tuple[float, float, float]
    seed: int
    params: dict[str, Any]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(Z, Y, X)`` of every volume."""
        return tuple(int(s) for s in self.image.shape)

    @property
    def n_trees(self) -> int:
        """Number of vessel trees."""
        return int(self.sources.shape[0])

    def geodesic_distances(self, sources=None, cutoff=None, *, separate=False):
        """Geodesic distances along the centerline graph.

        Shorthand for ``geodesic_distances(self.graph, sources, cutoff, separate=...)``
        with the tree sources as default.

        Parameters
        ----------
        sources : (3,) or (N, 3) array-like of int, optional
            Voxel indices of centerline nodes.  Default: ``self.sources``.
        cutoff : float, optional
            Largest distance (physical units) to report.
        separate : bool, optional
            Return one dictionary per source instead of a multi-source result.

        Returns
        -------
        dict
            See :func:`geodesic_distances`.
        """
        if sources is None:
            sources = self.sources
        return geodesic_distances(self.graph, sources, cutoff, separate=separate)


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def _check_shape(shape) -> tuple[int, int, int]:
    try:
        values = tuple(shape)
    except TypeError:
        values = None
    if (
        values is None
        or len(values) != 3
        or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in values)
    ):
        raise ValueError(f"shape must be a sequence of 3 integers (z, y, x), got {shape!r}")
    if min(values) < _MIN_SHAPE:
        raise ValueError(
            f"every entry of shape must be at least {_MIN_SHAPE} voxels, got {values!r}"
        )
    return tuple(int(v) for v in values)


def _check_spacing(spacing) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise ValueError(
            f"spacing must be a sequence of 3 positive numbers (dz, dy, dx), got {spacing!r}"
        ) from None
    if len(values) != 3:
        raise ValueError(
            f"spacing must have 3 entries (dz, dy, dx), got {len(values)}: {spacing!r}"
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing entries must be finite and > 0, got {spacing!r}")
    return values


def _check_seed(seed) -> np.random.SeedSequence:
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return np.random.SeedSequence(int(seed))


def _check_probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------
# geometry: growing the trees
# --------------------------------------------------------------------------------------
class _Branch:
    """One grown branch: physical path samples and radii."""

    __slots__ = ("tree", "generation", "path", "radii")

    def __init__(self, tree: int, generation: int, path: np.ndarray, radii: np.ndarray):
        self.tree = tree
        self.generation = generation
        self.path = path
        self.radii = radii


class _PointStore:
    """Growable array of accepted axis samples used for clearance checks."""

    def __init__(self, capacity: int = 4096):
        self.p = np.empty((capacity, 3))
        self.r = np.empty(capacity)
        self.t = np.empty(capacity, dtype=np.int32)
        self.target = np.empty(capacity, dtype=bool)  # may a near-touch aim here?
        self.n = 0
        self.rmax = 0.0

    def add(self, path, radii, tree, tip_zone: float = np.inf) -> None:
        """Store ``path`` samples; those within ``tip_zone`` of its end are no targets."""
        keep = np.arange(0, len(path), _STORE_EVERY)
        if keep[-1] != len(path) - 1:
            keep = np.append(keep, len(path) - 1)
        k = len(keep)
        if self.n + k > len(self.r):
            cap = max(2 * len(self.r), self.n + k)
            self.p = np.concatenate([self.p[: self.n], np.empty((cap - self.n, 3))])
            self.r = np.concatenate([self.r[: self.n], np.empty(cap - self.n)])
            self.t = np.concatenate([self.t[: self.n], np.empty(cap - self.n, np.int32)])
            self.target = np.concatenate([self.target[: self.n], np.empty(cap - self.n, bool)])
        self.p[self.n : self.n + k] = path[keep]
        self.r[self.n : self.n + k] = radii[keep]
        self.t[self.n : self.n + k] = tree
        far = ((path[keep] - path[-1]) ** 2).sum(axis=1) >= tip_zone**2
        self.target[self.n : self.n + k] = far
        self.n += k
        self.rmax = max(self.rmax, float(radii.max()))

    def gaps(self, path, radii, tree, fork, fork_exclusion, reach):
        """Surface gaps of each path sample to other trees and to the own tree.

        Returns ``(gap_other, nearest_other, gap_self, nearest_self)``; the ``nearest``
        arrays index the stored sample with the smallest gap, or hold -1.  Own-tree
        samples closer than ``fork_exclusion`` to ``fork`` are ignored.
        """
        m = len(path)
        gap_other = np.full(m, np.inf)
        gap_self = np.full(m, np.inf)
        near_other = np.full(m, -1, dtype=np.int64)
        near_self = np.full(m, -1, dtype=np.int64)
        if self.n == 0:
            return gap_other, near_other, gap_self, near_self
        P, R, T = self.p[: self.n], self.r[: self.n], self.t[: self.n]
        excl2 = fork_exclusion**2
        for c0 in range(0, m, _CHECK_CHUNK):
            seg = path[c0 : c0 + _CHECK_CHUNK]
            rad = radii[c0 : c0 + _CHECK_CHUNK]
            rows = slice(c0, c0 + len(seg))
            grow = float(rad.max()) + self.rmax + reach
            lo = seg.min(axis=0) - grow
            hi = seg.max(axis=0) + grow
            sel = np.flatnonzero(np.all((P >= lo) & (P <= hi), axis=1))
            if sel.size == 0:
                continue
            Q = P[sel]
            d = np.sqrt(((seg[:, None, :] - Q[None, :, :]) ** 2).sum(axis=-1))
            g = d - rad[:, None] - R[sel][None, :]
            other = T[sel] != tree
            own = ~other & (((Q - fork) ** 2).sum(axis=1) >= excl2)
            for which, gap, near in ((other, gap_other, near_other), (own, gap_self, near_self)):
                if which.any():
                    gw = np.where(which[None, :], g, np.inf)
                    j = gw.argmin(axis=1)
                    gap[rows] = gw[np.arange(len(seg)), j]
                    near[rows] = sel[j]
        return gap_other, near_other, gap_self, near_self


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random unit vector perpendicular to unit vector ``d``."""
    while True:
        u = rng.standard_normal(3)
        u -= (u @ d) * d
        n = np.linalg.norm(u)
        if n > 1e-6:
            return u / n


def _trace(start, direction, r0, r1, length, geo, rng, target=None):
    """Grow one curved path; returns (path, radii, exited)."""
    h = geo["step"]
    n = max(2, int(math.ceil(length / h)))
    noise = rng.standard_normal((n, 3)).tolist()
    ext = geo["extent"]
    margin_extra = geo["margin"]
    rho = math.exp(-h / geo["curve_correlation"])
    sig = math.sqrt(1.0 - rho * rho)
    pz, py, px = (float(v) for v in start)
    dz, dy, dx = (float(v) for v in direction)
    wz = wy = wx = 0.0
    if target is not None:
        tz, ty, tx = (float(v) for v in target)
    pts = [(pz, py, px)]
    rads = [r0]
    exited = False
    for i in range(n):
        frac = (i + 1) / n
        r = r0 + (r1 - r0) * frac
        # smooth random turning: Ornstein-Uhlenbeck vector kept perpendicular to d
        nz, ny, nx_ = noise[i]
        wz = rho * wz + sig * nz
        wy = rho * wy + sig * ny
        wx = rho * wx + sig * nx_
        dot = wz * dz + wy * dy + wx * dx
        wz -= dot * dz
        wy -= dot * dy
        wx -= dot * dx
        k = geo["curvature"] * h / math.sqrt(max(r / geo["min_radius"], 1.0))
        dz += k * wz
        dy += k * wy
        dx += k * wx
        # soft push away from the faces of the volume
        m = r + margin_extra
        if pz < m:
            dz += _BOUNDARY_PUSH * (m - pz) / m
        elif pz > ext[0] - m:
            dz -= _BOUNDARY_PUSH * (pz - ext[0] + m) / m
        if py < m:
            dy += _BOUNDARY_PUSH * (m - py) / m
        elif py > ext[1] - m:
            dy -= _BOUNDARY_PUSH * (py - ext[1] + m) / m
        if px < m:
            dx += _BOUNDARY_PUSH * (m - px) / m
        elif px > ext[2] - m:
            dx -= _BOUNDARY_PUSH * (px - ext[2] + m) / m
        if target is not None:
            vz, vy, vx = tz - pz, ty - py, tx - px
            vn = math.sqrt(vz * vz + vy * vy + vx * vx)
            if vn > 1e-9:
                dz += _KISS_PULL * vz / vn
                dy += _KISS_PULL * vy / vn
                dx += _KISS_PULL * vx / vn
        dn = math.sqrt(dz * dz + dy * dy + dx * dx)
        dz, dy, dx = dz / dn, dy / dn, dx / dn
        pz, py, px = pz + h * dz, py + h * dy, px + h * dx
        if not (0.0 <= pz <= ext[0] and 0.0 <= py <= ext[1] and 0.0 <= px <= ext[2]):
            exited = True
            break
        pts.append((pz, py, px))
        rads.append(r)
    return np.asarray(pts), np.asarray(rads), exited


def _attempt(store, tree, start, direction, r0, r1, length, fork, fork_excl, geo, rng, kiss):
    """Trace a branch and cut it at its first clearance violation.

    Returns ``(path, radii, complete, touch, blocker)``: ``touch`` is None or
    ``(nearest_store_index, gap)`` when a steered branch stopped next to another tree;
    ``blocker`` is None or ``(path_sample, stored_sample)`` of the first violation.
    """
    target = None
    if kiss:
        P, T = store.p[: store.n], store.t[: store.n]
        foreign = np.flatnonzero((T != tree) & store.target[: store.n])
        if foreign.size:
            d2 = ((P[foreign] - start) ** 2).sum(axis=1)
            j = int(d2.argmin())
            if d2[j] <= (length + r0 + store.rmax) ** 2:
                target = P[foreign[j]]
    path, radii, exited = _trace(start, direction, r0, r1, length, geo, rng, target)
    gap_o, near_o, gap_s, near_s = store.gaps(
        path, radii, tree, fork, fork_excl, max(geo["clearance"], geo["self_clearance"])
    )
    bad_self = gap_s < geo["self_clearance"]
    if target is not None:
        bad_other = gap_o < geo["touch_gap"][0]
        touching = np.flatnonzero(gap_o < geo["touch_gap"][1])
    else:
        bad_other = gap_o < geo["clearance"]
        touching = np.empty(0, dtype=np.int64)
    bad = bad_self | bad_other
    first_bad = int(np.argmax(bad)) if bad.any() else len(path)
    if touching.size and touching[0] < first_bad:
        i = int(touching[0])
        return path[: i + 1], radii[: i + 1], False, (int(near_o[i]), float(gap_o[i])), None
    blocker = None
    if first_bad < len(path):
        j = near_o[first_bad] if bad_other[first_bad] else near_s[first_bad]
        blocker = (path[first_bad], store.p[j])
    complete = first_bad == len(path) and not exited
    return path[:first_bad], radii[:first_bad], complete, None, blocker


def _murray_children(r_parent: float, rng: np.random.Generator):
    """Child radii (r1 >= r2) with r_p^3 = r1^3 + r2^3 and the matching branch angles."""
    alpha = rng.uniform(0.55, 1.0)
    r1 = r_parent / (1.0 + alpha**3) ** (1.0 / 3.0)
    r2 = alpha * r1
    # Murray's optimal angles from conservation of "cost": cos(theta_i) formula
    rp2, r12, r22 = r_parent**2, r1**2, r2**2
    c1 = (rp2**2 + r12**2 - r22**2) / (2 * rp2 * r12)
    c2 = (rp2**2 + r22**2 - r12**2) / (2 * rp2 * r22)
    t1 = math.degrees(math.acos(min(1.0, max(-1.0, c1))))
    t2 = math.degrees(math.acos(min(1.0, max(-1.0, c2))))
    t1 += rng.uniform(-_ANGLE_JITTER_DEG, _ANGLE_JITTER_DEG)
    t2 += rng.uniform(-_ANGLE_JITTER_DEG, _ANGLE_JITTER_DEG)
    t1 = min(max(t1, 8.0), 45.0)
    t2 = min(max(t2, 30.0), 80.0)
    return (r1, math.radians(t1)), (r2, math.radians(t2))


def _stub(start, direction, radius, geo):
    """Straight samples along the first ``2 * radius`` of a root, used to reserve space."""
    n = max(2, int(math.ceil(2.0 * radius / geo["step"])) + 1)
    path = start + np.outer(np.arange(n) * geo["step"], direction)
    return path, np.full(n, radius)


def _place_sources(shape, spacing, n_trees, root_radii, geo, rng):
    """Sources on distinct faces with inward directions and non-conflicting root stubs."""
    faces = rng.permutation(6)[:n_trees]
    sp = np.asarray(spacing)
    store = _PointStore(256)
    sources, directions = [], []
    for k, face in enumerate(faces):
        axis, side = divmod(int(face), 2)
        normal = np.zeros(3)
        normal[axis] = 1.0 if side == 0 else -1.0
        for _ in range(_SOURCE_TRIES):
            idx = np.empty(3, dtype=np.int64)
            for a in range(3):
                if a == axis:
                    idx[a] = 0 if side == 0 else shape[a] - 1
                else:
                    idx[a] = int(round(rng.uniform(0.25, 0.75) * (shape[a] - 1)))
            tilt = math.radians(rng.uniform(0.0, _ROOT_TILT_DEG))
            d = _unit(math.cos(tilt) * normal + math.sin(tilt) * _perpendicular(normal, rng))
            path, radii = _stub(idx * sp, d, root_radii[k], geo)
            gap, _, _, _ = store.gaps(path, radii, k + 1, path[0], 0.0, geo["clearance"])
            if gap.min() >= geo["clearance"]:
                break
        else:
            raise ValueError(
                f"cannot fit {n_trees} vessel trees with root radius "
                f"{geo['root_radius']:.3g} and clearance {geo['clearance']:.3g} in a volume "
                f"of shape {tuple(shape)}; use a larger shape, fewer trees or a smaller "
                "radius_range"
            )
        store.add(path, radii, k + 1)
        sources.append(idx)
        directions.append(d)
    names = [_FACES[int(f)] for f in faces]
    return np.asarray(sources, dtype=np.int64), directions, names


def _grow_forest(shape, spacing, n_trees, geo, rng):
    sp = np.asarray(spacing)
    unit = geo["unit"]
    root_radii = [geo["root_radius"] * rng.uniform(0.85, 1.0) for _ in range(n_trees)]
    sources, directions, faces = _place_sources(shape, spacing, n_trees, root_radii, geo, rng)
    store = _PointStore()
    # reserve the start of every root so that earlier trees keep clear of later sources
    stubs = []
    for k in range(n_trees):
        path, radii = _stub(sources[k] * sp, directions[k], root_radii[k], geo)
        first = store.n
        store.add(path, radii, k + 1)
        stubs.append((first, store.n))
    branches: list[_Branch] = []
    touches: list[tuple[int, int, np.ndarray, np.ndarray, float]] = []
    counts = [0] * n_trees
    grown = [0.0] * n_trees  # accepted centerline length per tree
    # one breadth-first queue per tree; the tree with the least length grows next, so
    # trees compete for space on equal terms
    queues = [deque() for _ in range(n_trees)]
    for k in range(n_trees):
        start = sources[k] * sp
        # item: tree, start, direction, r0, generation, fork, fork_exclusion, terminal
        queues[k].append((k + 1, start, directions[k], root_radii[k], 0, start, 0.0, False))
    while True:
        pending = [k for k in range(n_trees) if queues[k]]
        if not pending:
            break
        k = min(pending, key=lambda i: (grown[i], i))
        tree, start, direction, r0, gen, fork, fork_excl, terminal = queues[k].popleft()
        if gen == 0:  # release this tree's reservation: its root grows now
            a, b = stubs[tree - 1]
            store.r[a:b] = -np.inf
        if counts[tree - 1] >= _MAX_BRANCHES_PER_TREE:
            continue
        r1 = max(r0 * rng.uniform(*_TAPER), geo["min_radius"])
        length = r0 * rng.uniform(*geo["length_per_radius"]) + unit * rng.uniform(*_LENGTH_OFFSET)
        min_length = max(2.0 * r0, 3.0 * unit)
        kiss = gen > 0 and n_trees > 1 and rng.random() < geo["near_touch_prob"]
        tries = _ROOT_TRIES if gen == 0 else _BRANCH_TRIES
        best = None
        d = direction
        for _ in range(tries):
            res = _attempt(store, tree, start, d, r0, r1, length, fork, fork_excl, geo, rng, kiss)
            arc = (len(res[0]) - 1) * geo["step"]
            if res[3] is not None:  # a deliberate near-touch: take it
                best = (res, arc)
                break
            if best is None or arc > best[1]:
                best = (res, arc)
            if res[2]:
                break
            # re-aim: turn away from what blocked this attempt, plus a random tilt
            away = _perpendicular(direction, rng)
            if res[4] is not None:
                v = res[4][0] - res[4][1]
                if np.linalg.norm(v) > 1e-9:
                    away = 0.5 * away + _unit(v)
            d = _unit(d + _REAIM * away)
        (path, radii, complete, touch, _), arc = best
        if gen == 0:
            # a root is always kept (its source is reserved, so at least the source
            # itself is clear); a short one simply ends the tree
            if len(path) == 0:  # pragma: no cover - guarded by the stub reservation
                raise RuntimeError("internal error: a tree root could not be placed")
        elif len(path) < 2 or (arc < min_length and touch is None):
            continue
        branches.append(_Branch(tree, gen, path, radii))
        # keep near-touches away from branch ends, where children may still sprout
        tip_zone = 2.5 * float(radii[-1]) + geo["clearance"] + 2.0 * unit
        store.add(path, radii, tree, tip_zone)
        counts[tree - 1] += 1
        grown[tree - 1] += arc
        if touch is not None:
            j, gap = touch
            touches.append((tree, int(store.t[j]), path[-1] / sp, store.p[j] / sp, gap))
            continue
        if len(path) < 2:
            continue
        r_end = float(radii[-1])
        can_split = (
            not terminal
            and gen < geo["max_generation"]
            and r_end >= 1.25 * geo["min_radius"]
            and (complete or arc >= 0.5 * length)
        )
        if not can_split:
            continue
        end = path[-1]
        d_end = _unit(path[-1] - path[-2])
        (ra, ta), (rb, tb) = _murray_children(r_end, rng)
        u = _perpendicular(d_end, rng)
        excl = 2.5 * r_end + 2.0 * unit
        for r_child, theta, sign in ((ra, ta, 1.0), (rb, tb, -1.0)):
            d_child = _unit(math.cos(theta) * d_end + sign * math.sin(theta) * u)
            is_twig = r_child <= geo["min_radius"]
            r_child = max(r_child, geo["min_radius"])
            queues[k].append((tree, end, d_child, r_child, gen + 1, end, excl, is_twig))
    return branches, sources, faces, touches, counts, root_radii


# --------------------------------------------------------------------------------------
# rasterisation
# --------------------------------------------------------------------------------------
def _rasterise(shape, spacing, branches, render, edge_width):
    """Paint tubes (labels) and the image-space vessel depth/contrast.

    Tubes are unions of capsules around short polyline segments with the larger of the
    two end radii; every segment is evaluated in its own bounding box.
    """
    sp = np.asarray(spacing)
    trees = np.zeros(shape, dtype=np.int32)
    depth = np.full(shape, -np.inf, dtype=np.float32)
    contrast = np.zeros(shape, dtype=np.float32)
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    shape_a = np.asarray(shape)
    for b, (narrow, gain) in zip(branches, render, strict=True):
        path, radii = b.path, b.radii
        idx = list(range(0, len(path), _RASTER_STRIDE))
        if idx[-1] != len(path) - 1:
            idx.append(len(path) - 1)
        if len(idx) == 1:
            idx.append(idx[0])
        for i0, i1 in zip(idx[:-1], idx[1:], strict=True):
            a, c = path[i0], path[i1]
            r = max(radii[i0], radii[i1])
            r_img = max(radii[i0] * narrow[i0], radii[i1] * narrow[i1])
            g = 0.5 * (gain[i0] + gain[i1])
            reach = r + edge_width
            lo = np.maximum(np.floor((np.minimum(a, c) - reach) / sp).astype(int), 0)
            hi = np.minimum(np.ceil((np.maximum(a, c) + reach) / sp).astype(int) + 1, shape_a)
            z = axes[0][lo[0] : hi[0], None, None] - a[0]
            y = axes[1][None, lo[1] : hi[1], None] - a[1]
            x = axes[2][None, None, lo[2] : hi[2]] - a[2]
            ab = c - a
            l2 = float(ab @ ab)
            if l2 > 0:
                t = (z * ab[0] + y * ab[1] + x * ab[2]) * (1.0 / l2)
                np.clip(t, 0.0, 1.0, out=t)
                d = np.sqrt((z - t * ab[0]) ** 2 + (y - t * ab[1]) ** 2 + (x - t * ab[2]) ** 2)
            else:
                d = np.sqrt(z**2 + y**2 + x**2)
            sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
            inside = d <= r
            trees[sl][inside] = b.tree
            dimg = (r_img - d).astype(np.float32)
            cur = depth[sl]
            better = dimg > cur
            cur[better] = dimg[better]
            contrast[sl][better] = g
    return trees, depth, contrast


def _centerline(shape, spacing, branches):
    """Thin 26-connected centerline voxels per branch, with radius and tree id."""
    sp = np.asarray(spacing)
    centerline = np.zeros(shape, dtype=bool)
    radius = np.zeros(shape, dtype=np.float32)
    cl_tree = np.zeros(shape, dtype=np.int32)
    for b in branches:
        vox = np.rint(b.path / sp).astype(np.int64)
        np.clip(vox, 0, np.asarray(shape) - 1, out=vox)
        keep = np.ones(len(vox), dtype=bool)
        keep[1:] = np.any(vox[1:] != vox[:-1], axis=1)
        vox, rad = vox[keep], b.radii[keep]
        chain: list[int] = []
        vl = vox.tolist()
        for i, v in enumerate(vl):
            # drop the previous voxel while it is a detour between two neighbours
            while len(chain) >= 2:
                w = vl[chain[-2]]
                if max(abs(v[0] - w[0]), abs(v[1] - w[1]), abs(v[2] - w[2])) <= 1:
                    chain.pop()
                else:
                    break
            chain.append(i)
        sel = np.asarray(chain)
        z, y, x = vox[sel].T
        centerline[z, y, x] = True
        np.maximum.at(radius, (z, y, x), rad[sel].astype(np.float32))
        cl_tree[z, y, x] = b.tree
    return centerline, radius, cl_tree


def _centerline_graph(centerline, radius, cl_tree, spacing):
    """26-neighbour graph over centerline voxels, edges only within a tree."""
    shape = centerline.shape
    graph = nx.Graph(shape=tuple(int(s) for s in shape), spacing=tuple(spacing))
    coords = np.argwhere(centerline)
    nodes = [tuple(c) for c in coords.tolist()]
    rad = radius[centerline].tolist()
    tr = cl_tree[centerline]
    graph.add_nodes_from(
        (n, {"coord": n, "radius": r, "tree": t})
        for n, r, t in zip(nodes, rad, tr.tolist(), strict=True)
    )
    index = np.full(shape, -1, dtype=np.int64)
    index[centerline] = np.arange(len(nodes))  # same (C) order as argwhere
    upper = np.asarray(shape) - 1
    sp = np.asarray(spacing)
    for off in _HALF_NEIGHBOURHOOD:
        nb = coords + off
        ok = np.all((nb >= 0) & (nb <= upper), axis=1)
        src = np.flatnonzero(ok)
        dst = index[nb[ok, 0], nb[ok, 1], nb[ok, 2]]
        keep = dst >= 0
        src, dst = src[keep], dst[keep]
        keep = tr[src] == tr[dst]
        if not keep.any():
            continue
        length = float(np.linalg.norm(np.asarray(off) * sp))
        graph.add_edges_from(
            (nodes[i], nodes[j], {"length": length})
            for i, j in zip(src[keep].tolist(), dst[keep].tolist(), strict=True)
        )
    return graph


# --------------------------------------------------------------------------------------
# rendering (domain randomisation, image only)
# --------------------------------------------------------------------------------------
def _branch_appearance(branches, geo, rng, stenosis_prob, randomize):
    """Per-sample radius narrowing and contrast gain for every branch (image only)."""
    render, stenoses = [], []
    h = geo["step"]
    for b in branches:
        m = len(b.path)
        narrow = np.ones(m)
        gain = np.full(m, rng.uniform(0.85, 1.15) if randomize else 1.0)
        arc = np.arange(m) * h
        length = arc[-1]
        r_mean = float(b.radii.mean())
        if (
            randomize
            and r_mean >= 1.5 * geo["min_radius"]
            and length >= 6.0 * geo["unit"]
            and rng.random() < stenosis_prob
        ):
            center = rng.uniform(0.25, 0.75) * length
            half = rng.uniform(1.5, 3.0) * r_mean
            c_min = rng.uniform(0.1, 0.4)
            n_min = rng.uniform(0.4, 0.8)
            w = np.clip(np.abs(arc - center) / half, 0.0, 1.0)
            bump = 0.5 * (1.0 + np.cos(np.pi * w))  # 1 at the centre, 0 outside
            gain = gain * (1.0 - (1.0 - c_min) * bump)
            narrow = 1.0 - (1.0 - n_min) * bump
            i = int(np.argmin(np.abs(arc - center)))
            stenoses.append(
                {
                    "tree": int(b.tree),
                    "center": [float(v) for v in b.path[i] / np.asarray(geo["spacing"])],
                    "length": float(2 * half),
                    "contrast": float(c_min),
                    "narrowing": float(n_min),
                }
            )
        render.append((narrow, gain))
    return render, stenoses


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` linear-interpolation weights with aligned end points."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    w = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    m[rows, i0] = 1.0 - w
    m[rows, i0 + 1] = w
    return m


def _upsample(field: np.ndarray, shape) -> np.ndarray:
    """Separable linear upsampling of a small 3D field to ``shape`` (three matmuls)."""
    mz, my, mx = (_interp_matrix(n, c) for n, c in zip(shape, field.shape, strict=True))
    out = field.astype(np.float32) @ mx.T  # (cz, cy, X)
    out = np.matmul(my, out)  # (cz, Y, X)
    return np.tensordot(mz, out, axes=(1, 0))  # (Z, Y, X)


def _smooth_noise(shape, spacing, scale, rng):
    """Zero-mean, unit-std smooth random field with correlation length ``scale``."""
    sp = np.asarray(spacing)
    # draw on a grid of about 2 samples per correlation length, then upsample
    step = np.maximum(scale / (2.0 * sp), 1.0)
    coarse = tuple(int(max(4, math.ceil(n / s))) for n, s in zip(shape, step, strict=True))
    field = ndi.gaussian_filter(rng.standard_normal(coarse), sigma=1.0, mode="wrap")
    field -= field.mean()
    std = field.std()
    if std > 0:
        field /= std
    return _upsample(field, shape)


def _bias_field(shape, rng, strength):
    """Smooth multiplicative field ``exp(q)``, ``q`` a random quadratic in (z, y, x).

    ``q`` is scaled so that its range over the volume is about ``strength`` and its
    mean about 0.  It is summed from three 2D terms, so only three full-volume passes
    are needed.
    """
    coef = rng.uniform(-1.0, 1.0, size=9)

    def terms(z, y, x):
        a = coef[0] * z + coef[1] * y + 0.5 * (coef[3] * z * z + coef[4] * y * y + coef[6] * z * y)
        b = coef[2] * x + 0.5 * (coef[5] * x * x + coef[7] * z * x)
        c = 0.5 * coef[8] * y * x
        return a, b, c

    # range and mean from a coarse evaluation (a quadratic is smooth)
    g = np.linspace(-1.0, 1.0, 17)
    a, b, c = terms(g[:, None, None], g[None, :, None], g[None, None, :])
    q = a + b + c
    span = float(q.max() - q.min())
    scale = strength / span if span > 0 else 0.0
    mean = float(q.mean())
    z, y, x = (np.linspace(-1.0, 1.0, n) for n in shape)
    a = terms(z[:, None], y[None, :], 0.0)[0]  # (Z, Y)
    b = terms(z[:, None], 0.0, x[None, :])[1]  # (Z, X)
    c = terms(0.0, y[:, None], x[None, :])[2]  # (Y, X)
    a = (scale * (a - mean)).astype(np.float32)
    b = (scale * b).astype(np.float32)
    c = (scale * c).astype(np.float32)
    log_b = a[:, :, None] + b[:, None, :]
    log_b += c[None, :, :]
    return np.exp(log_b, out=log_b), coef


def _render_image(shape, spacing, depth, contrast, rng, randomize):
    sp = np.asarray(spacing)
    unit = float(sp.min())
    p: dict[str, Any] = {}
    if randomize:
        polarity = 1 if rng.random() < 0.7 else -1
        if polarity > 0:
            background = rng.uniform(0.05, 0.4)
            amplitude = rng.uniform(0.25, 0.8)
        else:
            background = rng.uniform(0.55, 0.9)
            amplitude = rng.uniform(0.2, 0.45)
        edge = rng.uniform(0.5, 1.5) * unit
        psf_xy = rng.uniform(0.3, 1.2) * unit
        psf = [psf_xy * rng.uniform(1.0, 2.0), psf_xy, psf_xy]
        bias_strength = rng.uniform(0.0, 0.6)
        tex_amp = rng.uniform(0.0, 0.25)
        tex_scale = rng.uniform(2.0, 10.0) * unit
        gauss_std = rng.uniform(0.01, 0.12)
        photons = rng.uniform(15.0, 200.0) if rng.random() < 0.5 else None
    else:
        polarity, background, amplitude = 1, 0.1, 0.8
        edge, psf = 1.0 * unit, [0.5 * unit] * 3
        bias_strength = tex_amp = gauss_std = 0.0
        tex_scale, photons = 4.0 * unit, None
    p.update(
        polarity=int(polarity),
        background=float(background),
        amplitude=float(amplitude),
        edge_width=float(edge),
        psf_sigma=[float(s) for s in psf],
        bias_strength=float(bias_strength),
        texture_amplitude=float(tex_amp),
        texture_scale=float(tex_scale),
        gaussian_noise_std=float(gauss_std),
        poisson_photons=None if photons is None else float(photons),
    )
    # partial-volume vessel profile: 1 inside, linear ramp of width `edge` at the wall
    vessel = depth * np.float32(1.0 / edge)
    vessel += np.float32(0.5)
    np.clip(vessel, 0.0, 1.0, out=vessel)
    vessel *= contrast
    img = np.float32(background) + np.float32(polarity * amplitude) * vessel
    if tex_amp > 0:
        tex = _smooth_noise(shape, spacing, tex_scale, rng)
        img += np.float32(tex_amp * amplitude) * tex
    sigma_vox = [s / d for s, d in zip(psf, spacing, strict=True)]
    img = ndi.gaussian_filter(img, sigma=sigma_vox, mode="nearest", truncate=3.0)
    if bias_strength > 0:
        bias, coef = _bias_field(shape, rng, bias_strength)
        img *= bias
        p["bias_coefficients"] = [float(c) for c in coef]
    if photons is not None:
        np.clip(img, 0.0, None, out=img)
        img = rng.poisson(img * np.float32(photons)).astype(np.float32)
        img *= np.float32(1.0 / photons)
    if gauss_std > 0:
        noise = rng.standard_normal(size=shape, dtype=np.float32)
        noise *= np.float32(gauss_std * amplitude)
        img += noise
    # robust range from every 8th voxel (the image is smooth at that scale)
    lo, hi = np.percentile(img[::2, ::2, ::2], [0.5, 99.5])
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    img = ((img - lo) * scale).astype(np.float32)
    p["normalisation"] = [float(lo), float(hi)]
    return img, p


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
def make_vessel_volume(
    shape=(96, 96, 96),
    *,
    n_trees: int = 2,
    seed: int | None = 0,
    spacing=(1.0, 1.0, 1.0),
    radius_range=(1.0, 6.0),
    clearance: float | None = None,
    near_touch_prob: float = 0.15,
    stenosis_prob: float = 0.1,
    randomize_image: bool = True,
    appearance: str = "classic",
    growth: str = "murray",
    faint_branch_prob: float = 0.0,
    tissue_distractor_prob: float = 0.0,
    large_bone_prob: float = 0.0,
) -> SyntheticVessels:
    """Generate a synthetic volume of interleaved vessel trees with ground truth.

    Each tree grows from a source on its own face of the volume (distinct faces, so at
    most 6 trees) by recursive bifurcation.  Branches curve smoothly (an
    Ornstein-Uhlenbeck turning process), taper along their length and split following
    Murray's law ``r_parent**3 == r1**3 + r2**3`` with Murray's optimal branching
    angles, until the radius reaches the lower end of ``radius_range``.  Branches are
    cut short where they would come closer than ``clearance`` to another tree or
    touch a non-adjacent branch of their own tree.  With probability
    ``near_touch_prob`` a branch is instead steered towards another tree and stopped
    with a surface gap of one to two voxels (``params["near_touch_gap"]``); these
    near-contacts are listed in ``near_touches``.

    Tubes are rasterised as unions of capsules around the centre polylines, so the
    ground truth is exact: ``mask == (trees > 0)``, every tree is one 26-connected
    component containing its source, different trees never touch, and the centerline
    lies inside the mask.  Domain randomisation only affects ``image``.

    Parameters
    ----------
    shape : sequence of 3 int, optional
        Volume shape ``(Z, Y, X)``, each at least 16.
    n_trees : int, optional
        Number of trees, 1 to 6.
    seed : int or None, optional
        Non-negative seed; the same seed (and arguments) gives identical arrays.
        ``None`` draws fresh entropy, recorded in the result's ``seed``.
    spacing : sequence of 3 float, optional
        Physical voxel size ``(dz, dy, dx)``; geometry is grown in physical units.
    radius_range : (float, float), optional
        Smallest and largest vessel radius in physical units.  The root radius is the
        upper bound (at most 1/8 of the smallest physical extent).  The lower bound is
        raised to just over half the voxel diagonal when needed, so that the thinnest
        tubes stay 26-connected on the grid.  Effective values are recorded in
        ``params["min_radius"]`` and ``params["root_radius"]``.
    clearance : float, optional
        Smallest surface gap (physical units) between different trees outside the
        deliberate near-contacts.  Default: one voxel more than the near-touch gap,
        and at least 4 voxels.
    near_touch_prob : float, optional
        Probability that a non-root branch is steered into a near-contact with another
        tree.
    stenosis_prob : float, optional
        Probability that a branch gets a low-contrast narrowing in the image.
    randomize_image : bool, optional
        If False, render a clean bright-vessel image (mild blur, no bias or noise).
        Only for ``appearance="classic"``.
    appearance : {"classic", "random", "ct", "microscopy", "generic"}, optional
        ``"classic"`` (default) is the original look (smooth texture, 30 % dark
        vessels, percentile-normalised; the synthetic test set and the sample use it).
        The others render with :func:`napari_topo.data.appearance.render_realistic`:
        modality-aware backgrounds, distractors (bone, air, cells), noise, blur and
        artefacts, always bright vessels on the scale the inference pipeline gives the
        model (``"random"`` draws one of the three styles). The models shipped since
        issue 9 are trained on ``"random"``.
    growth : {"murray", "sparse", "tortuous", "random"}, optional
        Growth regime of the trees. ``"murray"`` (default): the regime described above.
        ``"sparse"``: few generations of long, gently curving branches (large surface
        vessels, a few tubes crossing the volume). ``"tortuous"``: short, strongly
        curving branches (capillary beds, tumour vessels). ``"random"`` draws one of
        the three (1/2, 1/4, 1/4).
    faint_branch_prob : float, optional
        Probability that a branch is drawn faint: its image contrast multiplied by a
        factor drawn log-uniformly from :data:`FAINT_BRANCH_GAIN` (labels unchanged). Real
        two-photon and light-sheet stacks hold capillaries at a tenth to a half of the
        brightness of the vessels beside them (out of focus, less dye, partial volume);
        the generator's own per-branch variation is only +-15 %. Default 0 draws nothing,
        so volumes are those of earlier versions.
    tissue_distractor_prob : float, optional
        Probability that a CT-style volume (``appearance="ct"``, or ``"random"`` drawing
        it) also holds soft-tissue distractors: muscle or bowel-wall sheets between fat
        layers and ribs of real size (see
        :func:`napari_topo.data.appearance.render_realistic`, ``tissue_rng``). On the
        development CT a muscle sheet and the ribs made a third of the false positives.
        Drawn from its own stream; default 0 leaves every volume as before.
    large_bone_prob : float, optional
        Probability that a CT-style volume also holds 1-2 vertebra-sized bones beside
        its thickest vessel (``bone_rng`` of
        :func:`napari_topo.data.appearance.render_realistic`). On the development CT and
        a phantom of it, a vertebra's saturated cortex beside a 10 mm vein made the
        shipped unet-dice miss the vein (sensitivity 0.000 on the phantom). Drawn from
        its own stream; default 0 leaves every volume as before.

    Returns
    -------
    SyntheticVessels
        Image, ground truth and the parameters used.

    Raises
    ------
    ValueError
        If an argument has the wrong length, type or range.

    Notes
    -----
    Randomness comes from ``numpy.random.SeedSequence(seed)``, split into one stream
    for geometry and one for rendering, so changing rendering options keeps the
    geometry.  ``params`` holds:

    * geometry: ``root_radius``, ``min_radius``, ``clearance``, ``self_clearance``,
      ``near_touch_gap`` ([low, high]), ``near_touch_prob``, ``curvature``, ``faces``,
      ``n_branches`` (per tree), ``n_near_touches``, ``near_touch_gaps``;
    * rendering: ``polarity`` (+1 bright / -1 dark vessels), ``background``,
      ``amplitude``, ``edge_width``, ``psf_sigma`` (physical, per axis),
      ``bias_strength`` (+ ``bias_coefficients``), ``texture_amplitude``,
      ``texture_scale``, ``gaussian_noise_std``, ``poisson_photons`` (None if no
      Poisson noise), ``stenoses`` (list of dicts) and ``normalisation``.

    Examples
    --------
    >>> vol = make_vessel_volume((48, 48, 48), n_trees=2, seed=1)
    >>> vol.image.shape, vol.image.dtype
    ((48, 48, 48), dtype('float32'))
    >>> bool(((vol.trees > 0) == vol.mask).all())
    True
    >>> d = vol.geodesic_distances()  # from the tree sources, along the centerline
    >>> d[tuple(vol.sources[0])]
    0.0
    """
    shape = _check_shape(shape)
    spacing = _check_spacing(spacing)
    if isinstance(n_trees, bool) or not isinstance(n_trees, Integral):
        raise ValueError(f"n_trees must be an integer, got {n_trees!r}")
    if not 1 <= n_trees <= _MAX_TREES:
        raise ValueError(
            f"n_trees must be between 1 and {_MAX_TREES} (one source per face), got {n_trees}"
        )
    try:
        r_lo, r_hi = (float(v) for v in radius_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"radius_range must be a pair of numbers (min, max), got {radius_range!r}"
        ) from None
    if not (math.isfinite(r_lo) and math.isfinite(r_hi) and 0 < r_lo <= r_hi):
        raise ValueError(f"radius_range must satisfy 0 < min <= max, got {radius_range!r}")
    if appearance not in _APPEARANCES:
        raise ValueError(f"appearance must be one of {list(_APPEARANCES)}, got {appearance!r}")
    if growth not in _GROWTH and growth != "random":
        raise ValueError(
            f"growth must be one of {[*_GROWTH, 'random']}, got {growth!r}"
        )
    near_touch_prob = _check_probability("near_touch_prob", near_touch_prob)
    stenosis_prob = _check_probability("stenosis_prob", stenosis_prob)
    faint_branch_prob = _check_probability("faint_branch_prob", faint_branch_prob)
    tissue_distractor_prob = _check_probability("tissue_distractor_prob", tissue_distractor_prob)
    large_bone_prob = _check_probability("large_bone_prob", large_bone_prob)
    seq = _check_seed(seed)
    geo_rng, img_rng = (np.random.default_rng(s) for s in seq.spawn(2))

    sp = np.asarray(spacing)
    unit = float(sp.min())
    diag = float(np.linalg.norm(sp))
    extent = [(n - 1) * s for n, s in zip(shape, spacing, strict=True)]
    min_radius = max(r_lo, 0.5 * diag + 0.1 * unit)
    root_radius = max(min(r_hi, min(extent) / 8.0), min_radius)
    touch_lo = diag + 0.35 * unit  # > voxel diagonal: trees never 26-touch
    touch_hi = touch_lo + unit
    if clearance is None:
        clearance = max(touch_hi + float(sp.max()), 4.0 * unit)
    else:
        if isinstance(clearance, bool) or not isinstance(clearance, Real):
            raise ValueError(f"clearance must be a number, got {clearance!r}")
        if not clearance >= touch_lo:
            raise ValueError(
                f"clearance must be at least {touch_lo:.3g} (just over one voxel diagonal) "
                f"so that trees never touch, got {clearance!r}"
            )
        clearance = float(clearance)
    if growth == "random":  # drawn from its own stream: the murray geometry stays as it was
        growth = str(np.random.default_rng(seq.spawn(1)[0]).choice(
            ["murray", "murray", "sparse", "tortuous"]))
    regime = _GROWTH[growth]
    geo = {
        "spacing": spacing,
        "length_per_radius": regime["length_per_radius"],
        "max_generation": regime["max_generation"],
        "unit": unit,
        "step": _STEP * unit,
        "extent": extent,
        "margin": 2.0 * unit,
        "min_radius": min_radius,
        "root_radius": root_radius,
        "clearance": clearance,
        "self_clearance": touch_lo,
        "touch_gap": (touch_lo, touch_hi),
        "near_touch_prob": near_touch_prob,
        "curvature": geo_rng.uniform(*regime["curvature"]) / unit,
        "curve_correlation": _CURVE_CORRELATION * unit,
    }
    branches, sources, faces, touches, counts, root_radii = _grow_forest(
        shape, spacing, n_trees, geo, geo_rng
    )

    render, stenoses = _branch_appearance(branches, geo, img_rng, stenosis_prob, randomize_image)
    n_faint = 0
    if faint_branch_prob > 0:  # its own stream: every other draw stays as it was
        f_rng = np.random.default_rng(seq.spawn(1)[0])
        lo, hi = np.log(FAINT_BRANCH_GAIN)
        for _narrow, gain in render:
            if f_rng.random() < faint_branch_prob:
                gain *= float(np.exp(f_rng.uniform(lo, hi)))
                n_faint += 1
    edge_width = 1.5 * unit  # widest partial-volume ramp the renderer may draw
    trees, depth, contrast = _rasterise(shape, spacing, branches, render, edge_width)
    centerline, radius, cl_tree = _centerline(shape, spacing, branches)
    # centerline voxels lie within half a voxel diagonal of the axis, hence inside their
    # tube; painting them makes "centerline inside its own tree" hold by construction
    trees[centerline] = cl_tree[centerline]
    if appearance == "classic":
        image, rparams = _render_image(shape, spacing, depth, contrast, img_rng, randomize_image)
    else:
        from .appearance import render_realistic

        tissue_rng = None
        if tissue_distractor_prob > 0:  # its own stream, like the faint branches
            # (spawn continues the seed sequence: the next child after growth and faint)
            t_rng = np.random.default_rng(seq.spawn(1)[0])
            if t_rng.random() < tissue_distractor_prob:
                tissue_rng = t_rng
        bone_rng = None
        if large_bone_prob > 0:  # its own stream too: the next child of the sequence
            b_rng = np.random.default_rng(seq.spawn(1)[0])
            if b_rng.random() < large_bone_prob:
                bone_rng = b_rng
        image, rparams = render_realistic(
            depth,
            contrast,
            trees > 0,
            img_rng,
            appearance,
            tissue_rng=tissue_rng,
            bone_rng=bone_rng,
        )
    rparams["appearance"] = appearance
    graph = _centerline_graph(centerline, radius, cl_tree, spacing)

    params: dict[str, Any] = {
        "root_radius": float(root_radius),
        "root_radii": [float(r) for r in root_radii],
        "min_radius": float(min_radius),
        "clearance": float(clearance),
        "self_clearance": float(touch_lo),
        "near_touch_gap": [float(touch_lo), float(touch_hi)],
        "near_touch_prob": near_touch_prob,
        "stenosis_prob": stenosis_prob,
        "faint_branch_prob": faint_branch_prob,
        "n_faint_branches": n_faint,
        "tissue_distractor_prob": tissue_distractor_prob,
        "large_bone_prob": large_bone_prob,
        "curvature": float(geo["curvature"]),
        "faces": faces,
        "n_branches": [int(c) for c in counts],
        "n_near_touches": len(touches),
        "near_touch_gaps": [float(t[4]) for t in touches],
        "randomize_image": bool(randomize_image),
        "growth": growth,
    }
    params.update(rparams)
    params["stenoses"] = stenoses
    near = (
        np.asarray([[t[2], t[3]] for t in touches], dtype=np.float64)
        if touches
        else np.empty((0, 2, 3), dtype=np.float64)
    )
    return SyntheticVessels(
        image=image,
        mask=trees > 0,
        trees=trees,
        centerline=centerline,
        radius=radius,
        sources=sources,
        graph=graph,
        near_touches=near,
        spacing=spacing,
        seed=int(seq.entropy),
        params=params,
    )


def _as_nodes(graph: nx.Graph, sources) -> list[tuple[int, int, int]]:
    arr = np.asarray(sources)
    if arr.ndim == 1 and arr.shape[0] == 3:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise ValueError(
            "sources must be one (z, y, x) voxel index or an (N, 3) array of them, "
            f"got an array of shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError("sources must be integer voxel indices (z, y, x)")
        arr = arr.astype(np.int64)
    nodes = [tuple(int(v) for v in row) for row in arr]
    missing = [n for n in nodes if n not in graph]
    if missing:
        raise ValueError(
            f"sources must be centerline nodes of the graph; not in the graph: {missing[:5]}"
        )
    return nodes


def geodesic_distances(graph: nx.Graph, sources, cutoff=None, *, separate: bool = False):
    """Shortest-path distances along a centerline graph (Dijkstra on ``length``).

    Parameters
    ----------
    graph : networkx.Graph
        Centerline graph as in :attr:`SyntheticVessels.graph`: nodes are voxel tuples
        ``(z, y, x)``, edges carry ``length`` in physical units.
    sources : (3,) or (N, 3) array-like of int
        Voxel indices of the source node(s).
    cutoff : float, optional
        Only report nodes at most this far (physical units), e.g. the TopNet
        neighbourhood radius.
    separate : bool, optional
        If False (default), return the distance of each node to its *nearest* source
        (multi-source Dijkstra).  If True, return ``{source: {node: distance}}``, one
        single-source result per source, which gives the pairwise geodesic distances
        a TopNet metric loss needs.

    Returns
    -------
    dict
        ``{node: distance}`` or ``{source: {node: distance}}``.  Nodes not reachable
        (other trees) or beyond ``cutoff`` are absent.

    Raises
    ------
    ValueError
        If a source is not a node of the graph, or ``cutoff`` is negative.

    Examples
    --------
    >>> vol = make_vessel_volume((48, 48, 48), seed=3)
    >>> dist = geodesic_distances(vol.graph, vol.sources[0], cutoff=15.0)
    >>> max(dist.values()) <= 15.0
    True
    """
    if not isinstance(graph, nx.Graph):
        raise ValueError(f"graph must be a networkx.Graph, got {type(graph).__name__}")
    if cutoff is not None:
        if isinstance(cutoff, bool) or not isinstance(cutoff, Real) or not cutoff >= 0:
            raise ValueError(f"cutoff must be None or a number >= 0, got {cutoff!r}")
        cutoff = float(cutoff)
    nodes = _as_nodes(graph, sources)
    if separate:
        return {
            n: {
                m: float(d)
                for m, d in nx.single_source_dijkstra_path_length(
                    graph, n, cutoff=cutoff, weight="length"
                ).items()
            }
            for n in nodes
        }
    dist = nx.multi_source_dijkstra_path_length(graph, nodes, cutoff=cutoff, weight="length")
    return {m: float(d) for m, d in dist.items()}


def sample_vessels(seed: int = 0) -> SyntheticVessels:
    """A small (64^3, two trees) synthetic vessel volume for demos and tests.

    Parameters
    ----------
    seed : int, optional
        Seed passed to :func:`make_vessel_volume`.

    Returns
    -------
    SyntheticVessels

    Examples
    --------
    >>> vol = sample_vessels()
    >>> vol.shape, vol.n_trees
    ((64, 64, 64), 2)
    """
    return make_vessel_volume((64, 64, 64), n_trees=2, seed=seed)


class SyntheticVesselSet(Sequence):
    """A fixed, reproducible set of synthetic volumes, regenerated on access.

    Item ``i`` is ``make_vessel_volume(shape, seed=base_seed + i, **kwargs)``; nothing
    is stored, so the set costs no memory and no disk.

    Parameters
    ----------
    n : int
        Number of volumes.
    shape : sequence of 3 int
        Shape of every volume.
    base_seed : int
        Seed of the first volume.
    **kwargs
        Further arguments of :func:`make_vessel_volume`.
    """

    def __init__(self, n: int, shape, base_seed: int, **kwargs):
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if isinstance(base_seed, bool) or not isinstance(base_seed, Integral) or base_seed < 0:
            raise ValueError(f"base_seed must be a non-negative integer, got {base_seed!r}")
        for bad in ("seed", "shape"):
            if bad in kwargs:
                raise ValueError(f"{bad!r} is set by the set itself; do not pass it in kwargs")
        self.n = int(n)
        self.shape = _check_shape(shape)
        self.base_seed = int(base_seed)
        self.kwargs = dict(kwargs)

    @property
    def seeds(self) -> list[int]:
        """Seeds of the volumes, in order."""
        return [self.base_seed + i for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i) -> SyntheticVessels:
        if isinstance(i, bool) or not isinstance(i, Integral):
            raise TypeError(f"indices must be integers, got {type(i).__name__}")
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index out of range for a set of {self.n} volumes")
        return make_vessel_volume(self.shape, seed=self.base_seed + int(i), **self.kwargs)

    def __iter__(self) -> Iterator[SyntheticVessels]:
        for i in range(self.n):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"SyntheticVesselSet(n={self.n}, shape={self.shape}, "
            f"base_seed={self.base_seed}, kwargs={self.kwargs!r})"
        )


def test_set(n: int = 10, shape=(96, 96, 96), base_seed: int = 10_000, **kwargs):
    """The fixed held-out test set: ``n`` volumes regenerated from consecutive seeds.

    Parameters
    ----------
    n : int, optional
        Number of volumes.
    shape : sequence of 3 int, optional
        Shape of every volume.
    base_seed : int, optional
        Seed of the first volume; training should draw seeds below this value.
    **kwargs
        Further arguments of :func:`make_vessel_volume` (e.g. ``n_trees``).

    Returns
    -------
    SyntheticVesselSet
        A sequence that regenerates volume ``i`` from seed ``base_seed + i`` on access.

    Examples
    --------
    >>> ts = test_set(n=2, shape=(48, 48, 48))
    >>> [v.seed for v in ts]
    [10000, 10001]
    """
    return SyntheticVesselSet(n, shape, base_seed, **kwargs)


# pytest would otherwise try to collect the public ``test_set`` as a test
test_set.__test__ = False
