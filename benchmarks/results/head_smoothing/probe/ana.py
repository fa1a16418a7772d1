# ruff: noqa
import json, glob, sys
import numpy as np
seeds = sorted(int(f[5:-5]) for f in glob.glob("post_*.json"))
R = {s: json.load(open(f"post_{s}.json")) for s in seeds}
def pick(rows, S=(1.0,), TH=(0.2,0.3,0.4,0.5,0.6), MS=(100,1000), margin=0.0, prefer="half"):
    c = [r for r in rows if r["s"] in S and r["th"] in TH and r["ms"] in MS]
    top = max(r["hS"] for r in c)
    near = [r for r in c if r["hS"] >= top - margin]
    if prefer == "half":
        key = lambda r: (abs(r["th"] - 0.5), r["ms"], r["s"])
        if margin == 0: near = [max(c, key=lambda r: (r["hS"], -abs(r["th"]-0.5), -r["ms"]))]
    elif prefer == "low":
        key = lambda r: (r["th"], r["ms"], r["s"])
    elif prefer == "smooth":
        key = lambda r: (-r["s"], abs(r["th"] - 0.5), r["ms"])
    return min(near, key=key)
rules = {
 "shipped": {},
 "grid.05": dict(TH=(0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6)),
 "ms3000": dict(MS=(100,1000,3000)),
 "sigma": dict(S=(1.0,1.5,2.0)),
 "s1.5": dict(S=(1.5,)),
 "s2": dict(S=(2.0,)),
 "low.005": dict(margin=0.005, prefer="low"),
 "low.01": dict(margin=0.01, prefer="low"),
 "low.02": dict(margin=0.02, prefer="low"),
 "sigma+ms": dict(S=(1.0,1.5,2.0), MS=(100,1000,3000)),
 "smooth.005": dict(S=(1.0,1.5,2.0), margin=0.005, prefer="smooth"),
}
for name, kw in rules.items():
    ch = [pick(R[s], **kw) for s in seeds]
    D = [r["lDice"] for r in ch]; C = [r["lclDice"] for r in ch]
    print(f"{name:12s} D {np.mean(D):.3f} cl {np.mean(C):.3f} min {min(C):.3f}  ", " ".join(f"{r['lclDice']:.3f}({r['s']},{r['th']},{r['ms']})" for r in ch))
# oracle per s
for s in (1.0, 1.5, 2.0):
    for th in (0.3, 0.4, 0.5):
        C = [next(r for r in R[sd] if r["s"]==s and r["th"]==th and r["ms"]==1000)["lclDice"] for sd in seeds]
        print("fixed", s, th, 1000, f"{np.mean(C):.3f}", " ".join(f"{c:.3f}" for c in C))
# the shipped rule's held-out score against the lower half, across seeds
ch = [pick(R[s]) for s in seeds]
hs = [r["hS"] for r in ch]
print(f"held-out score (shipped rule) {min(hs):.3f}-{max(hs):.3f}; correlation with the lower half: "
      f"clDice r = {np.corrcoef(hs, [r['lclDice'] for r in ch])[0, 1]:.2f}, "
      f"Dice r = {np.corrcoef(hs, [r['lDice'] for r in ch])[0, 1]:.2f}")
