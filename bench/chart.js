'use strict';
// An SVG bar chart of requests/s per config (messages/s for the ipc cases),
// one panel per workload (each with its own scale), min–max whiskers over the
// rounds, and each bar's ratio to node:cluster RR of the same run written
// above it. No dependencies.

const COLORS = {
  'rcluster-reuseport': '#1f6fb4',
  'rcluster-rr': '#3fa7d6',
  'rcluster-none': '#7cc8c0',
  'node-rr': '#e0772a',
  'node-none': '#f2b25c',
  'node-reuseport': '#9b6bc2',
  single: '#9a9a9a',
};
const BASELINE = 'node-rr';

function isIpc(key) {
  return key.startsWith('ipc-');
}

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

// A "nice" axis maximum and tick step for values up to `max`.
function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  return { top: Math.ceil(max / step) * step, step };
}

function kfmt(v) {
  if (v >= 10000) return `${(v / 1000).toFixed(0)}k`;
  if (v >= 1000) return `${(v / 1000).toFixed(1)}k`;
  return String(Math.round(v));
}

function renderSvg(data) {
  const configs = data.configs;
  const workloads = data.workloads.filter((w) => data.summary[w.key] && Object.keys(data.summary[w.key]).length);
  const cols = workloads.length > 1 ? 2 : 1;
  const rows = Math.ceil(workloads.length / cols);
  const PW = 470; // panel
  const PH = 285;
  const W = cols * PW + 20;
  const legendItem = 150;
  const perRow = Math.max(1, Math.floor((W - 40) / legendItem));
  const top = 70 + Math.ceil(configs.length / perRow) * 16; // title + legend
  const H = top + rows * PH + 30;
  const ipcCount = workloads.filter((w) => isIpc(w.key)).length;
  const what = ipcCount === workloads.length ? 'Messages/s' : ipcCount ? 'Requests/s (ipc: messages/s)' : 'Requests/s';
  const o = data.options || {};
  const runShape = ipcCount === workloads.length
    ? `${o.rounds} rounds`
    : `${(data.machine || {}).loadgen || ''} -t${o.threads} -c${o.connections}, ` +
      `${o.rounds} × ${o.duration} s, ${o.workers} workers`;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
    'font-family="Helvetica, Arial, sans-serif" font-size="11">');
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">` +
    `${esc(`${what} per config (median of rounds, whiskers min–max; ×RR = ratio to node:cluster RR)`)}</text>`);
  const m = data.machine || {};
  out.push(`<text x="${W / 2}" y="42" text-anchor="middle" fill="#555">` +
    `${esc(`${m.cores} cores ${m.cpuModel || ''}, Node ${m.node || ''}, ${runShape} — ${data.startedAt || ''}`)}</text>`);

  // Legend
  configs.forEach((c, i) => {
    const x = 20 + (i % perRow) * legendItem + ((W - 40) - Math.min(configs.length, perRow) * legendItem) / 2;
    const y = 58 + Math.floor(i / perRow) * 16;
    out.push(`<rect x="${x}" y="${y}" width="12" height="12" fill="${COLORS[c.key] || '#444'}"/>`);
    out.push(`<text x="${x + 17}" y="${y + 10}">${esc(c.label)}</text>`);
  });

  workloads.forEach((w, wi) => {
    const px = 10 + (wi % cols) * PW;
    const py = top + Math.floor(wi / cols) * PH;
    const s = data.summary[w.key];
    const metric = isIpc(w.key) ? 'msgsPerSec' : 'rps';
    const present = configs.filter((c) => s[c.key] && s[c.key][metric]);
    const left = px + 52;
    const right = px + PW - 14;
    const plotTop = py + 40;
    const plotBottom = py + PH - (w.key === 'kill' ? 50 : 38);
    const maxVal = Math.max(0, ...present.map((c) => s[c.key][metric].max));
    const { top: yTop, step } = niceScale(maxVal * 1.12);
    const y = (v) => plotBottom - (v / yTop) * (plotBottom - plotTop);

    out.push(`<text x="${px + PW / 2}" y="${py + 20}" text-anchor="middle" font-size="13" font-weight="bold">${esc(w.label)}</text>`);
    out.push(`<text x="${px + PW / 2}" y="${py + 33}" text-anchor="middle" fill="#666" font-size="10">${esc(w.short || w.desc.replace(/`/g, ''))}</text>`);
    for (let v = 0; v <= yTop + 1e-9; v += step) {
      const yy = y(v).toFixed(1);
      out.push(`<line x1="${left}" y1="${yy}" x2="${right}" y2="${yy}" stroke="${v === 0 ? '#333' : '#e4e4e4'}"/>`);
      out.push(`<text x="${left - 5}" y="${(Number(yy) + 4).toFixed(1)}" text-anchor="end" fill="#555">${kfmt(v)}</text>`);
    }
    if (present.length === 0) {
      out.push(`<text x="${(left + right) / 2}" y="${(plotTop + plotBottom) / 2}" text-anchor="middle" fill="#999">no data</text>`);
      return;
    }
    const base = s[BASELINE] && s[BASELINE][metric] ? s[BASELINE][metric].median : null;
    const slot = (right - left) / present.length;
    const bw = Math.min(46, slot * 0.7);
    present.forEach((c, i) => {
      const r = s[c.key][metric];
      const cx = left + slot * (i + 0.5);
      const y0 = y(r.median);
      out.push(`<rect x="${(cx - bw / 2).toFixed(1)}" y="${y0.toFixed(1)}" width="${bw.toFixed(1)}" ` +
        `height="${(plotBottom - y0).toFixed(1)}" fill="${COLORS[c.key] || '#444'}">` +
        `<title>${esc(`${c.label}: ${Math.round(r.median)} ${metric === 'rps' ? 'req' : 'msgs'}/s ` +
          `(${Math.round(r.min)}–${Math.round(r.max)})`)}</title></rect>`);
      if (r.max > r.min) {
        const x = cx.toFixed(1);
        out.push(`<line x1="${x}" y1="${y(r.max).toFixed(1)}" x2="${x}" y2="${y(r.min).toFixed(1)}" stroke="#222"/>`);
        for (const v of [r.min, r.max]) {
          out.push(`<line x1="${(cx - 5).toFixed(1)}" y1="${y(v).toFixed(1)}" x2="${(cx + 5).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#222"/>`);
        }
      }
      const labelY = Math.min(y(r.max), y0) - 5;
      out.push(`<text x="${cx.toFixed(1)}" y="${(labelY - 12).toFixed(1)}" text-anchor="middle" font-size="10">${kfmt(r.median)}</text>`);
      if (base) {
        const ratio = r.median / base;
        const bold = c.key === BASELINE ? '' : ' font-weight="bold"';
        out.push(`<text x="${cx.toFixed(1)}" y="${labelY.toFixed(1)}" text-anchor="middle" font-size="10"${bold} ` +
          `fill="${c.key === BASELINE ? '#888' : ratio >= 1 ? '#1a7f37' : '#b42318'}">${ratio.toFixed(2)}×</text>`);
      }
      // Two lines: implementation, then policy.
      // (The policy does not touch IPC: the ipc bars name the implementation only.)
      const [impl, ...rest] = c.label.replace('node:cluster', 'node').split(' ');
      if (isIpc(w.key)) rest.length = 0;
      out.push(`<text x="${cx.toFixed(1)}" y="${plotBottom + 13}" text-anchor="middle" font-size="10">${esc(impl)}</text>`);
      out.push(`<text x="${cx.toFixed(1)}" y="${plotBottom + 25}" text-anchor="middle" font-size="10">${esc(rest.join(' '))}</text>`);
      const failed = s[c.key].failed;
      if (w.key === 'kill' && failed) {
        out.push(`<text x="${cx.toFixed(1)}" y="${plotBottom + 38}" text-anchor="middle" font-size="10" ` +
          `fill="${failed.median > 5 ? '#b42318' : '#555'}">${esc(`${Math.round(failed.median)} failed`)}</text>`);
      }
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

module.exports = { renderSvg, niceScale };
