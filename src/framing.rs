//! Node's two IPC framings: JSON lines and V8 ValueSerializer payloads behind
//! a 4-byte big-endian length. Pure byte handling, shared by `channel` (which
//! reads and writes sockets) and `protocol` (which builds frames).

/// A decoder keeps at most this much buffer capacity between messages, so one
/// huge message does not pin its memory for the life of the channel.
const DECODER_KEPT_CAPACITY: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serialization {
  /// `JSON.stringify(message) + "\n"`.
  Json,
  /// V8 ValueSerializer payload behind a 4-byte big-endian length.
  Advanced,
}

impl Serialization {
  pub fn parse(s: &str) -> Option<Self> {
    match s {
      "json" => Some(Self::Json),
      "advanced" => Some(Self::Advanced),
      _ => None,
    }
  }
  pub fn as_str(self) -> &'static str {
    match self {
      Self::Json => "json",
      Self::Advanced => "advanced",
    }
  }
}

/// Splits a byte stream into frames (the payload without its delimiter or
/// length prefix). There is no size limit, as in Node: a JSON line is as long
/// as the sender made it, an advanced frame as its 4-byte length says.
pub struct Decoder {
  mode: Serialization,
  buf: Vec<u8>,
  /// Where the next frame starts in `buf`.
  start: usize,
  /// JSON only: how far past `start` we already know there is no newline, so a
  /// long line arriving in many reads is scanned once, not once per read.
  scanned: usize,
}

impl Decoder {
  pub fn new(mode: Serialization) -> Self {
    Decoder {
      mode,
      buf: Vec::new(),
      start: 0,
      scanned: 0,
    }
  }

  pub fn push(&mut self, data: &[u8]) {
    if self.start == self.buf.len() {
      self.start = 0;
      if self.buf.capacity() > DECODER_KEPT_CAPACITY {
        self.buf = Vec::new();
      } else {
        self.buf.clear();
      }
    } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
      self.buf.drain(..self.start);
      self.start = 0;
    }
    self.buf.extend_from_slice(data);
  }

  pub fn next_frame(&mut self) -> Option<Vec<u8>> {
    let pending = &self.buf[self.start..];
    let (offset, len, skip) = match self.mode {
      Serialization::Json => match memchr::memchr(b'\n', &pending[self.scanned..]) {
        Some(i) => {
          let len = self.scanned + i;
          self.scanned = 0;
          (0, len, len + 1)
        }
        None => {
          self.scanned = pending.len();
          return None;
        }
      },
      Serialization::Advanced => {
        let header: [u8; 4] = pending.get(..4)?.try_into().unwrap();
        let len = u32::from_be_bytes(header) as usize;
        if pending.len() < 4 + len {
          return None;
        }
        (4, len, 4 + len)
      }
    };
    Some(self.take(offset, len, skip))
  }

  /// Removes `skip` bytes at `start` and returns `len` of them from `offset`.
  fn take(&mut self, offset: usize, len: usize, skip: usize) -> Vec<u8> {
    let begin = self.start + offset;
    if len <= DECODER_KEPT_CAPACITY || len * 2 < self.buf.len() {
      self.start += skip;
      return self.buf[begin..begin + len].to_vec();
    }
    // A frame that is most of the buffer: hand the buffer itself over rather
    // than holding a second copy of a message that may be 100s of MB.
    let rest = self.buf[self.start + skip..].to_vec();
    let mut frame = std::mem::replace(&mut self.buf, rest);
    self.start = 0;
    frame.truncate(begin + len);
    frame.drain(..begin);
    frame
  }
}

/// Frames a payload for the wire.
pub fn frame(mode: Serialization, payload: &[u8]) -> Vec<u8> {
  let mut out = Vec::with_capacity(payload.len() + 4);
  match mode {
    Serialization::Json => {
      out.extend_from_slice(payload);
      out.push(b'\n');
    }
    Serialization::Advanced => {
      out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
      out.extend_from_slice(payload);
    }
  }
  out
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn json_lines_split_across_pushes() {
    let mut d = Decoder::new(Serialization::Json);
    d.push(b"{\"a\":1}\n{\"b\"");
    assert_eq!(d.next_frame().unwrap(), b"{\"a\":1}");
    assert_eq!(d.next_frame(), None);
    d.push(b":2}\n\n");
    assert_eq!(d.next_frame().unwrap(), b"{\"b\":2}");
    assert_eq!(d.next_frame().unwrap(), b"");
    assert_eq!(d.next_frame(), None);
  }

  #[test]
  fn advanced_length_prefix() {
    let mut d = Decoder::new(Serialization::Advanced);
    let f = frame(Serialization::Advanced, b"hello");
    d.push(&f[..3]);
    assert_eq!(d.next_frame(), None);
    d.push(&f[3..]);
    d.push(&frame(Serialization::Advanced, b""));
    assert_eq!(d.next_frame().unwrap(), b"hello");
    assert_eq!(d.next_frame().unwrap(), b"");
    assert_eq!(d.next_frame(), None);
  }

  fn pushed_in_reads(d: &mut Decoder, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for chunk in bytes.chunks(64 * 1024) {
      d.push(chunk);
      frames.extend(std::iter::from_fn(|| d.next_frame()));
    }
    frames
  }

  #[test]
  fn large_frames_in_both_modes_have_no_size_limit() {
    let big: Vec<u8> = (0..(80u32 << 20) + 3).map(|i| b'a' + (i % 26) as u8).collect();
    for mode in [Serialization::Json, Serialization::Advanced] {
      let mut d = Decoder::new(mode);
      let mut wire = frame(mode, b"1");
      wire.extend(frame(mode, &big));
      wire.extend(frame(mode, b"2"));
      let frames = pushed_in_reads(&mut d, &wire);
      assert_eq!(frames.len(), 3, "{mode:?}");
      assert_eq!(frames[0], b"1");
      assert!(frames[1] == big, "{mode:?}: the large frame differs");
      assert_eq!(frames[2], b"2");
      // The buffer that held the large frame is not kept.
      d.push(b"");
      assert!(
        d.buf.capacity() <= DECODER_KEPT_CAPACITY,
        "{mode:?}: {}",
        d.buf.capacity()
      );
    }
  }
}
