"""Make a thick-slice copy of a converted case: how a CT with 3-5 mm slices would look.

Many clinical and public CTs (e.g. the Medical Segmentation Decathlon's hepatic-vessel
task) have slices several times thicker than 3D-IRCADb-01's 1.6 mm. This writes a copy
of a case made by ``convert.py`` with ``factor`` consecutive slices averaged into one
(a thick-slice reconstruction: every slice of the image is the mean of ``factor``
slices, rounded to the image's integer type), the masks taken from each group's middle
slice (``factor`` odd, so that slice is the group's centre), the spacing along z
multiplied by ``factor``, and every root moved to the voxel of its own tree nearest (in
mm) to where it was. A tree left with no voxel loses its root (said on stderr and in
``meta.json``'s ``roots_dropped``); ``run.py`` matches predicted and true trees by their
overlap, not by the order of ``roots.csv``, so the other roots still score. Slices left
over at the end (fewer than ``factor``) are dropped. ``run.py`` then scores the copy as
any case. The ground truth of the copy is thinner than the original's (one slice in
``factor``): fewer, more fragmented vessel pieces.

    python benchmarks/real/thicken.py CONVERTED/ircadb/3Dircadb1.1 OUT --factor 3   # 4.8 mm
    python benchmarks/real/run.py OUT --results R --models unet-dice

The copy is development data as the case itself is: never commit it.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from napari_topo.data.io import read_volume, write_volume


def thicken(case: Path, out_root: Path, factor: int) -> Path:
    """Write the thick-slice copy of ``case`` under ``out_root/<data>/<case>-z<factor>``.

    Raises
    ------
    ValueError
        ``factor`` even or under 3, or a case with fewer than ``factor`` slices.
    """
    if factor < 3 or factor % 2 == 0:
        raise ValueError(
            f"factor must be odd and at least 3 (the masks are taken from the middle one "
            f"of each group of slices); got {factor}"
        )
    case = Path(case)
    meta = json.loads((case / "meta.json").read_text())
    files = meta["files"]
    img = read_volume(case / files["image"])
    data = np.asarray(img.data)
    n = data.shape[0] // factor * factor
    if n == 0:
        raise ValueError(f"{case} has {data.shape[0]} slices, fewer than factor {factor}")
    spacing = tuple(float(s) for s in (img.spacing or meta["spacing"]))
    new_spacing = (spacing[0] * factor, spacing[1], spacing[2])
    unit = meta.get("unit", "mm")
    name = f"{meta['case']}-z{factor}"
    out = Path(out_root) / meta.get("data", "case") / name
    out.mkdir(parents=True, exist_ok=True)
    grouped = data[:n].astype(np.float64).reshape(n // factor, factor, *data.shape[1:])
    thick = grouped.mean(axis=1)
    if np.issubdtype(data.dtype, np.integer):
        thick = np.rint(thick)
    write_volume(out / files["image"], thick.astype(data.dtype), spacing=new_spacing, unit=unit)
    masks = {key: files[key] for key in files if key not in ("image", "roots")}
    roi = meta.get("roi")
    if roi:
        masks.setdefault("roi", roi["mask"])
    trees = None
    for key, fname in masks.items():
        vol = np.asarray(read_volume(case / fname).data)[:n][factor // 2 :: factor]
        write_volume(out / fname, vol, spacing=new_spacing, unit=unit)
        if key == "trees":
            trees = vol
    roots, moved, dropped = [], {}, []
    if files.get("roots") and (case / files["roots"]).is_file() and trees is not None:
        with open(case / files["roots"]) as fh:
            old = [[int(r["z"]), int(r["y"]), int(r["x"])] for r in csv.DictReader(fh)]
        sp = np.asarray(new_spacing)
        for k, zyx in enumerate(old, start=1):
            pts = np.argwhere(trees == k)
            if not len(pts):
                dropped.append(k)
                print(f"thicken.py: tree {k} has no voxel left; root dropped", file=sys.stderr)
                continue
            where = np.asarray([zyx[0] / factor, zyx[1], zyx[2]])
            roots.append(pts[np.argmin((((pts - where) * sp) ** 2).sum(axis=1))].tolist())
            moved[k] = roots[-1]
        with open(out / files["roots"], "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["z", "y", "x"])
            w.writerows(roots)
    meta.update(
        roots_dropped=dropped,
        case=name,
        shape=list(thick.shape),
        spacing=list(new_spacing),
        thickened={
            "from": str(case),
            "factor": factor,
            "command": "python benchmarks/real/thicken.py " + shlex.join(sys.argv[1:]),
        },
    )
    if "roots" in meta:  # a tree with no voxel in a middle slice loses its root
        meta["roots"] = [
            {**r, "zyx": moved[int(r["tree"])]}
            for r in meta["roots"]
            if int(r.get("tree", 0)) in moved
        ]
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", type=Path, help="a case folder made by convert.py")
    ap.add_argument("out", type=Path, help="root folder for the copy")
    ap.add_argument("--factor", type=int, default=3, help="slices averaged into one")
    args = ap.parse_args(argv)
    try:
        out = thicken(args.case, args.out, args.factor)
    except ValueError as exc:
        print(f"thicken.py: {exc}", file=sys.stderr)
        return 2
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
