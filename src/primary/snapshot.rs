//! What the metrics endpoint learns from the loop: a `Snapshot` built in one
//! pass over sessions and slots (no /proc reads, no I/O: the endpoint does
//! those off the loop), and what sessions record for it (`Observed`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::state::State;
use crate::metrics::snapshot::{SlotState, SlotStatus, Snapshot, WorkerView};

/// What a worker told the core that only metrics and readiness need.
#[derive(Debug, Default)]
pub struct Observed {
  /// `{addressType}:{address}:{port}` of each `listening` act.
  pub listening: BTreeSet<String>,
  /// The event-loop delay its last heartbeat reported.
  pub heartbeat_lag: Option<Duration>,
}

/// The address key of a `listening` act, as lib/supervisor.js's `waitReady`
/// spells it.
pub fn address_key(info: &Value) -> String {
  let part = |k: &str| match info.get(k) {
    Some(Value::String(s)) => s.clone(),
    Some(v) => v.to_string(),
    None => String::new(),
  };
  format!("{}:{}:{}", part("addressType"), part("address"), part("port"))
}

impl State {
  /// Worker `id` listens on what `info` describes.
  pub(super) fn observe_listening(&mut self, id: u32, info: &Value) {
    let key = address_key(info);
    let Some(w) = self.sessions.get_mut(&id) else { return };
    if let Some(slot) = w.supervision.as_ref().map(|s| s.slot) {
      self.slots.listened(slot, id, &key);
    }
    w.observed.listening.insert(key);
  }

  /// A heartbeat's `lag` field (milliseconds the worker's timer fired late).
  pub(super) fn observe_heartbeat(&mut self, id: u32, lag_ms: Option<f64>) {
    if let (Some(w), Some(ms)) = (self.sessions.get_mut(&id), lag_ms) {
      w.observed.heartbeat_lag = Duration::try_from_secs_f64(ms.max(0.0) / 1000.0).ok();
    }
  }

  pub(super) fn snapshot(&self) -> Snapshot {
    let now = SystemTime::now();
    let view = self.slots.view(std::iter::empty());
    let restarts: HashMap<u32, u32> = view.restarts.iter().copied().collect();
    let mut slots = Vec::new();
    let mut current_up = HashMap::new();
    for (slot, current, pending, serves) in self.slots.states() {
      let status = match self.sessions.get(&current).filter(|w| w.life.alive() && !pending) {
        None => SlotStatus::Restarting,
        Some(w) => {
          let missing = serves.difference(&w.observed.listening).count();
          if w.life.connected() && !w.observed.listening.is_empty() && missing == 0 {
            SlotStatus::Serving { id: current }
          } else {
            SlotStatus::NotListening { id: current, missing }
          }
        }
      };
      current_up.insert(current, matches!(status, SlotStatus::Serving { .. }));
      let restarts = restarts.get(&slot).copied().unwrap_or(0);
      slots.push(SlotState { slot, restarts, status });
    }
    let (looped, crash_loops) = self.slots.crash_loops();
    for (&slot, &crashes) in looped {
      let restarts = restarts.get(&slot).copied().unwrap_or(0);
      let status = SlotStatus::CrashLoop { crashes };
      slots.push(SlotState { slot, restarts, status });
    }
    slots.sort_by_key(|s| s.slot);

    let mut workers: Vec<WorkerView> = self
      .sessions
      .iter()
      .filter(|(_, w)| w.life.alive())
      .map(|(&id, w)| {
        let started = now.checked_sub(w.started.elapsed()).unwrap_or(now);
        let standby_up = w.life.connected() && !w.observed.listening.is_empty();
        WorkerView {
          id,
          pid: w.pid,
          slot: w.supervision.as_ref().map_or(0, |s| s.slot),
          start_time: started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
          up: current_up.get(&id).copied().unwrap_or(standby_up),
          heartbeat_lag: w.observed.heartbeat_lag,
          handoffs: w.handoff_total.load(Ordering::Relaxed),
        }
      })
      .collect();
    workers.sort_by_key(|w| w.id);
    Snapshot {
      workers,
      slots,
      crash_loops,
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  #[test]
  fn address_keys_match_wait_ready() {
    let info = json!({ "addressType": 4, "address": "127.0.0.1", "port": 8080, "fd": 3 });
    assert_eq!(address_key(&info), "4:127.0.0.1:8080");
    let pipe = json!({ "addressType": -1, "address": "/tmp/s.sock" });
    assert_eq!(address_key(&pipe), "-1:/tmp/s.sock:");
  }
}
