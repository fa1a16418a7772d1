# ruff: noqa
exec(open("post.py").read().split("seeds = [")[0])
import itertools, sys
groups = [(0,1,2),(3,4,5),(6,7,8),(1,4,9),(2,5,8),(0,3,6,9)]
TH2=[0.2,0.3,0.4,0.5,0.6]
for g in groups:
    rb = sum(np.load(f"raw2b_{s}.npy") for s in g)/len(g)
    rl = sum(np.load(f"raw2l_{s}.npy") for s in g)/len(g)
    pb, pl = sm(rb,1.0), sm(rl,1.0)
    best=None
    for th in TH2:
        for ms in (100,1000):
            h=held(pb,th,ms)
            if best is None or h["score"]>best[0]+1e-12: best=(h["score"],th,ms)
    low=E.low_score(pl,best[1],best[2])
    print(g, best, low, flush=True)
