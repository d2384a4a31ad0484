'use strict';
// Summaries (medians of the rounds with min–max), the issues' targets checked
// against node:cluster RR of the same run, and the Markdown report.

const { spread, sig, int } = require('./stats');

const BASELINE = 'node-rr';
const METRICS = ['rps', 'p50Ms', 'p99Ms', 'failed', 'primaryCpuPer10k', 'share', 'connShare',
  'msgsPerSec', 'cpuAllUsPerMsg', 'cpuJsUsPerMsg', 'affinity', 'worstAffinity'];
// rcluster's config in the ipc cases (its default policy; the policy does not touch IPC).
const IPC_CONFIG = 'rcluster-reuseport';
// The ipc targets of issue #9, as ratios to node:cluster of the same run.
const IPC_TARGETS = [
  { metric: 'msgsPerSec', what: 'messages/s vs node:cluster', op: '>=', target: 1.0 },
  { metric: 'cpuAllUsPerMsg', what: 'primary CPU per message, all threads, vs node:cluster', op: '<=', target: 1.0 },
  { metric: 'cpuJsUsPerMsg', what: 'primary CPU per message, JS thread, vs node:cluster', op: '<=', target: 0.7 },
];

function isIpc(key) {
  return key.startsWith('ipc-');
}

// summary[workload][config] = { rounds, errors, rps: {median,min,max,n}, … }
function summarize(runs, configs, workloads) {
  const summary = {};
  for (const w of workloads) {
    summary[w.key] = {};
    for (const c of configs) {
      const mine = runs.filter((r) => r.workload === w.key && r.config === c.key);
      if (mine.length === 0) continue;
      const ok = mine.filter((r) => !r.error);
      const s = { rounds: ok.length, failedRounds: mine.length - ok.length };
      for (const m of METRICS) s[m] = spread(ok.map((r) => r[m]));
      if (isIpc(w.key)) s.cappedRounds = ok.filter((r) => r.capped).length;
      summary[w.key][c.key] = s;
    }
  }
  return summary;
}

function med(summary, w, c, m) {
  const s = summary[w] && summary[w][c] && summary[w][c][m];
  return s ? s.median : null;
}

// Each target: { id, what, config, workload, value, target, op, met, margin, detail }
// Ratios to node RR round by round (the configs of a round ran side by side,
// so these cancel much of the machine's drift): "a–b" over the rounds.
function pairedRange(runs, w, c, m) {
  if (!runs) return undefined;
  const ratios = [];
  for (const r of runs) {
    if (r.workload !== w || r.config !== c || r.error) continue;
    const base = runs.find((x) => x.workload === w && x.config === BASELINE && x.round === r.round && !x.error);
    if (base && base[m] > 0 && Number.isFinite(r[m])) ratios.push(r[m] / base[m]);
  }
  if (ratios.length < 2) return undefined;
  return ratios;
}

function targets(summary, runs) {
  const out = [];
  const add = (t) => {
    if (t.value === null || t.value === undefined || !Number.isFinite(t.value)) {
      out.push({ ...t, value: null, met: null, margin: 'not measured' });
      return;
    }
    const met = t.op === '>=' ? t.value >= t.target : t.op === '<=' ? t.value <= t.target : t.value < t.target;
    let margin;
    if (t.unit === '×') {
      const pct = (t.value / t.target - 1) * 100;
      margin = `${pct >= 0 ? '+' : ''}${pct.toFixed(0)}% vs target`;
    } else if (t.unit === '%') {
      margin = `${t.value <= t.target ? 'under' : 'over'} by ${sig(Math.abs(t.value - t.target), 2)} points`;
    } else {
      margin = `${t.value <= t.target ? 'under' : 'over'} by ${sig(Math.abs(t.value - t.target), 2)}${t.unit ? ` ${t.unit}` : ''}`;
    }
    out.push({ ...t, met, margin });
  };
  const ratio = (w, c, m) => {
    const a = med(summary, w, c, m);
    const b = med(summary, w, BASELINE, m);
    return a === null || b === null || !(b > 0) ? null : a / b;
  };

  const rounds = (w, c, m, scale = 1, fmt = (x) => x.toFixed(2)) => {
    const v = pairedRange(runs, w, c, m);
    return v ? `round by round ${fmt(Math.min(...v) * scale)}–${fmt(Math.max(...v) * scale)}` : undefined;
  };
  add({ id: 'close-rps', what: 'conn/request req/s vs node RR (default policy)', config: 'rcluster-reuseport',
    workload: 'close', value: ratio('close', 'rcluster-reuseport', 'rps'), op: '>=', target: 1.6, unit: '×',
    detail: rounds('close', 'rcluster-reuseport', 'rps') });
  add({ id: 'keepalive-rps', what: 'keep-alive req/s vs node RR (default policy)', config: 'rcluster-reuseport',
    workload: 'keepalive', value: ratio('keepalive', 'rcluster-reuseport', 'rps'), op: '>=', target: 0.97, unit: '×',
    detail: rounds('keepalive', 'rcluster-reuseport', 'rps') });
  for (const [c, limit] of [['rcluster-reuseport', 5], ['rcluster-rr', 50]]) {
    const r = ratio('close', c, 'primaryCpuPer10k');
    add({ id: `cpu-${c}`, what: `primary CPU per 10k conns, % of node RR (conn/request)`, config: c,
      workload: 'close', value: r === null ? null : r * 100, op: '<=', target: limit, unit: '%',
      detail: rounds('close', c, 'primaryCpuPer10k', 100, (x) => `${x.toFixed(0)}%`) });
  }
  for (const c of ['rcluster-reuseport', 'rcluster-rr', 'rcluster-none']) {
    // The worst of the workloads whose workers all live to the end.
    let worst = null;
    let where = null;
    const all = [];
    for (const w of ['keepalive', 'close', 'mixed', 'busy']) {
      const v = med(summary, w, c, 'share');
      if (v === null) continue;
      const b = med(summary, w, BASELINE, 'share');
      all.push(`${w} ${sig(v, 3)}${b === null ? '' : ` (node RR ${sig(b, 3)})`}`);
      if (worst === null || v > worst) { worst = v; where = w; }
    }
    add({ id: `share-${c}`, what: 'per-worker share max/min (worst workload)', config: c, workload: where,
      value: worst, op: '<=', target: 1.25, unit: '', detail: all.join(', ') });
  }
  {
    const a = med(summary, 'mixed', 'rcluster-rr', 'p99Ms');
    const b = med(summary, 'mixed', BASELINE, 'p99Ms');
    add({ id: 'mixed-p99', what: 'mixed p99 (ms) ≤ node RR p99', config: 'rcluster-rr', workload: 'mixed',
      value: a, op: '<=', target: b, unit: 'ms' });
  }
  {
    // Issue #10, the load-aware default (keep-alive ≥ 0.97×, CPU ≤ 5 % and
    // share ≤ 1.25 are the targets above).
    const c = 'rcluster-reuseport';
    const p99 = (w, base) => med(summary, w, base, 'p99Ms');
    add({ id: 'close-rps-load-aware', what: 'conn/request req/s vs node RR (load-aware default)', config: c,
      workload: 'close', value: ratio('close', c, 'rps'), op: '>=', target: 1.9, unit: '×',
      detail: rounds('close', c, 'rps') });
    add({ id: 'stall-p99', what: 'stall p99 (ms) ≤ node RR p99', config: c, workload: 'stall',
      value: p99('stall', c), op: '<=', target: p99('stall', BASELINE), unit: 'ms' });
    add({ id: 'stall-rps', what: 'stall req/s vs node RR', config: c, workload: 'stall',
      value: ratio('stall', c, 'rps'), op: '>=', target: 1.8, unit: '×', detail: rounds('stall', c, 'rps') });
    const rr = p99('mixed', BASELINE);
    add({ id: 'mixed-p99-rr', what: 'mixed p99 (ms) ≤ 0.9× node RR p99', config: c, workload: 'mixed',
      value: p99('mixed', c), op: '<=', target: rr === null ? null : 0.9 * rr, unit: 'ms' });
    add({ id: 'mixed-p99-none', what: 'mixed p99 (ms) ≤ node NONE p99', config: c, workload: 'mixed',
      value: p99('mixed', c), op: '<=', target: p99('mixed', 'node-none'), unit: 'ms' });
    const none = med(summary, 'mixed', 'node-none', 'rps');
    const mine = med(summary, 'mixed', c, 'rps');
    add({ id: 'mixed-rps-none', what: 'mixed req/s vs node NONE', config: c, workload: 'mixed',
      value: none > 0 && mine !== null ? mine / none : null, op: '>=', target: 0.95, unit: '×' });
  }
  for (const c of ['rcluster-reuseport', 'rcluster-rr', 'rcluster-none']) {
    add({ id: `busy-p99-${c}`, what: 'busy-primary p99 (ms) < 100', config: c, workload: 'busy',
      value: med(summary, 'busy', c, 'p99Ms'), op: '<', target: 100, unit: 'ms' });
  }
  for (const c of ['rcluster-reuseport', 'rcluster-rr', 'rcluster-none']) {
    const s = summary.kill && summary.kill[c] && summary.kill[c].failed;
    add({ id: `kill-${c}`, what: 'kill: failed requests ≤ 5 (median)', config: c, workload: 'kill',
      value: s ? s.median : null, op: '<=', target: 5, unit: '',
      detail: s ? `per round ${s.min === s.max ? s.min : `${s.min}–${s.max}`}` : undefined });
  }
  if (summary.sticky) {
    // Against the better node:cluster router of the run: most req/s, least primary CPU.
    const nodes = ['node-sticky-session', 'node-socketio-sticky'];
    const pickBy = (m, better) => nodes.map((c) => [c, med(summary, 'sticky', c, m)])
      .filter(([, v]) => v !== null).sort((x, y) => (better(x[1], y[1]) ? -1 : 1))[0] || [null, null];
    const [fastest, rps] = pickBy('rps', (x, y) => x > y);
    const [leanest, cpu] = pickBy('primaryCpuPer10k', (x, y) => x < y);
    const mine = (c, m) => med(summary, 'sticky', c, m);
    add({ id: 'sticky-rps', what: `sticky req/s vs the best node router (${fastest})`, config: 'rcluster-sticky',
      workload: 'sticky', value: rps > 0 && mine('rcluster-sticky', 'rps') !== null ? mine('rcluster-sticky', 'rps') / rps : null,
      op: '>=', target: 2, unit: '×' });
    add({ id: 'sticky-cpu', what: `sticky primary CPU per 10k conns, % of the leanest node router (${leanest})`,
      config: 'rcluster-sticky', workload: 'sticky',
      value: cpu > 0 && mine('rcluster-sticky', 'primaryCpuPer10k') !== null ? (mine('rcluster-sticky', 'primaryCpuPer10k') / cpu) * 100 : null,
      op: '<=', target: 5, unit: '%' });
    for (const c of ['rcluster-sticky', 'rcluster-sticky-rr']) {
      const s = summary.sticky[c] && summary.sticky[c].worstAffinity;
      add({ id: `sticky-affinity-${c}`, what: 'sticky: worst per-address affinity (%, worst round)', config: c,
        workload: 'sticky', value: s ? s.min * 100 : null, op: '>=', target: 100, unit: '' });
    }
  }
  for (const w of Object.keys(summary).filter(isIpc)) {
    for (const t of IPC_TARGETS) {
      add({ id: `${w}-${t.metric}`, what: `${w}: ${t.what}`, config: IPC_CONFIG, workload: w,
        value: ratio(w, IPC_CONFIG, t.metric), op: t.op, target: t.target, unit: '×',
        detail: rounds(w, IPC_CONFIG, t.metric) });
    }
  }
  // An ipc-only run has no HTTP target to report.
  return Object.keys(summary).some((w) => !isIpc(w)) ? out : out.filter((t) => isIpc(t.id));
}

// ---------------------------------------------------------------- text

function range(s, fmt) {
  if (!s) return '–';
  if (s.n === 1 || s.min === s.max) return fmt(s.median);
  return `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`;
}

function fmtTargetValue(t) {
  if (t.value === null) return '–';
  if (t.unit === '×') return `${t.value.toFixed(2)}×`;
  if (t.unit === '%') return `${sig(t.value, 2)}%`;
  if (t.unit === 'ms') return `${sig(t.value, 3)} ms`;
  return sig(t.value, 3);
}

function fmtTarget(t) {
  const target = t.target === null || t.target === undefined || !Number.isFinite(t.target)
    ? '–'
    : t.unit === '×' ? `${t.target}×` : t.unit === '%' ? `${t.target}%` : t.unit === 'ms' ? `${sig(t.target, 3)} ms` : String(t.target);
  return `${t.op === '<' ? '<' : t.op === '<=' ? '≤' : '≥'} ${target}`;
}

function status(t) {
  return t.met === null ? 'n/a' : t.met ? 'met' : 'MISSED';
}

function labelOf(data, key) {
  const c = data.configs.find((x) => x.key === key);
  return c ? c.label : key;
}

function targetsText(data) {
  const lines = ['Ratios to node:cluster RR (same run, medians) and the issue\'s targets:'];
  const base = BASELINE;
  for (const w of data.workloads) {
    const s = data.summary[w.key];
    if (!s || !s[base] || isIpc(w.key)) continue;
    const parts = [];
    for (const c of data.configs) {
      if (c.key === base || !s[c.key] || !s[c.key].rps) continue;
      parts.push(`${c.key} ${(s[c.key].rps.median / s[base].rps.median).toFixed(2)}×`);
    }
    lines.push(`  req/s ${w.key.padEnd(9)}: ${parts.join(', ')}`);
  }
  for (const w of data.workloads.filter((x) => isIpc(x.key))) {
    const s = data.summary[w.key];
    const a = s && s[IPC_CONFIG];
    const b = s && s[base];
    if (!a || !b || !a.msgsPerSec || !b.msgsPerSec) continue;
    const r = (m) => (a[m] && b[m] && b[m].median > 0 ? `${(a[m].median / b[m].median).toFixed(2)}×` : '–');
    lines.push(`  ${w.key.padEnd(12)}: msgs/s ${r('msgsPerSec')}, CPU/msg all threads ${r('cpuAllUsPerMsg')}, ` +
      `JS thread ${r('cpuJsUsPerMsg')} ` +
      `(rcluster ${int(a.msgsPerSec.median)} vs node ${int(b.msgsPerSec.median)} msgs/s)`);
  }
  for (const t of data.targets) {
    lines.push(`  [${status(t).padEnd(6)}] ${t.config.padEnd(18)} ${t.what}: ${fmtTargetValue(t)} (target ${fmtTarget(t)}; ${t.margin})` +
      `${t.detail ? ` — ${t.detail}` : ''}`);
  }
  if (!data.configs.some((c) => c.key === base)) lines.push('  (node-rr was not run: no ratios)');
  return lines.join('\n');
}

// The ipc section: one table, a row per (case, config), ratios to node:cluster.
function ipcMarkdown(data, L) {
  const cases = data.workloads.filter((w) => isIpc(w.key) && data.summary[w.key]);
  if (!cases.length) return;
  const o = data.options;
  L.push('## ipc: a primary forks one worker that echoes every message back');
  L.push('');
  const warmup = o.warmup > 0 ? ', after a warm-up of a tenth as many' : '';
  L.push('Each run sends a fixed number of messages (below) from the primary with `worker.send`, ' +
    `keeping the stated number in flight (a new one for each echo)${warmup}; ` +
    `each run is capped at ${sig((o.ipcCapMs || 15000) / 1000, 2)} s. ` +
    '**msgs/s**: echoes received per second. **CPU/msg**: the primary\'s CPU time per echo (one send and ' +
    'one receive), in µs; **all threads** from `process.cpuUsage()` (user+system of the whole process, ' +
    'the Rust core\'s thread included), **JS thread** from `/proc/self/task/<pid>/schedstat` (the main thread ' +
    'alone, in ns). **×node** is the ratio to node:cluster of the same run (medians). Only node:cluster (RR) and ' +
    'rcluster\'s default policy run: the policy does not touch IPC.');
  L.push('');
  L.push('| case | messages | config | msgs/s | ×node | CPU µs/msg, all threads | ×node | ' +
    'CPU µs/msg, JS thread | ×node |');
  L.push('|---|---:|---|---:|---:|---:|---:|---:|---:|');
  for (const w of cases) {
    const s = data.summary[w.key];
    const base = s[BASELINE];
    for (const c of data.configs) {
      const x = s[c.key];
      if (!x) continue;
      const label = c.key === BASELINE ? 'node:cluster' : c.key === IPC_CONFIG ? 'rcluster' : c.label;
      const head = `| ${w.label} | ${w.ipc ? w.ipc.messages : ''} | ${label}`;
      if (!x.msgsPerSec) {
        L.push(`${head} | failed | | | | | |`);
        continue;
      }
      const ratio = (m) => (base && base[m] && base[m].median > 0
        ? `${(x[m].median / base[m].median).toFixed(2)}×`
        : '–');
      const notes = [
        x.failedRounds ? `${x.failedRounds} round(s) failed` : '',
        x.cappedRounds ? `${x.cappedRounds} round(s) hit the time cap` : '',
      ].filter(Boolean).join('; ');
      L.push(`${head} | ${range(x.msgsPerSec, int)} | ${ratio('msgsPerSec')} | ` +
        `${range(x.cpuAllUsPerMsg, (v) => sig(v, 3))} | ${ratio('cpuAllUsPerMsg')} | ` +
        `${range(x.cpuJsUsPerMsg, (v) => sig(v, 3))} | ${ratio('cpuJsUsPerMsg')} |${notes ? ` ${notes}` : ''}`);
    }
  }
  const clocks = new Set(data.runs.filter((r) => isIpc(r.workload) && r.jsClock).map((r) => r.jsClock));
  if (clocks.has('stat')) {
    L.push('');
    L.push('Note: /proc/self/task/<pid>/schedstat was not readable in some runs; their JS-thread figures come from ' +
      '/proc/self/task/<pid>/stat, which counts in 10-ms ticks.');
  }
  L.push('');
}

function markdown(data) {
  const m = data.machine;
  const o = data.options;
  const L = [];
  const http = data.workloads.filter((w) => !isIpc(w.key));
  const ipc = data.workloads.filter((w) => isIpc(w.key));
  L.push('# rcluster benchmark');
  L.push('');
  L.push(`Run ${data.startedAt} – ${data.finishedAt}.`);
  L.push('');
  L.push('| machine | |');
  L.push('|---|---|');
  L.push(`| cores | ${m.cores} |`);
  L.push(`| CPU | ${m.cpuModel} |`);
  L.push(`| Node | ${m.node}${m.nodePath ? ` (\`${m.nodePath}\`)` : ''} |`);
  L.push(`| kernel | ${m.kernel} |`);
  if (http.length) {
    L.push(`| load generator | ${m.loadgen}, ${o.threads} thread(s), ${o.connections} connections, 127.0.0.1 |`);
  }
  L.push(`| command | \`${m.command}\` |`);
  const example = (close) => {
    const r = data.runs.find((x) => x.command && data.workloads.some((w) => w.key === x.workload && w.close === close));
    return r ? `\`${r.command.replace(/127\.0\.0\.1:\d+/, '127.0.0.1:PORT')}\`` : null;
  };
  const cmds = [example(false), example(true)].filter(Boolean);
  if (cmds.length) L.push(`| load command | ${cmds.join('<br>')} |`);
  if (http.length) {
    L.push(`| runs | ${o.rounds} round(s) × ${o.duration} s (after a ${o.warmup} s warm-up), ${o.workers} workers, rounds interleaved across configs |`);
  }
  if (ipc.length) {
    L.push(`| ipc runs | ${o.rounds} round(s) of a fixed message count per case, 1 worker, ` +
      'rounds interleaved across configs |');
  }
  L.push(`| load average (1/5/15 min) | start ${m.loadavgStart.map((x) => x.toFixed(2)).join(' ')}, end ${m.loadavgEnd.map((x) => x.toFixed(2)).join(' ')} |`);
  L.push('');
  if (http.length) L.push('Each cell is the median of the rounds, with (min–max) when they differ. ' +
    '**×RR** is requests/s relative to node:cluster RR of the same run. ' +
    '**errors**: wrk\'s socket errors (connect, read, write, timeout) plus non-2xx responses. ' +
    'Latencies are wrk\'s (from writing the request to the response; connect time excluded). ' +
    '**primary CPU**: the primary process\'s utime+stime (all threads, /proc/<pid>/stat) over the measured run, ' +
    'in CPU-seconds per 10k connections (the kernel counts in 10-ms ticks: 0 means under one tick in the whole run), where connections = requests for the one-connection-per-request workloads ' +
    'and = the wrk connections for keep-alive (so the keep-alive figure is per-connection-setup and dominated by idle noise). ' +
    '**share**: max/min of the requests the workers served (counted in the workers, collected over IPC after the run).');
  else L.push('Each cell is the median of the rounds, with (min–max) when they differ.');
  L.push('');
  for (const n of data.notes) L.push(`- ${n}`);
  if (data.notes.length) L.push('');

  for (const w of http) {
    const s = data.summary[w.key];
    if (!s) continue;
    L.push(`## ${w.label}: ${w.desc}`);
    L.push('');
    L.push('| config | req/s | ×RR | p50 ms | p99 ms | errors | primary CPU s/10k conns | share max/min |');
    L.push('|---|---:|---:|---:|---:|---:|---:|---:|');
    const base = s[BASELINE] && s[BASELINE].rps ? s[BASELINE].rps.median : null;
    for (const c of data.configs) {
      const x = s[c.key];
      if (!x) continue;
      if (!x.rps) {
        L.push(`| ${c.label} | failed | | | | | | |`);
        continue;
      }
      const ratio = base ? `${(x.rps.median / base).toFixed(2)}×` : '–';
      L.push(`| ${c.label} | ${range(x.rps, int)} | ${ratio} | ${range(x.p50Ms, (v) => sig(v, 3))} | ` +
        `${range(x.p99Ms, (v) => sig(v, 3))} | ${range(x.failed, int)} | ` +
        `${range(x.primaryCpuPer10k, (v) => sig(v, 2))} | ${range(x.share, (v) => sig(v, 3))} |` +
        `${x.failedRounds ? ` ${x.failedRounds} round(s) failed` : ''}`);
    }
    if (!w.close) {
      const parts = data.configs
        .filter((c) => s[c.key] && s[c.key].connShare)
        .map((c) => `${c.label} ${range(s[c.key].connShare, (v) => sig(v, 3))}`);
      if (parts.length) {
        L.push('');
        L.push(`Connections per worker, max/min (with keep-alive each worker serves the connections it got): ${parts.join('; ')}.`);
      }
    }
    if (w.key === 'kill') {
      L.push('');
      L.push('Failed requests per round (connect/read/write/timeout/non-2xx):');
      L.push('');
      for (const c of data.configs) {
        const rounds = data.runs.filter((r) => r.workload === 'kill' && r.config === c.key && !r.error);
        if (!rounds.length) continue;
        L.push(`- ${c.label}: ${rounds.map((r) => `r${r.round} ${r.failed} (${r.errors.connect}/${r.errors.read}/` +
          `${r.errors.write}/${r.errors.timeout}/${r.errors.non2xx})${r.killed ? '' : ' no kill'}`).join(', ')}`);
      }
      L.push('');
      L.push('wrk counts a request as a timeout at each of its 2-s checks that finds it unanswered for over 2 s; ' +
        'the kill comes at 30% of the run so that a request left hanging by it is seen by the check at 4 s ' +
        '(with the default 5-s runs).');
    }
    L.push('');
  }

  ipcMarkdown(data, L);

  const issues = [http.length ? '#3' : '', ipc.length ? '#9' : ''].filter(Boolean);
  const issueText = `issue${issues.length > 1 ? 's' : ''} ${issues.join(' and ')}`;
  L.push(`## Targets (${issueText}), against node:cluster RR of this run`);
  L.push('');
  L.push('| target | config | value | target | status | margin |');
  L.push('|---|---|---:|---:|---|---|');
  for (const t of data.targets) {
    L.push(`| ${t.what}${t.detail ? ` (${t.detail})` : ''} | ${labelOf(data, t.config)} | ${fmtTargetValue(t)} | ${fmtTarget(t)} | ` +
      `${status(t)} | ${t.margin} |`);
  }
  L.push('');
  L.push(`![${http.length ? 'requests/s' : 'messages/s'} per config and workload](latest.svg)`);
  L.push('');
  return L.join('\n');
}

module.exports = { summarize, targets, markdown, targetsText, BASELINE, isIpc };
