#!/usr/bin/env python3
"""Simulates the agent's smoothers on the testbed's service times.

Log-normal service times (mean 25 ms, sd 35 ms, as in lab/scenarios/suite/paper.toml),
one measurement every 200 ms, 200,000 measurements; prints the mean, p10, p50
and p90 of the published value for:

  asym    the second smoother: EWMA of the median of 3, rising with a 250 ms
          time constant and falling with 2 s (commit fd1bfac)
  sym     a symmetric EWMA (2 s) of the median of 3
  level   the current one (push-agent/src/smooth.rs): max(level, min of the
          last 2), the level dropping to max of the last 3 when all are
          below a third of it

then the published value around a queue that builds at 600 ms per second for
5 s and vanishes (each smoother, one line of values 200 ms apart).

    python3 lab/tools/smoothing-sim.py
"""
import math
import random
import statistics

SIGMA = math.sqrt(math.log(1 + (35 / 25) ** 2))
MU = math.log(25) - SIGMA * SIGMA / 2
DT = 0.2


def samples(n, onset=None, off=None, seed=2):
    rng = random.Random(seed)
    for i in range(n):
        x = rng.lognormvariate(MU, SIGMA)
        if onset is not None and onset <= i < off:
            x += 600 * (i - onset) * DT
        yield x


def smoother(kind):
    w, state = [], {"e": None}

    def step(x):
        w.append(x)
        del w[:-3]
        v = sorted(w)[(len(w) - 1) // 2]
        e = state["e"]
        if e is None or len(w) < 3:
            state["e"] = v
            return max(v, min(w[-2:])) if kind == "level" else v
        tau = 0.25 if (kind == "asym" and v > e) else 2.0
        a = 1 - math.exp(-DT / tau)
        e = e + a * (min(max(v, e / 4), e * 4) - e)
        if kind == "level" and max(w) < e / 3:
            e = max(w)
        state["e"] = e
        return max(e, min(w[-2:])) if kind == "level" else e

    return step


def main():
    print("smoother   mean    p10    p50    p90   (ms, 200,000 measurements)")
    for kind in ("asym", "sym", "level"):
        step = smoother(kind)
        out = sorted(step(x) for x in samples(200_000))
        n = len(out)
        print(f"{kind:8} {statistics.mean(out):6.1f} {out[n // 10]:6.1f} "
              f"{out[n // 2]:6.1f} {out[9 * n // 10]:6.1f}")
    print("\na queue building from measurement 10 to 35, then gone:")
    for kind in ("asym", "sym", "level"):
        step = smoother(kind)
        out = [step(x) for x in samples(50, onset=10, off=35)]
        print(f"{kind:8}", " ".join(f"{v:.0f}" for v in out[6:44]))


if __name__ == "__main__":
    main()
