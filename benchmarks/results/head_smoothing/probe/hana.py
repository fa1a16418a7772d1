# ruff: noqa
# Rules over hyst.py's tables (hyst/hyst_SEED.json); output in hana.log.txt
import json, glob, itertools, numpy as np
S = sorted(int(f.split("_")[-1][:-5]) for f in glob.glob("hyst/hyst_*.json"))
R = {s: json.load(open(f"hyst/hyst_{s}.json")) for s in S}
def rule(name, pick):
    out = []
    for s in S:
        r = pick(R[s]); out.append((r["lD"], r["lC"], r["lTp"], r["lTs"], r["lo"], r["hi"], r["ms"]))
    a = np.array([o[:4] for o in out])
    print(f"{name:42s} Dice {a[:,0].mean():.3f} clDice {a[:,1].mean():.3f} (min {a[:,1].min():.3f}) Tprec {a[:,2].mean():.3f} Tsens {a[:,3].mean():.3f} ", [f"{o[4]}/{o[5]}/{o[6]}" for o in out])
plain = lambda rows: [r for r in rows if r["lo"] == r["hi"]]
rule("shipped: plain, best on held-out", lambda rows: max(plain(rows), key=lambda r: r["hS"]))
rule("hysteresis or plain, best on held-out", lambda rows: max(rows, key=lambda r: r["hS"]))
rule("hyst only, best on held-out", lambda rows: max([r for r in rows if r["lo"] < r["hi"]], key=lambda r: r["hS"]))
# plain best th, then low = th - 0.1/0.2 with hi = th+0.2 etc
for dl, dh in ((0.1, 0.1), (0.1, 0.2), (0.2, 0.2), (0.1, 0.3), (0.2, 0.3), (0.2, 0.4), (0.3, 0.3)):
    def pick(rows, dl=dl, dh=dh):
        b = max(plain(rows), key=lambda r: r["hS"])
        lo, hi = round(b["th"] if "th" in b else b["lo"] - dl, 2), round(b["lo"] + dh, 2)
        c = [r for r in rows if abs(r["lo"] - lo) < 1e-6 and abs(r["hi"] - hi) < 1e-6 and r["ms"] == b["ms"]]
        return c[0] if c else b
    rule(f"plain best th t: lo t-{dl}, hi t+{dh}", pick)
for lo, hi in itertools.product((0.1, 0.2, 0.3), (0.5, 0.6, 0.7, 0.8, 0.9)):
    for ms in (1000,):
        rule(f"fixed {lo}/{hi}/{ms}", lambda rows, lo=lo, hi=hi, ms=ms: [r for r in rows if r["lo"] == lo and r["hi"] == hi and r["ms"] == ms][0])
