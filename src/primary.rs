//! The primary: one long-lived thread running a tokio runtime that owns every
//! worker's channel, the server handles and the hand-off state. All state
//! lives in one `State` driven by one message loop, so nothing is locked on the
//! hot path and the protocol reads top to bottom.
//!
//! The binding talks to it through `Core`; events for JS leave through each
//! worker's `EventSink`, which is dropped once the worker has both exited and
//! disconnected (that is what lets an idle Node primary exit). A supervised
//! worker shares its slot's sink, which lives as long as the slot is
//! supervised, so the core can restart the slot's worker by itself, without
//! waiting for JavaScript.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::channel::{self, OutFrame, ReaderEvent, Serialization, WriterCmd, WriterEvent};
use crate::direct::{Outbox, Sent};
use crate::dispatch::HandOff;
use crate::handles::{Deliver, Grant, Policy, Query, ServerHandle, VACANT_LINGER};
use crate::protocol::{self, Fields, Inbound};
use crate::reaper::Reaper;
use crate::sockets;
use crate::spawn::{self, ExitStatus, SpawnSpec};
use crate::supervisor::{self, Backoff, Decision, RestartPolicy, Usage};

/// How often supervised workers are checked for silence, memory and age.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);

/// How long an exited worker's `'exit'` waits for its channel to reach EOF,
/// so `'disconnect'` comes first as users expect. A grandchild holding the
/// channel open must not delay `'exit'` for ever.
const EXIT_WAITS_FOR_EOF: Duration = Duration::from_millis(200);

/// How long a worker asked to leave may take before it is SIGKILLed, unless
/// JS says otherwise (`killTimeout`). The reaper honours it too.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Events for JS, per worker.
#[derive(Debug)]
pub enum Event {
  Online,
  /// `{addressType, address, port, fd}` from the worker's `listening` act.
  Listening(Value),
  /// A user message: one frame's payload (for a message that came with a
  /// handle, the whole `NODE_HANDLE` envelope).
  Message {
    frame: Vec<u8>,
    handle: Option<Received>,
  },
  ExitedAfterDisconnect,
  Disconnect,
  /// `then` is what supervision does about it (`Restarting`/`CrashLoop`),
  /// carried in the same event so JS learns both at once.
  Exit {
    code: Option<i32>,
    signal: Option<String>,
    then: Option<Box<Event>>,
  },
  Error {
    message: String,
    code: String,
  },
  Sent {
    token: u32,
    error: Option<String>,
  },
  /// An internal message JS answers: Node's socket-list queries, and
  /// rcluster messages other than heartbeats (which the core consumes).
  Internal(Value),
  /// The core started this worker by itself, to replace a crashed or hung
  /// worker of `slot`.
  Forked {
    slot: u32,
    pid: i32,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
  },
  /// This (crashed) worker's slot will be restarted after `delay`.
  Restarting {
    slot: u32,
    delay: Duration,
  },
  /// The replacement for this (dead) worker could not be spawned; `errno`
  /// is negative, as in `ForkResult`. Counts as a crash of the slot.
  RestartFailed {
    slot: u32,
    errno: i32,
  },
  /// This worker's slot crashed too often and will not be restarted.
  CrashLoop {
    slot: u32,
    crashes: u32,
  },
  /// No heartbeat for `silent`: the worker is killed and replaced.
  Unresponsive {
    silent: Duration,
  },
  /// The worker passed `maxMemory` or `maxAge`; JS replaces it gracefully.
  Recycle {
    reason: &'static str,
  },
}

#[derive(Debug)]
pub struct Received {
  pub fd: OwnedFd,
  /// The sender's `type` (`net.Socket`, `net.Server`, `net.Native`, …).
  pub handle_type: String,
  /// What the fd is (`tcp`, `tcp-server`, `pipe`, `pipe-server`, `udp4`, …).
  pub socket: &'static str,
}

/// Receives `(worker id, event)`; shared by all workers of a slot.
pub type EventSink = Arc<dyn Fn(u32, Event) + Send + Sync>;

/// How a worker is supervised (see `supervisor`).
#[derive(Clone, Debug, Default)]
pub struct Supervision {
  pub slot: u32,
  /// Restart after crashes; `None`: no restarts.
  pub restart: Option<RestartPolicy>,
  /// Kill and replace a worker that sent heartbeats and then fell silent.
  pub hang_timeout: Option<Duration>,
  pub max_memory: Option<u64>,
  pub max_age: Option<Duration>,
}

impl Supervision {
  fn watched(&self) -> bool {
    self.hang_timeout.is_some() || self.max_memory.is_some() || self.max_age.is_some()
  }
}

pub struct ForkInfo {
  pub pid: i32,
  pub stdin: Option<OwnedFd>,
  pub stdout: Option<OwnedFd>,
  pub stderr: Option<OwnedFd>,
  /// Pipes at stdio index 3 and up.
  pub extra: Vec<(usize, OwnedFd)>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
  /// The worker is gone or its channel is closed.
  ChannelClosed,
}

/// What the binding needs synchronously, without a round trip to the core.
struct WorkerShared {
  outbox: Arc<Outbox>,
  pidfd: Option<Arc<OwnedFd>>,
  open: bool,
  pid: i32,
  handoffs: Arc<AtomicU64>,
}

/// `cluster.stats()` for one worker.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
  pub pid: i32,
  pub handoffs: u64,
  pub usage: Option<Usage>,
}

type Registry = Arc<Mutex<HashMap<u32, WorkerShared>>>;

enum Msg {
  Fork {
    id: u32,
    spec: SpawnSpec,
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
  },
  Respawn {
    slot: u32,
  },
  Tick,
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
  Read {
    id: u32,
    event: ReaderEvent,
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
}

/// The binding's handle on the core thread.
pub struct Core {
  tx: UnboundedSender<Msg>,
  registry: Registry,
  next_id: Arc<AtomicU32>,
}

impl Core {
  pub fn start() -> io::Result<Core> {
    let (tx, rx) = unbounded_channel();
    let registry: Registry = Arc::default();
    let next_id = Arc::new(AtomicU32::new(1));
    let state = State {
      tx: tx.clone(),
      registry: registry.clone(),
      next_id: next_id.clone(),
      slots: HashMap::new(),
      watchdog: false,
      reaper: None,
      reaper_tried: false,
      kill_timeout: DEFAULT_KILL_TIMEOUT,
      policy: default_policy(),
      workers: HashMap::new(),
      handles: HashMap::new(),
      generations: HashMap::new(),
      next_generation: 0,
      seq: 0,
      handoffs: HashMap::new(),
    };
    // This thread lives as long as the process: workers are spawned from it,
    // and PR_SET_PDEATHSIG follows the spawning thread.
    std::thread::Builder::new()
      .name("rcluster-core".into())
      .spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
          .enable_all()
          .build()
          .expect("rcluster: cannot start the core runtime");
        rt.block_on(state.run(rx));
      })?;
    Ok(Core { tx, registry, next_id })
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
        spec,
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

  /// Makes a standby worker its slot's current one (a reload's successor).
  pub fn promote(&self, id: u32) {
    let _ = self.tx.send(Msg::Promote { id });
  }

  pub fn unsupervise(&self, slot: u32) {
    let _ = self.tx.send(Msg::Unsupervise { slot });
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

struct Worker {
  mode: Serialization,
  pid: i32,
  /// How it was started, for a supervised successor.
  spec: SpawnSpec,
  sink: EventSink,
  supervision: Option<Supervision>,
  started: Instant,
  last_heartbeat: Option<Instant>,
  /// Unresponsive or recycling was reported (once per worker).
  flagged: bool,
  /// Killed as unresponsive: restart at once, whatever the backoff says.
  replace_now: bool,
  handoffs: Arc<AtomicU64>,
  writer: UnboundedSender<WriterCmd>,
  /// Where frames for the writer go (JS writes past it when it can).
  outbox: Arc<Outbox>,
  channel: Arc<AsyncFd<OwnedFd>>,
  connected: bool,
  writer_done: bool,
  exit: Option<ExitStatus>,
  exit_emitted: bool,
  /// Set by `worker.disconnect()` or the worker's `exitedAfterDisconnect`:
  /// no new servers, no new connections.
  leaving: bool,
  keys: HashSet<String>,
  unanswered: usize,
}

/// A supervised position in the cluster.
struct Slot {
  spec: SpawnSpec,
  sink: EventSink,
  supervision: Supervision,
  backoff: Option<Backoff>,
  /// The worker now occupying the slot (during a reload, the newest).
  current: u32,
  /// A restart is scheduled.
  pending: bool,
}

struct State {
  tx: UnboundedSender<Msg>,
  registry: Registry,
  next_id: Arc<AtomicU32>,
  slots: HashMap<u32, Slot>,
  watchdog: bool,
  /// Started with the first worker; `None` if it could not be (then workers
  /// get a parent-death signal instead).
  reaper: Option<Reaper>,
  reaper_tried: bool,
  /// For workers that leave by themselves.
  kill_timeout: Duration,
  policy: Policy,
  workers: HashMap<u32, Worker>,
  handles: HashMap<String, ServerHandle>,
  /// Round-robin listeners report accepted connections by generation, so a
  /// late batch from a closed listener never lands in a new one.
  generations: HashMap<u64, String>,
  next_generation: u64,
  seq: u64,
  handoffs: HashMap<u64, HandOff>,
}

impl State {
  async fn run(mut self, mut rx: UnboundedReceiver<Msg>) {
    while let Some(msg) = rx.recv().await {
      self.handle(msg);
    }
  }

  fn handle(&mut self, msg: Msg) {
    match msg {
      Msg::Fork {
        id,
        spec,
        sink,
        supervision,
        standby,
        reply,
      } => {
        let result = self.fork(id, spec.clone(), sink.clone(), supervision.clone());
        if let (Ok(_), Some(sup), false) = (&result, supervision, standby) {
          self.supervise(id, spec, sink, sup);
        }
        let _ = reply.send(result);
      }
      Msg::Promote { id } => {
        if let Some(w) = self.workers.get(&id) {
          if let Some(sup) = w.supervision.clone() {
            let (spec, sink) = (w.spec.clone(), w.sink.clone());
            self.supervise(id, spec, sink, sup);
          }
        }
      }
      Msg::Unsupervise { slot } => {
        self.slots.remove(&slot);
      }
      Msg::Respawn { slot } => self.respawn(slot),
      Msg::Tick => self.watch(),
      Msg::Send { id, frame } => {
        if let Some(w) = self.workers.get(&id) {
          w.outbox.forward(frame);
        }
      }
      Msg::Disconnect { id, grace } => self.disconnect(id, grace),
      Msg::SetKillTimeout(grace) => self.kill_timeout = grace,
      Msg::Barrier(reply) => {
        let _ = reply.send(());
      }
      Msg::CloseChannel { id } => self.write(id, WriterCmd::Close),
      Msg::SetPolicy(p) => self.policy = p,
      Msg::Read {
        id,
        event: ReaderEvent::Message(m),
      } => self.on_message(id, m),
      Msg::Read {
        id,
        event: ReaderEvent::End { error },
      } => self.on_channel_end(id, error),
      Msg::Written { id, token, error } => self.emit(id, Event::Sent { token, error }),
      Msg::WriterDone { id } => {
        if let Some(w) = self.workers.get_mut(&id) {
          w.writer_done = true;
        }
        self.maybe_forget(id);
      }
      Msg::Exited { id, status } => self.on_exit(id, status),
      Msg::ExitDeadline { id } => self.emit_exit(id),
      Msg::Accepted { generation, conns } => {
        if let Some(key) = self.generations.get(&generation).cloned() {
          if let Some(d) = self.handles.get_mut(&key).and_then(ServerHandle::dispatcher) {
            d.backlog.extend(conns.into_iter().map(Arc::new));
            self.distribute(&key);
          }
        }
      }
      Msg::Linger { key } => {
        if self.slots.values().any(|s| s.pending) {
          // A restart is coming: hold the sockets (and their queues) for it.
          let tx = self.tx.clone();
          tokio::spawn(async move {
            tokio::time::sleep(VACANT_LINGER).await;
            let _ = tx.send(Msg::Linger { key });
          });
          return;
        }
        if let Some(h) = self.handles.get_mut(&key) {
          h.expire_vacancies(std::time::Instant::now());
          if h.workers.is_empty() {
            self.drop_handle(&key);
          } else {
            self.distribute(&key);
          }
        }
      }
    }
  }

  fn fork(
    &mut self,
    id: u32,
    mut spec: SpawnSpec,
    sink: EventSink,
    supervision: Option<Supervision>,
  ) -> io::Result<ForkInfo> {
    let mode = spec.serialization;
    spec.env.retain(|(k, _)| k != "NODE_UNIQUE_ID");
    spec.env.push(("NODE_UNIQUE_ID".into(), id.to_string()));
    self.ensure_reaper();
    spec.death_signal = self.reaper.is_none();
    let s = spawn::spawn(&spec)?;
    if let (Some(r), Some(fd)) = (&self.reaper, &s.pidfd) {
      let _ = r.add(id, fd.as_raw_fd());
    }
    let kept_spec = spec.clone();
    let channel = Arc::new(channel::register(
      s.channel,
      tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
    )?);
    let (writer_tx, writer_rx) = unbounded_channel();
    let outbox = Arc::new(Outbox::new(channel.clone(), writer_tx.clone()));

    let tx = self.tx.clone();
    tokio::spawn(channel::read_loop(channel.clone(), mode, move |event| {
      let _ = tx.send(Msg::Read { id, event });
    }));
    let tx = self.tx.clone();
    let done = self.tx.clone();
    let writer_outbox = outbox.clone();
    let writer_channel = channel.clone();
    tokio::spawn(async move {
      channel::write_loop(
        writer_channel,
        writer_rx,
        writer_outbox,
        move |WriterEvent::Written { token, error }| {
          let _ = tx.send(Msg::Written { id, token, error });
        },
      )
      .await;
      let _ = done.send(Msg::WriterDone { id });
    });
    let pidfd = s.pidfd.map(Arc::new);
    let watch_fd = pidfd.as_ref().and_then(|fd| sockets::dup_fd(fd.as_raw_fd()).ok());
    let tx = self.tx.clone();
    let pid = s.pid;
    tokio::spawn(async move {
      let status = spawn::wait_exit(pid, watch_fd).await;
      let _ = tx.send(Msg::Exited { id, status });
    });

    let handoffs = Arc::new(AtomicU64::new(0));
    self.registry.lock().unwrap().insert(
      id,
      WorkerShared {
        outbox: outbox.clone(),
        pidfd,
        open: true,
        pid,
        handoffs: handoffs.clone(),
      },
    );
    if supervision.as_ref().is_some_and(Supervision::watched) && !self.watchdog {
      self.watchdog = true;
      let tx = self.tx.clone();
      tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCHDOG_TICK);
        while tx.send(Msg::Tick).is_ok() {
          tick.tick().await;
        }
      });
    }
    self.workers.insert(
      id,
      Worker {
        mode,
        pid,
        spec: kept_spec,
        sink,
        supervision,
        started: Instant::now(),
        last_heartbeat: None,
        flagged: false,
        replace_now: false,
        handoffs,
        writer: writer_tx,
        outbox,
        channel,
        connected: true,
        writer_done: false,
        exit: None,
        exit_emitted: false,
        leaving: false,
        keys: HashSet::new(),
        unanswered: 0,
      },
    );
    Ok(ForkInfo {
      pid: s.pid,
      stdin: s.stdin,
      stdout: s.stdout,
      stderr: s.stderr,
      extra: s.extra,
    })
  }

  fn ensure_reaper(&mut self) {
    if self.reaper.is_some() || self.reaper_tried {
      return;
    }
    self.reaper_tried = true;
    if let Ok(r) = Reaper::start() {
      // It only exits once the primary is gone; if something kills it
      // earlier, it must not stay a zombie.
      let pid = r.pid;
      if let Ok(fd) = spawn::pidfd_open(pid) {
        tokio::spawn(spawn::wait_exit(pid, Some(fd)));
      }
      self.reaper = Some(r);
    }
  }

  fn emit(&self, id: u32, event: Event) {
    if let Some(w) = self.workers.get(&id) {
      (w.sink)(id, event);
    }
  }

  fn write(&self, id: u32, cmd: WriterCmd) {
    if let Some(w) = self.workers.get(&id) {
      let _ = w.writer.send(cmd);
    }
  }

  /// Sends an internal message, optionally with an fd.
  fn send_internal(&self, id: u32, msg: Value, fd: Option<Arc<OwnedFd>>) {
    if let Some(w) = self.workers.get(&id) {
      if !w.connected {
        return;
      }
      let bytes = protocol::encode(w.mode, &msg);
      w.outbox.push(OutFrame { bytes, fd, token: None });
    }
  }

  fn next_seq(&mut self) -> u64 {
    let s = self.seq;
    self.seq += 1;
    s
  }

  fn send_cluster(&mut self, id: u32, fields: Value, fd: Option<(Arc<OwnedFd>, &str)>) -> u64 {
    let seq = self.next_seq();
    let msg = protocol::cluster_message(seq, fields);
    match fd {
      Some((fd, ty)) => self.send_internal(id, protocol::handle_envelope(ty, msg), Some(fd)),
      None => self.send_internal(id, msg, None),
    }
    seq
  }

  fn on_message(&mut self, id: u32, msg: Inbound) {
    match msg {
      Inbound::Cluster(f) => self.on_cluster(id, f),
      Inbound::NewconnReply { ack, accepted } => self.on_newconn_reply(ack, accepted),
      Inbound::HandleAck => self.write(id, WriterCmd::HandleAck),
      Inbound::HandleNack => self.write(id, WriterCmd::HandleNack),
      Inbound::Handle {
        envelope,
        handle_type,
        fd,
      } => match fd {
        Some(fd) => {
          self.send_internal(id, protocol::handle_ack(true), None);
          let socket = sockets::describe(fd.as_raw_fd());
          self.emit(
            id,
            Event::Message {
              frame: envelope,
              handle: Some(Received {
                fd,
                handle_type,
                socket,
              }),
            },
          );
        }
        None => self.send_internal(id, protocol::handle_ack(false), None),
      },
      Inbound::Rcluster(f) => {
        if f.get("act").and_then(Value::as_str) == Some("heartbeat") {
          if let Some(w) = self.workers.get_mut(&id) {
            w.last_heartbeat = Some(Instant::now());
          }
        } else {
          self.emit(id, Event::Internal(Value::Object(f)));
        }
      }
      Inbound::SocketList(f) => self.emit(id, Event::Internal(Value::Object(f))),
      Inbound::OtherInternal => {}
      Inbound::User(frame) => self.emit(id, Event::Message { frame, handle: None }),
      Inbound::Garbage(reason) => self.on_channel_end(id, Some(reason)),
    }
  }

  fn on_cluster(&mut self, id: u32, f: Fields) {
    let seq = protocol::seq(&f);
    match protocol::act(&f) {
      Some("online") => self.emit(id, Event::Online),
      Some("queryServer") => self.query_server(id, &f),
      Some("listening") => self.emit(id, Event::Listening(protocol::listening_info(&f))),
      Some("close") => {
        if let Some(key) = f.get("key").and_then(Value::as_str) {
          let key = key.to_owned();
          self.release(id, &key, true);
        }
      }
      Some("exitedAfterDisconnect") => {
        if let Some(w) = self.workers.get_mut(&id) {
          w.leaving = true;
        }
        self.reaper_leave(id, self.kill_timeout, false);
        self.emit(id, Event::ExitedAfterDisconnect);
        if let Some(seq) = seq {
          self.send_cluster(id, json!({ "ack": seq }), None);
        }
      }
      None => {
        // A reply: the only requests we make that expect one are `newconn`.
        if let Some(ack) = f.get("ack").and_then(Value::as_u64) {
          let accepted = f.get("accepted").and_then(Value::as_bool).unwrap_or(false);
          self.on_newconn_reply(ack, accepted);
        }
      }
      Some(_) => {}
    }
  }

  fn query_server(&mut self, id: u32, f: &Fields) {
    match self.workers.get(&id) {
      Some(w) if !w.leaving => {}
      _ => return,
    }
    let key = protocol::server_key(f);
    let ack = protocol::seq(f).unwrap_or(0);
    if !self.handles.contains_key(&key) {
      let generation = self.next_generation;
      let tx = self.tx.clone();
      let deliver: Deliver = Arc::new(move |conns| {
        let _ = tx.send(Msg::Accepted { generation, conns });
      });
      let created = Query::from_fields(f).and_then(|q| ServerHandle::create(q, self.policy, deliver));
      match created {
        Ok(h) => {
          self.generations.insert(generation, key.clone());
          self.next_generation += 1;
          self.handles.insert(key.clone(), h);
        }
        Err(errno) => {
          // Nothing is kept: the next worker asking tries again, as in Node.
          self.send_cluster(
            id,
            json!({ "errno": errno, "key": key, "ack": ack, "data": null }),
            None,
          );
          return;
        }
      }
    }
    let handle = self.handles.get_mut(&key).expect("just inserted");
    if handle.data.is_null() {
      if let Some(d) = f.get("data") {
        handle.data = d.clone();
      }
    }
    let data = handle.data.clone();
    let ty = handle.handle_type();
    match handle.add(id) {
      Ok(Grant::Handle(fd)) => {
        self.remember_key(id, &key);
        self.send_cluster(
          id,
          json!({ "errno": 0, "key": key, "ack": ack, "data": data }),
          Some((fd, ty)),
        );
      }
      Ok(Grant::RoundRobin { sockname }) => {
        self.remember_key(id, &key);
        let mut reply = json!({ "errno": 0, "key": key, "ack": ack, "data": data });
        if let Some(s) = sockname {
          reply["sockname"] = s;
        }
        self.send_cluster(id, reply, None);
        self.distribute(&key);
      }
      Err(errno) => {
        let empty = handle.workers.is_empty();
        if empty {
          self.drop_handle(&key);
        }
        self.send_cluster(
          id,
          json!({ "errno": errno, "key": key, "ack": ack, "data": null }),
          None,
        );
      }
    }
  }

  fn remember_key(&mut self, id: u32, key: &str) {
    if let Some(w) = self.workers.get_mut(&id) {
      w.keys.insert(key.to_owned());
    }
  }

  /// The worker no longer uses `key`. When it was the last one, the address
  /// is freed at once, as in Node — unless the worker crashed and will be
  /// restarted: then the sockets (and their queues) wait for the replacement.
  fn release(&mut self, id: u32, key: &str, graceful: bool) {
    let restarts = match self.workers.get_mut(&id) {
      Some(w) => {
        w.keys.remove(key);
        w.supervision
          .as_ref()
          .is_some_and(|s| s.restart.is_some() || s.hang_timeout.is_some())
      }
      None => false,
    };
    let Some(h) = self.handles.get_mut(key) else { return };
    let unused = h.remove(id);
    if unused && (graceful || !restarts) {
      self.drop_handle(key);
      return;
    }
    if unused || h.has_vacancies() {
      let tx = self.tx.clone();
      let key = key.to_owned();
      tokio::spawn(async move {
        tokio::time::sleep(VACANT_LINGER).await;
        let _ = tx.send(Msg::Linger { key });
      });
    }
    self.distribute(key);
  }

  fn drop_handle(&mut self, key: &str) {
    if self.handles.remove(key).is_some() {
      self.generations.retain(|_, k| k != key);
    }
  }

  fn release_all(&mut self, id: u32) {
    let (keys, graceful): (Vec<String>, bool) = match self.workers.get_mut(&id) {
      Some(w) => (w.keys.drain().collect(), w.leaving),
      None => return,
    };
    for key in keys {
      self.release(id, &key, graceful);
    }
    // Connections handed to this worker but not accepted go to the others.
    let mine: Vec<u64> = self
      .handoffs
      .iter()
      .filter(|(_, h)| h.worker == id)
      .map(|(s, _)| *s)
      .collect();
    let mut touched = HashSet::new();
    for seq in mine {
      let h = self.handoffs.remove(&seq).expect("listed above");
      if let Some(d) = self.handles.get_mut(&h.key).and_then(ServerHandle::dispatcher) {
        d.backlog.push_front(h.conn);
        touched.insert(h.key);
      }
    }
    if let Some(w) = self.workers.get_mut(&id) {
      w.unanswered = 0;
    }
    for key in touched {
      self.distribute(&key);
    }
  }

  /// Hands queued connections of `key` to available workers.
  fn distribute(&mut self, key: &str) {
    loop {
      let workers = &self.workers;
      let Some(d) = self.handles.get_mut(key).and_then(ServerHandle::dispatcher) else {
        return;
      };
      if d.backlog.is_empty() {
        return;
      }
      let pick = d.pick(|w| {
        workers
          .get(&w)
          .filter(|w| w.connected && !w.leaving && w.exit.is_none())
          .map(|w| w.unanswered)
      });
      let Some(worker) = pick else { return };
      let conn = d.backlog.pop_front().expect("checked non-empty");
      let seq = self.next_seq();
      if let Some(w) = self.workers.get(&worker) {
        let bytes = protocol::newconn_frame(w.mode, seq, key);
        w.outbox.push(OutFrame {
          bytes,
          fd: Some(conn.clone()),
          token: None,
        });
      }
      self.handoffs.insert(
        seq,
        HandOff {
          key: key.to_owned(),
          worker,
          conn,
        },
      );
      if let Some(w) = self.workers.get_mut(&worker) {
        w.unanswered += 1;
        w.handoffs.fetch_add(1, Ordering::Relaxed);
      }
    }
  }

  fn on_newconn_reply(&mut self, ack: u64, accepted: bool) {
    let Some(h) = self.handoffs.remove(&ack) else { return };
    if let Some(w) = self.workers.get_mut(&h.worker) {
      w.unanswered = w.unanswered.saturating_sub(1);
    }
    if !accepted {
      // The worker closed that server or is at maxConnections: try another.
      if let Some(d) = self.handles.get_mut(&h.key).and_then(ServerHandle::dispatcher) {
        d.backlog.push_back(h.conn);
      }
    }
    // Dropping an accepted `conn` closes the primary's copy.
    self.distribute(&h.key);
  }

  /// Tells the reaper before the worker learns it may leave: the worker
  /// counts on finishing even if the primary dies right after. With
  /// `keep_channel`, the reaper holds the channel open till then (see reaper).
  fn reaper_leave(&self, id: u32, grace: Duration, keep_channel: bool) {
    if let (Some(r), Some(w)) = (&self.reaper, self.workers.get(&id)) {
      if w.exit.is_none() {
        let channel = (keep_channel && w.connected).then(|| w.channel.as_raw_fd());
        let _ = r.leave(id, grace, channel);
      }
    }
  }

  fn disconnect(&mut self, id: u32, grace: Duration) {
    self.reaper_leave(id, grace, true);
    let Some(w) = self.workers.get_mut(&id) else { return };
    w.leaving = true;
    self.send_cluster(id, json!({ "act": "disconnect" }), None);
    self.release_all(id);
  }

  fn on_channel_end(&mut self, id: u32, error: Option<String>) {
    let Some(w) = self.workers.get_mut(&id) else { return };
    if !w.connected {
      return;
    }
    w.connected = false;
    let _ = w.writer.send(WriterCmd::Abort);
    if error.is_none() {
      // A clean close: the worker is on its way out (process.disconnect()).
      self.reaper_leave(id, self.kill_timeout, false);
    }
    let Some(w) = self.workers.get_mut(&id) else { return };
    // Refuse the rest of a broken stream at once.
    let _ = nix::sys::socket::shutdown(w.channel.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    if let Some(w) = self.registry.lock().unwrap().get_mut(&id) {
      w.open = false;
    }
    if let Some(message) = error {
      self.emit(
        id,
        Event::Error {
          message,
          code: "ERR_RCLUSTER_BAD_MESSAGE".into(),
        },
      );
    }
    self.release_all(id);
    self.emit(id, Event::Disconnect);
    if self.workers.get(&id).is_some_and(|w| w.exit.is_some()) {
      self.emit_exit(id);
    }
    self.maybe_forget(id);
  }

  fn on_exit(&mut self, id: u32, status: ExitStatus) {
    if let Some(r) = &self.reaper {
      let _ = r.remove(id);
    }
    if let Some(w) = self.registry.lock().unwrap().get_mut(&id) {
      // Reaped: the pidfd must not be used to signal any more.
      w.pidfd = None;
    }
    let Some(w) = self.workers.get_mut(&id) else { return };
    w.exit = Some(status);
    if w.connected {
      let tx = self.tx.clone();
      tokio::spawn(async move {
        tokio::time::sleep(EXIT_WAITS_FOR_EOF).await;
        let _ = tx.send(Msg::ExitDeadline { id });
      });
    } else {
      self.emit_exit(id);
    }
  }

  fn emit_exit(&mut self, id: u32) {
    let Some(w) = self.workers.get_mut(&id) else { return };
    if w.exit_emitted {
      return;
    }
    let Some(status) = w.exit.clone() else { return };
    w.exit_emitted = true;
    let signal = status.signal.map(spawn::signal_name);
    let then = self.after_exit(id).map(Box::new);
    self.emit(
      id,
      Event::Exit {
        code: status.code,
        signal,
        then,
      },
    );
    self.maybe_forget(id);
  }

  fn supervise(&mut self, id: u32, spec: SpawnSpec, sink: EventSink, sup: Supervision) {
    let slot = sup.slot;
    match self.slots.get_mut(&slot) {
      // A reload's successor, or a fork into a slot already supervised.
      Some(s) => {
        s.current = id;
        s.spec = spec;
        s.sink = sink;
        s.pending = false;
      }
      None => {
        let backoff = sup.restart.clone().map(Backoff::new);
        self.slots.insert(
          slot,
          Slot {
            spec,
            sink,
            supervision: sup,
            backoff,
            current: id,
            pending: false,
          },
        );
      }
    }
  }

  /// Decides what a supervised slot does when its worker is gone; returns
  /// the event that says so.
  fn after_exit(&mut self, id: u32) -> Option<Event> {
    let w = self.workers.get(&id)?;
    let slot_id = w.supervision.as_ref()?.slot;
    let (leaving, replace_now, uptime) = (w.leaving, w.replace_now, w.started.elapsed());
    let slot = self.slots.get_mut(&slot_id)?;
    if slot.current != id {
      return None; // replaced already (reload)
    }
    if leaving && !replace_now {
      // Deliberate: disconnect(), scale-down, shutdown.
      self.slots.remove(&slot_id);
      return None;
    }
    let decision = match (&mut slot.backoff, replace_now) {
      (_, true) => Decision::Restart { after: Duration::ZERO },
      (Some(b), false) => b.on_crash(Instant::now(), uptime),
      (None, false) => {
        self.slots.remove(&slot_id);
        return None;
      }
    };
    match decision {
      Decision::Restart { after } => {
        slot.pending = true;
        let tx = self.tx.clone();
        tokio::spawn(async move {
          tokio::time::sleep(after).await;
          let _ = tx.send(Msg::Respawn { slot: slot_id });
        });
        Some(Event::Restarting {
          slot: slot_id,
          delay: after,
        })
      }
      Decision::CrashLoop { crashes } => {
        self.slots.remove(&slot_id);
        Some(Event::CrashLoop { slot: slot_id, crashes })
      }
    }
  }

  /// Starts a replacement in `slot` with the slot's last spec.
  fn respawn(&mut self, slot_id: u32) {
    let Some(slot) = self.slots.get(&slot_id) else { return };
    if !slot.pending {
      return;
    }
    let (spec, sink, sup) = (slot.spec.clone(), slot.sink.clone(), slot.supervision.clone());
    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
    match self.fork(id, spec.clone(), sink.clone(), Some(sup.clone())) {
      Ok(info) => {
        self.supervise(id, spec, sink.clone(), sup);
        sink(
          id,
          Event::Forked {
            slot: slot_id,
            pid: info.pid,
            stdin: info.stdin,
            stdout: info.stdout,
            stderr: info.stderr,
          },
        );
      }
      Err(e) => {
        // Counts as a crash of the slot: try again after the backoff.
        let decision = match self.slots.get_mut(&slot_id).and_then(|s| s.backoff.as_mut()) {
          Some(b) => b.on_crash(Instant::now(), Duration::ZERO),
          None => Decision::CrashLoop { crashes: 1 },
        };
        let current = self.slots.get(&slot_id).map(|s| s.current).unwrap_or(0);
        sink(
          current,
          Event::RestartFailed {
            slot: slot_id,
            errno: -e.raw_os_error().unwrap_or(libc::EINVAL),
          },
        );
        match decision {
          Decision::Restart { after } => {
            sink(
              current,
              Event::Restarting {
                slot: slot_id,
                delay: after,
              },
            );
            let tx = self.tx.clone();
            tokio::spawn(async move {
              tokio::time::sleep(after).await;
              let _ = tx.send(Msg::Respawn { slot: slot_id });
            });
          }
          Decision::CrashLoop { crashes } => {
            sink(current, Event::CrashLoop { slot: slot_id, crashes });
            self.slots.remove(&slot_id);
          }
        }
      }
    }
  }

  /// Hang detection and recycling checks for supervised workers.
  fn watch(&mut self) {
    let now = Instant::now();
    let mut hung = Vec::new();
    let mut recycle = Vec::new();
    for (id, w) in &mut self.workers {
      let Some(sup) = &w.supervision else { continue };
      if w.flagged || w.exit.is_some() || w.leaving {
        continue;
      }
      if let (Some(limit), Some(last)) = (sup.hang_timeout, w.last_heartbeat) {
        if now.duration_since(last) > limit {
          w.flagged = true;
          w.replace_now = true;
          hung.push((*id, now.duration_since(last)));
          continue;
        }
      }
      if sup.max_age.is_some_and(|age| now.duration_since(w.started) > age) {
        w.flagged = true;
        recycle.push((*id, "age"));
        continue;
      }
      if let Some(max) = sup.max_memory {
        if supervisor::usage(w.pid).is_some_and(|u| u.rss_bytes > max) {
          w.flagged = true;
          recycle.push((*id, "memory"));
        }
      }
    }
    for (id, silent) in hung {
      self.emit(id, Event::Unresponsive { silent });
      let pidfd = self.registry.lock().unwrap().get(&id).and_then(|w| w.pidfd.clone());
      if let Some(fd) = pidfd {
        let _ = spawn::pidfd_send_signal(fd.as_raw_fd(), libc::SIGKILL);
      }
    }
    for (id, reason) in recycle {
      self.emit(id, Event::Recycle { reason });
    }
  }

  /// Drops everything of a worker that has exited and disconnected; its
  /// event sink goes with it.
  fn maybe_forget(&mut self, id: u32) {
    let done = self
      .workers
      .get(&id)
      .is_some_and(|w| w.exit_emitted && !w.connected && w.writer_done);
    if done {
      self.release_all(id);
      self.workers.remove(&id);
      self.registry.lock().unwrap().remove(&id);
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
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
    let e = rx.recv_timeout(Duration::from_secs(20)).expect("no event in time");
    e
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
      node_worker("require('fs').writeSync(process.channel.fd, '{not json\\n'); setTimeout(() => {}, 5000)"),
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
