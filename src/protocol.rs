//! Node's cluster protocol, as the primary sees it.
//!
//! Every message on a worker channel is either a user message (delivered to
//! `'message'` listeners) or internal (`cmd` starting with `NODE_`). Internal
//! ones we act on:
//! - `NODE_CLUSTER` — the cluster acts (`online`, `queryServer`, `listening`,
//!   `close`, `exitedAfterDisconnect`, and `{ack, accepted}` replies to
//!   `newconn`), each with a `seq`; replies carry `ack: <seq>`.
//! - `NODE_HANDLE` — `{cmd, type, msg}` sent with an fd in `SCM_RIGHTS`; the
//!   receiver answers `NODE_HANDLE_ACK` (or `_NACK` when the fd got lost).
//! - `NODE_RCLUSTER` — rcluster's own worker-to-primary messages (heartbeats).
//! - `NODE_SOCKET_*` — Node's bookkeeping for sockets a worker sent away
//!   (`server.close()` in the worker asks the receiver about them); JS answers.
//!
//! This module classifies frames and builds replies; what to do about them is
//! `primary`'s job.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use serde_json::{json, Map, Value};

use crate::framing::{self, Serialization};
use crate::v8;

pub type Fields = Map<String, Value>;

/// A decoded frame from a worker.
pub enum Inbound {
  Cluster(Fields),
  /// A worker's answer to `newconn` (the per-connection hot path, parsed
  /// without building a map).
  NewconnReply {
    ack: u64,
    accepted: bool,
  },
  HandleAck,
  HandleNack,
  /// A user message that came with an fd (or should have: `fd` is `None` when
  /// the fd was lost, and the sender gets a NACK). `envelope` is the whole
  /// frame; JS unwraps `.msg` with the full deserializer.
  Handle {
    envelope: Vec<u8>,
    handle_type: String,
    fd: Option<OwnedFd>,
  },
  Rcluster(Fields),
  /// `NODE_SOCKET_NOTIFY_CLOSE` / `NODE_SOCKET_GET_COUNT`, for JS.
  SocketList(Fields),
  /// Internal messages we do not act on.
  OtherInternal,
  User(Vec<u8>),
  /// Not a valid message in this serialization.
  Garbage(String),
}

fn internal_cmd(v: &Value) -> Option<&str> {
  v.get("cmd")?.as_str().filter(|c| c.starts_with("NODE_"))
}

fn classify_fields(cmd: &str, mut fields: Fields, frame: Vec<u8>, fds: &mut VecDeque<OwnedFd>) -> Inbound {
  match cmd {
    "NODE_CLUSTER" => Inbound::Cluster(fields),
    "NODE_HANDLE_ACK" => Inbound::HandleAck,
    "NODE_HANDLE_NACK" => Inbound::HandleNack,
    "NODE_HANDLE" => {
      let handle_type = match fields.remove("type") {
        Some(Value::String(s)) => s,
        _ => String::new(),
      };
      Inbound::Handle {
        envelope: frame,
        handle_type,
        fd: fds.pop_front(),
      }
    }
    "NODE_RCLUSTER" => Inbound::Rcluster(fields),
    "NODE_SOCKET_NOTIFY_CLOSE" | "NODE_SOCKET_GET_COUNT" => {
      fields.insert("cmd".into(), Value::String(cmd.to_owned()));
      Inbound::SocketList(fields)
    }
    _ => Inbound::OtherInternal,
  }
}

/// Decodes one frame. `fds` holds descriptors received on the channel and not
/// yet claimed: each `NODE_HANDLE` takes the oldest (both are FIFO).
pub fn classify(mode: Serialization, frame: Vec<u8>, fds: &mut VecDeque<OwnedFd>) -> Inbound {
  match mode {
    Serialization::Json => {
      if frame == br#"{"cmd":"NODE_HANDLE_ACK"}"# {
        return Inbound::HandleAck;
      }
      if let Some((ack, accepted)) = parse_newconn_reply(&frame) {
        return Inbound::NewconnReply { ack, accepted };
      }
      // Internal messages always contain the literal `NODE_` (JSON.stringify
      // never escapes letters). Other frames go to JS unparsed: its
      // JSON.parse judges them (and reports garbage), as its deserializer
      // does for advanced frames.
      if is_user(Serialization::Json, &frame) {
        return Inbound::User(frame);
      }
      match serde_json::from_slice::<Value>(&frame) {
        Ok(v) => match (internal_cmd(&v).map(str::to_owned), v) {
          (Some(cmd), Value::Object(m)) => classify_fields(&cmd, m, frame, fds),
          _ => Inbound::User(frame),
        },
        Err(e) => Inbound::Garbage(format!("invalid JSON on the IPC channel: {e}")),
      }
    }
    // An internal message's `cmd` starts with `NODE_`, which V8 writes as
    // one-byte or two-byte (UTF-16LE) text: without it, a user message.
    Serialization::Advanced if is_user(Serialization::Advanced, &frame) => Inbound::User(frame),
    Serialization::Advanced => match v8::decode(&frame) {
      Ok(v) => match (internal_cmd(&v).map(str::to_owned), v) {
        (Some(cmd), Value::Object(m)) => classify_fields(&cmd, m, frame, fds),
        _ => Inbound::User(frame),
      },
      Err(_) => {
        // User values (Buffers, Maps, …) are beyond our decoder; the envelope's
        // leading `cmd` and `type` are not.
        let props = v8::decode_leading_props(&frame);
        let cmd = props.iter().find(|(k, _)| k == "cmd").and_then(|(_, v)| v.as_str());
        match cmd {
          Some(c) if c.starts_with("NODE_") => {
            let mut fields = Fields::new();
            for (k, v) in props.iter().cloned() {
              fields.insert(k, v);
            }
            let c = c.to_owned();
            classify_fields(&c, fields, frame, fds)
          }
          // Not decodable as far as `cmd`: let JS's real deserializer judge.
          _ => Inbound::User(frame),
        }
      }
    },
  }
}

/// `{"cmd":"NODE_CLUSTER","ack":N,"accepted":B,"seq":M}`, exactly as a
/// Node worker writes it; anything else takes the general path.
fn parse_newconn_reply(frame: &[u8]) -> Option<(u64, bool)> {
  let (ack, rest) = take_u64(frame.strip_prefix(br#"{"cmd":"NODE_CLUSTER","ack":"#)?)?;
  let rest = rest.strip_prefix(br#","accepted":"#)?;
  let (accepted, rest) = match rest.strip_prefix(b"true") {
    Some(r) => (true, r),
    None => (false, rest.strip_prefix(b"false")?),
  };
  let (_seq, rest) = take_u64(rest.strip_prefix(br#","seq":"#)?)?;
  (rest == b"}").then_some((ack, accepted))
}

/// A leading decimal number and what follows it.
fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
  let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
  let n = std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()?;
  Some((n, &bytes[digits..]))
}

/// The `newconn` hand-off frame. In JSON mode it is written byte by byte (it
/// is sent once per connection under SCHED_RR and when draining): one
/// allocation, no JSON value built.
pub fn newconn_frame(mode: Serialization, seq: u64, key: &str) -> Vec<u8> {
  match mode {
    Serialization::Json => {
      const HEAD: &[u8] =
        br#"{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","act":"newconn","key":"#;
      let mut out = Vec::with_capacity(HEAD.len() + key.len() + 40);
      out.extend_from_slice(HEAD);
      if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.push(b'"');
      } else {
        out.extend_from_slice(Value::String(key.to_owned()).to_string().as_bytes());
      }
      out.extend_from_slice(br#","seq":"#);
      push_decimal(&mut out, seq);
      out.extend_from_slice(b"}}\n");
      out
    }
    Serialization::Advanced => encode(
      mode,
      &handle_envelope(
        "net.Native",
        cluster_message(seq, json!({ "act": "newconn", "key": key })),
      ),
    ),
  }
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
  let mut digits = [0u8; 20];
  let mut i = digits.len();
  loop {
    i -= 1;
    digits[i] = b'0' + (n % 10) as u8;
    n /= 10;
    if n == 0 {
      break;
    }
  }
  out.extend_from_slice(&digits[i..]);
}

/// Whether a frame's payload is certainly a user message, as `classify`
/// would say, judged without copying or parsing it.
pub fn is_user(mode: Serialization, payload: &[u8]) -> bool {
  match mode {
    Serialization::Json => !memchr_node(payload),
    Serialization::Advanced => !memchr_node(payload) && !memchr_node_utf16(payload),
  }
}

fn memchr_node(frame: &[u8]) -> bool {
  memchr::memmem::find(frame, b"NODE_").is_some()
}

fn memchr_node_utf16(frame: &[u8]) -> bool {
  memchr::memmem::find(frame, b"N\0O\0D\0E\0_\0").is_some()
}

/// Encodes an internal message as a complete frame.
pub fn encode(mode: Serialization, msg: &Value) -> Vec<u8> {
  match mode {
    Serialization::Json => framing::frame(mode, msg.to_string().as_bytes()),
    Serialization::Advanced => framing::frame(mode, &v8::encode(msg)),
  }
}

/// `{cmd:'NODE_CLUSTER', ...fields, seq}`.
pub fn cluster_message(seq: u64, fields: Value) -> Value {
  let mut m = match fields {
    Value::Object(m) => m,
    _ => Fields::new(),
  };
  m.insert("cmd".into(), json!("NODE_CLUSTER"));
  m.insert("seq".into(), json!(seq));
  Value::Object(m)
}

/// Wraps a message that travels with an fd.
pub fn handle_envelope(handle_type: &str, msg: Value) -> Value {
  json!({ "cmd": "NODE_HANDLE", "type": handle_type, "msg": msg })
}

pub fn handle_ack(ok: bool) -> Value {
  json!({ "cmd": if ok { "NODE_HANDLE_ACK" } else { "NODE_HANDLE_NACK" } })
}

/// The `act` of a cluster message, if any.
pub fn act(fields: &Fields) -> Option<&str> {
  fields.get("act")?.as_str()
}

pub fn seq(fields: &Fields) -> Option<u64> {
  fields.get("seq")?.as_u64()
}

/// Node keys a server handle by where it listens plus the worker-local index
/// of that server, so two servers on one port in a worker stay distinct.
pub fn server_key(fields: &Fields) -> String {
  let part = |k: &str| match fields.get(k) {
    None => "undefined".to_string(),
    Some(Value::Null) => "null".to_string(),
    Some(Value::String(s)) => s.clone(),
    Some(v) => v.to_string(),
  };
  format!(
    "{}:{}:{}:{}:{}",
    part("address"),
    part("port"),
    part("addressType"),
    part("fd"),
    part("index")
  )
}

/// The part of a `listening` act the primary's `'listening'` event reports.
pub fn listening_info(fields: &Fields) -> Value {
  let mut info = Fields::new();
  for k in ["addressType", "address", "port", "fd"] {
    if let Some(v) = fields.get(k) {
      info.insert(k.into(), v.clone());
    }
  }
  Value::Object(info)
}

#[cfg(test)]
mod tests {
  use super::*;

  fn fds() -> VecDeque<OwnedFd> {
    VecDeque::new()
  }

  #[test]
  fn json_classification() {
    let m = classify(
      Serialization::Json,
      br#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#.to_vec(),
      &mut fds(),
    );
    assert!(matches!(m, Inbound::Cluster(ref f) if act(f) == Some("online") && seq(f) == Some(0)));
    assert!(matches!(
      classify(
        Serialization::Json,
        br#"{"cmd":"NODE_HANDLE_ACK"}"#.to_vec(),
        &mut fds()
      ),
      Inbound::HandleAck
    ));
    assert!(matches!(
      classify(Serialization::Json, br#"{"hello":"NODE_ish"}"#.to_vec(), &mut fds()),
      Inbound::User(_)
    ));
    assert!(matches!(
      classify(Serialization::Json, b"[1,2]".to_vec(), &mut fds()),
      Inbound::User(_)
    ));
    assert!(matches!(
      classify(Serialization::Json, b"{oops".to_vec(), &mut fds()),
      Inbound::User(_)
    ));
    assert!(matches!(
      classify(Serialization::Json, b"{\"cmd\":\"NODE_X\"".to_vec(), &mut fds()),
      Inbound::Garbage(_)
    ));
  }

  #[test]
  fn hot_path_messages() {
    let m = classify(
      Serialization::Json,
      br#"{"cmd":"NODE_CLUSTER","ack":12,"accepted":false,"seq":3}"#.to_vec(),
      &mut fds(),
    );
    assert!(matches!(
      m,
      Inbound::NewconnReply {
        ack: 12,
        accepted: false
      }
    ));
    assert!(matches!(
      classify(
        Serialization::Json,
        br#"{"cmd":"NODE_CLUSTER","ack":12,"accepted":true,"seq":3,"x":1}"#.to_vec(),
        &mut fds()
      ),
      Inbound::Cluster(_)
    ));
    // The direct frame is the same message the general encoder writes.
    let fast = newconn_frame(Serialization::Json, 9, "null:80:4:undefined:0");
    let general = encode(
      Serialization::Json,
      &handle_envelope(
        "net.Native",
        cluster_message(9, json!({"act": "newconn", "key": "null:80:4:undefined:0"})),
      ),
    );
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(&b[..b.len() - 1]).unwrap();
    assert_eq!(parse(&fast), parse(&general));
    assert_eq!(fast.last(), Some(&b'\n'));
  }

  #[test]
  fn newconn_bytes_are_nodes() {
    // Captured with strace from a node:cluster RR primary (Node 20) and the
    // worker's answers to it.
    let node = b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"cmd\":\"NODE_CLUSTER\",\"act\":\"newconn\",\"key\":\"127.0.0.1:18942:4:undefined:0\",\"seq\":2}}\n";
    assert_eq!(
      newconn_frame(Serialization::Json, 2, "127.0.0.1:18942:4:undefined:0"),
      node.to_vec()
    );
    let reply = br#"{"cmd":"NODE_CLUSTER","ack":2,"accepted":true,"seq":3}"#;
    assert_eq!(parse_newconn_reply(reply), Some((2, true)));
    let big = newconn_frame(Serialization::Json, u64::MAX, "null:0:4:undefined:0");
    assert!(big.ends_with(b",\"seq\":18446744073709551615}}\n"));
    // Keys with characters JSON escapes (a pipe path) take the general encoder.
    let odd = "/tmp/a\"b\\c\n:undefined:undefined:undefined:0";
    let frame = newconn_frame(Serialization::Json, 0, odd);
    let v: Value = serde_json::from_slice(&frame[..frame.len() - 1]).unwrap();
    assert_eq!(v["msg"]["key"], odd);
  }

  #[test]
  fn handle_claims_the_oldest_fd() {
    let mut q = VecDeque::new();
    q.push_back(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    let m = classify(
      Serialization::Json,
      br#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"x":1}}"#.to_vec(),
      &mut q,
    );
    match m {
      Inbound::Handle { handle_type, fd, .. } => {
        assert_eq!(handle_type, "net.Socket");
        assert!(fd.is_some());
      }
      _ => panic!("not a handle"),
    }
    assert!(q.is_empty());
    let m = classify(
      Serialization::Json,
      br#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{}}"#.to_vec(),
      &mut q,
    );
    assert!(matches!(m, Inbound::Handle { fd: None, .. }));
  }

  #[test]
  fn advanced_round_trip_of_internal_messages() {
    let msg = cluster_message(7, json!({"act": "newconn", "key": "null:0:4:undefined:0"}));
    let frame = encode(Serialization::Advanced, &msg);
    let payload = frame[4..].to_vec();
    match classify(Serialization::Advanced, payload, &mut fds()) {
      Inbound::Cluster(f) => {
        assert_eq!(act(&f), Some("newconn"));
        assert_eq!(seq(&f), Some(7));
      }
      _ => panic!("not a cluster message"),
    }
  }

  #[test]
  fn keys_match_nodes_spelling() {
    let f: Fields = serde_json::from_str(r#"{"address":null,"port":8000,"addressType":4,"index":0}"#).unwrap();
    assert_eq!(server_key(&f), "null:8000:4:undefined:0");
  }
}
