//! The loop's side of the queue watcher (`crate::load`): ticks while a
//! reuseport group may exist — fast while connections wait, slow while every
//! queue is empty — samples the groups, writes the probes.

use std::os::fd::AsRawFd;
use std::time::Duration;

use serde_json::json;
use tokio::task::AbortHandle;

use super::state::State;
use super::Msg;
use crate::handles::Policy;
use crate::load::{self, FAST_TICK, LOAD_TICK};

/// Quiet fast ticks (no queue waiting, no probe out, no stall) before the
/// watcher slows down again: under full load queues empty for an instant
/// now and then, and a slow tick at the wrong moment delays a detection.
const QUIET_TICKS: u32 = 50;

/// The running tick and its period.
pub(super) struct LoadTicker {
  handle: AbortHandle,
  period: Duration,
  quiet: u32,
}

impl State {
  /// A worker joined a server: under SCHED_REUSEPORT, make sure queues are
  /// watched. (The first tick that finds no group to watch stops again, so an
  /// idle primary without one does not wake up.)
  pub(super) fn start_load_watch(&mut self) {
    if self.load_tick.is_none() && self.servers.policy == Policy::ReusePort {
      self.set_load_tick(LOAD_TICK);
    }
  }

  fn set_load_tick(&mut self, period: Duration) {
    if let Some(t) = self.load_tick.take() {
      t.handle.abort();
    }
    let handle = self.timers.every(period, || Msg::LoadTick);
    self.load_tick = Some(LoadTicker {
      handle,
      period,
      quiet: 0,
    });
  }

  pub(super) fn watch_load(&mut self) {
    let sessions = &self.sessions;
    let channel = |id: u32| {
      let w = sessions.get(&id).filter(|w| w.life.connected())?;
      // Unread first: a write between the two reads makes the worker look
      // as if it read, never the other way round.
      let unread = load::unread(w.channel.sock.as_raw_fd());
      Some(load::ChannelLevel {
        unread,
        sent: w.channel.outbox.sent(),
      })
    };
    let Some(sample) = self.servers.watch_load(&channel) else {
      if let Some(t) = self.load_tick.take() {
        t.handle.abort();
      }
      return;
    };
    if !sample.probes.is_empty() {
      // Internal, so Node's worker code and user 'message' listeners ignore
      // it; all it has to do is be read.
      let probe = json!({ "cmd": "NODE_RCLUSTER", "act": "probe" });
      for id in sample.probes {
        self.send_internal(id, &probe, None);
      }
    }
    for key in sample.changed {
      self.distribute(&key);
    }
    self.pace_load_tick(sample.busy);
  }

  /// Fast at once when something waits; slow after `QUIET_TICKS` quiet ones.
  fn pace_load_tick(&mut self, busy: bool) {
    let Some(t) = self.load_tick.as_mut() else { return };
    if busy {
      t.quiet = 0;
      if t.period != FAST_TICK {
        self.set_load_tick(FAST_TICK);
      }
    } else if t.period != LOAD_TICK {
      t.quiet += 1;
      if t.quiet >= QUIET_TICKS {
        self.set_load_tick(LOAD_TICK);
      }
    }
  }
}
