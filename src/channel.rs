//! One worker's IPC channel: byte/fd transfer over the `AF_UNIX` stream socket
//! with `SCM_RIGHTS` (the framings are in `framing`).
//!
//! The reader and writer run as tasks on the core runtime. They know nothing of
//! cluster semantics: the reader turns bytes into frames (and pairs received fds
//! with them through `protocol::classify`), the writer sends frames in order and
//! holds back everything behind a handle until the peer acknowledges it, as
//! Node's `child_process` does.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::direct::Outbox;
use crate::framing::Decoder;
pub use crate::framing::Serialization;
use crate::protocol::{self, Inbound};
use crate::readiness::Readiness;

/// How many times a handle the peer NACKs is sent again (Node uses 3 too).
pub const MAX_HANDLE_RETRANSMISSIONS: u32 = 3;

/// Registers an owned socket with the runtime's reactor.
pub fn register<T: AsRawFd>(inner: T, interest: tokio::io::Interest) -> io::Result<AsyncFd<T>> {
  // SAFETY: every `T` we pass (OwnedFd, socket2::Socket) owns its fd, which
  // therefore stays open and unchanged for the life of the AsyncFd.
  unsafe { AsyncFd::register_with_interest(inner, interest) }.map_err(io::Error::from)
}

/// Reads into `buf`; fds that arrive with the bytes are appended to `fds`
/// (close-on-exec, so a concurrent spawn cannot leak them). Never blocks.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
  let mut iov = [IoSliceMut::new(buf)];
  let mut space = nix::cmsg_space!([RawFd; 8]);
  let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
  let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), flags).map_err(io::Error::from)?;
  for cmsg in msg.cmsgs().map_err(io::Error::from)? {
    if let ControlMessageOwned::ScmRights(received) = cmsg {
      // SAFETY: the kernel just installed these fds in our table; we own them.
      fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
    }
  }
  Ok(msg.bytes)
}

/// Writes `data`, passing `fd` with the first byte when given.
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<usize> {
  let iov = [IoSlice::new(data)];
  let fds;
  let cmsgs: &[ControlMessage] = match fd {
    Some(fd) => {
      fds = [fd];
      &[ControlMessage::ScmRights(&fds)]
    }
    None => &[],
  };
  sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).map_err(io::Error::from)
}

/// A frame on its way to the worker.
pub struct OutFrame {
  pub bytes: Vec<u8>,
  /// Passed with the frame; shared so the sender (e.g. the round-robin
  /// dispatcher, which keeps a connection until the worker accepts it) and the
  /// writer can both hold it.
  pub fd: Option<Arc<OwnedFd>>,
  /// Reported back through `WriterEvent::Written` once the frame is on the wire.
  pub token: Option<u32>,
}

pub enum WriterCmd {
  Frame(OutFrame),
  HandleAck,
  HandleNack,
  /// The handle the core wrote directly (see `direct`) is settled: what is
  /// queued behind it may go.
  Settled,
  /// The handle the core wrote was NACKed: send it again first (this many
  /// retransmissions so far, this one included).
  Resend(OutFrame, u32),
  /// Flush what is queued, then shut the socket down (Node's `disconnect()`).
  Close,
  /// The peer is gone: fail whatever is queued.
  Abort,
}

pub enum WriterEvent {
  Written { token: u32, error: Option<String> },
}

/// Sends frames in order; after a frame carrying an fd it waits for the peer's
/// `NODE_HANDLE_ACK` (one handle in flight per channel, as Node requires).
pub async fn write_loop(
  sock: Arc<OwnedFd>,
  mut rx: UnboundedReceiver<WriterCmd>,
  outbox: Arc<Outbox>,
  events: impl Fn(WriterEvent),
) {
  let mut queue: VecDeque<OutFrame> = VecDeque::new();
  let mut in_flight: Option<(OutFrame, u32)> = None;
  let mut closing = false;
  let mut failed: Option<String> = None;
  let mut retries_of_head = 0;
  let mut wait = Readiness::new(&*sock, tokio::io::Interest::WRITABLE);
  loop {
    // A handle waits for its ACK: the writer's own, or one the core wrote.
    let blocked = in_flight.is_some() || outbox.handle_in_flight();
    let idle = blocked || queue.is_empty();
    if idle && closing && !blocked {
      break;
    }
    let cmd = if idle {
      wait.idle();
      match rx.recv().await {
        Some(c) => Some(c),
        None => break,
      }
    } else {
      rx.try_recv().ok()
    };
    match cmd {
      Some(WriterCmd::Frame(f)) => queue.push_back(f),
      Some(WriterCmd::HandleAck) => {
        in_flight = None;
        outbox.handle_settled();
      }
      Some(WriterCmd::HandleNack) => {
        // The fd did not arrive: send the same frame again, a few times.
        if let Some((f, tries)) = in_flight.take() {
          if tries < MAX_HANDLE_RETRANSMISSIONS {
            outbox.retransmit(f.bytes.len());
            queue.push_front(OutFrame {
              bytes: f.bytes,
              fd: f.fd,
              token: None,
            });
            retries_of_head = tries + 1;
          } else {
            outbox.handle_settled();
          }
        }
      }
      Some(WriterCmd::Settled) => outbox.handle_settled(),
      Some(WriterCmd::Resend(f, tries)) => {
        outbox.retransmit(f.bytes.len());
        queue.push_front(f);
        retries_of_head = tries;
      }
      Some(WriterCmd::Close) => closing = true,
      Some(WriterCmd::Abort) => {
        failed = Some("channel closed".to_string());
        break;
      }
      None => {}
    }
    while in_flight.is_none() && !queue.is_empty() && !outbox.handle_in_flight() {
      let has_fd = queue[0].fd.is_some();
      match send_one(&mut wait, &mut queue, &outbox, &events).await {
        Ok(Some(f)) if has_fd => in_flight = Some((f, std::mem::take(&mut retries_of_head))),
        Ok(_) => retries_of_head = 0,
        Err(e) => {
          failed = Some(e.to_string());
          break;
        }
      }
    }
    if failed.is_some() {
      break;
    }
  }
  // Whatever could not be written is reported, so callers' callbacks run.
  let error = failed.unwrap_or_else(|| "channel closed".to_string());
  rx.close();
  while let Ok(cmd) = rx.try_recv() {
    if let WriterCmd::Frame(f) = cmd {
      queue.push_back(f);
    }
  }
  for f in queue.drain(..) {
    outbox.done(f.bytes.len(), false);
    if let Some(token) = f.token {
      events(WriterEvent::Written {
        token,
        error: Some(error.clone()),
      });
    }
  }
  let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// Writes the head of `queue` completely. Returns the frame when it carried an
/// fd (the caller keeps it until the ACK, for a retransmission).
async fn send_one(
  wait: &mut Readiness,
  queue: &mut VecDeque<OutFrame>,
  outbox: &Outbox,
  events: &impl Fn(WriterEvent),
) -> io::Result<Option<OutFrame>> {
  let frame = queue.pop_front().expect("send_one on an empty queue");
  let mut off = 0;
  while off < frame.bytes.len() {
    let pass = if off == 0 {
      frame.fd.as_ref().map(|f| f.as_raw_fd())
    } else {
      None
    };
    match outbox.write(&frame.bytes[off..], pass) {
      Ok(n) => off += n,
      Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
      Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
        if let Err(e) = wait.ready().await {
          queue.push_front(frame);
          return Err(e);
        }
      }
      Err(e) => {
        outbox.done(frame.bytes.len(), false);
        if let Some(token) = frame.token {
          events(WriterEvent::Written {
            token,
            error: Some(e.to_string()),
          });
        }
        return Err(e);
      }
    }
  }
  // The `Written` event leaves before the frame is uncounted, so JS sees it
  // ahead of the callback of any direct write that follows.
  if let Some(token) = frame.token {
    events(WriterEvent::Written { token, error: None });
  }
  outbox.done(frame.bytes.len(), frame.fd.is_some());
  Ok(if frame.fd.is_some() { Some(frame) } else { None })
}

pub enum ReaderEvent {
  Message(Inbound),
  /// The channel ended: EOF, a read error, or a frame we refuse (`error`).
  End {
    error: Option<String>,
  },
}

/// Where `Inbox::read_frames` hands each frame it decodes.
pub trait FrameSink {
  /// Where a user frame (see `protocol::is_user`) may go now as it was on the
  /// wire, appended with no allocation per frame; `None`: it comes to `take`.
  /// Asked again before every frame.
  fn user_wire(&mut self) -> Option<&mut Vec<u8>> {
    None
  }
  /// The next frame, classified (never `Inbound::Garbage`: that ends the read).
  fn take(&mut self, frame: Inbound);
}

impl<F: FnMut(Inbound)> FrameSink for F {
  fn take(&mut self, frame: Inbound) {
    self(frame)
  }
}

/// Why `Inbox::read_frames` stopped.
pub enum Stop {
  /// The socket is probably empty.
  Drained,
  /// The bound on reads came first: there may be more.
  Limit,
  /// EOF, a read error, or a frame we refuse: nothing more is read.
  End(Option<String>),
}

/// What one read of a channel brought.
enum Read {
  /// Bytes (now in the decoder); `drained`: the socket is probably empty
  /// (a short read without fds).
  Data { drained: bool },
  /// Nothing to read now.
  WouldBlock,
  /// EOF, or a read error.
  End(Option<String>),
}

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 * 1024;

/// The read side of a channel, whoever reads it (`read_loop` on the core
/// thread, the JS thread's reader, or the core reading for a stuck JS thread):
/// bytes to frames, fds paired with the `NODE_HANDLE` frames they came for.
pub struct Inbox {
  mode: Serialization,
  decoder: Decoder,
  received: Vec<OwnedFd>,
  unclaimed: VecDeque<OwnedFd>,
}

impl Inbox {
  pub fn new(mode: Serialization) -> Self {
    Inbox {
      mode,
      decoder: Decoder::new(mode),
      received: Vec::new(),
      unclaimed: VecDeque::new(),
    }
  }

  /// Up to `reads` non-blocking reads (never waiting, whatever the fd's
  /// flags: the open file description may be shared), each followed by every
  /// complete frame it finished, in order, to `sink`. Stops early once the
  /// socket looks empty: after a short read, or with `to_end` only at EAGAIN
  /// (a socket with a pending error reports it only once the bytes before it
  /// are read). A frame we refuse ends it, with nothing after it delivered.
  pub fn read_frames(&mut self, sock: RawFd, reads: usize, to_end: bool, sink: &mut impl FrameSink) -> Stop {
    for _ in 0..reads {
      let drained = match self.read(sock) {
        Read::Data { drained } => drained && !to_end,
        Read::WouldBlock => true,
        Read::End(error) => return Stop::End(error),
      };
      if let Err(reason) = self.deliver(sink) {
        return Stop::End(Some(reason));
      }
      if drained {
        return Stop::Drained;
      }
    }
    Stop::Limit
  }

  fn read(&mut self, sock: RawFd) -> Read {
    let n = match recv_with_fds(sock, self.decoder.room(READ_SIZE), &mut self.received) {
      Ok(0) => return Read::End(None),
      Ok(n) => n,
      Err(e) if e.kind() == io::ErrorKind::Interrupted => return Read::Data { drained: false },
      Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::WouldBlock,
      Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Read::End(None),
      Err(e) => return Read::End(Some(e.to_string())),
    };
    // A short read drained the socket. Not so when fds came along: the
    // kernel ends a read at the end of the chunk that carried them, so the
    // rest of a large sendmsg may already be queued behind it, and waiting
    // for an edge then hangs once the sender is blocked on a full buffer.
    let drained = n < READ_SIZE && self.received.is_empty();
    self.unclaimed.extend(self.received.drain(..));
    // A peer that sends fds without NODE_HANDLE messages must not make us
    // hoard descriptors.
    while self.unclaimed.len() > 16 {
      self.unclaimed.pop_front();
    }
    self.decoder.filled(n);
    Read::Data { drained }
  }

  /// Every complete frame to `sink`, or the reason for the first we refuse.
  fn deliver(&mut self, sink: &mut impl FrameSink) -> Result<(), String> {
    let mode = self.mode;
    loop {
      // The common case for the JS reader: straight from the decoder into
      // one buffer.
      if let Some(out) = sink.user_wire() {
        if self
          .decoder
          .take_wire_if(out, |payload| protocol::is_user(mode, payload))
        {
          continue;
        }
      }
      let Some(frame) = self.decoder.next_frame() else {
        return Ok(());
      };
      match protocol::classify(mode, frame, &mut self.unclaimed) {
        Inbound::Garbage(reason) => return Err(reason),
        msg => sink.take(msg),
      }
    }
  }
}

/// Reads frames until EOF or an error; each becomes one `ReaderEvent`.
pub async fn read_loop(sock: Arc<OwnedFd>, mode: Serialization, events: impl Fn(ReaderEvent)) {
  let mut inbox = Inbox::new(mode);
  let mut readable = Readiness::new(&*sock, tokio::io::Interest::READABLE);
  // Whether the last read may have drained the socket.
  let mut drained = true;
  loop {
    if drained {
      if let Err(e) = readable.ready().await {
        return events(ReaderEvent::End {
          error: Some(e.to_string()),
        });
      }
    }
    // Only once there is something to read: a reader that waited for JS
    // while its socket was empty would cost a wake-up for nothing. Meanwhile
    // the worker's writes must not wake us either.
    if crate::pace::PACE.is_waiting() {
      readable.idle();
      crate::pace::PACE.wait().await;
    }
    // Readiness was cleared before this read, so skipping the read that
    // would only say EAGAIN after a short one misses no edge.
    let mut sink = |msg| events(ReaderEvent::Message(msg));
    drained = match inbox.read_frames(sock.as_raw_fd(), 1, false, &mut sink) {
      Stop::Drained => true,
      Stop::Limit => false,
      Stop::End(error) => return events(ReaderEvent::End { error }),
    };
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::framing::frame;

  #[test]
  fn fd_travels_with_bytes() {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    send_with_fd(a.as_raw_fd(), b"x\n", Some(file.as_raw_fd())).unwrap();
    let mut buf = [0u8; 16];
    let mut fds = Vec::new();
    let n = recv_with_fds(b.as_raw_fd(), &mut buf, &mut fds).unwrap();
    assert_eq!(&buf[..n], b"x\n");
    assert_eq!(fds.len(), 1);
    assert_ne!(fds[0].as_raw_fd(), file.as_raw_fd());
  }

  /// A connected pair; ours is non-blocking, as the channel's socket is.
  fn pair() -> (OwnedFd, OwnedFd) {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    socketpair(AddressFamily::Unix, SockType::Stream, None, flags).unwrap()
  }

  fn send_all(sock: &OwnedFd, wire: &[u8]) {
    assert_eq!(send_with_fd(sock.as_raw_fd(), wire, None).unwrap(), wire.len());
  }

  fn user(frame: &Inbound) -> &[u8] {
    match frame {
      Inbound::User(payload) => payload,
      _ => panic!("not a user frame"),
    }
  }

  #[test]
  fn garbage_ends_the_read_after_the_frames_before_it() {
    let (ours, theirs) = pair();
    send_all(&theirs, b"{\"a\":1}\nNODE_bad\n{\"b\":2}\n");
    let mut got = Vec::new();
    let mut inbox = Inbox::new(Serialization::Json);
    let stop = inbox.read_frames(ours.as_raw_fd(), 4, false, &mut |f| got.push(f));
    assert!(matches!(stop, Stop::End(Some(ref e)) if e.contains("invalid JSON")));
    assert_eq!(got.len(), 1, "nothing after the garbage is delivered");
    assert_eq!(user(&got[0]), b"{\"a\":1}");
  }

  #[test]
  fn a_short_read_drains_unless_reading_to_the_end() {
    let (ours, theirs) = pair();
    let mut inbox = Inbox::new(Serialization::Json);
    let mut got = Vec::new();
    send_all(&theirs, b"1\n");
    let stop = inbox.read_frames(ours.as_raw_fd(), 1, false, &mut |f| got.push(f));
    assert!(matches!(stop, Stop::Drained));
    send_all(&theirs, b"2\n");
    // To the end, only EAGAIN says drained: one read is not enough.
    let stop = inbox.read_frames(ours.as_raw_fd(), 1, true, &mut |f| got.push(f));
    assert!(matches!(stop, Stop::Limit));
    let stop = inbox.read_frames(ours.as_raw_fd(), 1, true, &mut |f| got.push(f));
    assert!(matches!(stop, Stop::Drained));
    drop(theirs);
    let stop = inbox.read_frames(ours.as_raw_fd(), 1, true, &mut |f| got.push(f));
    assert!(matches!(stop, Stop::End(None)), "EOF ends it");
    assert_eq!(got.iter().map(user).collect::<Vec<_>>(), [b"1", b"2"]);
  }

  #[test]
  fn full_reads_stop_at_the_bound() {
    let (ours, theirs) = pair();
    let line = format!("\"{}\"\n", "x".repeat(998));
    let wire = line.repeat(130);
    send_all(&theirs, wire.as_bytes());
    let mut inbox = Inbox::new(Serialization::Json);
    let mut got = 0;
    let stop = inbox.read_frames(ours.as_raw_fd(), 1, false, &mut |_| got += 1);
    assert!(matches!(stop, Stop::Limit), "a full read may have left more");
    assert_eq!(got, READ_SIZE / line.len());
    let stop = inbox.read_frames(ours.as_raw_fd(), 4, false, &mut |_| got += 1);
    assert!(matches!(stop, Stop::Drained));
    assert_eq!(got, 130);
  }

  /// Takes user frames as on the wire until an internal frame arrives, then
  /// (as the JS reader while the core is busy) every frame through `take`.
  #[derive(Default)]
  struct Split {
    wire: Vec<u8>,
    taken: Vec<(usize, Inbound)>,
  }

  impl FrameSink for Split {
    fn user_wire(&mut self) -> Option<&mut Vec<u8>> {
      self.taken.is_empty().then_some(&mut self.wire)
    }
    fn take(&mut self, frame: Inbound) {
      self.taken.push((self.wire.len(), frame));
    }
  }

  #[test]
  fn user_frames_go_as_on_the_wire_while_the_sink_takes_them() {
    let (ours, theirs) = pair();
    send_all(&theirs, b"\"a\"\n\"bc\"\n{\"cmd\":\"NODE_HANDLE_ACK\"}\n\"d\"\n");
    let mut sink = Split::default();
    let mut inbox = Inbox::new(Serialization::Json);
    assert!(matches!(
      inbox.read_frames(ours.as_raw_fd(), 1, false, &mut sink),
      Stop::Drained
    ));
    assert_eq!(sink.wire, b"\"a\"\n\"bc\"\n");
    assert_eq!(sink.taken.len(), 2);
    assert_eq!(
      sink.taken[0].0,
      sink.wire.len(),
      "the internal frame comes after the user frames before it"
    );
    assert!(matches!(sink.taken[0].1, Inbound::HandleAck));
    assert_eq!(sink.taken[1].0, sink.wire.len());
    assert_eq!(user(&sink.taken[1].1), b"\"d\"");
  }

  #[test]
  fn large_frame_whose_fd_ends_the_first_read_is_read_to_the_end() {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).unwrap();
    let flags = nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let nonblocking = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_SETFL(nonblocking)).unwrap();
    let payload = format!(
      r#"{{"cmd":"NODE_HANDLE","type":"net.Socket","msg":"{}"}}"#,
      "a".repeat(800_000)
    );
    let wire = frame(Serialization::Json, payload.as_bytes());
    // The sender fills the socket buffer before we read at all, as a worker
    // does when the primary is busy, then blocks on the rest.
    let sender = std::thread::spawn(move || {
      let file = std::fs::File::open("/dev/null").unwrap();
      let mut off = send_with_fd(theirs.as_raw_fd(), &wire, Some(file.as_raw_fd())).unwrap();
      while off < wire.len() {
        off += send_with_fd(theirs.as_raw_fd(), &wire[off..], None).unwrap();
      }
      theirs
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let rt = tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .unwrap();
    let got = rt.block_on(async move {
      let sock = Arc::new(ours);
      let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
      tokio::spawn(read_loop(sock, Serialization::Json, move |ev| {
        let _ = tx.send(ev);
      }));
      tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await
    });
    match got {
      Ok(Some(ReaderEvent::Message(Inbound::Handle { envelope, fd, .. }))) => {
        assert_eq!(envelope.len(), payload.len());
        assert!(fd.is_some(), "the fd was lost");
      }
      Ok(_) => panic!("the channel ended or sent something else"),
      Err(_) => panic!("the frame never arrived: the reader stopped reading"),
    }
    drop(sender.join().unwrap());
  }
}
