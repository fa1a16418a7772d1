"""Diagnosis only, with head.patch applied (../README.md): fine-tune a head with a step
budget, keep the last step whatever the checks say, score the lower half of the CT.
Arguments: STEPS [VAL_EVERY (default 1000) [TILE TILES]]: TILE sets the tile edge of
the head's training tiles (HEAD_TILE) and of the scoring segmentation, TILES how many
training tiles (HEAD_TILES); without them 64 and 64."""

import itertools
import sys

import numpy as np
import torch

sys.path.insert(0, "/work/main/benchmarks/real")
from run import load_case
from scoring import score

import napari_topo.training.finetune as ft
from napari_topo.data.io import read_volume
from napari_topo.inference import segment

folder = "/work/results/converted/ircadb/3Dircadb1.1"
case = load_case(folder)
image, gt, roi, spacing = case["image"], case["gt"], case["roi"], case["spacing"]
liver = np.asarray(read_volume(f"{folder}/liver.nii.gz").data) > 0
zs = np.flatnonzero(liver.any(axis=(1, 2)))
mid = (int(zs[0]) + int(zs[-1]) + 1) // 2
upper = np.zeros(gt.shape, bool)
upper[mid:] = True
annotated = roi & upper
labels = (gt & annotated).astype(np.uint8)
test = roi & ~upper
orig = ft._evaluate_grids
cnt = itertools.count()


def ev(*a):
    r = orig(*a)
    r["score"] = next(cnt)
    return r  # diagnosis only: keep the last step


ft._evaluate_grids = ev
oc = ft.choose_threshold
calls = itertools.count()


def ch(*a, **k):
    t, s, tab = oc(*a, **k)
    print(
        "choose_threshold",
        t,
        {kk: round(v, 3) for kk, v in s.items() if isinstance(v, float)},
        flush=True,
    )
    if next(calls) == 0:
        s = dict(s, score=-1.0)
    return t, s, tab


ft.choose_threshold = ch
torch.set_num_threads(2)
if len(sys.argv) > 4:
    ft.HEAD_TILE, ft.HEAD_TILES = int(sys.argv[3]), int(sys.argv[4])
m, card = ft.finetune(
    image,
    labels,
    "unet-dice",
    annotated=annotated,
    spacing=spacing,
    steps=int(sys.argv[1]),
    device="cpu",
    threads=2,
    layers="head",
    patience=100,
    val_every=int(sys.argv[2]) if len(sys.argv) > 2 else 1000,
    progress=lambda p: (
        print(p.phase, p.step, p.message, flush=True) if p.phase != "train" else None
    ),
)
print("threshold", card.mask_threshold, card.architecture, flush=True)
idx = np.nonzero(test)
box = tuple(
    slice(max(0, int(i.min()) - 16), min(n, int(i.max()) + 17))
    for i, n in zip(idx, test.shape, strict=True)
)
crop = np.ascontiguousarray(image[box])
tile = int(sys.argv[3]) if len(sys.argv) > 3 else 64
an = segment(
    crop, (m, card), spacing=spacing, device="cpu", modality="ct", threshold=None, tile=tile
)
prob = an.probability
for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
    s = score(prob > t, gt[box], roi=test[box], spacing=spacing)
    print(
        "lower half thr",
        t,
        {k: round(v, 3) for k, v in s.items() if isinstance(v, float)},
        flush=True,
    )
s = score(an.mask, gt[box], roi=test[box], spacing=spacing)
print(
    "lower half as segment",
    {k: round(v, 3) for k, v in s.items() if isinstance(v, float)},
    flush=True,
)
