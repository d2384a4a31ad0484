//! rcluster: a drop-in `node:cluster` whose primary runs in Rust.
//!
//! - `spawn`    — starting workers, watching them exit (pidfd)
//! - `framing`  — Node's two IPC framings (JSON lines, length-prefixed V8)
//! - `channel`  — IPC reader/writer tasks and fd passing
//! - `direct`   — a worker's outgoing frames; `worker.send`'s fast path
//! - `protocol` — Node's cluster messages
//! - `sockets`  — binding listen sockets
//! - `sticky`   — `sticky: 'ip'`: client address → slot (consistent hashing)
//! - `steering` — the reuseport group's sticky steering program (classic BPF)
//! - `handles`  — server handles; each policy's shape behind one `Shape` trait
//! - `dispatch` — round-robin connection hand-off
//! - `load`     — the load-aware default: spotting stalled reuseport members
//! - `metrics`  — the /metrics, /healthz, /readyz endpoint (over `http`)
//! - `handover` — who reads a worker's channel (the core, or the JS thread)
//! - `pace`     — channel reads at the JS thread's pace
//! - `reaper`   — kills workers that outlive a dead primary
//! - `supervisor` — restart policy, watchdog verdicts, resource usage
//! - `primary`  — the core thread: `Core` (the binding's handle) and its loop,
//!   with one owner per concept under `primary/` (`session`, `servers`,
//!   `slots`, `timers`, `events`, `state`, `acts`)
//! - `binding`  — the N-API surface (with `pump`, `uv_reader` and `js_call`, the only modules that know napi)
//! - `pump`     — core events delivered to JS in batches, one call per wake-up
//! - `uv_reader` — the JS thread reads worker channels on Node's libuv loop
//! - `js_call`  — calling the JS pump from that loop (`napi_make_callback`)

pub mod channel;
pub mod direct;
pub mod dispatch;
pub mod framing;
pub mod handles;
pub mod handover;
pub mod http;
pub mod load;
pub mod metrics;
pub mod pace;
pub mod primary;
pub mod protocol;
pub mod readiness;
pub mod reaper;
pub mod sockets;
pub mod spawn;
pub mod steering;
pub mod sticky;
pub mod supervisor;
pub mod v8;

// `#[napi]` items are only reachable through the addon's registration, which
// test builds leave out: compile the binding into the addon alone.
#[cfg(not(test))]
mod binding;
#[cfg(not(test))]
mod js_call;
#[cfg(not(test))]
mod pump;
#[cfg(not(test))]
mod uv_reader;
