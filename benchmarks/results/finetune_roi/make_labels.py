"""Labels of the CT's upper half as a corrected `segment --roi` mask holds them.

Usage: python make_labels.py CASE OUT (CASE: CONVERTED/ircadb/3Dircadb1.1)
"""

import sys

import numpy as np

from napari_topo.data.io import read_volume, write_volume
from napari_topo.inference.pipeline import grow_roi

D = sys.argv[1].rstrip("/") + "/"
img = read_volume(D + "image.nii.gz")
sp = tuple(float(s) for s in img.spacing)
v = np.asarray(read_volume(D + "vessels.nii.gz").data) > 0
liver = np.asarray(read_volume(D + "liver.nii.gz").data) > 0
roi = np.asarray(grow_roi(liver, 10.0, spacing=sp, shape=liver.shape)) > 0
zs = np.flatnonzero(liver.any(axis=(1, 2)))
cut = (zs[0] + zs[-1] + 1) // 2
print("liver z", zs[0], zs[-1], "cut", cut)
lab = np.zeros(v.shape, np.uint8)
lab[cut:] = (v & roi)[cut:]
low = np.zeros(v.shape, np.uint8)
low[:cut] = roi[:cut]
OUT = sys.argv[2].rstrip("/") + "/"
write_volume(OUT + "labels_upper.nii.gz", lab, spacing=sp, unit="mm")
write_volume(OUT + "roi_lower.nii.gz", low, spacing=sp, unit="mm")
print(
    "vessel voxels labelled", int(lab.sum()), "slices with labels", int(lab.any(axis=(1, 2)).sum())
)
