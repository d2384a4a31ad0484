//! What the core tells JS, per worker: one `Event` per happening, each with
//! its own typed payload. The binding turns them into JS objects; their
//! meaning is what lib/ relies on, so it is documented here, not there.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::spawn::SpawnSpec;
use crate::supervisor::Usage;

/// Receives `(worker id, event)`; shared by all workers of a slot.
pub type EventSink = Arc<dyn Fn(u32, Event) + Send + Sync>;

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
  /// The worker exited. `decision` is what supervision does about it,
  /// carried in the same event so JS learns both at once (its bookkeeping
  /// must already show a pending restart to `'exit'` listeners).
  Exit {
    code: Option<i32>,
    signal: Option<String>,
    decision: Option<ExitDecision>,
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
  /// worker of `slot`. `spec` is the slot's: the one its first worker was
  /// forked with (so the replacement has the same stdio and serialization,
  /// whatever the primary's settings are by now).
  Forked {
    slot: u32,
    info: ForkInfo,
    spec: SpawnSpec,
  },
  /// This (dead) worker's slot will be restarted again after `delay` (after
  /// a failed restart; a crash reports it in `Exit`).
  Restarting {
    slot: u32,
    delay: Duration,
  },
  /// The replacement for this (dead) worker could not be spawned; `errno`
  /// is negative, as in `ForkResult`. Counts as a crash of the slot.
  RestartFailed {
    slot: u32,
    errno: i32,
    /// What was spawned: the slot's `file` and `args`.
    file: String,
    args: Vec<String>,
  },
  /// This worker's slot crashed too often and will not be restarted (after a
  /// failed restart; a crash reports it in `Exit`).
  CrashLoop {
    slot: u32,
    crashes: u32,
  },
  /// The kernel refused the steering program of a server this worker
  /// joined: JS warns (once per server; see `handles::SteeringRefused`).
  SteeringRefused(crate::handles::SteeringRefused),
  /// No heartbeat for `silent`: the worker is killed and replaced.
  Unresponsive {
    silent: Duration,
  },
  /// The worker passed `maxMemory` or `maxAge`; JS replaces it gracefully.
  Recycle {
    reason: &'static str,
  },
}

/// What supervision does about a slot whose worker is gone.
#[derive(Clone, Debug, PartialEq)]
pub enum ExitDecision {
  /// A replacement is spawned after `delay`.
  Restart { slot: u32, delay: Duration },
  /// Too many crashes: the slot is given up.
  CrashLoop { slot: u32, crashes: u32 },
}

impl ExitDecision {
  /// The same decision as a standalone event (when no exit carries it).
  pub fn into_event(self) -> Event {
    match self {
      ExitDecision::Restart { slot, delay } => Event::Restarting { slot, delay },
      ExitDecision::CrashLoop { slot, crashes } => Event::CrashLoop { slot, crashes },
    }
  }
}

#[derive(Debug)]
pub struct Received {
  pub fd: OwnedFd,
  /// The sender's `type` (`net.Socket`, `net.Server`, `net.Native`, …).
  pub handle_type: String,
  /// What the fd is (`tcp`, `tcp-server`, `pipe`, `pipe-server`, `udp4`, …).
  pub socket: &'static str,
}

#[derive(Debug)]
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

/// `cluster.stats()` for one worker.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
  pub pid: i32,
  pub handoffs: u64,
  pub usage: Option<Usage>,
}
