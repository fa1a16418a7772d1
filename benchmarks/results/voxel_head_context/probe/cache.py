# ruff: noqa
# Scratch probe of stop 46 (issue 10), kept to reproduce benchmarks/results/voxel_head_context/README.md;
# not part of the product. Run cache.py once (writes /work/scratch/s46/cache), then exp.py SEEDS / ac.py SEED.
"""Cache the product's head-training inputs (training box) and the lower half's base
probability + features, for fast design experiments (scratch, not shipped)."""

import os
import sys
import time

import numpy as np

sys.path.insert(0, "/work/main/benchmarks/real")
import torch
from run import load_case

from napari_topo.data.io import read_volume

torch.set_num_threads(2)
import napari_topo.training.head as H
from napari_topo.inference.pipeline import predict
from napari_topo.models.voxel_head import feature_blocks  # feature_slabs until 2026-12-04 (cubes)
from napari_topo.training.finetune import finetune

OUT = "/work/scratch/s46/cache"
os.makedirs(OUT, exist_ok=True)
folder = "/work/results/converted/ircadb/3Dircadb1.1"
case = load_case(folder)
image, gt, roi, spacing = case["image"], case["gt"], case["roi"], case["spacing"]
liver = np.asarray(read_volume(os.path.join(folder, case["meta"]["roi"]["mask"])).data) > 0
zs = np.flatnonzero(liver.any(axis=(1, 2)))
mid = (int(zs[0]) + int(zs[-1]) + 1) // 2
upper = np.zeros(gt.shape, bool)
upper[mid:] = True
test = roi & ~upper
annotated = roi & upper
labels = (gt & annotated).astype(np.uint8)
got = {}


class Stop(Exception):
    pass


orig = H._train


def spy(**kw):
    got.update(kw)
    raise Stop


H._train = spy
try:
    finetune(
        image,
        labels,
        "unet-dice",
        annotated=annotated,
        spacing=spacing,
        steps=10,
        device="cpu",
        threads=2,
        layers="head",
    )
except Stop:
    pass
H._train = orig
image_n = got["image"]
policy = got["policy"]
sp = got["sp"]
net_base = got["net_base"]
card = got["base_card"]
box = (
    H._grown_box(got["region"], H.halo_per_axis(sp) if hasattr(H, "halo_per_axis") else None)
    if False
    else None
)
from napari_topo.models.voxel_head import halo_per_axis

box = H._grown_box(got["region"], halo_per_axis(sp))


def base_and_feats(b, tag):
    t = time.time()
    crop = np.asarray(image_n[b])
    out = predict(
        crop,
        (net_base, card),
        spacing=spacing,
        zoom=policy.zoom,
        intensity_from=image_n,
        device="cpu",
        on_message=lambda m: None,
        **got["view_inputs"],
    )
    prob = np.asarray(out["vessel"], np.float32)
    F = np.concatenate(
        [f for _, f in feature_blocks(crop, prob, sp, normalize=policy.normalizer)]  # slabs here
    )
    np.save(f"{OUT}/{tag}_feat.npy", F)
    np.save(f"{OUT}/{tag}_prob.npy", prob)
    print(tag, F.shape, time.time() - t, flush=True)


base_and_feats(box, "train")
np.save(f"{OUT}/train_box.npy", np.array([[s.start, s.stop] for s in box]))
for k in ("train_mask", "val_mask"):
    np.save(f"{OUT}/{k}.npy", got[k][box])
np.save(f"{OUT}/train_vessel.npy", np.asarray(labels[box]) > 0)
idx = np.nonzero(test)
lbox = tuple(
    slice(max(0, int(i.min()) - 16), min(n, int(i.max()) + 17)) for i, n in zip(idx, test.shape)
)
base_and_feats(lbox, "low")
np.save(f"{OUT}/low_box.npy", np.array([[s.start, s.stop] for s in lbox]))
np.save(f"{OUT}/low_test.npy", test[lbox])
np.save(f"{OUT}/low_gt.npy", gt[lbox])
import json

json.dump(
    {
        "spacing": list(map(float, spacing)),
        "sp": list(map(float, sp)),
        "min_size": card.mask_min_size,
        "thr": card.mask_threshold,
    },
    open(f"{OUT}/meta.json", "w"),
)
