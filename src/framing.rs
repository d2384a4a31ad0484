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
  /// Initialized bytes (kept between reads, so receiving into it costs no
  /// zeroing); the data is `start..end`.
  buf: Vec<u8>,
  /// Where the next frame starts in `buf`.
  start: usize,
  end: usize,
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
      end: 0,
      scanned: 0,
    }
  }

  pub fn push(&mut self, data: &[u8]) {
    self.room(data.len()).copy_from_slice(data);
    self.filled(data.len());
  }

  /// `len` bytes after the data, to receive into (`filled` then counts what
  /// arrived): the socket's bytes land here with no copy in between.
  pub fn room(&mut self, len: usize) -> &mut [u8] {
    if self.start == self.end {
      self.start = 0;
      self.end = 0;
      if self.buf.len() > DECODER_KEPT_CAPACITY {
        self.buf = Vec::new();
      }
    } else if self.start > 64 * 1024 && self.start * 2 > self.end {
      self.buf.copy_within(self.start..self.end, 0);
      self.end -= self.start;
      self.start = 0;
    }
    if self.buf.len() < self.end + len {
      self.buf.resize(self.end + len, 0);
    }
    &mut self.buf[self.end..self.end + len]
  }

  pub fn filled(&mut self, n: usize) {
    self.end += n;
  }

  /// The next complete frame: its payload's offset and length from `start`,
  /// and its length on the wire.
  fn locate(&mut self) -> Option<(usize, usize, usize)> {
    let pending = &self.buf[self.start..self.end];
    match self.mode {
      Serialization::Json => match memchr::memchr(b'\n', &pending[self.scanned..]) {
        Some(i) => {
          let len = self.scanned + i;
          self.scanned = 0;
          Some((0, len, len + 1))
        }
        None => {
          self.scanned = pending.len();
          None
        }
      },
      Serialization::Advanced => {
        let header: [u8; 4] = pending.get(..4)?.try_into().unwrap();
        let len = u32::from_be_bytes(header) as usize;
        (pending.len() >= 4 + len).then_some((4, len, 4 + len))
      }
    }
  }

  pub fn next_frame(&mut self) -> Option<Vec<u8>> {
    let (offset, len, skip) = self.locate()?;
    Some(self.take(offset, len, skip))
  }

  /// If the next complete frame's payload passes `keep`, appends the frame as
  /// it was on the wire (payload and delimiter, or length and payload) to
  /// `out` and consumes it: a run of frames leaves in one buffer, with no
  /// allocation per frame. Otherwise leaves it for `next_frame`.
  pub fn take_wire_if(&mut self, out: &mut Vec<u8>, keep: impl FnOnce(&[u8]) -> bool) -> bool {
    let Some((offset, len, skip)) = self.locate() else {
      return false;
    };
    let begin = self.start + offset;
    if !keep(&self.buf[begin..begin + len]) {
      return false;
    }
    out.extend_from_slice(&self.buf[self.start..self.start + skip]);
    self.start += skip;
    true
  }

  /// Removes `skip` bytes at `start` and returns `len` of them from `offset`.
  fn take(&mut self, offset: usize, len: usize, skip: usize) -> Vec<u8> {
    let begin = self.start + offset;
    if len <= DECODER_KEPT_CAPACITY || len * 2 < self.end {
      self.start += skip;
      return self.buf[begin..begin + len].to_vec();
    }
    // A frame that is most of the buffer: hand the buffer itself over rather
    // than holding a second copy of a message that may be 100s of MB.
    let rest = self.buf[self.start + skip..self.end].to_vec();
    let mut frame = std::mem::replace(&mut self.buf, rest);
    self.end = self.buf.len();
    self.start = 0;
    frame.truncate(begin + len);
    frame.drain(..begin);
    frame
  }
}

/// Frames a payload for the wire.
pub fn frame(mode: Serialization, payload: &[u8]) -> Vec<u8> {
  let mut out = Vec::with_capacity(payload.len() + 4);
  frame_into(mode, payload, &mut out);
  out
}

/// Appends a payload to `out`, framed as on the wire.
pub fn frame_into(mode: Serialization, payload: &[u8], out: &mut Vec<u8>) {
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
}

/// The payloads of `wire`, complete frames one after another (as
/// `frame_into` appends them).
pub fn payloads(mode: Serialization, mut wire: &[u8]) -> impl Iterator<Item = &[u8]> {
  std::iter::from_fn(move || {
    let (payload, skip) = match mode {
      Serialization::Json => {
        let len = memchr::memchr(b'\n', wire)?;
        (&wire[..len], len + 1)
      }
      Serialization::Advanced => {
        let len = u32::from_be_bytes(wire.get(..4)?.try_into().unwrap()) as usize;
        (&wire[4..4 + len], 4 + len)
      }
    };
    wire = &wire[skip..];
    Some(payload)
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn payloads_reads_back_what_frame_into_appends() {
    for mode in [Serialization::Json, Serialization::Advanced] {
      let mut wire = Vec::new();
      for p in [&b"a"[..], b"", b"bcd"] {
        frame_into(mode, p, &mut wire);
      }
      let back: Vec<&[u8]> = payloads(mode, &wire).collect();
      assert_eq!(back, vec![&b"a"[..], b"", b"bcd"], "{mode:?}");
    }
  }

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

  #[test]
  fn wire_runs_keep_their_delimiters_and_leave_refused_frames() {
    for mode in [Serialization::Json, Serialization::Advanced] {
      let mut d = Decoder::new(mode);
      let mut wire = frame(mode, b"a");
      wire.extend(frame(mode, b"bc"));
      wire.extend(frame(mode, b"NODE_x"));
      wire.extend(frame(mode, b"d"));
      let (first, last) = wire.split_at(wire.len() - 2);
      d.push(first);
      let mut out = Vec::new();
      let user = |p: &[u8]| p != b"NODE_x";
      while d.take_wire_if(&mut out, user) {}
      let mut expected = frame(mode, b"a");
      expected.extend(frame(mode, b"bc"));
      assert_eq!(out, expected, "{mode:?}");
      assert_eq!(d.next_frame().unwrap(), b"NODE_x", "{mode:?}");
      assert!(!d.take_wire_if(&mut out, user), "{mode:?}: incomplete");
      d.room(64)[..2].copy_from_slice(last);
      d.filled(2);
      assert!(d.take_wire_if(&mut out, user), "{mode:?}");
      expected.extend(frame(mode, b"d"));
      assert_eq!(out, expected, "{mode:?}");
    }
  }
}
