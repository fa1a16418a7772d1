"""A copy of a converted case with twice the slices (a patient scanned at half the z step).

Scratch for issue 10's "the same command will be run on patients you do not have": how
the fine-tune's time and memory grow with a larger annotated box. The image is
interpolated linearly along z (rounded to its integer type), every mask repeated, the
roots' z doubled. Development data, as the case itself: never commit the copy.

    python benchmarks/results/more_slices/thin.py CONVERTED/ircadb/3Dircadb1.1 \
        CONVERTED2/ircadb/3Dircadb1.1-thin2
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_topo.data.io import read_volume, write_volume

case, out = Path(sys.argv[1]), Path(sys.argv[2])
f = 2
meta = json.loads((case / "meta.json").read_text())
files = meta["files"]
img = read_volume(case / files["image"])
data = np.asarray(img.data)
sp = tuple(float(s) for s in (img.spacing or meta["spacing"]))
nsp = (sp[0] / f, sp[1], sp[2])
out.mkdir(parents=True, exist_ok=True)
up = ndi.zoom(data.astype(np.float32), (f, 1, 1), order=1)
write_volume(out / files["image"], np.rint(up).astype(data.dtype), spacing=nsp, unit="mm")
for key, fn in files.items():
    if key in ("image", "roots"):
        continue
    v = np.asarray(read_volume(case / fn).data)
    write_volume(out / fn, np.repeat(v, f, axis=0), spacing=nsp, unit="mm")
if files.get("roots"):
    with open(case / files["roots"]) as fh:
        rows = list(csv.DictReader(fh))
    with open(out / files["roots"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["z", "y", "x"])
        for r in rows:
            w.writerow([int(r["z"]) * f, r["y"], r["x"]])
meta.update(case=meta["case"] + "-thin2", shape=list(up.shape), spacing=list(nsp))
if "roots" in meta:
    meta["roots"] = [{**r, "zyx": [r["zyx"][0] * f, *r["zyx"][1:]]} for r in meta["roots"]]
(out / "meta.json").write_text(json.dumps(meta, indent=1))
print(out, up.shape, nsp)
