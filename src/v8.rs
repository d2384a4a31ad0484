//! Minimal codec for V8's ValueSerializer wire format (format version 15), as
//! used by Node's `serialization: 'advanced'` child-process IPC channel.
//!
//! Only the JSON-shaped subset is understood. Payloads start at the 0xFF
//! version header; the 4-byte length framing is handled elsewhere.

use serde_json::{Map, Number, Value};
use std::fmt;

/// Format version we emit. Node 20/22/24 all speak 15.
const VERSION: u8 = 15;
/// Versions we accept: from 13 on, unknown tags are errors rather than host
/// objects, and nothing we decode changed between 13 and 15.
const ACCEPTED_VERSIONS: std::ops::RangeInclusive<u32> = 13..=15;
/// Guards recursion against hostile nesting.
const MAX_DEPTH: u32 = 512;
/// Sparse arrays are materialised densely; cap what one length field can cost.
const MAX_SPARSE_LEN: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
  /// Input ended in the middle of a value.
  Truncated,
  /// A value tag outside the supported subset (BigInt, Buffer, Map, ...).
  Unsupported(u8),
  /// Missing 0xFF header or a version outside 13..=15.
  BadHeader,
  /// Structurally malformed input.
  Invalid(&'static str),
}

impl fmt::Display for DecodeError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match self {
      DecodeError::Truncated => f.write_str("v8 payload truncated"),
      DecodeError::Unsupported(t) => write!(f, "unsupported v8 value tag 0x{t:02x}"),
      DecodeError::BadHeader => f.write_str("bad v8 serialization header"),
      DecodeError::Invalid(why) => write!(f, "invalid v8 payload: {why}"),
    }
  }
}

impl std::error::Error for DecodeError {}

type Result<T> = std::result::Result<T, DecodeError>;

/// Decode a whole payload (header + one value) into JSON.
pub fn decode(payload: &[u8]) -> Result<Value> {
  // Pass 1 keeps no copies of finished objects; back-references are rare, so
  // only when one is seen do we redo the work keeping copies to clone from.
  // Like V8, bytes after the value are ignored.
  let mut r = Reader::new(payload, false)?;
  let v = r.value()?.unwrap_or(Value::Null);
  if !r.saw_ref {
    return Ok(v);
  }
  let mut r = Reader::new(payload, true)?;
  Ok(r.value()?.unwrap_or(Value::Null))
}

/// Read the leading properties of a top-level object, in order, stopping
/// silently at the first one that does not decode.
pub fn decode_leading_props(payload: &[u8]) -> Vec<(String, Value)> {
  let run = |keep| {
    let mut out = Vec::new();
    let mut saw_ref = false;
    if let Ok(mut r) = Reader::new(payload, keep) {
      let _ = r.leading_props(&mut out);
      saw_ref = r.saw_ref;
    }
    (out, saw_ref)
  };
  match run(false) {
    (_, true) => run(true).0,
    (props, false) => props,
  }
}

/// Encode JSON as a payload V8's ValueDeserializer accepts.
pub fn encode(value: &Value) -> Vec<u8> {
  let mut out = vec![0xFF, VERSION];
  write_value(&mut out, value);
  out
}

struct Reader<'a> {
  buf: &'a [u8],
  pos: usize,
  /// Indexed by V8 object id; `None` while the object is still being read.
  /// Holds real values only when `keep` is set (placeholders otherwise).
  objects: Vec<Option<Value>>,
  keep: bool,
  saw_ref: bool,
  depth: u32,
}

impl<'a> Reader<'a> {
  fn new(buf: &'a [u8], keep: bool) -> Result<Self> {
    let mut r = Reader {
      buf,
      pos: 0,
      objects: Vec::new(),
      keep,
      saw_ref: false,
      depth: 0,
    };
    if r.byte()? != 0xFF {
      return Err(DecodeError::BadHeader);
    }
    if !ACCEPTED_VERSIONS.contains(&r.varint()?) {
      return Err(DecodeError::BadHeader);
    }
    Ok(r)
  }

  fn byte(&mut self) -> Result<u8> {
    let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
    self.pos += 1;
    Ok(b)
  }

  fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
    let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
    let bytes = &self.buf[self.pos..end.ok_or(DecodeError::Truncated)?];
    self.pos += n;
    Ok(bytes)
  }

  /// Next tag without consuming it; padding bytes are skipped for good.
  fn peek_tag(&mut self) -> Result<u8> {
    loop {
      match *self.buf.get(self.pos).ok_or(DecodeError::Truncated)? {
        0 => self.pos += 1,
        t => return Ok(t),
      }
    }
  }

  fn tag(&mut self) -> Result<u8> {
    let t = self.peek_tag()?;
    self.pos += 1;
    Ok(t)
  }

  /// Like V8, bits beyond 32 are dropped rather than rejected.
  fn varint(&mut self) -> Result<u32> {
    let (mut v, mut shift) = (0u32, 0u32);
    loop {
      let b = self.byte()?;
      if shift < 32 {
        v |= u32::from(b & 0x7F) << shift;
        shift += 7;
      }
      if b & 0x80 == 0 {
        return Ok(v);
      }
    }
  }

  fn zigzag(&mut self) -> Result<i32> {
    let n = self.varint()?;
    Ok((n >> 1) as i32 ^ -((n & 1) as i32))
  }

  fn double(&mut self) -> Result<f64> {
    Ok(f64::from_le_bytes(self.raw(8)?.try_into().unwrap()))
  }

  /// Body of a string whose tag `t` was already consumed.
  fn string(&mut self, t: u8) -> Result<String> {
    let len = self.varint()? as usize;
    let bytes = self.raw(len)?;
    Ok(match t {
      b'"' => bytes.iter().map(|&b| char::from(b)).collect(),
      b'S' => String::from_utf8_lossy(bytes).into_owned(),
      _ if len & 1 == 1 => return Err(DecodeError::Invalid("odd two-byte string length")),
      _ => {
        let units = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        char::decode_utf16(units).map(|c| c.unwrap_or('\u{FFFD}')).collect()
      }
    })
  }

  /// A value; `None` stands for JS `undefined`.
  fn value(&mut self) -> Result<Option<Value>> {
    self.depth += 1;
    if self.depth > MAX_DEPTH {
      return Err(DecodeError::Invalid("nesting too deep"));
    }
    let v = self.value_inner();
    self.depth -= 1;
    v
  }

  fn value_inner(&mut self) -> Result<Option<Value>> {
    let t = self.tag()?;
    Ok(Some(match t {
      b'_' => return Ok(None),
      b'0' => Value::Null,
      b'T' => Value::Bool(true),
      b'F' => Value::Bool(false),
      b'I' => self.zigzag()?.into(),
      b'U' => self.varint()?.into(),
      b'N' => number(self.double()?),
      b'"' | b'S' | b'c' => Value::String(self.string(t)?),
      b'o' => self.object()?,
      b'A' => self.dense_array()?,
      b'a' => self.sparse_array()?,
      b'D' => {
        let ms = number(self.double()?);
        let id = self.begin();
        self.finish(id, ms)
      }
      b'^' => self.back_ref()?,
      // Obsolete object-count prefix: V8 ignores it and reads on.
      b'?' => {
        self.varint()?;
        return self.value();
      }
      _ => return Err(DecodeError::Unsupported(t)),
    }))
  }

  /// Object keys are strings or numbers; numbers take their JS string form.
  fn key(&mut self) -> Result<String> {
    match self.tag()? {
      b'I' => Ok(self.zigzag()?.to_string()),
      b'U' => Ok(self.varint()?.to_string()),
      b'N' => Ok(js_number_string(self.double()?)),
      t @ (b'"' | b'S' | b'c') => self.string(t),
      _ => Err(DecodeError::Invalid("object key is not a string or number")),
    }
  }

  /// Key/value pairs up to `end`; returns how many were read.
  fn props(&mut self, end: u8, mut each: impl FnMut(String, Option<Value>)) -> Result<u32> {
    let mut n = 0u32;
    while self.peek_tag()? != end {
      let k = self.key()?;
      each(k, self.value()?);
      n += 1;
    }
    self.pos += 1;
    Ok(n)
  }

  fn check_counts(&mut self, props: u32, len: Option<usize>) -> Result<()> {
    if self.varint()? != props {
      return Err(DecodeError::Invalid("property count mismatch"));
    }
    if let Some(len) = len {
      if self.varint()? as usize != len {
        return Err(DecodeError::Invalid("array length mismatch"));
      }
    }
    Ok(())
  }

  /// Reserve the next object id, in the order V8's deserializer assigns them.
  fn begin(&mut self) -> usize {
    self.objects.push(None);
    self.objects.len() - 1
  }

  fn finish(&mut self, id: usize, v: Value) -> Value {
    self.objects[id] = Some(if self.keep { v.clone() } else { Value::Null });
    v
  }

  fn back_ref(&mut self) -> Result<Value> {
    let id = self.varint()? as usize;
    self.saw_ref = true;
    match self.objects.get(id) {
      Some(Some(v)) => Ok(v.clone()),
      Some(None) => Err(DecodeError::Invalid("cyclic reference")),
      None => Err(DecodeError::Invalid("unknown object reference")),
    }
  }

  fn object(&mut self) -> Result<Value> {
    let id = self.begin();
    let mut map = Map::new();
    let n = self.props(b'{', |k, v| {
      if let Some(v) = v {
        map.insert(k, v);
      }
    })?;
    self.check_counts(n, None)?;
    Ok(self.finish(id, Value::Object(map)))
  }

  fn dense_array(&mut self) -> Result<Value> {
    let len = self.varint()? as usize;
    // Every element takes at least one byte, so this bounds the allocation.
    if len > self.buf.len() - self.pos {
      return Err(DecodeError::Truncated);
    }
    let id = self.begin();
    let mut items = Vec::with_capacity(len);
    for _ in 0..len {
      if self.peek_tag()? == b'-' {
        self.pos += 1;
        items.push(Value::Null);
      } else {
        items.push(self.value()?.unwrap_or(Value::Null));
      }
    }
    let n = self.props(b'$', |k, v| set_index(&mut items, &k, v))?;
    self.check_counts(n, Some(len))?;
    Ok(self.finish(id, Value::Array(items)))
  }

  fn sparse_array(&mut self) -> Result<Value> {
    let len = self.varint()? as usize;
    if len > MAX_SPARSE_LEN {
      return Err(DecodeError::Invalid("sparse array too long"));
    }
    let id = self.begin();
    let mut items = vec![Value::Null; len];
    let n = self.props(b'@', |k, v| set_index(&mut items, &k, v))?;
    self.check_counts(n, Some(len))?;
    Ok(self.finish(id, Value::Array(items)))
  }

  fn leading_props(&mut self, out: &mut Vec<(String, Value)>) -> Result<()> {
    if self.tag()? != b'o' {
      return Ok(());
    }
    self.begin();
    while self.peek_tag()? != b'{' {
      let k = self.key()?;
      if let Some(v) = self.value()? {
        out.push((k, v));
      }
    }
    Ok(())
  }
}

/// Array index properties fill their slot; other properties vanish, as in JSON.
fn set_index(items: &mut [Value], key: &str, v: Option<Value>) {
  let index = key.parse::<usize>().ok().filter(|i| i.to_string() == key);
  if let Some(slot) = index.and_then(|i| items.get_mut(i)) {
    *slot = v.unwrap_or(Value::Null);
  }
}

fn number(f: f64) -> Value {
  // 2^63 is exact as f64, so this is precisely the i64-representable range.
  const LIMIT: f64 = 9_223_372_036_854_775_808.0;
  if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
    Value::from(f as i64)
  } else {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
  }
}

/// JS `String(number)`: Rust's shortest round-trip digits, with JS's choice
/// of when to switch to exponent form.
fn js_number_string(f: f64) -> String {
  if f.is_nan() {
    "NaN".into()
  } else if f.is_infinite() {
    if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
  } else if f == 0.0 {
    "0".into() // including -0
  } else if (1e-6..1e21).contains(&f.abs()) {
    f.to_string()
  } else {
    let s = format!("{f:e}");
    match s.split_once('e') {
      Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
      _ => s,
    }
  }
}

fn write_varint(out: &mut Vec<u8>, mut v: u32) {
  while v >= 0x80 {
    out.push(v as u8 | 0x80);
    v >>= 7;
  }
  out.push(v as u8);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
  if s.chars().all(|c| c <= '\u{FF}') {
    out.push(b'"');
    write_varint(out, s.chars().count() as u32);
    out.extend(s.chars().map(|c| c as u8));
  } else {
    let units: Vec<u16> = s.encode_utf16().collect();
    let byte_len = units.len() as u32 * 2;
    let mut len_bytes = Vec::new();
    write_varint(&mut len_bytes, byte_len);
    // V8 keeps two-byte string data at even offsets; mirror it exactly.
    if (out.len() + 1 + len_bytes.len()) % 2 == 1 {
      out.push(0);
    }
    out.push(b'c');
    out.extend(len_bytes);
    out.extend(units.iter().flat_map(|u| u.to_le_bytes()));
  }
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
  match v {
    Value::Null => out.push(b'0'),
    Value::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
    Value::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
      Some(i) => {
        out.push(b'I');
        write_varint(out, ((i as u32) << 1) ^ ((i >> 31) as u32));
      }
      None => {
        out.push(b'N');
        out.extend(n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
      }
    },
    Value::String(s) => write_string(out, s),
    Value::Array(items) => {
      out.push(b'A');
      write_varint(out, items.len() as u32);
      items.iter().for_each(|item| write_value(out, item));
      out.push(b'$');
      write_varint(out, 0);
      write_varint(out, items.len() as u32);
    }
    Value::Object(map) => {
      out.push(b'o');
      for (k, v) in map {
        write_string(out, k);
        write_value(out, v);
      }
      out.push(b'{');
      write_varint(out, map.len() as u32);
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
      .step_by(2)
      .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
      .collect()
  }

  fn to_hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
  }

  // Golden payloads from `require('v8').serialize(...)` on Node v20.20.2.

  // {cmd:'NODE_CLUSTER', act:'queryServer', seq:3, port:0, address:null, fd:undefined,
  //  neg:-98, big:2**40, f:1.5, s:'é', u:'日本', arr:[1,'a',null], nested:{a:true}}
  const CLUSTER: &str =
    "ff0f6f2203636d64220c4e4f44455f434c55535445522203616374220b71756572795365727665722203736571490622\
        04706f7274490022076164647265737330220266645f22036e656749c30122036269674e00000000000070422201664e0000000000\
        00f83f2201732201e9220175006304e5652c672203617272410349022201613024000322066e65737465646f220161547b017b0d";

  #[test]
  fn golden_cluster_message() {
    let v = decode(&hex(CLUSTER)).unwrap();
    assert_eq!(
      v,
      json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "seq": 3, "port": 0, "address": null,
                   "neg": -98, "big": 1099511627776u64, "f": 1.5, "s": "é", "u": "日本",
                   "arr": [1, "a", null], "nested": {"a": true}})
    );
    assert!(v["big"].is_i64() && v["f"].is_f64());
  }

  #[test]
  fn golden_sparse_arrays_and_holes() {
    // const sp = []; sp[1] = 'x'; sp[5] = 7; sp.foo = 1; ({sp})
    let v = decode(&hex("ff0f6f2202737061064902220178490a490e2203666f6f49024003067b01")).unwrap();
    assert_eq!(v, json!({"sp": [null, "x", null, null, null, 7]}));
    // const a = new Array(1000); a[2] = true
    let v = decode(&hex("ff0f61e8074904544001e807")).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1000);
    assert_eq!(
      (v[2].clone(), v[0].clone(), v[999].clone()),
      (json!(true), json!(null), json!(null))
    );
    // [1,,3] is written sparse by V8
    assert_eq!(
      decode(&hex("ff0f61034900490249044906400203")).unwrap(),
      json!([1, null, 3])
    );
    // Object.assign([1,2], {p:'q'}): extra props dropped
    assert_eq!(
      decode(&hex("ff0f410249024904220170220171240102")).unwrap(),
      json!([1, 2])
    );
    // Hand-made dense array with a hole tag; Node reads it as [1, <empty>, 3]
    assert_eq!(decode(&hex("ff0f410349022d4906240003")).unwrap(), json!([1, null, 3]));
  }

  #[test]
  fn golden_back_references() {
    // const o = {k:1}; ({a:o, b:o, c:[o]})
    let v = decode(&hex("ff0f6f2201616f22016b49027b012201625e0122016341015e012400017b03")).unwrap();
    assert_eq!(v, json!({"a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}]}));
    // const o = {}; o.self = o
    let err = decode(&hex("ff0f6f220473656c665e007b01")).unwrap_err();
    assert_eq!(err, DecodeError::Invalid("cyclic reference"));
  }

  #[test]
  fn golden_keys_strings_numbers_dates() {
    // {1:'a', 2:'b', x:'c', '-1':'d'}
    let v = decode(&hex("ff0f6f4902220161490422016222017822016322022d312201647b04")).unwrap();
    assert_eq!(v, json!({"1": "a", "2": "b", "x": "c", "-1": "d"}));
    // ['a', '日本', 'é', 'x😀'] (note the 0x00 padding before each 'c')
    let v = decode(&hex("ff0f4104220161006304e5652c672201e900630678003dd800de240004")).unwrap();
    assert_eq!(v, json!(["a", "日本", "é", "x😀"]));
    // {d: new Date(0), e: [new Date(-1.5)]}
    let v = decode(&hex(
      "ff0f6f220164440000000000000000220165410144000000000000f0bf2400017b02",
    ))
    .unwrap();
    assert_eq!(v, json!({"d": 0, "e": [-1]}));
    // [{}, [], '']
    assert_eq!(
      decode(&hex("ff0f41036f7b0041002400002200240003")).unwrap(),
      json!([{}, [], ""])
    );
  }

  #[test]
  fn golden_numbers() {
    // [new Date(1.7e12), -0, NaN, Infinity, 2**31, -(2**31), 2**32-1, 0.1, 1e21, -(2**53), undefined, false, true]
    let v = decode(&hex(
      "ff0f410d4400008056febc78424e00000000000000804e000000000000f87f4e000000000000f07f4e000000000000e04149ff\
             ffffff0f4e0000e0ffffffef414e9a9999999999b93f4e50efe2d6e41a4b444e00000000000040c35f465424000d",
    ))
    .unwrap();
    let expected = json!([
      1700000000000i64,
      0,
      null,
      null,
      2147483648i64,
      -2147483648i64,
      4294967295u32,
      0.1,
      1e21,
      -9007199254740992i64,
      null,
      false,
      true
    ]);
    assert_eq!(v, expected);
    assert!(v[0].is_i64() && v[1].is_i64() && v[8].is_f64());
    assert_eq!(js_number_string(1e21), "1e+21");
    assert_eq!(js_number_string(1.5e-7), "1.5e-7");
    assert_eq!(js_number_string(1e-6), "0.000001");
    assert_eq!(js_number_string(-1.23e-18), "-1.23e-18");
    assert_eq!(js_number_string(4294967294.0), "4294967294");
    assert_eq!(js_number_string(0.1), "0.1");
  }

  #[test]
  fn unsupported_values() {
    assert_eq!(
      decode(&hex("ff0f6f2201615a1001000000000000007b01")),
      Err(DecodeError::Unsupported(b'Z'))
    );
    assert_eq!(
      decode(&hex("ff0f6f220161490222016d3b3a007b02")),
      Err(DecodeError::Unsupported(b';'))
    );
  }

  // {cmd:'NODE_HANDLE', type:'net.Native', msg:{b:Buffer.from('hi')}, after:1}
  const HANDLE: &str = "ff0f6f2203636d64220b4e4f44455f48414e444c45220474797065220a6e65742e4e617469766522036d73676f\
        2201625c0a0268697b012205616674657249027b04";

  #[test]
  fn leading_props_stop_at_buffer() {
    assert_eq!(decode(&hex(HANDLE)), Err(DecodeError::Unsupported(b'\\')));
    let props = decode_leading_props(&hex(HANDLE));
    assert_eq!(
      props,
      vec![
        ("cmd".to_string(), json!("NODE_HANDLE")),
        ("type".to_string(), json!("net.Native"))
      ]
    );
    // A fully decodable object yields all props in wire order.
    let props = decode_leading_props(&hex("ff0f6f2201616f22016b49027b012201625e0122016341015e012400017b03"));
    let keys: Vec<_> = props.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(props[2].1, json!([{"k": 1}]));
    assert!(decode_leading_props(&hex("ff0f4100240000")).is_empty());
    assert!(decode_leading_props(b"junk").is_empty());
  }

  #[test]
  fn headers() {
    let mut p = hex(CLUSTER);
    p[1] = 13;
    assert!(decode(&p).is_ok());
    p[1] = 12;
    assert_eq!(decode(&p), Err(DecodeError::BadHeader));
    assert_eq!(decode(&hex("0f30")), Err(DecodeError::BadHeader));
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    // Padding before the top-level tag is skipped.
    assert_eq!(decode(&hex("ff0f00004906")), Ok(json!(3)));
  }

  #[test]
  fn malformed_input_never_panics() {
    for golden in [CLUSTER, HANDLE] {
      let p = hex(golden);
      for end in 0..p.len() - 1 {
        assert!(decode(&p[..end]).is_err(), "prefix {end} decoded");
        decode_leading_props(&p[..end]);
      }
      for i in 2..p.len() {
        for flip in [0x01, 0x80, 0xff] {
          let mut q = p.clone();
          q[i] ^= flip;
          let _ = decode(&q);
          decode_leading_props(&q);
        }
      }
    }
    let deep = [&[0xff, 0x0f][..], &[b'A', 1].repeat(2000)].concat();
    assert_eq!(decode(&deep), Err(DecodeError::Invalid("nesting too deep")));
  }

  // Each pinned encoding below was checked to be byte-identical to
  // `v8.serialize(<same value>)` on Node v20.20.2, and
  // `JSON.stringify(v8.deserialize(...))` gives back the value.
  #[test]
  fn golden_encodings() {
    let v = json!({"cmd": "NODE_CLUSTER", "seq": 3, "neg": -98, "big": 1099511627776u64, "f": 1.5,
                       "s": "é", "u": "日本", "arr": [1, "a", null, true, false], "nested": {}});
    assert_eq!(
      to_hex(&encode(&v)),
      "ff0f6f22036172724105490222016130544624000522036269674e00000000000070422203636d64220c4e4f44455f434c55535\
             445522201664e000000000000f83f22036e656749c30122066e65737465646f7b002201732201e9220373657149062201750063\
             04e5652c677b09"
    );
    let v = json!(["日本", "a", "x日", {"日": "ß"}, -1, 2147483647, -2147483648, 2147483648u32, 0.1, ""]);
    assert_eq!(
      to_hex(&encode(&v)),
      "ff0f410a6304e5652c672201610063047800e5656f006302e5652201df7b01490149feffffff0f49ffffffff0f4e000000000000\
             e0414e9a9999999999b93f220024000a"
    );
    assert_eq!(
      to_hex(&encode(&json!({"a": [[{"b": []}]]}))),
      "ff0f6f220161410141016f22016241002400007b012400012400017b01"
    );
    // Not byte-identical to v8.serialize (V8 writes index keys like "0" as numbers and
    // orders them first), but Node deserializes it to the same value.
    let v = json!({"workerId": 7, "args": ["--x", {"deep": {"er": [1.5, "z"]}}], "0": "zero", "12": 1,
                       "big": u64::MAX, "e": "😀 mixed ü 日本"});
    assert_eq!(
      to_hex(&encode(&v)),
      "ff0f6f22013022047a65726f220231324902220461726773410222032d2d786f2204646565706f2202657241024e00000000\
             0000f83f22017a2400027b017b0124000222036269674e000000000000f043220165631a3dd800de20006d00690078006500\
             64002000fc002000e5652c672208776f726b65724964490e7b06"
    );
  }

  #[test]
  fn round_trips() {
    let values = [
      json!(null),
      json!(0),
      json!(-1),
      json!(u64::MAX),
      json!(i64::MIN),
      json!(-0.25),
      json!(""),
      json!("ÿ"),
      json!("Ā"),
      json!("😀 mixed ü 日本"),
      json!([]),
      json!({}),
      json!([[[]], {"": null}, [true, false]]),
      json!({"workerId": 7, "args": ["--x", {"deep": {"er": [1.5, "z"]}}], "0": "zero"}),
    ];
    for v in values {
      let bytes = encode(&v);
      let back = decode(&bytes).unwrap();
      match (v.as_f64(), v.is_u64() || v.is_i64()) {
        (Some(f), true) if f.abs() >= 9.2e18 => assert_eq!(back.as_f64(), Some(f)),
        _ => assert_eq!(back, v),
      }
      if v.is_object() {
        let props = decode_leading_props(&bytes);
        assert_eq!(Value::Object(props.into_iter().collect()), v);
      }
    }
  }
}
