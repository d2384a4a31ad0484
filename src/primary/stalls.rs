//! The loop's side of the queue watcher (`crate::load`): ticks while a
//! reuseport group may exist, samples the groups, writes the probes.

use std::os::fd::AsRawFd;

use serde_json::json;

use super::state::State;
use super::Msg;
use crate::handles::Policy;
use crate::load::{self, LOAD_TICK};

impl State {
  /// A worker joined a server: under SCHED_REUSEPORT, make sure queues are
  /// watched. (The first tick that finds no group to watch stops again, so an
  /// idle primary without one does not wake up.)
  pub(super) fn start_load_watch(&mut self) {
    if self.load_tick.is_none() && self.servers.policy == Policy::ReusePort {
      self.load_tick = Some(self.timers.every(LOAD_TICK, || Msg::LoadTick));
    }
  }

  pub(super) fn watch_load(&mut self) {
    let sessions = &self.sessions;
    let unread = |id: u32| {
      sessions
        .get(&id)
        .is_some_and(|w| w.life.connected() && load::unread(w.channel.sock.as_raw_fd()))
    };
    let Some(sample) = self.servers.watch_load(&unread) else {
      if let Some(t) = self.load_tick.take() {
        t.abort();
      }
      return;
    };
    // Internal, so Node's worker code and user 'message' listeners ignore it;
    // all it has to do is be read.
    let probe = json!({ "cmd": "NODE_RCLUSTER", "act": "probe" });
    for id in sample.probes {
      self.send_internal(id, &probe, None);
    }
    for key in sample.changed {
      self.distribute(&key);
    }
  }
}
