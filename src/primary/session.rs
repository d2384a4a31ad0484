//! One worker's session: its process, the writer end of its channel, where it
//! is in its life, and the requests it has not answered yet.
//!
//! The lifecycle is one enum: whether the channel is open, whether the
//! process exited and its `'exit'` was reported, and until then how the worker
//! stands (serving, flagged for recycling, leaving on purpose, hung).
//! Transitions are methods that return what the loop must do, so the order of
//! `'disconnect'` and `'exit'` is decided here and tested without processes.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::events::{EventSink, ForkInfo};
use super::Msg;
use crate::channel::{self, OutFrame, Serialization, WriterCmd, WriterEvent};
use crate::direct::Outbox;
use crate::dispatch::HandOff;
use crate::handover::{self, Channel, Handover, ToCore};
use crate::sockets;
use crate::spawn::{self, ExitStatus, SpawnSpec};
use crate::supervisor::Supervision;

/// Requests awaiting an answer, keyed by the `seq` they were sent with (the
/// answer's `ack`), as Node's cluster `utils.js` keeps its callbacks. Every
/// message sent takes a `seq`; only those expecting an answer are kept.
pub struct Pending<T> {
  next_seq: u64,
  waiting: HashMap<u64, T>,
}

impl<T> Default for Pending<T> {
  fn default() -> Self {
    Pending {
      next_seq: 0,
      waiting: HashMap::new(),
    }
  }
}

impl<T> Pending<T> {
  /// A `seq` for a message no answer is expected to.
  pub fn next_seq(&mut self) -> u64 {
    let s = self.next_seq;
    self.next_seq += 1;
    s
  }

  /// Keeps `request` until an answer with `ack` = the returned seq.
  pub fn request(&mut self, request: T) -> u64 {
    let seq = self.next_seq();
    self.waiting.insert(seq, request);
    seq
  }

  /// The request an answer is for; `None` for an `ack` we are not waiting on.
  pub fn answer(&mut self, ack: u64) -> Option<T> {
    self.waiting.remove(&ack)
  }

  pub fn len(&self) -> usize {
    self.waiting.len()
  }

  /// Everything still unanswered (the worker is gone).
  pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
    self.waiting.drain().map(|(_, r)| r)
  }
}

/// What the worker is doing, as far as new work and supervision care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
  Serving,
  /// Past `maxAge`/`maxMemory` and reported: JS replaces it gracefully.
  /// Still serves meanwhile.
  Recycling,
  /// Its own `exitedAfterDisconnect`: no new servers, no new connections,
  /// no restart.
  Leaving,
  /// The primary's `worker.disconnect()`: as `Leaving`, and its slot counts
  /// as free at once (JS forgets such a worker immediately, as Node does).
  Retired,
  /// Killed as unresponsive: restarted at once, whatever the backoff says
  /// (even if it was also asked to leave).
  Hung,
}

/// An exit to report now, with how the worker stood when it went.
#[derive(Clone, Debug, PartialEq)]
pub struct ExitReport {
  pub status: ExitStatus,
  pub standing: Standing,
}

/// Where a worker is in its life: whether its channel is open, whether its
/// process was reaped and its `'exit'` reported, and (until then) how it
/// stands. It replaces the flags `connected`, `exit`, `exit_emitted`,
/// `leaving`, `flagged` and `replace_now`.
#[derive(Clone, Debug, PartialEq)]
pub enum Lifecycle {
  /// Channel open, process running.
  Running(Standing),
  /// The channel closed; the process still runs.
  Disconnected(Standing),
  /// The process exited while its channel is still open: `'exit'` waits
  /// (briefly) for EOF, so `'disconnect'` comes first as users expect.
  Exited { status: ExitStatus, standing: Standing },
  /// `'exit'` went out while the channel stayed open (a grandchild holds it).
  ExitReported,
  /// Exited, reported and disconnected: nothing more will happen.
  Done,
}

impl Default for Lifecycle {
  fn default() -> Self {
    Lifecycle::Running(Standing::Serving)
  }
}

impl Lifecycle {
  pub fn connected(&self) -> bool {
    matches!(self, Self::Running(_) | Self::Exited { .. } | Self::ExitReported)
  }

  /// The process has not been reaped.
  pub fn alive(&self) -> bool {
    matches!(self, Self::Running(_) | Self::Disconnected(_))
  }

  /// How it stands, until its exit is reported.
  pub fn standing(&self) -> Option<Standing> {
    match self {
      Self::Running(s) | Self::Disconnected(s) | Self::Exited { standing: s, .. } => Some(*s),
      Self::ExitReported | Self::Done => None,
    }
  }

  fn standing_mut(&mut self) -> Option<&mut Standing> {
    match self {
      Self::Running(s) | Self::Disconnected(s) | Self::Exited { standing: s, .. } => Some(s),
      Self::ExitReported | Self::Done => None,
    }
  }

  pub fn leaving(&self) -> bool {
    matches!(self.standing(), Some(Standing::Leaving | Standing::Retired))
  }

  /// Holds its slot: alive, and not retired by the primary.
  pub fn holds_slot(&self) -> bool {
    self.alive() && self.standing() != Some(Standing::Retired)
  }

  /// May take hand-offs: running, connected, not leaving.
  pub fn takes_connections(&self) -> bool {
    matches!(self, Self::Running(_)) && !self.leaving()
  }

  /// May join servers (`queryServer`).
  pub fn takes_servers(&self) -> bool {
    self.standing().is_some() && !self.leaving()
  }

  /// Worth a watchdog look: alive and not flagged or leaving already.
  pub fn watchable(&self) -> bool {
    self.alive() && self.standing() == Some(Standing::Serving)
  }

  /// Asked to leave by the primary (`retired`) or by itself.
  pub fn leave(&mut self, retired: bool) {
    if let Some(s) = self.standing_mut() {
      *s = match *s {
        Standing::Hung | Standing::Retired => return,
        _ if retired => Standing::Retired,
        _ => Standing::Leaving,
      };
    }
  }

  pub fn recycle(&mut self) {
    if let Some(s) = self.standing_mut() {
      *s = Standing::Recycling;
    }
  }

  pub fn hung(&mut self) {
    if let Some(s) = self.standing_mut() {
      *s = Standing::Hung;
    }
  }

  /// The channel ended. `None` if it had already; otherwise the exit to
  /// report right after `'disconnect'`, if the process is gone too.
  pub fn channel_closed(&mut self) -> Option<Option<ExitReport>> {
    let (next, report) = match std::mem::replace(self, Self::Done) {
      Self::Running(s) => (Self::Disconnected(s), None),
      Self::Exited { status, standing } => (Self::Done, Some(ExitReport { status, standing })),
      Self::ExitReported => (Self::Done, None),
      closed @ (Self::Disconnected(_) | Self::Done) => {
        *self = closed;
        return None;
      }
    };
    *self = next;
    Some(report)
  }

  /// The process was reaped: report now (channel closed already), or wait
  /// for EOF first (`None`; the loop sets a deadline for it).
  pub fn exited(&mut self, status: ExitStatus) -> Option<ExitReport> {
    match *self {
      Self::Running(standing) => {
        *self = Self::Exited { status, standing };
        None
      }
      Self::Disconnected(standing) => {
        *self = Self::Done;
        Some(ExitReport { status, standing })
      }
      _ => None,
    }
  }

  /// EOF did not come in time: report the exit anyway.
  pub fn eof_overdue(&mut self) -> Option<ExitReport> {
    match std::mem::replace(self, Self::ExitReported) {
      Self::Exited { status, standing } => Some(ExitReport { status, standing }),
      other => {
        *self = other;
        None
      }
    }
  }

  pub fn done(&self) -> bool {
    *self == Self::Done
  }
}

/// The core's end of a worker's channel: the writer task's queue, and the
/// socket (for shutdown and the reaper).
pub struct ChannelEnd {
  writer: UnboundedSender<WriterCmd>,
  /// Where frames for the writer go, counted (JS writes past it when nothing
  /// is queued: see `direct`); shared with the binding.
  pub outbox: Arc<Outbox>,
  pub sock: Arc<OwnedFd>,
  /// The writer task has finished (its last `Written` events are out).
  pub writer_done: bool,
}

impl ChannelEnd {
  pub fn command(&self, cmd: WriterCmd) {
    let _ = self.writer.send(cmd);
  }

  /// Queues a complete frame behind everything counted so far.
  pub fn frame(&self, bytes: Vec<u8>, fd: Option<Arc<OwnedFd>>) {
    self.outbox.push(OutFrame { bytes, fd, token: None });
  }

  /// A frame carrying `fd`: written at once when nothing is queued or in
  /// flight (one `newconn` per connection takes no trip through the writer).
  pub fn handle_frame(&self, bytes: Vec<u8>, fd: Arc<OwnedFd>) {
    self.outbox.send_handle(OutFrame {
      bytes,
      fd: Some(fd),
      token: None,
    });
  }

  /// Refuses the rest of a broken stream at once.
  pub fn shutdown(&self) {
    let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
  }
}

/// One worker, from spawn until it has exited and disconnected.
pub struct Session {
  pub mode: Serialization,
  pub pid: i32,
  /// How it was started, for its slot (a reload's successor is promoted
  /// with its own spec).
  pub spec: SpawnSpec,
  pub sink: EventSink,
  pub supervision: Option<Supervision>,
  pub started: Instant,
  pub last_heartbeat: Option<Instant>,
  pub life: Lifecycle,
  pub channel: ChannelEnd,
  /// `newconn` hand-offs the worker has not answered: the one count of
  /// unanswered hand-offs (`dispatch::MAX_UNANSWERED` applies to it).
  pub pending: Pending<HandOff>,
  /// Hand-offs ever made, for `cluster.stats()`.
  pub handoff_total: Arc<AtomicU64>,
  /// Listening addresses and heartbeat lag, for metrics and readiness.
  pub observed: super::snapshot::Observed,
}

/// What the binding may read without a round trip to the core.
pub struct Shared {
  pub outbox: Arc<Outbox>,
  pub pidfd: Option<Arc<OwnedFd>>,
  pub open: bool,
  pub pid: i32,
  pub handoffs: Arc<AtomicU64>,
}

/// A started worker: its session, what the binding shares, what JS gets.
pub struct Started {
  pub session: Session,
  pub shared: Shared,
  pub info: ForkInfo,
}

impl Session {
  /// Spawns worker `id` and starts its channel's reader and writer and the
  /// task that waits for its exit; each reports to the loop through `tx`.
  /// `pidfd` is reported first, for the reaper.
  pub fn start(
    id: u32,
    spec: SpawnSpec,
    sink: EventSink,
    supervision: Option<Supervision>,
    js_may_read: bool,
    tx: &UnboundedSender<Msg>,
    on_pidfd: impl FnOnce(&OwnedFd),
  ) -> io::Result<Started> {
    let mode = spec.serialization;
    let s = spawn::spawn(&spec)?;
    if let Some(fd) = &s.pidfd {
      on_pidfd(fd);
    }
    // Not registered with the reactor: the reader and writer register
    // duplicates while they wait (see `readiness`).
    let sock = Arc::new(s.channel);
    let (writer, writer_rx) = unbounded_channel();
    let outbox = Arc::new(Outbox::new(sock.clone(), writer.clone()));

    // The JS thread reads the channel when it may and can (see
    // `handover`); the core reads it otherwise.
    let forward_tx = tx.clone();
    let to_core = ToCore::new(move |event, in_core| {
      let _ = forward_tx.send(Msg::Forwarded { id, event, in_core });
    });
    let handover = Handover {
      id,
      mode,
      channel: Channel::new(mode, sock.clone(), to_core),
    };
    if !js_may_read || handover::offer(handover).is_some() {
      let read_tx = tx.clone();
      tokio::spawn(channel::read_loop(sock.clone(), mode, move |event| {
        let _ = read_tx.send(Msg::Read { id, event });
      }));
    }
    let (written_tx, done_tx) = (tx.clone(), tx.clone());
    let (writer_outbox, writer_sock) = (outbox.clone(), sock.clone());
    tokio::spawn(async move {
      channel::write_loop(
        writer_sock,
        writer_rx,
        writer_outbox,
        move |WriterEvent::Written { token, error }| {
          let _ = written_tx.send(Msg::Written { id, token, error });
        },
      )
      .await;
      let _ = done_tx.send(Msg::WriterDone { id });
    });
    let pidfd = s.pidfd.map(Arc::new);
    let watch_fd = pidfd.as_ref().and_then(|fd| sockets::dup_fd(fd.as_raw_fd()).ok());
    let (exit_tx, pid) = (tx.clone(), s.pid);
    tokio::spawn(async move {
      let status = spawn::wait_exit(pid, watch_fd).await;
      let _ = exit_tx.send(Msg::Exited { id, status });
    });

    let handoff_total = Arc::new(AtomicU64::new(0));
    let shared = Shared {
      outbox: outbox.clone(),
      pidfd,
      open: true,
      pid,
      handoffs: handoff_total.clone(),
    };
    let session = Session {
      mode,
      pid,
      spec,
      sink,
      supervision,
      started: Instant::now(),
      last_heartbeat: None,
      life: Lifecycle::default(),
      channel: ChannelEnd {
        writer,
        outbox,
        sock,
        writer_done: false,
      },
      pending: Pending::default(),
      handoff_total,
      observed: Default::default(),
    };
    let info = ForkInfo {
      pid,
      stdin: s.stdin,
      stdout: s.stdout,
      stderr: s.stderr,
      extra: s.extra,
    };
    Ok(Started { session, shared, info })
  }

  /// Unanswered hand-offs, if the worker may take another connection.
  pub fn load(&self) -> Option<usize> {
    self.life.takes_connections().then(|| self.pending.len())
  }

  /// Gone for good: exited, reported, disconnected, writer finished.
  pub fn forgettable(&self) -> bool {
    self.life.done() && self.channel.writer_done
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn status(code: i32) -> ExitStatus {
    ExitStatus {
      code: Some(code),
      signal: None,
    }
  }

  #[test]
  fn pending_answers_only_what_it_asked() {
    let mut p = Pending::default();
    let plain = p.next_seq();
    let a = p.request("a");
    let b = p.request("b");
    assert_eq!((plain, a, b), (0, 1, 2));
    assert_eq!(p.len(), 2);
    assert_eq!(p.answer(plain), None, "an ack of a message that wanted no answer");
    assert_eq!(p.answer(b), Some("b"));
    assert_eq!(p.answer(b), None, "answered once");
    assert_eq!(p.drain().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(p.len(), 0);
  }

  #[test]
  fn exit_after_eof_is_reported_after_disconnect() {
    let mut l = Lifecycle::default();
    assert_eq!(l.exited(status(0)), None, "waits for EOF");
    assert!(l.connected() && !l.alive());
    let report = l.channel_closed().expect("closes once");
    assert_eq!(report.map(|r| r.status), Some(status(0)));
    assert!(l.done());
    assert_eq!(l.channel_closed(), None);
    assert_eq!(l.eof_overdue(), None);
  }

  #[test]
  fn exit_without_eof_is_reported_by_the_deadline_once() {
    let mut l = Lifecycle::default();
    l.exited(status(1));
    assert_eq!(l.eof_overdue().map(|r| r.status), Some(status(1)));
    assert_eq!(l.eof_overdue(), None);
    assert!(!l.done(), "the channel is still open");
    assert_eq!(l.channel_closed(), Some(None), "disconnect, nothing more to report");
    assert!(l.done());
  }

  #[test]
  fn disconnected_then_exited_reports_at_once() {
    let mut l = Lifecycle::default();
    assert_eq!(l.channel_closed(), Some(None));
    assert!(!l.connected() && l.alive() && !l.takes_connections());
    l.leave(false);
    assert!(l.holds_slot(), "left by itself: JS still counts it");
    let r = l.exited(status(0)).unwrap();
    assert_eq!(r.standing, Standing::Leaving);
    assert!(!l.holds_slot());
    assert!(l.done());
  }

  #[test]
  fn standing_rules() {
    let mut l = Lifecycle::default();
    assert!(l.takes_connections() && l.takes_servers() && l.watchable());
    l.recycle();
    assert!(l.takes_connections() && !l.watchable());
    l.leave(true);
    assert!(!l.takes_connections() && !l.takes_servers() && !l.holds_slot());
    l.leave(false);
    assert_eq!(l.standing(), Some(Standing::Retired), "retired stays retired");
    let mut h = Lifecycle::default();
    h.hung();
    h.leave(true);
    assert_eq!(
      h.standing(),
      Some(Standing::Hung),
      "a hung worker is replaced even if asked to leave"
    );
    h.exited(status(9));
    assert_eq!(h.eof_overdue().map(|r| r.standing), Some(Standing::Hung));
    assert_eq!(h.standing(), None, "reported: nothing stands any more");
    assert!(!h.takes_servers());
  }
}
