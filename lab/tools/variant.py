#!/usr/bin/env python3
"""Paired runs of a variant against the default, on every scenario of a
directory: copies the scenarios to OUT_DIR with the variant's group
settings on the hybrid group (its own calibration, load model and pick
reset to the default's first, so the variant differs from the default in
the given settings only). Run the copies with the `hybrid` policy beside `default`:

    python3 lab/tools/variant.py lab/scenarios/suite /tmp/v-least pick=least
    anycast-lab suite /tmp/v-least --policies default,hybrid,oracle

Each KEY=VALUE is a [[group]] field (docs: configs/resolver.toml); values
are TOML (strings need no quotes: `pick=least`, `threshold=0.1`).
"""
import pathlib, sys

src, dst, *settings = sys.argv[1:]
if not settings:
    sys.exit(__doc__)
reset = {'calibration': '"affine"', 'load_model': '"queue"', 'pick': '"graded"'}
for kv in settings:
    key, value = kv.split('=', 1)
    try:
        float(value)
    except ValueError:
        if value not in ('true', 'false'):
            value = f'"{value}"'
    reset[key] = value
fields = [f'{key} = {value}' for key, value in reset.items()]
out = pathlib.Path(dst)
out.mkdir(parents=True, exist_ok=True)
for f in sorted(pathlib.Path(src).glob('*.toml')):
    text = f.read_text()
    if '[resolver.hybrid]' in text.replace('# [resolver.hybrid]', ''):
        sys.exit(f'{f} already sets [resolver.hybrid]')
    (out / f.name).write_text(text + '\n[resolver.hybrid]\n' + '\n'.join(fields) + '\n')
print(f'{out}: {len(list(out.glob("*.toml")))} scenarios, hybrid = default + {", ".join(settings)}')
