'use strict';
// Small statistics and formatting helpers shared by the runner and reports.

function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

// { median, min, max, n } over the finite values, or null when there are none.
function spread(values) {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return null;
  return { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length };
}

// A number with about `digits` significant digits, plain notation.
function sig(x, digits = 3) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  const abs = Math.abs(x);
  if (abs >= 10 ** digits) return String(Math.round(x));
  const decimals = Math.max(0, digits - 1 - Math.floor(Math.log10(abs)));
  return x.toFixed(Math.min(decimals, 6));
}

function int(x) {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : String(Math.round(x));
}

module.exports = { median, spread, sig, int };
