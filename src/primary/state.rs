//! The core's loop: one `State` that routes each `Msg` to the owner of what
//! it is about — a worker's `Session`, the `Servers`, the `Slots` — and acts
//! on the decisions they return (writing to channels, emitting events,
//! scheduling timers). What workers say on their channels is in `acts`.
//! Everything runs on one thread, so nothing here locks on the hot path
//! except the registry the binding reads.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::events::{Event, EventSink, ExitDecision, ForkInfo};
use super::servers::Servers;
use super::session::{ExitReport, Session};
use super::slots::Slots;
use super::timers::{TimerKey, Timers};
use super::{default_policy, Msg, Registry, DEFAULT_KILL_TIMEOUT};
use crate::channel::{ReaderEvent, WriterCmd};
use crate::handles::VACANT_LINGER;
use crate::protocol;
use crate::reaper::Reaper;
use crate::spawn::{self, SpawnSpec};
use crate::supervisor::{Supervision, Verdict};

/// How often supervised workers are checked for silence, memory and age.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);

/// How long an exited worker's `'exit'` waits for its channel to reach EOF,
/// so `'disconnect'` comes first as users expect. A grandchild holding the
/// channel open must not delay `'exit'` for ever.
const EXIT_WAITS_FOR_EOF: Duration = Duration::from_millis(200);

/// The reaper is started with the first worker; if it cannot be, workers get
/// a parent-death signal instead.
enum ReaperState {
  Untried,
  Running(Reaper),
  Unavailable,
}

pub struct State {
  pub(super) tx: UnboundedSender<Msg>,
  registry: Registry,
  next_id: Arc<AtomicU32>,
  pub(super) sessions: HashMap<u32, Session>,
  pub(super) servers: Servers,
  pub(super) slots: Slots,
  pub(super) timers: Timers,
  reaper: ReaperState,
  /// The queue watcher's ticks, while a reuseport group may exist.
  pub(super) load_tick: Option<super::stalls::LoadTicker>,
  /// For workers that leave by themselves.
  pub(super) kill_timeout: Duration,
  /// The metrics and health endpoint, when one was asked for.
  metrics: Option<crate::metrics::Endpoint>,
}

impl State {
  pub fn new(tx: UnboundedSender<Msg>, registry: Registry, next_id: Arc<AtomicU32>) -> Self {
    State {
      timers: Timers::new(tx.clone()),
      tx,
      registry,
      next_id,
      sessions: HashMap::new(),
      servers: Servers::new(default_policy()),
      slots: Slots::default(),
      reaper: ReaperState::Untried,
      load_tick: None,
      kill_timeout: DEFAULT_KILL_TIMEOUT,
      metrics: None,
    }
  }

  pub async fn run(mut self, mut rx: UnboundedReceiver<Msg>) {
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
        let result = self.fork(id, (*spec).clone(), sink.clone(), supervision.clone());
        if let (Ok(_), Some(sup), false) = (&result, supervision, standby) {
          self.slots.supervise(id, *spec, sink, sup);
        }
        let _ = reply.send(result);
      }
      Msg::Promote { id } => {
        if let Some(w) = self.sessions.get(&id) {
          if let Some(sup) = w.supervision.clone() {
            let slot = sup.slot;
            self.slots.supervise(id, w.spec.clone(), w.sink.clone(), sup);
            self.slots.set_serves(slot, w.observed.listening.clone());
          }
        }
      }
      Msg::Unsupervise { slot, forget } => {
        self.timers.cancel(&TimerKey::Respawn(slot));
        if forget {
          self.slots.forget(slot);
        } else {
          self.slots.unsupervise(slot);
        }
      }
      Msg::Slots(reply) => {
        let live = self.sessions.values().filter(|w| w.life.holds_slot());
        let _ = reply.send(
          self
            .slots
            .view(live.filter_map(|w| w.supervision.as_ref().map(|s| s.slot))),
        );
      }
      Msg::Respawn { slot } => {
        self.timers.fired(&TimerKey::Respawn(slot));
        self.respawn(slot);
      }
      Msg::Tick => {
        self.timers.fired(&TimerKey::Watchdog);
        self.watch();
        self.arm_watchdog(WATCHDOG_TICK);
      }
      Msg::Snapshot(reply) => {
        let _ = reply.send(self.snapshot());
      }
      Msg::StartMetrics {
        target,
        counters,
        bound,
      } => {
        let tx = self.tx.clone();
        let ask: crate::metrics::Ask = Arc::new(move |reply| tx.send(Msg::Snapshot(reply)).is_ok());
        // The old endpoint is closed before the new one binds: its port may be reused.
        let previous = self.metrics.take();
        self.metrics = Some(crate::metrics::start(target, ask, counters, previous, bound));
      }
      Msg::StopMetrics => self.metrics = None,
      Msg::LoadTick => self.watch_load(),
      // Counted by the outbox when JS sent it: hand it to the writer as is.
      Msg::Send { id, frame } => {
        let lost = self
          .sessions
          .get(&id)
          .and_then(|w| w.channel.outbox.forward(frame).err());
        // The writer ended meanwhile: the send fails as any send on a closed channel.
        if let Some(token) = lost.and_then(|f| f.token) {
          let error = Some("channel closed".to_owned());
          self.emit(id, Event::Sent { token, error });
        }
      }
      Msg::Disconnect { id, grace } => self.disconnect(id, grace),
      Msg::SetKillTimeout(grace) => self.kill_timeout = grace,
      Msg::Barrier(reply) => {
        let _ = reply.send(());
      }
      Msg::CloseChannel { id } => self.write(id, WriterCmd::Close),
      Msg::SetPolicy(p) => self.servers.policy = p,
      Msg::SetSticky(on) => self.servers.sticky = on,
      Msg::Read {
        id,
        event: ReaderEvent::Message(m),
      } => self.on_message(id, m),
      Msg::Read {
        id,
        event: ReaderEvent::End { error },
      } => self.on_channel_end(id, error),
      Msg::Forwarded { id, event, in_core } => {
        self.handle(Msg::Read { id, event });
        crate::handover::handled(&in_core);
      }
      Msg::Written { id, token, error } => self.emit(id, Event::Sent { token, error }),
      Msg::WriterDone { id } => {
        if let Some(w) = self.sessions.get_mut(&id) {
          w.channel.writer_done = true;
        }
        self.maybe_forget(id);
      }
      Msg::Exited { id, status } => self.on_exit(id, status),
      Msg::ExitDeadline { id } => {
        self.timers.fired(&TimerKey::ExitDeadline(id));
        if let Some(report) = self.sessions.get_mut(&id).and_then(|w| w.life.eof_overdue()) {
          self.report_exit(id, report);
        }
      }
      Msg::Accepted { generation, conns } => {
        if let Some(key) = self.servers.accepted(generation, conns) {
          self.distribute(&key);
        }
      }
      Msg::Linger { key } => {
        if self.slots.any_pending() {
          // A restart is coming: hold the sockets (and their queues) for it.
          self.timers.after(VACANT_LINGER, Msg::Linger { key });
        } else if self.servers.linger_over(&key) {
          self.distribute(&key);
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
  ) -> std::io::Result<ForkInfo> {
    spec.env.retain(|(k, _)| k != "NODE_UNIQUE_ID");
    spec.env.push(("NODE_UNIQUE_ID".into(), id.to_string()));
    self.ensure_reaper();
    let reaper = match &self.reaper {
      ReaperState::Running(r) => Some(r),
      _ => None,
    };
    spec.death_signal = reaper.is_none();
    let watched = supervision.as_ref().is_some_and(Supervision::watched);
    // Round-robin's hand-off answers come once per connection: read on the
    // JS thread, each would wake it and cross back to the core, costing
    // more than the messages save. So under RR the core reads.
    let js_may_read = self.servers.policy != crate::handles::Policy::RoundRobin;
    let started = Session::start(id, spec, sink, supervision, js_may_read, &self.tx, |pidfd| {
      if let Some(r) = reaper {
        let _ = r.add(id, pidfd.as_raw_fd());
      }
    })?;
    self.registry.lock().unwrap().insert(id, started.shared);
    self.sessions.insert(id, started.session);
    if watched && !self.timers.is_scheduled(&TimerKey::Watchdog) {
      self.arm_watchdog(Duration::ZERO);
    }
    Ok(started.info)
  }

  fn ensure_reaper(&mut self) {
    if let ReaperState::Untried = self.reaper {
      self.reaper = match Reaper::start() {
        Ok(r) => {
          // It only exits once the primary is gone; if something kills it
          // earlier, it must not stay a zombie.
          let pid = r.pid;
          if let Ok(fd) = spawn::pidfd_open(pid) {
            tokio::spawn(spawn::wait_exit(pid, Some(fd)));
          }
          ReaperState::Running(r)
        }
        Err(_) => ReaperState::Unavailable,
      };
    }
  }

  pub(super) fn emit(&self, id: u32, event: Event) {
    if let Some(w) = self.sessions.get(&id) {
      (w.sink)(id, event);
    }
  }

  pub(super) fn write(&self, id: u32, cmd: WriterCmd) {
    if let Some(w) = self.sessions.get(&id) {
      w.channel.command(cmd);
    }
  }

  /// Sends an internal message, optionally with an fd.
  pub(super) fn send_internal(&self, id: u32, msg: &Value, fd: Option<Arc<OwnedFd>>) {
    if let Some(w) = self.sessions.get(&id).filter(|w| w.life.connected()) {
      w.channel.frame(protocol::encode(w.mode, msg), fd);
    }
  }

  /// Sends a `NODE_CLUSTER` message that expects no answer.
  pub(super) fn send_cluster(&mut self, id: u32, fields: Value, fd: Option<(Arc<OwnedFd>, &str)>) {
    let Some(w) = self.sessions.get_mut(&id) else { return };
    let msg = protocol::cluster_message(w.pending.next_seq(), fields);
    match fd {
      Some((fd, ty)) => self.send_internal(id, &protocol::handle_envelope(ty, msg), Some(fd)),
      None => self.send_internal(id, &msg, None),
    }
  }

  /// Tells the reaper before the worker learns it may leave: the worker
  /// counts on finishing even if the primary dies right after. With
  /// `keep_channel`, the reaper holds the channel open till then (see reaper).
  pub(super) fn reaper_leave(&self, id: u32, grace: Duration, keep_channel: bool) {
    if let (ReaperState::Running(r), Some(w)) = (&self.reaper, self.sessions.get(&id)) {
      if w.life.alive() {
        let channel = (keep_channel && w.life.connected()).then(|| w.channel.sock.as_raw_fd());
        let _ = r.leave(id, grace, channel);
      }
    }
  }

  fn disconnect(&mut self, id: u32, grace: Duration) {
    self.reaper_leave(id, grace, true);
    let Some(w) = self.sessions.get_mut(&id) else { return };
    w.life.leave(true);
    let left = w.life.leaving();
    self.send_cluster(id, json!({ "act": "disconnect" }), None);
    self.release_all(id, left);
  }

  pub(super) fn on_channel_end(&mut self, id: u32, error: Option<String>) {
    let Some(w) = self.sessions.get_mut(&id) else { return };
    let left = w.life.leaving();
    let Some(then_exit) = w.life.channel_closed() else {
      return;
    };
    w.channel.command(WriterCmd::Abort);
    if error.is_none() {
      // A clean close: the worker is on its way out (process.disconnect()).
      self.reaper_leave(id, self.kill_timeout, false);
    }
    if let Some(w) = self.sessions.get(&id) {
      w.channel.shutdown();
    }
    if let Some(w) = self.registry.lock().unwrap().get_mut(&id) {
      w.open = false;
    }
    if let Some(message) = error {
      let code = "ERR_RCLUSTER_BAD_MESSAGE".into();
      self.emit(id, Event::Error { message, code });
    }
    self.release_all(id, left);
    self.emit(id, Event::Disconnect);
    match then_exit {
      Some(report) => self.report_exit(id, report),
      None => self.maybe_forget(id),
    }
  }

  fn on_exit(&mut self, id: u32, status: spawn::ExitStatus) {
    if let ReaperState::Running(r) = &self.reaper {
      let _ = r.remove(id);
    }
    if let Some(w) = self.registry.lock().unwrap().get_mut(&id) {
      // Reaped: the pidfd must not be used to signal any more.
      w.pidfd = None;
    }
    let Some(w) = self.sessions.get_mut(&id) else { return };
    match w.life.exited(status) {
      Some(report) => self.report_exit(id, report),
      None => self
        .timers
        .schedule(TimerKey::ExitDeadline(id), EXIT_WAITS_FOR_EOF, Msg::ExitDeadline { id }),
    }
  }

  /// Emits `'exit'` with what supervision decided about the slot.
  fn report_exit(&mut self, id: u32, report: ExitReport) {
    self.timers.cancel(&TimerKey::ExitDeadline(id));
    let decision = self.sessions.get(&id).and_then(|w| {
      let slot = w.supervision.as_ref()?.slot;
      let uptime = w.started.elapsed();
      self
        .slots
        .worker_gone(slot, id, report.standing, uptime, Instant::now())
    });
    if let Some(ExitDecision::Restart { slot, delay }) = &decision {
      self
        .timers
        .schedule(TimerKey::Respawn(*slot), *delay, Msg::Respawn { slot: *slot });
    }
    let code = report.status.code;
    let signal = report.status.signal.map(spawn::signal_name);
    self.emit(id, Event::Exit { code, signal, decision });
    self.maybe_forget(id);
  }

  /// Starts a replacement in `slot` with the slot's spec.
  fn respawn(&mut self, slot: u32) {
    let Some(r) = self.slots.respawn(slot) else { return };
    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
    match self.fork(id, r.spec.clone(), r.sink.clone(), Some(r.supervision.clone())) {
      Ok(info) => {
        self.slots.supervise(id, r.spec.clone(), r.sink.clone(), r.supervision);
        self.slots.respawned(slot);
        (r.sink)(
          id,
          Event::Forked {
            slot,
            info,
            spec: r.spec,
          },
        );
      }
      Err(e) => {
        // Counts as a crash of the slot: try again after the backoff.
        let Some((current, decision)) = self.slots.respawn_failed(slot, Instant::now()) else {
          return;
        };
        let errno = -e.raw_os_error().unwrap_or(libc::EINVAL);
        let (file, args) = (r.spec.file.clone(), r.spec.args.clone());
        (r.sink)(
          current,
          Event::RestartFailed {
            slot,
            errno,
            file,
            args,
          },
        );
        if let ExitDecision::Restart { delay, .. } = decision {
          self
            .timers
            .schedule(TimerKey::Respawn(slot), delay, Msg::Respawn { slot });
        }
        (r.sink)(current, decision.into_event());
      }
    }
  }

  /// The watchdog's next look, while any worker it watches is left (a
  /// watchdog with nothing to watch would wake the core 4 times a second).
  fn arm_watchdog(&mut self, delay: Duration) {
    let watching = self
      .sessions
      .values()
      .any(|w| w.supervision.as_ref().is_some_and(Supervision::watched));
    if watching {
      self.timers.schedule(TimerKey::Watchdog, delay, Msg::Tick);
    }
  }

  /// Hang detection and recycling checks for supervised workers.
  fn watch(&mut self) {
    let now = Instant::now();
    let mut verdicts = Vec::new();
    for (id, w) in &mut self.sessions {
      let Some(sup) = w.supervision.as_ref().filter(|_| w.life.watchable()) else {
        continue;
      };
      let pid = w.pid;
      let rss = || crate::supervisor::usage(pid).map(|u| u.rss_bytes);
      match sup.check(now, w.started, w.last_heartbeat, rss) {
        Some(v @ Verdict::Hung { .. }) => {
          w.life.hung();
          verdicts.push((*id, v));
        }
        Some(v @ Verdict::Recycle { .. }) => {
          w.life.recycle();
          verdicts.push((*id, v));
        }
        None => {}
      }
    }
    for (id, verdict) in verdicts {
      match verdict {
        Verdict::Hung { silent } => {
          self.emit(id, Event::Unresponsive { silent });
          let pidfd = self.registry.lock().unwrap().get(&id).and_then(|w| w.pidfd.clone());
          if let Some(fd) = pidfd {
            let _ = spawn::pidfd_send_signal(fd.as_raw_fd(), libc::SIGKILL);
          }
        }
        Verdict::Recycle { reason } => self.emit(id, Event::Recycle { reason }),
      }
    }
  }

  /// Drops everything of a worker that has exited and disconnected; its
  /// event sink goes with it.
  fn maybe_forget(&mut self, id: u32) {
    if self.sessions.get(&id).is_some_and(Session::forgettable) {
      // Nothing is held by now (the channel's end released it): a safety net.
      self.release_all(id, true);
      self.sessions.remove(&id);
      self.registry.lock().unwrap().remove(&id);
    }
  }
}
