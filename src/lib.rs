//! rcluster: a drop-in `node:cluster` whose primary runs in Rust.
//!
//! - `spawn`    — starting workers, watching them exit (pidfd)
//! - `channel`  — IPC framing and fd passing
//! - `direct`   — a worker's outgoing frames; `worker.send`'s fast path
//! - `protocol` — Node's cluster messages
//! - `sockets`  — binding listen sockets
//! - `handles`  — server handles per scheduling policy
//! - `dispatch` — round-robin connection hand-off
//! - `pace`     — channel reads at the JS thread's pace
//! - `reaper`   — kills workers that outlive a dead primary
//! - `supervisor` — restart policy, resource usage
//! - `primary`  — the core thread and its state machine
//! - `binding`  — the N-API surface (with `events`, the only modules that know napi)
//! - `events`   — core events delivered to JS in batches

pub mod channel;
pub mod direct;
pub mod dispatch;
pub mod handles;
pub mod pace;
pub mod primary;
pub mod protocol;
pub mod reaper;
pub mod sockets;
pub mod spawn;
pub mod supervisor;
pub mod v8;

// `#[napi]` items are only reachable through the addon's registration, which
// test builds leave out: compile the binding into the addon alone.
#[cfg(not(test))]
mod binding;
#[cfg(not(test))]
mod events;
