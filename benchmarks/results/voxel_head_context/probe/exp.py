# ruff: noqa
# Scratch probe of stop 46 (issue 10), kept to reproduce benchmarks/results/voxel_head_context/README.md;
# not part of the product. Run cache.py once (writes /work/scratch/s46/cache), then exp.py SEEDS / ac.py SEED.
"""Design experiments on cached features (scratch). Usage: exp.py SEEDS... [--tag T]"""

import json
import math
import sys
import time

import numpy as np
import torch
from scipy import ndimage as ndi

sys.path.insert(0, "/work/main/benchmarks/real")
from scoring import score

from napari_topo import _cc3d as cc3d
from napari_topo.models.voxel_head import FEATURE_NAMES, TRUNCATE, VoxelHead, _sigmas
from napari_topo.training.finetune import _scores, choose_threshold
from napari_topo.training.head import _choose_min_size, _grown_box

torch.set_num_threads(2)
C = "/work/scratch/s46/cache"
meta = json.load(open(f"{C}/meta.json"))
sp = tuple(meta["sp"])
spacing = tuple(meta["spacing"])
Ft = np.load(f"{C}/train_feat.npy", mmap_mode="r")
Fl = np.load(f"{C}/low_feat.npy", mmap_mode="r")
tr = np.load(f"{C}/train_mask.npy")
va = np.load(f"{C}/val_mask.npy")
ves = np.load(f"{C}/train_vessel.npy")
test = np.load(f"{C}/low_test.npy")
gt = np.load(f"{C}/low_gt.npy")


def head_prob(head, F):
    out = np.empty(F.shape[:3], np.float32)
    fl = out.reshape(-1)
    Ff = F.reshape(-1, F.shape[-1])
    with torch.no_grad():
        for c in range(0, len(Ff), 1 << 20):
            fl[c : c + (1 << 20)] = torch.sigmoid(
                head(torch.from_numpy(np.ascontiguousarray(Ff[c : c + (1 << 20)])))
            ).numpy()
    return out


def train(seed, steps=3000, wd=0.0, bg=4, hidden=64, val_every=250, tr=tr, va=va):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pos = np.flatnonzero((tr & ves).ravel())
    if len(pos) > 200_000:
        pos = rng.choice(pos, 200_000, replace=False)
    neg = np.flatnonzero((tr & ~ves).ravel())
    neg = rng.choice(neg, min(len(neg), bg * len(pos)), replace=False)
    idx = np.sort(np.concatenate([pos, neg]))
    Ff = Ft.reshape(-1, Ft.shape[-1])
    x = torch.from_numpy(np.ascontiguousarray(Ff[idx]))
    y = torch.from_numpy(ves.ravel()[idx].astype(np.float32))
    head = VoxelHead(len(FEATURE_NAMES), hidden)
    head.set_scaling(x)
    head.offset.fill_(math.log(len(neg) / int((tr & ~ves).sum())))
    vbox = _grown_box(va, (0, 0, 0))
    valid = va[vbox]
    truth = ves[vbox] & valid
    vidx = np.flatnonzero(va.ravel())
    xv = torch.from_numpy(np.ascontiguousarray(Ff[vidx]))
    where = np.flatnonzero(valid.ravel())
    opt = torch.optim.Adam(head.net.parameters(), lr=3e-3, weight_decay=wd)
    gen = torch.Generator().manual_seed(seed)
    best, best_state = -1, None
    for step in range(1, steps + 1):
        b = torch.randint(0, len(x), (4096,), generator=gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head.sampled_logits(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % val_every == 0:
            head.eval()
            with torch.no_grad():
                p = np.zeros(valid.shape, np.float32)
                p.reshape(-1)[where] = torch.sigmoid(head(xv)).numpy()
            head.train()
            s = _scores(p, truth, valid, None)["score"]
            if s > best + 1e-4:
                best = s
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
                best_step = step
    head.load_state_dict(best_state)
    head.eval()
    return head, best_step


def smooth(p):
    return ndi.gaussian_filter(p, _sigmas(1.0, sp), truncate=TRUNCATE)


def choose(pbox, thr_rule="best", sizes=True):
    vbox = _grown_box(va, (0, 0, 0))
    valid = va[vbox]
    truth = ves[vbox] & valid
    view = (pbox[vbox], truth, valid, None)
    th, at, table = choose_threshold(None, None, None, None, outputs=[view], margin=0.0)
    ms, at2, st = _choose_min_size(pbox, vbox, truth, valid, th, at, meta["min_size"])
    return th, ms, at2, table


def low_score(plow, th, ms):
    m = (
        cc3d.dust(np.ascontiguousarray(plow > th), threshold=int(ms), connectivity=26)
        if ms
        else plow > th
    )
    s = score(m, gt, roi=test, spacing=spacing)
    return {k: round(float(s[k]), 4) for k in ("Dice", "clDice", "Precision", "Sensitivity")}


if __name__ == "__main__":
    seeds = [int(a) for a in sys.argv[1:]]
    res = {}
    P_box, P_low = [], []
    for sd in seeds:
        t = time.time()
        head, bs = train(sd)
        pb, pl = smooth(head_prob(head, Ft)), smooth(head_prob(head, Fl))
        P_box.append(pb)
        P_low.append(pl)
        th, ms, at, table = choose(pb)
        r = {
            "best_step": bs,
            "th": th,
            "ms": ms,
            "held": {k: round(at[k], 4) for k in ("Dice", "clDice")},
            "low": low_score(pl, th, ms),
            "low_by_th": {t2: low_score(pl, t2, ms)["clDice"] for t2 in (0.2, 0.3, 0.4, 0.5)},
            "s": round(time.time() - t),
        }
        print("seed", sd, r, flush=True)
        if len(P_box) > 1:
            pb, pl = np.mean(P_box, 0), np.mean(P_low, 0)
            th, ms, at, table = choose(pb)
            r = {
                "th": th,
                "ms": ms,
                "held": {k: round(at[k], 4) for k in ("Dice", "clDice")},
                "low": low_score(pl, th, ms),
                "low_by_th": {t2: low_score(pl, t2, ms)["clDice"] for t2 in (0.2, 0.3, 0.4, 0.5)},
            }
            print("ensemble of", len(P_box), r, flush=True)
