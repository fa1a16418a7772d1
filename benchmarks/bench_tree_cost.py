"""Does a radius-aware path cost separate touching vessel trees better? (issue 9)

The skeleton baseline (:func:`napari_topo.trees.reconstruct.trees_from_skeleton`) gives
every centerline point the root nearest along the skeleton graph, with edge lengths in
physical units. Where two trees touch in the mask (a false bridge) the nearer root
takes the other tree's branches. Vessel trees taper away from their root (Murray's law),
so two path costs that use the vessel radius ``r`` (the distance to the mask's border at
each centerline point, :func:`napari_topo.trees.graph.radius_at`) are tried here against
the plain length ``l`` of an edge ``u -> v``:

* ``taper``: ``l + lam * max(0, r_v - r_u)``: stepping into a wider vessel, away from a
  root, costs extra (directed; Dijkstra from the roots follows the tapering);
* ``width``: ``l * (mean(r) / min(r_u, r_v)) ** lam``: thin links (bridges between two
  wide vessels are often a voxel or two across) cost more, as in minimal-path vessel
  tracking with a cost falling with vesselness.

Each is scored by tree accuracy (``napari_topo.topology.metrics.tree_accuracy``, inside
the case's region of interest, as ``benchmarks/real/run.py`` scores it) on two masks of a
converted case with tree labels and roots (3D-IRCADb-01: 1 = portal vein, 2 = hepatic
veins): the ground truth's own vessel mask (the partition alone; the two trees touch in
it) and the mask a model segments with the defaults. Also written: which tree the
ground truth's centerline voxels get (rows: true tree; columns: none, 1, 2), and the
skeleton component each root snaps to, and (``own_paths``) whether each root can reach
the centerline points of its tree it lost without passing over another true tree.

    python benchmarks/bench_tree_cost.py CONVERTED/ircadb/3Dircadb1.1 --model unet-dice \
        --results R [--embedding-from topnet]

With ``--embedding-from topnet`` the model's mask is also partitioned on its skeleton
cut where TopNet's embedding disagrees (edges kept when the embeddings of their ends
are within ``lam``), which is how TopNet separates touching trees on its own mask.

Writes ``R/tree_cost.json`` and ``R/tree_cost.md``. Development data only; nothing here
is tuned into the package.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components, dijkstra

sys.path.insert(0, str(Path(__file__).resolve().parent / "real"))

from napari_topo.topology.skeleton import skeletonize  # noqa: E402
from napari_topo.trees.graph import radius_at  # noqa: E402
from napari_topo.trees.reconstruct import (  # noqa: E402
    NEIGHBOURS_26,
    _attach_pieces,
    reconstruct_trees,
)

#: (cost, lam) pairs measured; ("length", 0) is the package's own partition.
COSTS = (
    ("length", 0.0),
    ("taper", 1.0),
    ("taper", 3.0),
    ("taper", 10.0),
    ("width", 1.0),
    ("width", 2.0),
    ("width", 3.0),
)


def edge_costs(i, j, length, radius, cost: str, lam: float) -> np.ndarray:
    """Cost of each directed edge ``i -> j`` of physical ``length`` (see module doc).

    Raises
    ------
    ValueError
        An unknown ``cost``.
    """
    if cost == "length" or lam == 0:
        return np.asarray(length, dtype=np.float64)
    ri, rj = radius[i], radius[j]
    if cost == "taper":
        return length + lam * np.maximum(0.0, rj - ri)
    if cost == "width":
        floor = np.maximum(np.minimum(ri, rj), 1e-6)
        return length * (radius.mean() / floor) ** lam
    raise ValueError(f"cost must be 'length', 'taper' or 'width'; got {cost!r}.")


def partition(mask, sources, spacing, cost: str = "length", lam: float = 0.0):
    """Tree labels on ``mask`` from ``sources`` with the chosen edge cost.

    As :func:`~napari_topo.trees.reconstruct.trees_from_skeleton` (same skeleton, graph,
    snapping and attachment of unreached pieces) with only the Dijkstra weights changed.
    Returns the ``(Z, Y, X)`` label volume and the result's skeleton points, labels and
    sources.
    """
    m = np.asarray(mask, dtype=bool)
    sp = np.asarray(spacing, dtype=np.float64)
    points = np.argwhere(skeletonize(m))
    res = reconstruct_trees(points, None, sources, neighbourhood=NEIGHBOURS_26, spacing=sp)
    if cost != "length" and lam != 0:
        adj = res.adjacency.tocoo()
        w = edge_costs(adj.row, adj.col, adj.data, radius_at(points, m, sp), cost, lam)
        directed = sparse.coo_matrix((w, (adj.row, adj.col)), shape=adj.shape).tocsr()
        _, _, nearest = dijkstra(
            directed, directed=True, indices=res.sources, min_only=True, return_predecessors=True
        )
        labels = np.zeros(len(points), dtype=np.int32)
        tree_of = np.zeros(len(points), dtype=np.int32)
        tree_of[res.sources] = np.arange(1, res.sources.size + 1, dtype=np.int32)
        labels[nearest >= 0] = tree_of[nearest[nearest >= 0]]
        res = dataclasses.replace(res, labels=labels)
    if res.n_trees and (res.labels == 0).any():
        comp = connected_components(res.adjacency, directed=False)[1]
        res = dataclasses.replace(res, labels=_attach_pieces(points * sp, res.labels, comp))
    return res.to_volume(m), res


def confusion(pred_trees, gt_trees, roi) -> list[list[int]]:
    """Counts of the true centerline voxels in ``roi``: row = true tree, column = given."""
    sk = skeletonize(gt_trees > 0) & roi
    k = int(gt_trees.max())
    out = np.zeros((k, k + 1), dtype=np.int64)
    for t in range(1, k + 1):
        got = np.clip(pred_trees[sk & (gt_trees == t)], 0, k)
        out[t - 1] = np.bincount(got, minlength=k + 1)[: k + 1]
    return out.tolist()


def roots_on(res) -> list[dict]:
    comp = connected_components(res.adjacency, directed=False)[1]
    sizes = np.bincount(comp)
    return [
        {
            "tree": k + 1,
            "snapped_to": res.points[s].tolist(),
            "component": int(comp[s]),
            "component_points": int(sizes[comp[s]]),
        }
        for k, s in enumerate(res.sources)
    ]


def own_paths(res, gt_trees) -> list[dict]:
    """For each root ``k``: its tree's skeleton points given to another tree in the
    root's own skeleton piece, and how many of them the root reaches without stepping
    on a skeleton point of another true tree (0: no cost on the mask can give them back).
    """
    p = np.asarray(res.points)
    true = np.asarray(gt_trees)[tuple(p.T)]
    comp = connected_components(res.adjacency, directed=False)[1]
    adj = res.adjacency.tocoo()
    out = []
    for k, s in enumerate(res.sources):
        tree = k + 1
        other = (true > 0) & (true != tree)
        keep = ~other[adj.row] & ~other[adj.col]
        sub = sparse.coo_matrix((adj.data[keep], (adj.row[keep], adj.col[keep])), shape=adj.shape)
        reach = connected_components(sub, directed=False)[1]
        lost = np.flatnonzero((true == tree) & (res.labels != tree) & (comp == comp[s]))
        out.append(
            {
                "tree": tree,
                "lost_in_root_piece": int(lost.size),
                "reachable_avoiding_other_trees": int((reach[lost] == reach[s]).sum()),
            }
        )
    return out


def _scores(case: dict, mask, trees) -> dict:
    """``scoring.score`` of a mask and its tree labels inside the case's region."""
    from scoring import score

    return score(
        mask,
        case["gt"],
        roi=case["roi"],
        spacing=case["spacing"],
        pred_trees=trees,
        gt_trees=case["trees"],
    )


def main(argv=None) -> int:
    import run as real  # benchmarks/real/run.py

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", type=Path, help="a converted case with trees and roots")
    ap.add_argument("--model", default="unet-dice")
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument(
        "--embedding-from",
        default=None,
        help="also partition the model's mask on its skeleton cut by this model's "
        "embedding (TopNet), as trees_from_skeleton(embedding=...) does, at thresholds "
        "1-4",
    )
    args = ap.parse_args(argv)
    case = real.load_case(args.case)
    if case["trees"] is None or case["roots"] is None:
        raise SystemExit(f"{args.case} has no tree labels or roots.")
    t0 = time.perf_counter()
    analysis, _ = real.run_model(case, args.model)
    masks = {
        "ground truth's vessel mask": case["trees"] > 0,
        f"{args.model} (defaults)": np.asarray(analysis.mask, dtype=bool),
    }
    print(f"segmented in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for name, m in masks.items():
        for cost, lam in COSTS:
            t = time.perf_counter()
            vol, res = partition(m, case["roots"], case["spacing"], cost, lam)
            s = _scores(case, m, vol)
            row = {
                "mask": name,
                "cost": cost,
                "lam": lam,
                "tree_accuracy": float(s["Tree accuracy"]),
                "confusion": confusion(vol, case["trees"], case["roi"]),
                "roots": roots_on(res),
                "own_paths": own_paths(res, case["trees"]),
                "seconds": round(time.perf_counter() - t, 1),
            }
            rows.append(row)
            print(name, cost, lam, f"{row['tree_accuracy']:.3f}", row["confusion"], flush=True)
            print("   ", row["own_paths"], flush=True)
    if args.embedding_from:
        from napari_topo.inference.pipeline import predict
        from napari_topo.trees.reconstruct import trees_from_skeleton

        out = predict(case["image"], args.embedding_from, spacing=case["spacing"])
        emb = np.asarray(out["embedding"], dtype=np.float32)
        m = masks[f"{args.model} (defaults)"]
        for thr in (1.0, 2.0, 3.0, 4.0):
            res = trees_from_skeleton(
                m, case["roots"], case["spacing"], embedding=emb, embedding_threshold=thr
            )
            vol = res.to_volume(m)
            s = _scores(case, m, vol)
            rows.append(
                {
                    "mask": f"{args.model} (defaults)",
                    "cost": f"{args.embedding_from} embedding",
                    "lam": thr,
                    "tree_accuracy": float(s["Tree accuracy"]),
                    "confusion": confusion(vol, case["trees"], case["roi"]),
                }
            )
            print("embedding", thr, f"{rows[-1]['tree_accuracy']:.3f}", flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_tree_cost.py " + shlex.join(argv or sys.argv[1:])
    (args.results / "tree_cost.json").write_text(
        json.dumps({"command": command, "case": str(args.case), "rows": rows}, indent=1)
    )
    lines = [
        f"Tree accuracy inside the region of interest, `{command}`.",
        "",
        "| mask | cost | lam | tree accuracy | true 1 -> (none, 1, 2) | true 2 -> (none, 1, 2) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["confusion"]
        lines.append(
            f"| {r['mask']} | {r['cost']} | {r['lam']:g} | {r['tree_accuracy']:.3f} | "
            f"{c[0]} | {c[1] if len(c) > 1 else '-'} |"
        )
    (args.results / "tree_cost.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
