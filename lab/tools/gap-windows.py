#!/usr/bin/env python3
"""Where a policy loses time to the oracle: per window (default 5 s) of the
run, each policy's total response time (s) and requests, then each policy's
gap to the oracle per window.

    python3 lab/tools/gap-windows.py lab-out/results.csv [WINDOW_SECONDS]
"""
import csv, sys, collections
path = sys.argv[1]
win = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
tot = collections.defaultdict(float); n = collections.defaultdict(int)
srv = collections.defaultdict(collections.Counter)
pols = []
for r in csv.DictReader(open(path)):
    p = r['policy']
    if p not in pols: pols.append(p)
    w = int(float(r['t_s']) // win)
    tot[p, w] += float(r['rt_ms']) / 1000; n[p, w] += 1; srv[p, w][r['server']] += 1
ws = sorted({w for _, w in tot})
print('win   ' + ''.join(f'{p[:10]:>16}' for p in pols))
for w in ws:
    row = f'{w*win:4.0f}  '
    for p in pols:
        row += f'{tot[p,w]:7.1f}s/{n[p,w]:4d}   '
    print(row)
print('total ' + ''.join(f'{sum(tot[p,w] for w in ws):7.1f}s/{sum(n[p,w] for w in ws):4d}   ' for p in pols))
if 'oracle' in pols:
    for p in pols:
        if p == 'oracle': continue
        gaps = [(tot[p, w] - tot['oracle', w]) for w in ws]
        print(p, 'gap per window (s):', ' '.join(f'{g:+.1f}' for g in gaps), f'sum {sum(gaps):+.1f}')
