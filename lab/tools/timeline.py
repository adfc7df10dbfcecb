#!/usr/bin/env python3
"""What one policy did, step by step: requests started on each server in
[FROM, TO) per STEP seconds (default 1), as count@mean response time (ms).

    python3 lab/tools/timeline.py lab-out/results.csv hybrid 18 26 0.5
"""
import csv, sys, collections
path, pol = sys.argv[1], sys.argv[2]
a, b = float(sys.argv[3]), float(sys.argv[4])
step = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
cells = collections.defaultdict(list)
names = set()
for r in csv.DictReader(open(path)):
    if r['policy'] != pol: continue
    t = float(r['t_s'])
    if not a <= t < b: continue
    k = int((t - a) // step)
    cells[k, r['server']].append(float(r['rt_ms'])); names.add(r['server'])
names = sorted(names)
print('t      ' + ''.join(f'{s:>14}' for s in names))
for k in range(int((b - a) / step)):
    row = f'{a + k*step:5.1f}  '
    for s in names:
        v = cells[k, s]
        row += f'{len(v):4d}@{(sum(v)/len(v) if v else 0):7.0f}  '
    print(row)
