//! The loop's side of the queue watcher (`crate::load`): looks while a
//! reuseport group may exist — fast while connections wait, slow while every
//! queue is empty, not at all once they have been empty for a while (then the
//! first connection queued on any member wakes it) — samples the groups,
//! writes the probes.

use std::os::fd::AsRawFd;
use std::time::Duration;

use serde_json::json;

use super::state::State;
use super::timers::TimerKey;
use super::Msg;
use crate::handles::Policy;
use crate::load::{self, FAST_TICK, LOAD_TICK};
use crate::readiness::AnyReadable;

/// Quiet fast ticks (no queue waiting, no probe out, no stall) before the
/// watcher slows down again: under full load queues empty for an instant
/// now and then, and a slow tick at the wrong moment delays a detection.
const QUIET_TICKS: u32 = 50;

/// Quiet slow ticks before the watcher stops ticking and waits for a
/// connection to be queued on some member. Waiting costs nothing while idle;
/// ticking on a little first means a steady trickle of connections does not
/// wake the core once per connection.
const SLEEP_AFTER: u32 = 5;

/// The watcher's pace: its next look is a keyed timer (`TimerKey::LoadTick`),
/// re-armed at every look.
pub(super) struct LoadTicker {
  period: Duration,
  quiet: u32,
}

impl State {
  /// A worker joined a server: under SCHED_REUSEPORT, make sure queues are
  /// watched, and look at once (a new member is not in a sleeping watcher's
  /// set). The first look that finds no group to watch stops again, so an
  /// idle primary without one does not wake up.
  pub(super) fn start_load_watch(&mut self) {
    if self.servers.policy == Policy::ReusePort {
      // A watcher already running keeps its pace (a join must not slow a
      // fast one down); a sleeping one has the slow period.
      self.load_tick.get_or_insert(LoadTicker {
        period: LOAD_TICK,
        quiet: 0,
      });
      self.timers.schedule(TimerKey::LoadTick, Duration::ZERO, Msg::LoadTick);
    }
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
      self.load_tick = None;
      self.timers.cancel(&TimerKey::LoadTick);
      return;
    };
    // Armed before anything below can change a group: the sockets in
    // `queues` are open now.
    self.arm_load_tick(sample.busy, sample.queues);
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
  }

  /// Fast at once when something waits; slow after `QUIET_TICKS` quiet
  /// ones; asleep until a connection is queued after `SLEEP_AFTER` slow ones.
  fn arm_load_tick(&mut self, busy: bool, queues: Vec<std::os::fd::RawFd>) {
    let Some(t) = self.load_tick.as_mut() else { return };
    if busy {
      (t.period, t.quiet) = (FAST_TICK, 0);
    } else {
      t.quiet += 1;
      if t.period == FAST_TICK && t.quiet >= QUIET_TICKS {
        (t.period, t.quiet) = (LOAD_TICK, 0);
      } else if t.period == LOAD_TICK && t.quiet >= SLEEP_AFTER {
        // If the kernel will not watch them (no fd left, say), tick on.
        if let Ok(bell) = AnyReadable::new(queues) {
          t.quiet = 0;
          self.timers.when_readable(TimerKey::LoadTick, bell, Msg::LoadTick);
          return;
        }
      }
    }
    self.timers.schedule(TimerKey::LoadTick, t.period, Msg::LoadTick);
  }
}
