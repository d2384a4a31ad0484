'use strict';
// serialization: 'advanced' through lib/v8-wire.js's JS codec must give
// exactly what Node's own serializer gives: same values, prototypes, key
// order and shared references, with Node's serializer for what the codec
// leaves to it. Run as a worker (SERIALIZATION_ECHO) it echoes messages.
if (process.env.SERIALIZATION_ECHO) {
  process.on('message', (m) => process.send(m));
  return;
}

const test = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const { advanced, nativeEncode, nativeDecode } = require('../lib/serialization');
const wire = require('../lib/v8-wire');
const { trackCluster } = require('./helpers');
const cluster = require('..');

// ---- generated values (seeded: a failure names its seed) ----

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NUMBERS = [0, -0, 1, -1, 63, 64, -64, -65, 127, 128, 2 ** 30 - 1, 2 ** 30, -(2 ** 30), -(2 ** 30) - 1,
  2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53, -(2 ** 53), 0.5, -1.5, NaN, Infinity,
  -Infinity, Number.MAX_VALUE, Number.MIN_VALUE, Number.EPSILON];
const CHARS = ['a', 'Z', '0', ' ', '\n', '\0', '\x7f', '\x80', 'é', 'ÿ', 'Ā', '€', '☃', '日', '\ud83d\ude00', '\ud800',
  '\udfff', '\uffff'];
const KEYS = ['a', 'p', 'cmd', '', '0', '1', '42', '007', '-1', '1.5', '4294967294', '4294967295', '2147483648',
  '__proto__', 'constructor', 'toString', 'length', 'é', '€uro', '\ud800'];

function generator(seed) {
  const r = rng(seed);
  const pick = (list) => list[Math.floor(r() * list.length)];
  const pool = []; // objects made so far: shared and cyclic references

  function string() {
    const kind = r();
    const n = kind < 0.1 ? 0 : kind < 0.8 ? Math.floor(r() * 40) : 100 + Math.floor(r() * 5000);
    const alphabet = r() < 0.5 ? ['a', 'b', 'x', '1', ' '] : r() < 0.5 ? CHARS.slice(0, 10) : CHARS;
    let s = '';
    for (let i = 0; i < n; i++) s += pick(alphabet);
    return s;
  }

  function value(depth) {
    const k = r();
    if (k < 0.15) return pick(NUMBERS);
    if (k < 0.2) return Math.floor((r() - 0.5) * 2 ** (1 + Math.floor(r() * 40)));
    if (k < 0.22) return (r() - 0.5) * 1e6;
    if (k < 0.4) return string();
    if (k < 0.45) return pick([true, false, null, undefined]);
    if (depth <= 0) return string();
    if (k < 0.5 && pool.length > 0) return pick(pool);
    if (k < 0.75) return object(depth - 1);
    return array(depth - 1);
  }

  function object(depth) {
    const o = r() < 0.15 ? Object.create(null) : {};
    pool.push(o);
    const n = Math.floor(r() * 6);
    for (let i = 0; i < n; i++) {
      const key = r() < 0.6 ? pick(KEYS) : string().slice(0, 12);
      Object.defineProperty(o, key, { value: value(depth), writable: true, enumerable: true, configurable: true });
    }
    if (r() < 0.1) o.self = o;
    return o;
  }

  function array(depth) {
    const a = [];
    pool.push(a);
    const n = Math.floor(r() * 8);
    for (let i = 0; i < n; i++) a.push(value(depth));
    const shape = r();
    if (shape < 0.1 && n > 1) delete a[Math.floor(r() * n)]; // a hole
    else if (shape < 0.15) a.length = n + 1 + Math.floor(r() * 1000); // holes at the end
    else if (shape < 0.2) a.extra = value(0); // a named property
    else if (shape < 0.25) a.push(a); // a cycle
    return a;
  }

  return () => value(4);
}

// Values the JS codec leaves to Node's serializer, alone and inside plain data.
function fallbacks() {
  const err = new RangeError('boom');
  err.code = 'E_X';
  return [new Map([['a', 1], [{ k: 1 }, [2]]]), new Set([1, 'x', {}]), new Date(1e12), Buffer.from('hi'),
    new Uint8Array([1, 2, 3]), new Float64Array([1.5, -0]), new DataView(new ArrayBuffer(4)), new ArrayBuffer(3),
    2n ** 70n, -5n, err, new Error('plain'), /re+/gi, Object(5), Object('s'), Object(false),
    Object.setPrototypeOf(new Map([[1, 2]]), Object.prototype), new (class Point { constructor() { this.x = 1; } })(),
    { nested: new Map([[1, { deep: Buffer.from([0, 255]) }]]) }, [1, 2n, 3], { d: new Date(0), s: 'after' }];
}

// ---- comparing with what Node gives ----

// Prototypes, own keys in order, and shared references as ids: what
// deepStrictEqual does not compare.
function shape(value, seen = new Map()) {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return typeof value;
  if (seen.has(value)) return ['ref', seen.get(value)];
  seen.set(value, seen.size);
  const proto = Object.getPrototypeOf(value);
  const protoName = proto === null ? 'null' : proto.constructor && proto.constructor.name;
  const keys = Reflect.ownKeys(value).filter((k) => typeof k === 'string');
  const parts = keys.map((k) => {
    const d = Object.getOwnPropertyDescriptor(value, k);
    return [k, d.enumerable, 'value' in d ? shape(d.value, seen) : 'accessor'];
  });
  if (value instanceof Map) parts.push(['map', [...value].map(([k, v]) => [shape(k, seen), shape(v, seen)])]);
  if (value instanceof Set) parts.push(['set', [...value].map((v) => shape(v, seen))]);
  return [protoName, parts];
}

// (Failures are cut short: values may hold strings of many KB.)
function assertSame(actual, expected, label = 'value') {
  try {
    assert.deepStrictEqual(actual, expected);
    assert.deepStrictEqual(shape(actual), shape(expected), 'prototypes, key order, references');
  } catch (e) {
    throw new assert.AssertionError({ message: `${label}: ${e.message.slice(0, 3000)}` });
  }
}

function payload(frame) {
  assert.equal(frame.readUInt32BE(0), frame.length - 4, 'the length prefix counts the rest of the frame');
  return frame.subarray(4);
}

const hex = (v) => nativeEncode(v).toString('hex');

test('generated plain data: our encode -> Node decode, Node encode -> our decode, as Node round-trips it', () => {
  let encoded = 0;
  let decoded = 0;
  for (let seed = 1; seed <= 1500; seed++) {
    const v = generator(seed)();
    const label = `seed ${seed}`;
    const expected = nativeDecode(payload(nativeEncode(v)));
    const ours = advanced.encode(v);
    assertSame(nativeDecode(payload(ours)), expected, `${label}: our frame, Node's decoder`);
    assertSame(advanced.decode(payload(nativeEncode(v))), expected, `${label}: Node's frame, our decoder`);
    assertSame(advanced.decode(payload(ours)), expected, `${label}: our frame, our decoder`);
    const frame = payload(nativeEncode(v));
    if (frame.length <= wire.MAX_DECODE) {
      assert.notEqual(wire.decode(frame), wire.UNHANDLED, `${label}: plain data is decoded in JS`);
      decoded++;
    }
    if (wire.encode(v) !== wire.UNHANDLED) encoded++;
  }
  // Holey arrays, arrays with named properties, and big messages go to
  // Node's serializer; most generated values are none of these.
  assert.ok(encoded > 800, `${encoded} of 1500 encoded in JS`);
  assert.ok(decoded > 800, `${decoded} of 1500 decoded in JS`);
});

test('plain values: the JS codec handles them, and writes the bytes Node writes', () => {
  const cyclic = { a: 1 };
  cyclic.me = cyclic;
  cyclic.list = [cyclic, { b: cyclic }];
  const shared = { s: 1 };
  const values = [{ p: 'x'.repeat(56) }, { cmd: 'NODE_HANDLE', type: 'net.Socket', msg: { n: 1 } }, 'é€\ud800',
    'ÿ'.repeat(100), '☃'.repeat(1000), 'a'.repeat(2000), -1, 2 ** 31 - 1, -(2 ** 31), 1.5, -0, NaN, null, undefined,
    true, false, [], {}, ['a', ['b', [{}]]], cyclic, [shared, shared, { shared }], JSON.parse('{"__proto__":{"x":1}}'),
    { 2: 'b', 1: 'a', z: 1, y: 2 }, Object.assign(Object.create(null), { n: null })];
  for (const v of values) {
    const ours = wire.encode(v);
    assert.notEqual(ours, wire.UNHANDLED, `encoded in JS: ${hex(v).slice(0, 40)}`);
    assert.equal(ours.toString('hex'), hex(v));
    assertSame(wire.decode(payload(nativeEncode(v))), nativeDecode(payload(nativeEncode(v))));
  }
  const proto = wire.decode(payload(wire.encode(JSON.parse('{"__proto__":{"x":1}}'))));
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ['__proto__']);
});

test('big messages go to Node\'s serializer (the JS codec is for small ones), with the same result', () => {
  const ones = (n) => JSON.parse(`[${Array(n).fill(1).join(',')}]`); // packed, as V8 writes densely
  const many = Array.from({ length: wire.MAX_RECEIVERS }, (_, i) => ({ i }));
  const values = [many, ones(wire.MAX_ARRAY + 1), { s: 'a'.repeat(wire.MAX_STRING + 1) },
    { s: '☃'.repeat(wire.MAX_STRING + 1) }];
  for (const v of values) {
    assert.equal(wire.encode(v), wire.UNHANDLED);
    assert.equal(advanced.encode(v).toString('hex'), hex(v));
    const frame = payload(nativeEncode(v));
    // The decoder's only limit is the frame's size: a smaller frame it reads itself, to Node's result.
    const ours = wire.decode(frame);
    if (frame.length > wire.MAX_DECODE) assert.equal(ours, wire.UNHANDLED);
    else assertSame(ours, nativeDecode(frame));
    assertSame(advanced.decode(frame), nativeDecode(frame));
  }
  // Just under the limits: still the JS codec's.
  const under = [many.slice(1), ones(wire.MAX_ARRAY), { s: 'b'.repeat(wire.MAX_DECODE - 20) }];
  for (const v of under) {
    assert.equal(wire.encode(v).toString('hex'), hex(v));
    assertSame(wire.decode(payload(nativeEncode(v))), nativeDecode(payload(nativeEncode(v))));
  }
});

test('Map, Set, Date, Buffer, typed arrays, BigInt, errors, class instances: Node\'s serializer, same result', () => {
  for (const v of fallbacks()) {
    assert.equal(wire.encode(v), wire.UNHANDLED, `left to Node: ${hex(v).slice(0, 40)}`);
    // (A class instance is a plain object on the wire.)
    if (v.constructor.name !== 'Point') assert.equal(wire.decode(payload(nativeEncode(v))), wire.UNHANDLED);
    assert.equal(advanced.encode(v).toString('hex'), hex(v));
    const expected = nativeDecode(payload(nativeEncode(v)));
    assertSame(advanced.decode(payload(nativeEncode(v))), expected);
    assertSame(advanced.decode(payload(advanced.encode({ before: 'plain', v }))), nativeDecode(payload(nativeEncode({
      before: 'plain', v }))));
  }
  // A Proxy: Node's serializer refuses it; so does ours, the same way.
  for (const v of [new Proxy({ a: 1 }, {}), { p: new Proxy([], {}) }, () => 1, { s: Symbol('x') }]) {
    assert.equal(wire.encode(v), wire.UNHANDLED);
    assert.throws(() => nativeEncode(v), (e) => {
      assert.throws(() => advanced.encode(v), { name: e.name, message: e.message });
      return true;
    });
  }
});

test('getters run as Node runs them, and a throwing getter throws from send', () => {
  const log = [];
  const o = { a: 1, get b() { log.push('b'); return 2; } };
  assertSame(nativeDecode(payload(advanced.encode(o))), { a: 1, b: 2 });
  assert.deepEqual(log, ['b']);
  const bad = { get x() { throw new TypeError('getter says no'); } };
  assert.throws(() => advanced.encode(bad), { name: 'TypeError', message: 'getter says no' });
  // A getter that sends meanwhile (re-entering the encoder) gets its own frame.
  let inner;
  const reentrant = { get x() { inner = advanced.encode({ inner: 'y'.repeat(40) }); return 'x'; }, z: 'z' };
  const outer = advanced.encode(reentrant);
  assertSame(nativeDecode(payload(outer)), { x: 'x', z: 'z' });
  assertSame(nativeDecode(payload(inner)), { inner: 'y'.repeat(40) });
});

test('a setter on Object.prototype does not run while decoding (Node defines properties)', () => {
  let ran = 0;
  Object.defineProperty(Object.prototype, 'trap', { set() { ran++; }, configurable: true });
  Object.defineProperty(Array.prototype, '1', { set() { ran++; }, configurable: true });
  try {
    const v = advanced.decode(payload(nativeEncode({ trap: 1, list: ['a', 'b'] })));
    assert.equal(ran, 0);
    assert.deepEqual(Object.getOwnPropertyDescriptor(v, 'trap'),
      { value: 1, writable: true, enumerable: true, configurable: true });
    assert.equal(v.list[1], 'b');
    assert.ok(Object.prototype.hasOwnProperty.call(v.list, 1));
  } finally {
    delete Object.prototype.trap;
    delete Array.prototype[1];
  }
});

test('frames earlier encodes returned are never written over', () => {
  // Small frames share slabs; big ones move the frame being written to a new one.
  const frames = [];
  for (let i = 0; i < 3000; i++) {
    const v = i % 100 === 7 ? { big: 'q'.repeat(20000 + i) } : { i, s: String(i).repeat(i % 50) };
    frames.push([v, advanced.encode(v)]);
  }
  for (const [v, f] of frames) assertSame(nativeDecode(payload(f)), v, JSON.stringify(v).slice(0, 30));
});

test('other format versions, truncated and corrupted frames: decoded (or refused) as Node does', () => {
  const frame = payload(nativeEncode({ a: [1, 'é', { b: -0.5 }], c: '€€', d: [, 1] }));
  for (const version of [13, 14, 16, 0x7f]) {
    const other = Buffer.from(frame);
    other[1] = version;
    if (version !== wire.VERSION) assert.equal(wire.decode(other), wire.UNHANDLED, `version ${version}`);
  }
  const r = rng(7);
  const variants = [];
  for (let n = 0; n < frame.length; n++) variants.push(frame.subarray(0, n));
  // Over-long varints (a string's length, an int): more continuation bytes than any uint32 needs.
  for (const count of [5, 6, 10, 200]) {
    const more = Buffer.alloc(count, 0x80);
    variants.push(Buffer.concat([frame.subarray(0, 2), Buffer.from([0x22]), more, Buffer.from([0x01, 0x41])]));
    variants.push(Buffer.concat([frame.subarray(0, 2), Buffer.from([0x49]), more, Buffer.from([0x02])]));
  }
  for (let i = 0; i < 3000; i++) {
    const bad = Buffer.from(frame);
    const hits = 1 + Math.floor(r() * 3);
    for (let j = 0; j < hits; j++) bad[2 + Math.floor(r() * (bad.length - 2))] = Math.floor(r() * 256);
    variants.push(bad);
  }
  for (const v of variants) {
    let expected;
    let error;
    try {
      expected = nativeDecode(v);
    } catch (e) {
      error = e;
    }
    if (error) {
      assert.throws(() => advanced.decode(v), { message: error.message }, v.toString('hex'));
    } else {
      assertSame(advanced.decode(v), expected, `frame ${v.toString('hex')}`);
    }
  }
});

test('deep nesting: both codecs agree (Node\'s decides past the JS stack)', () => {
  let deep = 'leaf';
  for (let i = 0; i < 20000; i++) deep = [deep];
  let expected;
  let error;
  try {
    expected = nativeDecode(payload(nativeEncode(deep)));
  } catch (e) {
    error = e;
  }
  if (error) {
    assert.throws(() => advanced.decode(payload(advanced.encode(deep))), { name: error.name });
  } else {
    assertSame(advanced.decode(payload(advanced.encode(deep))), expected);
  }
});

test('end to end: a real worker echoes every value back unchanged (serialization: advanced)', async (t) => {
  const tracked = trackCluster(cluster);
  t.after(() => tracked.killAll());
  cluster.setupPrimary({ exec: __filename, serialization: 'advanced' });
  const worker = cluster.fork({ SERIALIZATION_ECHO: '1' });
  await once(worker, 'online');
  const cyclic = { name: 'c', list: [] };
  cyclic.list.push(cyclic, { back: cyclic });
  const values = [{ p: 'x'.repeat(56) }, 'é€\ud800☃', 'z'.repeat(200000), cyclic, [1, , 3], -0, NaN, 2 ** 31,
    JSON.parse('{"__proto__":1,"0":2}'), ...fallbacks().map((v) => ({ v }))];
  // (undefined alone is not a message.)
  for (let seed = 1; seed <= 200; seed++) values.push(generator(seed)() ?? null);
  const echoes = [];
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${echoes.length} of ${values.length} echoes in 20 s`)), 20000);
    worker.on('message', (m) => {
      echoes.push(m);
      if (echoes.length === values.length) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  for (const v of values) worker.send(v);
  await done;
  for (let i = 0; i < values.length; i++) {
    assertSame(echoes[i], nativeDecode(payload(nativeEncode(values[i]))), `value ${i}`);
  }
  const exited = once(worker, 'exit');
  worker.process.kill('SIGKILL');
  await exited;
  cluster.setupPrimary({ serialization: 'json' });
});
