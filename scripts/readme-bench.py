#!/usr/bin/env python3
"""Writes the latest benchmark (bench/results/latest.{json,md}) into README.md
between the <!-- bench:start --> and <!-- bench:end --> markers."""
import json
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
data = json.loads((root / 'bench/results/latest.json').read_text())
md = (root / 'bench/results/latest.md').read_text()
s = data['summary']
labels = {c['key']: c['label'] for c in data['configs']}
wl = [('keepalive', 'keep-alive'), ('close', 'conn/request'), ('mixed', 'mixed'), ('stall', 'stall'),
      ('busy', 'busy primary'), ('kill', 'kill')]
configs = [c['key'] for c in data['configs'] if any(c['key'] in s.get(w, {}) for w, _ in wl)]
ipc = [w for w in data['workloads'] if w['key'].startswith('ipc-') and w['key'] in s]
base = data['baseline']

def cell(w, c):
    e = s.get(w, {}).get(c)
    if not e or not e.get('rps'):
        return '–'
    rps = e['rps']['median']
    b = s[w].get(base, {}).get('rps', {}).get('median')
    ratio = f" ({rps / b:.2f}×)" if b else ''
    return f"{rps:,.0f}{ratio}, p99 {e['p99Ms']['median']:.0f} ms"

lines = ['| config | ' + ' | '.join(n for _, n in wl) + ' |', '|---|' + '---:|' * len(wl)]
for c in configs:
    lines.append(f"| {labels[c]} | " + ' | '.join(cell(w, c) for w, _ in wl) + ' |')
cpu = []
for c in configs:
    e = s.get('close', {}).get(c)
    if e and e.get('primaryCpuPer10k') is not None:
        cpu.append(f"{labels[c]} {e['primaryCpuPer10k']['median']:.2f}")
machine = re.search(r'\| machine \| \|\n\|---\|---\|\n(.*?)\n\n', md, re.S).group(1)

def ipc_row(w):
    e, b = s[w['key']].get('rcluster-reuseport'), s[w['key']].get(base)
    if not e or not b or not e.get('msgsPerSec') or not b.get('msgsPerSec'):
        return f"| {w['label']} | – | – | – |"
    def one(m, digits):
        return f"{e[m]['median']:.{digits}f} vs {b[m]['median']:.{digits}f} ({e[m]['median'] / b[m]['median']:.2f}×)"
    return f"| {w['label']} | {one('msgsPerSec', 0)} | {one('cpuAllUsPerMsg', 1)} | {one('cpuJsUsPerMsg', 1)} |"

ipc_block = '' if not ipc else '\n'.join([
    '',
    'IPC echo (one worker echoes every message; rcluster vs node:cluster, medians, ×node:cluster):',
    '',
    '| case | msgs/s | primary CPU µs/msg, all threads | primary CPU µs/msg, JS thread |',
    '|---|---:|---:|---:|',
    *[ipc_row(w) for w in ipc],
    ''])
def sticky_row(c):
    e = s['sticky'][c]
    if not e.get('rps'):
        return f"| {labels[c]} | – | – | – | – |"
    cpu = e.get('primaryCpuPer10k')
    cpu = f"{cpu['median']:.2f}" if cpu else '–'
    return (f"| {labels[c]} | {e['rps']['median']:,.0f} | {e['p99Ms']['median']:.0f} ms | {cpu} | "
            f"{100 * e['worstAffinity']['min']:.1f} % |")

sticky_block = '' if 'sticky' not in s else '\n'.join([
    '',
    'Sticky sessions (one connection per request from 16 client addresses; worst per-address affinity of any round):',
    '',
    '| config | req/s | p99 | primary CPU-s per 10k conns | affinity |',
    '|---|---:|---:|---:|---:|',
    *[sticky_row(c) for c in s['sticky']],
    ''])
targets = re.search(r'## Targets.*?\n\n(\|.*?)\n\n', md, re.S).group(1)
block = f"""Latest run ({data['startedAt'][:16].replace('T', ' ')} UTC), made with `npm run bench`:

| machine | |
|---|---|
{machine}

Requests/s (median of the rounds; ×node:cluster RR of the same run) and p99 latency:

{chr(10).join(lines)}

Primary CPU-seconds per 10k connections (conn/request): {'; '.join(cpu)}.
`kill` is one-connection-per-request load during which one of the two workers is SIGKILLed (no
restart); `stall` is one connection per request while one of the two workers blocks its event
loop 200 ms every second.
{sticky_block}{ipc_block}
Targets (issues #3, #9, #10, #11):

{targets}

![requests/s per config and workload](bench/results/latest.svg)

Full tables (p50, errors, min–max, per-worker shares): [bench/results/latest.md](bench/results/latest.md)."""
if not configs:
    raise SystemExit('latest.json has no HTTP workload (an ipc-only run?): run the full `npm run bench` first')
readme = (root / 'README.md').read_text()
new = re.sub(r'<!-- bench:start -->.*?<!-- bench:end -->',
             f'<!-- bench:start -->\n{block}\n<!-- bench:end -->', readme, flags=re.S)
(root / 'README.md').write_text(new)
print('README benchmark section updated' if new != readme else 'README unchanged (markers missing?)')
