//! What the endpoint reads from the core: plain data the loop copies out in
//! one pass (`State::snapshot`), so rendering, /proc reads and the HTTP
//! exchange happen away from the loop.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The cluster as the core sees it at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
  /// Worker processes alive (starting, serving, leaving, standing by).
  pub workers: Vec<WorkerView>,
  /// Supervised slots and crash-looped ones, ascending.
  pub slots: Vec<SlotState>,
  /// Slots given up after too many crashes, ever.
  pub crash_loops: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerView {
  pub id: u32,
  pub pid: i32,
  pub slot: u32,
  /// Seconds since the Unix epoch.
  pub start_time: f64,
  /// Connected and listening (for a slot's current worker: on every
  /// address its slot serves).
  pub up: bool,
  /// The event-loop delay the worker measured at its last heartbeat; `None`
  /// when it sends none (no `hangTimeout`).
  pub heartbeat_lag: Option<Duration>,
  pub handoffs: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SlotState {
  pub slot: u32,
  pub restarts: u32,
  pub status: SlotStatus,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SlotStatus {
  /// Worker `id` listens on every address the slot serves.
  Serving { id: u32 },
  /// Worker `id` has not listened yet (or not on `missing` of the slot's addresses).
  NotListening { id: u32, missing: usize },
  /// The slot's worker is gone; a restart is scheduled.
  Restarting,
  /// Given up after `crashes` crashes.
  CrashLoop { crashes: u32 },
}

/// Counted outside the loop, read by the endpoint without it.
#[derive(Debug, Default)]
pub struct Counters {
  /// `cluster.reload()` calls (SIGHUP included).
  pub reloads: AtomicU64,
}
