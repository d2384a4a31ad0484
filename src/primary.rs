//! The primary's core: one long-lived thread running a tokio runtime that
//! owns every worker's channel, the server handles and the supervision of
//! slots. `Core` is the binding's handle on it: each call becomes a `Msg` for
//! the loop (`state`), which routes it to the one owner of what it is about:
//!
//! - `acts`    — what a worker says on its channel, and the server work it
//!   leads to (part of the loop)
//! - `session` — one worker: process, channel writer, lifecycle, the
//!   requests it has not answered (by seq)
//! - `servers` — server handles by key, which workers hold them, release
//! - `slots`   — supervised slots: their spawn spec, backoff, pending restart
//! - `timers`  — every delayed `Msg` (restarts, exit deadlines, lingering)
//! - `events`  — what JS is told, one typed `Event` per happening
//!
//! Events for JS leave through each worker's `EventSink`, which is dropped
//! once the worker has both exited and disconnected (that is what lets an
//! idle Node primary exit). A supervised worker shares its slot's sink, which
//! lives as long as the slot is supervised, so the core can restart the
//! slot's worker by itself, without waiting for JavaScript.

mod acts;
mod events;
mod servers;
mod session;
mod slots;
mod snapshot;
mod stalls;
mod state;
mod timers;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

pub use self::events::{Event, EventSink, ExitDecision, ForkInfo, Received, SendError, WorkerStats};
pub use self::slots::SlotView;
use crate::channel::{OutFrame, ReaderEvent};
use crate::direct::Sent;
use crate::handles::Policy;
use crate::metrics::snapshot::Counters;
use crate::spawn::{self, ExitStatus, SpawnSpec};
use crate::supervisor;
pub use crate::supervisor::Supervision;

/// How long a worker asked to leave may take before it is SIGKILLed, unless
/// JS says otherwise (`killTimeout`). The reaper honours it too.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_millis(10_000);

/// What the binding reads synchronously, by worker id.
type Registry = Arc<Mutex<HashMap<u32, session::Shared>>>;

/// Everything the loop reacts to: calls from JS (through `Core`), the
/// workers' channel and exit tasks, accept loops, and timers.
enum Msg {
  Fork {
    id: u32,
    /// Boxed: the rest of the messages, sent per frame, stay small.
    spec: Box<SpawnSpec>,
    sink: EventSink,
    supervision: Option<Supervision>,
    /// Start it beside the slot's current worker; `promote` makes it current.
    standby: bool,
    reply: std::sync::mpsc::SyncSender<io::Result<ForkInfo>>,
  },
  Promote {
    id: u32,
  },
  /// Stop supervising a slot (scale-down, shutdown): no more restarts.
  Unsupervise {
    slot: u32,
    /// Also drop its restart count: the slot is gone (scale-down).
    forget: bool,
  },
  Slots(std::sync::mpsc::SyncSender<SlotView>),
  Respawn {
    slot: u32,
  },
  Tick,
  /// Time to sample the reuseport groups' accept queues (`load`).
  LoadTick,
  Send {
    id: u32,
    frame: OutFrame,
  },
  Disconnect {
    id: u32,
    grace: Duration,
  },
  SetKillTimeout(Duration),
  /// Answered once every earlier message is handled.
  Barrier(std::sync::mpsc::SyncSender<()>),
  CloseChannel {
    id: u32,
  },
  SetPolicy(Policy),
  /// `sticky: 'ip'` for server handles created from now on.
  SetSticky(bool),
  Read {
    id: u32,
    event: ReaderEvent,
  },
  /// What a reader other than the core's read (see `handover`).
  Forwarded {
    id: u32,
    event: ReaderEvent,
    in_core: Arc<std::sync::atomic::AtomicUsize>,
  },
  Written {
    id: u32,
    token: u32,
    error: Option<String>,
  },
  WriterDone {
    id: u32,
  },
  Exited {
    id: u32,
    status: ExitStatus,
  },
  ExitDeadline {
    id: u32,
  },
  Accepted {
    generation: u64,
    conns: Vec<OwnedFd>,
  },
  /// Time to close vacant sockets of `key` nobody took over.
  Linger {
    key: String,
  },
  /// For the metrics endpoint.
  Snapshot(tokio::sync::oneshot::Sender<crate::metrics::snapshot::Snapshot>),
  StartMetrics {
    target: crate::metrics::Target,
    counters: Arc<Counters>,
    bound: MetricsBound,
  },
  StopMetrics,
}

/// Told where the metrics endpoint was bound, or why not.
pub type MetricsBound = Box<dyn FnOnce(crate::metrics::Outcome) + Send>;

/// The binding's handle on the core thread.
pub struct Core {
  tx: UnboundedSender<Msg>,
  registry: Registry,
  next_id: Arc<AtomicU32>,
  counters: Arc<Counters>,
}

impl Core {
  pub fn start() -> io::Result<Core> {
    let (tx, rx) = unbounded_channel();
    let registry: Registry = Arc::default();
    let next_id = Arc::new(AtomicU32::new(1));
    let state = state::State::new(tx.clone(), registry.clone(), next_id.clone());
    // This thread lives as long as the process: workers are spawned from it,
    // and PR_SET_PDEATHSIG follows the spawning thread.
    std::thread::Builder::new()
      .name("rcluster-core".into())
      .spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
          .enable_all()
          .build()
          .expect("rcluster: cannot start the core runtime");
        // The loop runs as a task, not as the `block_on` future: tokio polls
        // the driver (an extra epoll_wait) each time the `block_on` future
        // is woken, which would be once per message from a reader or the
        // acceptor.
        rt.block_on(async { tokio::spawn(state.run(rx)).await })
          .expect("rcluster: the core loop panicked");
      })?;
    Ok(Core {
      tx,
      registry,
      next_id,
      counters: Arc::default(),
    })
  }

  /// Worker ids come from the core, which also numbers the workers it
  /// restarts by itself.
  pub fn next_id(&self) -> u32 {
    self.next_id.fetch_add(1, Ordering::Relaxed)
  }

  /// Starts worker `id` (from `next_id`). `NODE_UNIQUE_ID` is set here.
  pub fn fork(
    &self,
    id: u32,
    spec: SpawnSpec,
    sink: EventSink,
    supervision: Option<Supervision>,
    standby: bool,
  ) -> io::Result<ForkInfo> {
    let (reply, result) = std::sync::mpsc::sync_channel(1);
    self
      .tx
      .send(Msg::Fork {
        id,
        spec: Box::new(spec),
        sink,
        supervision,
        standby,
        reply,
      })
      .map_err(|_| io::Error::other("rcluster core is not running"))?;
    result
      .recv()
      .map_err(|_| io::Error::other("rcluster core is not running"))?
  }

  /// Sends a complete frame: written at once when nothing is queued ahead of
  /// it (see `direct`), else queued. Returns the bytes now queued for that
  /// worker: 0 when it was written at once (no `Sent` event follows).
  pub fn send(&self, id: u32, bytes: &[u8], fd: Option<OwnedFd>, token: Option<u32>) -> Result<usize, SendError> {
    let outbox = {
      let reg = self.registry.lock().unwrap();
      match reg.get(&id) {
        Some(w) if w.open => w.outbox.clone(),
        _ => return Err(SendError::ChannelClosed),
      }
    };
    match outbox.send(bytes, fd.map(Arc::new), token) {
      Sent::Now => Ok(0),
      Sent::Queued(total) => Ok(total),
      Sent::Closed => Err(SendError::ChannelClosed),
      Sent::ViaCore(frame, total) => {
        self
          .tx
          .send(Msg::Send { id, frame })
          .map_err(|_| SendError::ChannelClosed)?;
        Ok(total)
      }
    }
  }

  /// `worker.disconnect()`: ask the worker to close its servers and
  /// disconnect; forget its server handles now, as Node does. Should the
  /// primary die meanwhile, the reaper lets it finish for `grace`.
  pub fn disconnect(&self, id: u32, grace: Duration) {
    // Later sends must not overtake the core's `disconnect` message.
    if let Some(w) = self.registry.lock().unwrap().get(&id) {
      w.outbox.stop_direct();
    }
    let _ = self.tx.send(Msg::Disconnect { id, grace });
  }

  /// The grace of workers that leave by themselves (their channel closed).
  pub fn set_kill_timeout(&self, grace: Duration) {
    let _ = self.tx.send(Msg::SetKillTimeout(grace));
  }

  /// Waits (at most `limit`) until what JS asked for so far is handled and
  /// every open channel's queue is written out: a primary that calls
  /// `disconnect()` and exits at once must still reach its workers, as
  /// Node's synchronous pipe writes do.
  pub fn flush(&self, limit: Duration) {
    let deadline = Instant::now() + limit;
    let (reply, done) = std::sync::mpsc::sync_channel(1);
    if self.tx.send(Msg::Barrier(reply)).is_err() || done.recv_timeout(limit).is_err() {
      return;
    }
    while Instant::now() < deadline {
      let pending = {
        let reg = self.registry.lock().unwrap();
        reg
          .values()
          .any(|w| w.open && w.outbox.queued.load(Ordering::Relaxed) > 0)
      };
      if !pending {
        return;
      }
      std::thread::sleep(Duration::from_millis(1));
    }
  }

  /// `worker.process.disconnect()`: close the channel once queued messages
  /// are out.
  pub fn close_channel(&self, id: u32) {
    if let Some(w) = self.registry.lock().unwrap().get_mut(&id) {
      w.open = false;
    }
    let _ = self.tx.send(Msg::CloseChannel { id });
  }

  /// Signals the worker through its pidfd: never a recycled pid.
  pub fn kill(&self, id: u32, signal: i32) -> io::Result<()> {
    let pidfd = {
      let reg = self.registry.lock().unwrap();
      reg.get(&id).and_then(|w| w.pidfd.clone())
    };
    match pidfd {
      Some(fd) => spawn::pidfd_send_signal(fd.as_raw_fd(), signal),
      None => Err(io::Error::from_raw_os_error(libc::ESRCH)),
    }
  }

  pub fn set_policy(&self, policy: Policy) {
    let _ = self.tx.send(Msg::SetPolicy(policy));
  }

  pub fn set_sticky(&self, on: bool) {
    let _ = self.tx.send(Msg::SetSticky(on));
  }

  /// Makes a standby worker its slot's current one (a reload's successor).
  pub fn promote(&self, id: u32) {
    let _ = self.tx.send(Msg::Promote { id });
  }

  /// Stops restarting `slot` (its worker is retired on purpose, or the
  /// cluster shuts down); `forget` also drops its restart count (the slot
  /// itself is gone: scale-down).
  pub fn unsupervise(&self, slot: u32, forget: bool) {
    let _ = self.tx.send(Msg::Unsupervise { slot, forget });
  }

  /// Free, occupied and pending slots and restart counts, as the core sees
  /// them once every earlier call is handled.
  pub fn slots(&self) -> SlotView {
    let (reply, view) = std::sync::mpsc::sync_channel(1);
    if self.tx.send(Msg::Slots(reply)).is_err() {
      return SlotView::default();
    }
    view.recv().unwrap_or_default()
  }

  /// Starts (or moves) the metrics and health endpoint on `addr`; returns
  /// the address bound (port 0 picks one). A taken port is `AddrInUse`.
  pub fn start_metrics(&self, addr: std::net::SocketAddr) -> crate::metrics::Outcome {
    let (reply, result) = std::sync::mpsc::sync_channel(1);
    let gone = || crate::metrics::Failure::Listen(io::Error::other("rcluster core is not running"), addr);
    let bound = Box::new(move |r| {
      let _ = reply.send(r);
    });
    self
      .start_metrics_then(crate::metrics::Target::Addr(addr), bound)
      .map_err(|_| gone())?;
    result.recv().map_err(|_| gone())?
  }

  /// Starts (or moves) the endpoint without waiting: `bound` is called on
  /// the core thread once it is bound or has failed (never if it is stopped
  /// or moved first). Fails only when the core is not running.
  pub fn start_metrics_then(&self, target: crate::metrics::Target, bound: MetricsBound) -> io::Result<()> {
    let counters = self.counters.clone();
    (self.tx)
      .send(Msg::StartMetrics {
        target,
        counters,
        bound,
      })
      .map_err(|_| io::Error::other("rcluster core is not running"))
  }

  /// Closes the endpoint's listening socket.
  pub fn stop_metrics(&self) {
    let _ = self.tx.send(Msg::StopMetrics);
  }

  /// `cluster.reload()` was called: counted for `rcluster_reloads_total`.
  pub fn count_reload(&self) {
    self.counters.reloads.fetch_add(1, Ordering::Relaxed);
  }

  pub fn stats(&self, id: u32) -> Option<WorkerStats> {
    let (pid, handoffs) = {
      let reg = self.registry.lock().unwrap();
      let w = reg.get(&id)?;
      (w.pid, w.handoffs.load(Ordering::Relaxed))
    };
    Some(WorkerStats {
      pid,
      handoffs,
      usage: supervisor::usage(pid),
    })
  }
}

pub fn default_policy() -> Policy {
  if cfg!(target_os = "linux") {
    Policy::ReusePort
  } else {
    Policy::RoundRobin
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::framing::Serialization;
  use crate::spawn::StdioSpec;
  use std::sync::mpsc;

  /// Node only becomes a cluster worker when it runs a script file.
  fn node_worker(script: &str) -> SpawnSpec {
    let path = std::env::temp_dir().join(format!("rcluster-test-{}-{}.js", std::process::id(), script.len()));
    std::fs::write(&path, script).unwrap();
    SpawnSpec {
      file: "node".into(),
      args: vec![path.to_string_lossy().into_owned()],
      env: std::env::vars()
        .chain([("NODE_UNIQUE_ID".to_string(), "1".to_string())])
        .collect(),
      cwd: None,
      stdio: vec![
        StdioSpec::Ignore,
        StdioSpec::Inherit,
        StdioSpec::Inherit,
        StdioSpec::Ipc,
      ],
      uid: None,
      gid: None,
      serialization: Serialization::Json,
      death_signal: false,
    }
  }

  fn collect(core: &Core, id: u32, spec: SpawnSpec) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    core
      .fork(
        id,
        spec,
        Arc::new(move |_, e| {
          let _ = tx.lock().unwrap().send(e);
        }),
        None,
        false,
      )
      .unwrap();
    rx
  }

  fn next(rx: &mpsc::Receiver<Event>) -> Event {
    rx.recv_timeout(Duration::from_secs(20)).expect("no event in time")
  }

  /// A real Node worker goes online, listens through the primary, answers a
  /// TCP client on the reuseport socket it was given, and exits cleanly on
  /// `disconnect`.
  #[test]
  fn node_worker_lifecycle() {
    let core = Core::start().unwrap();
    let rx = collect(
      &core,
      1,
      node_worker("require('net').createServer(s => s.end('hi')).listen(0, '127.0.0.1')"),
    );
    let first = next(&rx);
    assert!(matches!(first, Event::Online), "{first:?}");
    let port = match next(&rx) {
      Event::Listening(info) => info["port"].as_u64().unwrap() as u16,
      e => panic!("unexpected {e:?}"),
    };
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert_eq!(out, "hi");
    drop(s); // server.close() in the worker waits for open connections
    core.disconnect(1, DEFAULT_KILL_TIMEOUT);
    assert!(matches!(next(&rx), Event::Disconnect));
    match next(&rx) {
      Event::Exit { code, signal, .. } => assert_eq!((code, signal), (Some(0), None)),
      e => panic!("unexpected {e:?}"),
    }
  }

  #[test]
  fn garbage_disconnects_the_worker_only() {
    let core = Core::start().unwrap();
    let rx = collect(
      &core,
      7,
      // Garbage that looks internal: the core parses it (JS judges other frames).
      node_worker("require('fs').writeSync(process.channel.fd, '{not json NODE_\\n'); setTimeout(() => {}, 5000)"),
    );
    let mut saw_error = false;
    loop {
      match next(&rx) {
        Event::Error { code, .. } => {
          assert_eq!(code, "ERR_RCLUSTER_BAD_MESSAGE");
          saw_error = true;
        }
        Event::Exit { .. } => break,
        _ => {}
      }
    }
    assert!(saw_error);
  }
}
