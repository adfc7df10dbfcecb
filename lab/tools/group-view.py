#!/usr/bin/env python3
"""The resolver's view of a policy's group, every second of [FROM, TO], from
groups.jsonl: per member, in or out of the set, the pushed TUFR, the last
probe (RT / the probe file's TUFR), SF, the affine fit (base + k x), the
queue model's queue against the server's true queue at that instant
(q model/true), the estimate and probe health.

    python3 lab/tools/group-view.py lab-out/groups.jsonl hybrid 18 30
"""
import json, sys
path, pol, a, b = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
for l in open(path):
    d=json.loads(l)
    if d['policy']!=pol or not a<=d['t']<=b: continue
    v=d['view']
    truth=d.get('truth') or []
    out=[]
    for i, m in enumerate(v['members']):
        p=m.get('push') or {}; pr=m.get('probe') or {}; e=m.get('estimate') or {}
        q=(e.get('queue') or {}).get('queue')
        true_q=truth[i]['queue'] if i < len(truth) else None
        queue=f" q {q if q is not None else -1:4.1f}/{true_q if true_q is not None else -1:3d}"
        out.append(f"{m['endpoint'][-7:-6]}:{'IN ' if m['in_set'] else 'out'} push {p.get('tufr_ms',0) or 0:5.0f} probe {pr.get('rt_ms',0) or 0:5.0f}/{pr.get('tufr_ms',0) or 0:4.0f} sf {e.get('sf') or 0:4.2f} fit {(e.get('fit') or {}).get('base_ms',0):4.0f}+{(e.get('fit') or {}).get('k',0):4.2f}x{queue} est {e.get('rt_ms') or 0:5.0f} {m['health'][:2]}")
    print(f"{d['t']:5.1f}", ' | '.join(out))
