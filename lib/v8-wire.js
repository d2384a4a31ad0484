'use strict';
// V8's ValueSerializer wire format for plain data, in JS. Node's own
// serializer objects cost a native object, a weak callback and a fresh
// buffer per message; these do not. Both sides handle only the common case
// and say so (UNHANDLED) for everything else, so the caller runs Node's
// serializer on the whole message instead: the result is always what Node's
// would be.

const { types } = require('node:util');
const v8 = require('node:v8');

const UNHANDLED = Symbol('unhandled');

// Builtins as they were at load: user code may replace the globals later.
const { defineProperty, getPrototypeOf, keys: objectKeys } = Object;
const { isArray } = Array;
const { isView } = ArrayBuffer;
const { fromCharCode } = String;
const { byteLength } = Buffer;
const hasOwn = Function.prototype.call.bind(Object.prototype.hasOwnProperty);
const objectTag = Function.prototype.call.bind(Object.prototype.toString);
const { toStringTag } = Symbol;

// Tags (value-serializer.cc's SerializationTag).
const T_VERSION = 0xff;
const T_PADDING = 0x00;
const T_HOLE = 0x2d; // '-'
const T_UNDEFINED = 0x5f; // '_'
const T_NULL = 0x30; // '0'
const T_TRUE = 0x54; // 'T'
const T_FALSE = 0x46; // 'F'
const T_INT32 = 0x49; // 'I'
const T_UINT32 = 0x55; // 'U'
const T_DOUBLE = 0x4e; // 'N'
const T_UTF8 = 0x53; // 'S'
const T_ONE_BYTE = 0x22; // '"'
const T_TWO_BYTE = 0x63; // 'c'
const T_REF = 0x5e; // '^'
const T_OBJECT = 0x6f; // 'o'
const T_END_OBJECT = 0x7b; // '{'
const T_SPARSE = 0x61; // 'a'
const T_END_SPARSE = 0x40; // '@'
const T_DENSE = 0x41; // 'A'
const T_END_DENSE = 0x24; // '$'

// The format version this V8 writes (its header: 0xFF, version). The tags
// above have read the same since version 13; another version (a worker on
// another Node) goes to Node's deserializer, which knows.
const VERSION = v8.serialize(null)[1];
const KNOWN = VERSION >= 13 && VERSION <= 15;

// Short strings are copied char by char: cheaper than a call into C++.
const SHORT = 16;

// What this codec saves is a fixed cost per message (Node's serializer
// objects); per value it is slower than V8's C++. So it takes small messages
// only, and leaves big ones (found by these limits) to Node's.
const MAX_RECEIVERS = 12; // objects and arrays in a message
const MAX_ARRAY = 64; // an array's length
const MAX_STRING = 2048; // a string's length
const MAX_DECODE = 2048; // a frame's bytes

// ---- decoding ----

let src; // the frame
let pos;
let end;
// Objects and arrays by id, in the order they began. Grown by defining
// (an append could run a setter put on Array.prototype); emptied after each
// frame, not shrunk.
const refs = [];
let refCount = 0;

// Recent short keys by a hash of their bytes: a key string made afresh for
// every object costs V8 a lookup in its string table at each store.
const KEY_CACHE = 1024;
const keyCache = new Array(KEY_CACHE).fill('');

// A frame's value, or UNHANDLED (a tag, version or malformation this reader
// leaves to Node's deserializer, which reads or rejects the whole frame).
function decode(buf) {
  if (!KNOWN || !(buf instanceof Buffer) || buf.length < 3 || buf.length > MAX_DECODE || buf[0] !== T_VERSION || buf[1] !== VERSION) return UNHANDLED;
  src = buf;
  pos = 2;
  end = buf.length;
  try {
    return readValue();
  } catch {
    // Nesting deeper than this stack: Node's deserializer decides.
    return UNHANDLED;
  } finally {
    src = undefined;
    for (let i = 0; i < refCount; i++) refs[i] = undefined;
    refCount = 0;
  }
}

function readVarint() {
  let value = 0;
  let scale = 1;
  let byte;
  do {
    // Past 5 bytes (35 bits) only a malformed frame continues: V8 decides.
    if (pos >= end || scale > 2 ** 28) return -1;
    byte = src[pos++];
    value += (byte & 0x7f) * scale;
    scale *= 128;
  } while (byte & 0x80);
  // A uint32 (V8 drops bits past 32; a frame that has them is left to V8).
  return value > 0xffffffff ? -1 : value;
}

function readTag() {
  while (pos < end) {
    const tag = src[pos++];
    if (tag !== T_PADDING) return tag;
  }
  return -1;
}

function readValue() {
  const tag = readTag();
  switch (tag) {
    case T_ONE_BYTE: return readOneByte();
    case T_INT32: {
      const n = readVarint();
      if (n < 0) return UNHANDLED;
      return (n >>> 1) ^ -(n & 1);
    }
    case T_OBJECT: return readObject();
    case T_DOUBLE: return readDouble();
    case T_TWO_BYTE: return readTwoByte();
    case T_UTF8: return readUtf8();
    case T_NULL: return null;
    case T_UNDEFINED: return undefined;
    case T_TRUE: return true;
    case T_FALSE: return false;
    case T_UINT32: {
      const n = readVarint();
      return n < 0 ? UNHANDLED : n;
    }
    case T_DENSE: return readDense();
    case T_SPARSE: return readSparse();
    case T_REF: {
      const id = readVarint();
      if (id < 0 || id >= refCount) return UNHANDLED;
      return refs[id];
    }
    default: return UNHANDLED;
  }
}

function readDouble() {
  if (pos + 8 > end) return UNHANDLED;
  const d = src.readDoubleLE(pos);
  pos += 8;
  return d;
}

function readOneByte() {
  const n = readVarint();
  if (n < 0 || n > end - pos) return UNHANDLED;
  const start = pos;
  pos += n;
  if (n > SHORT) return src.latin1Slice(start, pos);
  let s = '';
  for (let i = start; i < pos; i++) s += fromCharCode(src[i]);
  return s;
}

function readTwoByte() {
  const n = readVarint();
  if (n < 0 || n > end - pos || n % 2 !== 0) return UNHANDLED;
  const start = pos;
  pos += n;
  return src.ucs2Slice(start, pos);
}

function readUtf8() {
  const n = readVarint();
  if (n < 0 || n > end - pos) return UNHANDLED;
  const start = pos;
  pos += n;
  return src.utf8Slice(start, pos);
}

function newRef(value) {
  if (refCount < refs.length) refs[refCount] = value;
  else defineProperty(refs, refCount, { value, writable: true, enumerable: true, configurable: true });
  refCount++;
}

// A property key: a short one-byte string from the cache when it is there.
function readKey() {
  if (pos + 1 >= end || src[pos] !== T_ONE_BYTE || src[pos + 1] > SHORT) return readValue();
  const n = src[pos + 1];
  const start = pos + 2;
  if (start + n > end) return UNHANDLED;
  let h = n;
  for (let i = start; i < start + n; i++) h = (h * 31 + src[i]) & (KEY_CACHE - 1);
  const cached = keyCache[h];
  pos = start + n;
  if (cached.length === n) {
    let i = 0;
    while (i < n && cached.charCodeAt(i) === src[start + i]) i++;
    if (i === n) return cached;
  }
  let key = '';
  for (let i = start; i < pos; i++) key += fromCharCode(src[i]);
  keyCache[h] = key;
  return key;
}

// An own data property, defined as V8 defines it: a key the prototypes have
// (`__proto__`, a setter someone put on Object.prototype, a key seen
// before) is defined, not assigned, so no setter runs.
function put(target, key, value) {
  if (key in target) {
    defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    target[key] = value;
  }
}

// Keys and values up to `endTag`; `length` on an array is left to V8.
function readProperties(target, endTag, isArray) {
  let count = 0;
  for (;;) {
    if (pos >= end) return -1;
    if (src[pos] === endTag) {
      pos++;
      return count;
    }
    let key = readKey();
    if (typeof key === 'number') key = `${key}`;
    else if (typeof key !== 'string') return -1;
    const value = readValue();
    if (value === UNHANDLED) return -1;
    if (isArray && key === 'length') return -1;
    put(target, key, value);
    count++;
  }
}

function readObject() {
  const o = {};
  newRef(o);
  const count = readProperties(o, T_END_OBJECT, false);
  if (count < 0 || readVarint() !== count) return UNHANDLED;
  return o;
}

function readDense() {
  const length = readVarint();
  if (length < 0 || length > end - pos) return UNHANDLED;
  // Filled in order from [], as V8 fills its fast backing store (a big
  // `new Array(n)` would be a dictionary); trailing holes set the length.
  const a = [];
  newRef(a);
  for (let i = 0; i < length; i++) {
    if (pos < end && src[pos] === T_HOLE) {
      pos++;
      continue;
    }
    const v = readValue();
    if (v === UNHANDLED) return UNHANDLED;
    put(a, i, v);
  }
  if (a.length < length) a.length = length;
  const count = readProperties(a, T_END_DENSE, true);
  if (count < 0 || readVarint() !== count || readVarint() !== length) return UNHANDLED;
  return a;
}

function readSparse() {
  const length = readVarint();
  if (length < 0) return UNHANDLED;
  const a = [];
  a.length = length;
  newRef(a);
  const count = readProperties(a, T_END_SPARSE, true);
  if (count < 0 || readVarint() !== count || readVarint() !== length) return UNHANDLED;
  return a;
}

// ---- encoding ----

const SLAB = 32 * 1024;
let out = Buffer.allocUnsafe(SLAB); // frames are views of it, one after another
let at = 0; // where the next frame starts in `out`
let w = 0; // write position
// Objects and arrays written, by id: a repeated one goes as a reference.
// At most MAX_RECEIVERS, so a scan is cheaper than hashing into a Map.
const written = new Array(MAX_RECEIVERS).fill(undefined);
let nextId = 0;
let busy = false; // a getter that sends re-enters: that send goes to Node's serializer

// Makes room for `n` more bytes: the frame so far moves to a fresh slab, so
// frames handed out earlier are never written over.
function reserve(n) {
  if (w + n <= out.length) return;
  const size = w - at;
  const fresh = Buffer.allocUnsafe(Math.max(SLAB, 2 * (size + n)));
  out.copy(fresh, 0, at, w);
  out = fresh;
  at = 0;
  w = size;
}

// A frame (4-byte length, header, value) as Node's child_process
// serializer would write it, or UNHANDLED.
function encode(value) {
  if (!KNOWN || busy) return UNHANDLED;
  busy = true;
  let ok = false;
  try {
    reserve(6);
    w += 4;
    out[w++] = T_VERSION;
    out[w++] = VERSION;
    ok = writeValue(value);
  } catch {
    // A getter threw, or nesting deeper than this stack: Node's serializer
    // runs again and throws (or copes) as it would have.
    ok = false;
  } finally {
    busy = false;
    for (let i = 0; i < nextId; i++) written[i] = undefined;
    nextId = 0;
    if (!ok) w = at;
  }
  if (!ok) return UNHANDLED;
  // `at`, not where it began: `reserve` may have moved the frame.
  const frame = out.subarray(at, w);
  frame.writeUInt32BE(w - at - 4, 0);
  at = w;
  if (out.length - at < 64) {
    out = Buffer.allocUnsafe(SLAB);
    at = 0;
    w = 0;
  }
  return frame;
}

function writeVarint(n) {
  reserve(5);
  while (n >= 0x80) {
    out[w++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[w++] = n;
}

function varintSize(n) {
  let size = 1;
  while (n >= 0x80) {
    n >>>= 7;
    size++;
  }
  return size;
}

function writeValue(v) {
  switch (typeof v) {
    case 'string':
      if (v.length > MAX_STRING) return false;
      writeString(v);
      return true;
    case 'number': writeNumber(v); return true;
    case 'object':
      if (v === null) {
        reserve(1);
        out[w++] = T_NULL;
        return true;
      }
      return writeReceiver(v);
    case 'boolean':
      reserve(1);
      out[w++] = v ? T_TRUE : T_FALSE;
      return true;
    case 'undefined':
      reserve(1);
      out[w++] = T_UNDEFINED;
      return true;
    default: return false; // bigint (Node's writes it), function, symbol (Node's throws)
  }
}

function writeNumber(n) {
  if ((n | 0) === n && (n !== 0 || 1 / n > 0)) {
    reserve(6);
    out[w++] = T_INT32;
    writeVarint(((n << 1) ^ (n >> 31)) >>> 0);
  } else {
    reserve(9);
    out[w++] = T_DOUBLE;
    out.writeDoubleLE(n, w);
    w += 8;
  }
}

// One-byte when every char fits in a byte (as V8 writes a one-byte string),
// else two-byte (UTF-8 would not keep lone surrogates).
function writeString(s) {
  const n = s.length;
  if (n <= SHORT) {
    reserve(6 + n);
    const mark = w;
    out[w++] = T_ONE_BYTE;
    writeVarint(n);
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0xff) break;
      out[w++] = c;
    }
    if (i === n) return;
    w = mark;
  } else {
    // ASCII iff its UTF-8 is one byte a char; then it is its own latin1.
    const ascii = byteLength(s) === n;
    if (ascii || isLatin1(s)) {
      reserve(6 + n);
      out[w++] = T_ONE_BYTE;
      writeVarint(n);
      w += out.latin1Write(s, w, n);
      return;
    }
  }
  reserve(7 + 2 * n);
  // V8 pads so that the chars start at an even offset in the frame.
  if ((w - at + 1 + varintSize(2 * n)) & 1) out[w++] = T_PADDING;
  out[w++] = T_TWO_BYTE;
  writeVarint(2 * n);
  w += out.ucs2Write(s, w, 2 * n);
}

function isLatin1(s) {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0xff) return false;
  return true;
}

// An object seen before goes as a back-reference; ids are given in the
// order objects begin, as V8's deserializer gives them.
function writeReceiver(v) {
  for (let id = 0; id < nextId; id++) {
    if (written[id] === v) {
      reserve(1);
      out[w++] = T_REF;
      writeVarint(id);
      return true;
    }
  }
  if (nextId >= MAX_RECEIVERS || types.isProxy(v)) return false;
  const proto = getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) {
    if (!isOrdinary(v)) return false;
    remember(v);
    return writeObject(v);
  }
  if (proto === Array.prototype && isArray(v) && v.length <= MAX_ARRAY) {
    remember(v);
    return writeArray(v);
  }
  return false;
}

function remember(v) {
  written[nextId++] = v;
}

// Exotic objects may have Object.prototype or null as prototype too (set by
// hand): V8 writes those by type. The tag sees arguments, errors, boxed
// primitives, dates, regexps, module namespaces (unless a toStringTag hides
// them); the rest by their internal slots. (A Proxy was refused before its
// getPrototypeOf trap could run.)
function isOrdinary(v) {
  if (isView(v) || toStringTag in v) return false;
  if (objectTag(v) !== '[object Object]') return false;
  return !(types.isMap(v) || types.isSet(v) || types.isAnyArrayBuffer(v) || types.isWeakMap(v) ||
    types.isWeakSet(v) || types.isPromise(v));
}

function writeObject(o) {
  reserve(1);
  out[w++] = T_OBJECT;
  const keys = objectKeys(o);
  let count = 0;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i];
    const value = o[key];
    // V8 skips a key a getter deleted meanwhile.
    if (value === undefined && !hasOwn(o, key)) continue;
    writeKey(key);
    if (!writeValue(value)) return false;
    count++;
  }
  reserve(1);
  out[w++] = T_END_OBJECT;
  writeVarint(count);
  return true;
}

// An array index goes as a number, as V8 enumerates it.
function writeKey(key) {
  const c = key.charCodeAt(0);
  if (c >= 0x30 && c <= 0x39) {
    const n = Number(key);
    if (n <= 0xfffffffe && `${n}` === key) {
      writeNumber(n);
      return;
    }
  }
  writeString(key);
}

// Dense only: an array with holes or other own keys goes to V8.
function writeArray(a) {
  const length = a.length;
  // A list of objects longer than the limit: found now, not after writing
  // a dozen of them.
  const first = a[0];
  if (typeof first === 'object' && first !== null && nextId + length > MAX_RECEIVERS) return false;
  reserve(1);
  out[w++] = T_DENSE;
  writeVarint(length);
  for (let i = 0; i < length; i++) {
    const v = a[i];
    if (v === undefined && !(i in a)) return false;
    if (!writeValue(v)) return false;
  }
  if (a.length !== length || objectKeys(a).length !== length) return false;
  reserve(1);
  out[w++] = T_END_DENSE;
  writeVarint(0);
  writeVarint(length);
  return true;
}

module.exports = { encode, decode, UNHANDLED, VERSION, MAX_RECEIVERS, MAX_ARRAY, MAX_STRING, MAX_DECODE };
