//! A worker's outgoing frames: the writer task's queue plus a fast path that
//! lets `worker.send` write on the JS thread.
//!
//! Protocol. Every frame bound for the writer task is counted in `backlog`
//! and handed to the writer's channel in one critical section of `state`, so
//! the channel's order is the order frames were counted in. The writer
//! uncounts a frame (under the same lock) only once it is completely on the
//! wire, and marks a handle in flight until the peer's ACK. The JS thread
//! writes directly only while holding the lock with `backlog == 0` and no
//! handle in flight: then the writer is not in the middle of any frame and
//! none can be handed to it before the lock is released. A direct write that
//! is cut short (a full socket buffer) hands the rest of its frame to the
//! writer before releasing the lock, so nothing can come between its halves.
//! Frames with fds always take the writer (it keeps them for retransmission).
//! After `worker.disconnect()` JS sends go through the core again, behind the
//! core's own `disconnect` message (`direct` is off for good).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedSender;

use crate::channel::{send_with_fd, OutFrame, WriterCmd};

pub struct Outbox {
  sock: Arc<OwnedFd>,
  /// Bytes handed to the writer and not yet written (for back-pressure and
  /// `flush`).
  pub queued: Arc<AtomicUsize>,
  /// Bytes ever put on the socket, by anyone: with the bytes the peer has
  /// not read yet (SIOCOUTQ), what it has read (`load`'s sign of life).
  sent: AtomicU64,
  state: Mutex<State>,
}

struct State {
  writer: UnboundedSender<WriterCmd>,
  /// Frames counted for the writer and not yet completely written.
  backlog: usize,
  handle_in_flight: bool,
  direct: bool,
  /// The handle in flight when the core wrote it (not the writer), kept
  /// for a retransmission, with how often it was sent again.
  core_handle: Option<(OutFrame, u32)>,
  /// The writer's next frame is the rest of a handle frame the core began:
  /// once it is written, the handle is in flight.
  core_rest: bool,
}

/// What the core does about the peer's answer to the handle in flight.
pub enum Answer {
  /// The writer sent it: pass the ACK/NACK on.
  ToWriter,
  /// Settled here; nothing waits.
  Settled,
  /// Settled, but the writer holds frames behind it: tell it
  /// (`WriterCmd::Settled`).
  WakeWriter,
  /// NACKed: the writer sends it again, ahead of everything (`WriterCmd::Resend`).
  Resend(OutFrame, u32),
}

/// What `Outbox::send` did with a frame.
pub enum Sent {
  /// Written completely, now: no `Written` event will follow.
  Now,
  /// Queued behind others; this many bytes are queued in all.
  Queued(usize),
  /// Direct writes are off: route it through the core (already counted).
  ViaCore(OutFrame, usize),
  /// The writer has ended: the channel is closed.
  Closed,
}

impl Outbox {
  pub fn new(sock: Arc<OwnedFd>, writer: UnboundedSender<WriterCmd>) -> Self {
    Outbox {
      sock,
      queued: Arc::new(AtomicUsize::new(0)),
      sent: AtomicU64::new(0),
      state: Mutex::new(State {
        writer,
        backlog: 0,
        handle_in_flight: false,
        direct: true,
        core_handle: None,
        core_rest: false,
      }),
    }
  }

  /// Writes on the channel (with `fd`, if any), counting what left: every
  /// write path goes through here, so `sent` misses nothing.
  pub fn write(&self, bytes: &[u8], fd: Option<RawFd>) -> io::Result<usize> {
    let n = send_with_fd(self.sock.as_raw_fd(), bytes, fd)?;
    self.sent.fetch_add(n as u64, Ordering::Relaxed);
    Ok(n)
  }

  /// Bytes written on the socket so far.
  pub fn sent(&self) -> u64 {
    self.sent.load(Ordering::Relaxed)
  }

  /// Queues a frame behind everything counted so far; returns the bytes
  /// queued.
  pub fn push(&self, frame: OutFrame) -> Option<usize> {
    let st = self.state.lock().unwrap();
    self.count_and_hand_over(st, frame)
  }

  /// `None` when the writer has ended (the channel is closed): nothing is
  /// counted then, so `queued` and `flush` never wait for a frame no one
  /// will write.
  fn count_and_hand_over(&self, mut st: std::sync::MutexGuard<'_, State>, frame: OutFrame) -> Option<usize> {
    let len = frame.bytes.len();
    st.writer.send(WriterCmd::Frame(frame)).ok()?;
    st.backlog += 1;
    Some(self.queued.fetch_add(len, Ordering::Relaxed) + len)
  }

  /// A frame from JS: written at once when nothing is ahead of it (copied
  /// only if it has to wait).
  pub fn send(&self, bytes: &[u8], fd: Option<Arc<OwnedFd>>, token: Option<u32>) -> Sent {
    let frame = |bytes: &[u8], fd| OutFrame {
      bytes: bytes.to_vec(),
      fd,
      token,
    };
    let mut st = self.state.lock().unwrap();
    if !st.direct {
      st.backlog += 1;
      let total = self.queued.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
      return Sent::ViaCore(frame(bytes, fd), total);
    }
    if st.backlog > 0 || st.handle_in_flight || fd.is_some() {
      return self
        .count_and_hand_over(st, frame(bytes, fd))
        .map_or(Sent::Closed, Sent::Queued);
    }
    let mut off = 0;
    while off < bytes.len() {
      match self.write(&bytes[off..], None) {
        Ok(n) => off += n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        // A full buffer, or an error the writer will meet and report.
        Err(_) => break,
      }
    }
    if off == bytes.len() {
      return Sent::Now;
    }
    self
      .count_and_hand_over(st, frame(&bytes[off..], None))
      .map_or(Sent::Closed, Sent::Queued)
  }

  /// A frame with a handle from the core: written at once when nothing is
  /// queued or in flight, else queued for the writer. `false` when the
  /// writer has ended.
  pub fn send_handle(&self, frame: OutFrame) -> bool {
    let mut st = self.state.lock().unwrap();
    if st.backlog > 0 || st.handle_in_flight {
      return self.count_and_hand_over(st, frame).is_some();
    }
    let fd = frame.fd.as_ref().map(|f| f.as_raw_fd());
    let n = loop {
      match self.write(&frame.bytes, fd) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        other => break other.unwrap_or(0),
      }
    };
    if n == 0 {
      // A full buffer, or an error the writer will meet and report.
      return self.count_and_hand_over(st, frame).is_some();
    }
    let rest = (n < frame.bytes.len()).then(|| OutFrame {
      bytes: frame.bytes[n..].to_vec(),
      fd: None,
      token: None,
    });
    st.core_handle = Some((frame, 0));
    match rest {
      // The fd left with the first bytes; the writer finishes the frame,
      // and nothing can be counted ahead of the rest.
      Some(rest) => {
        st.core_rest = true;
        self.count_and_hand_over(st, rest).is_some()
      }
      None => {
        st.handle_in_flight = true;
        true
      }
    }
  }

  /// The peer answered the handle in flight (`ok`: ACK).
  pub fn answered(&self, ok: bool) -> Answer {
    let mut st = self.state.lock().unwrap();
    let Some((frame, tries)) = st.core_handle.take() else {
      return Answer::ToWriter;
    };
    if !ok && tries < crate::channel::MAX_HANDLE_RETRANSMISSIONS {
      // Still in flight until the writer takes it back.
      return Answer::Resend(frame, tries + 1);
    }
    if st.backlog > 0 {
      return Answer::WakeWriter;
    }
    st.handle_in_flight = false;
    Answer::Settled
  }

  /// Whether a handle waits for its ACK (the writer's or the core's).
  pub fn handle_in_flight(&self) -> bool {
    self.state.lock().unwrap().handle_in_flight
  }

  /// A frame `send` counted and routed through the core. Returns it when the
  /// writer has ended, uncounted, so its sender can be told.
  pub fn forward(&self, frame: OutFrame) -> Result<(), OutFrame> {
    let sent = self.state.lock().unwrap().writer.send(WriterCmd::Frame(frame));
    sent.map_err(|e| {
      let WriterCmd::Frame(frame) = e.0 else { unreachable!() };
      self.done(frame.bytes.len(), false);
      frame
    })
  }

  /// From now on JS sends are ordered by the core.
  pub fn stop_direct(&self) {
    self.state.lock().unwrap().direct = false;
  }

  // The writer task's side.

  /// A frame of `len` bytes left the queue: written (`carried_fd`: a handle
  /// is now in flight) or failed.
  pub fn done(&self, len: usize, carried_fd: bool) {
    let mut st = self.state.lock().unwrap();
    st.backlog = st.backlog.saturating_sub(1);
    let rest_of_core_handle = std::mem::take(&mut st.core_rest);
    st.handle_in_flight |= carried_fd || rest_of_core_handle;
    self.queued.fetch_sub(len, Ordering::Relaxed);
  }

  /// The handle in flight was acknowledged, or given up on.
  pub fn handle_settled(&self) {
    self.state.lock().unwrap().handle_in_flight = false;
  }

  /// The handle in flight is sent again: it is queued once more.
  pub fn retransmit(&self, len: usize) {
    let mut st = self.state.lock().unwrap();
    st.backlog += 1;
    st.handle_in_flight = false;
    self.queued.fetch_add(len, Ordering::Relaxed);
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
  use tokio::sync::mpsc::unbounded_channel;

  fn frame(bytes: &[u8], token: Option<u32>) -> OutFrame {
    OutFrame {
      bytes: bytes.to_vec(),
      fd: None,
      token,
    }
  }

  /// An outbox on one end of a socketpair: the outbox, the worker's end and
  /// what the outbox hands to the writer task.
  fn outbox_pair() -> (Outbox, OwnedFd, tokio::sync::mpsc::UnboundedReceiver<WriterCmd>) {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, flags).unwrap();
    let (tx, rx) = unbounded_channel();
    (Outbox::new(Arc::new(ours), tx), theirs, rx)
  }

  fn read_all(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
      match nix::unistd::read(fd, &mut buf) {
        Ok(0) | Err(_) => return out,
        Ok(n) => out.extend_from_slice(&buf[..n]),
      }
    }
  }

  #[test]
  fn writes_directly_only_when_nothing_is_ahead() {
    let (outbox, theirs, mut rx) = outbox_pair();

    assert!(matches!(outbox.send(b"a\n", None, Some(1)), Sent::Now));
    assert_eq!(read_all(&theirs), b"a\n");

    // A frame the writer holds: the next send queues behind it.
    assert_eq!(outbox.push(frame(b"core\n", None)), Some(5));
    assert!(matches!(outbox.send(b"b\n", None, None), Sent::Queued(7)));
    assert!(read_all(&theirs).is_empty());
    outbox.done(5, false);
    outbox.done(2, false);
    assert!(matches!(outbox.send(b"c\n", None, None), Sent::Now));

    // A handle in flight holds everything back until it is settled.
    outbox.push(frame(b"h\n", None));
    outbox.done(2, true);
    assert!(matches!(outbox.send(b"d\n", None, None), Sent::Queued(_)));
    outbox.done(2, false);
    assert!(matches!(outbox.send(b"e\n", None, None), Sent::Queued(_)));
    outbox.done(2, false);
    outbox.handle_settled();
    assert!(matches!(outbox.send(b"f\n", None, None), Sent::Now));
    assert_eq!(read_all(&theirs), b"c\nf\n");

    // Cut short by a full buffer: the rest goes to the writer, token and all.
    let big = vec![b'x'; 8 << 20];
    match outbox.send(&big, None, Some(9)) {
      Sent::Queued(n) => assert!(n > 0 && n < big.len()),
      _ => panic!("an 8 MB frame fit a socket buffer"),
    }
    let mut sent = Vec::new();
    while let Ok(WriterCmd::Frame(f)) = rx.try_recv() {
      sent.push((f.bytes.len(), f.token));
    }
    let rest = sent.last().copied().unwrap();
    assert_eq!(rest.1, Some(9));
    assert_eq!(outbox.queued.load(Ordering::Relaxed), rest.0, "only the rest is queued");

    // After disconnect(), JS sends go through the core.
    outbox.stop_direct();
    let Sent::ViaCore(via_core, _) = outbox.send(b"g\n", None, Some(10)) else {
      panic!("a send after disconnect() went past the core");
    };

    // Once the writer has ended, nothing is counted that no one will write:
    // queued sends fail as on a closed channel, and a frame the core
    // forwards comes back, uncounted, for its sender to be told.
    let before = outbox.queued.load(Ordering::Relaxed);
    drop(rx);
    assert_eq!(outbox.forward(via_core).map_err(|f| f.token), Err(Some(10)));
    assert_eq!(outbox.queued.load(Ordering::Relaxed), before - 2);
    assert_eq!(outbox.push(frame(b"late\n", None)), None);
    assert_eq!(outbox.queued.load(Ordering::Relaxed), before - 2);
  }

  #[test]
  fn the_core_writes_a_handle_only_when_nothing_is_ahead() {
    let (outbox, theirs, mut rx) = outbox_pair();
    let conn = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    let handle = |b: &[u8]| OutFrame {
      bytes: b.to_vec(),
      fd: Some(conn.clone()),
      token: None,
    };

    // Idle: on the wire at once, and in flight.
    assert!(outbox.send_handle(handle(b"h1\n")));
    assert!(rx.try_recv().is_err(), "the writer was involved");
    assert!(outbox.handle_in_flight());
    assert_eq!(read_all(&theirs), b"h1\n");
    // Everything waits behind it: a JS send and the next handle.
    assert!(matches!(outbox.send(b"m\n", None, None), Sent::Queued(_)));
    assert!(outbox.send_handle(handle(b"h2\n")));
    assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 2);
    assert!(read_all(&theirs).is_empty());
    // Its ACK wakes the writer, which holds frames; the flag stays until
    // the writer takes the news (`WriterCmd::Settled`).
    assert!(matches!(outbox.answered(true), Answer::WakeWriter));
    assert!(outbox.handle_in_flight());
    outbox.handle_settled();
    outbox.done(2, false);
    outbox.done(3, true);
    // The writer's handle is answered by the writer.
    assert!(matches!(outbox.answered(true), Answer::ToWriter));
    outbox.handle_settled();

    // A NACK sends the core's handle again, through the writer, then gives up.
    assert!(outbox.send_handle(handle(b"h3\n")));
    read_all(&theirs);
    let Answer::Resend(again, 1) = outbox.answered(false) else {
      panic!("a NACKed handle was not sent again");
    };
    assert_eq!(again.bytes, b"h3\n");
    assert!(outbox.handle_in_flight(), "in flight until the writer resends it");
    outbox.retransmit(3);
    outbox.done(3, true);
    assert!(matches!(outbox.answered(false), Answer::ToWriter));
    outbox.handle_settled();

    // Cut short by a full buffer: the writer finishes the frame, and only
    // then is the handle in flight.
    let big = vec![b'x'; 8 << 20];
    assert!(outbox.send_handle(handle(&big)));
    assert!(!outbox.handle_in_flight());
    let Ok(WriterCmd::Frame(rest)) = rx.try_recv() else {
      panic!("the rest did not go to the writer");
    };
    assert!(rest.fd.is_none() && rest.bytes.len() < big.len());
    assert!(
      matches!(outbox.send(b"n\n", None, None), Sent::Queued(_)),
      "nothing passes the rest"
    );
    outbox.done(rest.bytes.len(), false);
    assert!(outbox.handle_in_flight());
    assert!(matches!(outbox.answered(true), Answer::WakeWriter));
  }
}
