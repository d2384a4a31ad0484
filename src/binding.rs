//! The N-API surface: a thin layer that converts JS values to core requests
//! and core events to JS objects. Everything with behaviour lives in the core.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::OnceLock;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode, ThreadsafeFunctionHandle};
use napi_derive::napi;

use crate::channel::Serialization;
use crate::handles::Policy;
use crate::primary::{Core, Event, EventSink, ExitDecision, Supervision};
use crate::sockets;
use crate::spawn::{SpawnSpec, StdioSpec};
use crate::supervisor::RestartPolicy;

static CORE: OnceLock<Core> = OnceLock::new();

type EventFn = ThreadsafeFunction<WorkerEvent, (), WorkerEvent, Status, false>;

thread_local! {
  // A second reference to each live worker's event function, on the JS
  // thread only, for ref()/unref(). JS drops it with releaseWorker() once the
  // worker has exited and disconnected; the core drops its own at the same
  // point, and then nothing of the worker keeps Node alive.
  static EVENT_FNS: RefCell<HashMap<u32, std::sync::Arc<ThreadsafeFunctionHandle>>> = RefCell::new(HashMap::new());
}

fn core() -> Result<&'static Core> {
  if let Some(c) = CORE.get() {
    return Ok(c);
  }
  let started = Core::start().map_err(|e| Error::from_reason(format!("rcluster: cannot start core: {e}")))?;
  Ok(CORE.get_or_init(|| started))
}

/// Restart policy (milliseconds); omitted fields take the defaults.
#[napi(object)]
pub struct RestartOptions {
  pub initial_delay: Option<f64>,
  pub max_delay: Option<f64>,
  pub factor: Option<f64>,
  pub stable_after: Option<f64>,
  pub max_restarts: Option<f64>,
  pub window: Option<f64>,
}

impl From<RestartOptions> for RestartPolicy {
  fn from(o: RestartOptions) -> Self {
    let d = RestartPolicy::default();
    let ms = |v: Option<f64>, dflt: std::time::Duration| v.map(duration_ms).unwrap_or(dflt);
    RestartPolicy {
      initial: ms(o.initial_delay, d.initial),
      max: ms(o.max_delay, d.max),
      factor: o.factor.filter(|f| f.is_finite() && *f >= 1.0).unwrap_or(d.factor),
      stable_after: ms(o.stable_after, d.stable_after),
      max_restarts: o
        .max_restarts
        .map(|n| n.clamp(0.0, u32::MAX as f64) as u32)
        .unwrap_or(d.max_restarts),
      window: ms(o.window, d.window),
    }
  }
}

#[napi(object)]
pub struct ForkOptions {
  /// The executable (`process.execPath`).
  pub file: String,
  /// argv after argv[0]: execArgv, the script, its args.
  pub args: Vec<String>,
  /// `KEY=value` strings: the complete environment.
  pub env: Vec<String>,
  pub cwd: Option<String>,
  /// One entry per child fd: `inherit`, `pipe`, `ignore`, `ipc`, or an fd
  /// number of the primary.
  pub stdio: Vec<String>,
  pub uid: Option<u32>,
  pub gid: Option<u32>,
  /// `json` or `advanced`.
  pub serialization: String,
  /// Supervision: the slot, and what to watch. Without `slot`, none.
  pub slot: Option<u32>,
  pub restart: Option<RestartOptions>,
  pub hang_timeout: Option<f64>,
  pub max_memory: Option<f64>,
  pub max_age: Option<f64>,
  /// Start beside the slot's current worker (reload); see `promote`.
  pub standby: Option<bool>,
}

#[napi(object)]
pub struct ForkResult {
  pub id: u32,
  pub pid: Option<i32>,
  /// A negative errno when the process could not be started.
  pub errno: Option<i32>,
  pub stdin: Option<i32>,
  pub stdout: Option<i32>,
  pub stderr: Option<i32>,
  /// fds of pipes at stdio index 3 and up: `extra[i]` is for index `i + 3`
  /// (-1 where there is none).
  pub extra: Vec<i32>,
}

/// One event for a worker, as JS receives it. `kind` says which fields are set.
#[napi(object)]
pub struct WorkerEvent {
  /// The worker the event is about.
  pub id: u32,
  /// online | listening | message | exitedAfterDisconnect | disconnect | exit |
  /// error | sent | internal | forked | restarting | restartFailed | crashloop |
  /// unresponsive | recycle
  pub kind: String,
  /// `message`: the frame's payload.
  pub data: Option<Buffer>,
  /// JSON text: `listening` and `internal`; `forked`: the slot's spawn spec;
  /// `restartFailed`: `{file, args}` of what could not be spawned.
  pub json: Option<String>,
  /// `message` with a handle: an fd now owned by JS.
  pub fd: Option<i32>,
  pub handle_type: Option<String>,
  /// What `fd` is: tcp, tcp-server, pipe, pipe-server, udp4, udp6.
  pub socket: Option<String>,
  /// `exit`: the exit code; `restartFailed`: the spawn's negative errno.
  pub code: Option<i32>,
  pub signal: Option<String>,
  pub token: Option<u32>,
  /// `error` and failed `sent`.
  pub message: Option<String>,
  pub error_code: Option<String>,
  /// `forked`: the new worker's pid, slot and stdio fds (owned by JS).
  pub pid: Option<i32>,
  pub slot: Option<u32>,
  pub stdin: Option<i32>,
  pub stdout: Option<i32>,
  pub stderr: Option<i32>,
  /// `forked`: pipes at stdio index 3 and up, as in `ForkResult`.
  pub extra: Option<Vec<i32>>,
  /// `restarting`: the delay; `unresponsive`: how long it was silent (ms).
  pub ms: Option<f64>,
  /// `crashloop`: crashes within the window.
  pub crashes: Option<u32>,
  /// `recycle`: `memory` or `age`.
  pub reason: Option<String>,
  /// `exit`: what supervision does next (`restarting` or `crashloop`, with
  /// `slot`, `ms`, `crashes` filled in), if anything.
  pub next: Option<String>,
}

impl WorkerEvent {
  fn new(kind: &str) -> Self {
    WorkerEvent {
      id: 0,
      kind: kind.into(),
      data: None,
      json: None,
      fd: None,
      handle_type: None,
      socket: None,
      code: None,
      signal: None,
      token: None,
      message: None,
      error_code: None,
      pid: None,
      slot: None,
      stdin: None,
      stdout: None,
      stderr: None,
      extra: None,
      ms: None,
      crashes: None,
      reason: None,
      next: None,
    }
  }
}

impl From<Event> for WorkerEvent {
  fn from(e: Event) -> Self {
    match e {
      Event::Online => WorkerEvent::new("online"),
      Event::Listening(info) => WorkerEvent {
        json: Some(info.to_string()),
        ..WorkerEvent::new("listening")
      },
      Event::Message { frame, handle } => {
        let mut ev = WorkerEvent {
          data: Some(frame.into()),
          ..WorkerEvent::new("message")
        };
        if let Some(h) = handle {
          ev.fd = Some(h.fd.into_raw_fd());
          ev.handle_type = Some(h.handle_type);
          ev.socket = Some(h.socket.into());
        }
        ev
      }
      Event::ExitedAfterDisconnect => WorkerEvent::new("exitedAfterDisconnect"),
      Event::Disconnect => WorkerEvent::new("disconnect"),
      Event::Exit { code, signal, decision } => {
        // What supervision does next rides along: `next` is its kind.
        let mut ev = WorkerEvent {
          code,
          signal,
          ..WorkerEvent::new("exit")
        };
        match decision {
          Some(ExitDecision::Restart { slot, delay }) => {
            ev.next = Some("restarting".into());
            ev.slot = Some(slot);
            ev.ms = Some(delay.as_secs_f64() * 1000.0);
          }
          Some(ExitDecision::CrashLoop { slot, crashes }) => {
            ev.next = Some("crashloop".into());
            ev.slot = Some(slot);
            ev.crashes = Some(crashes);
          }
          None => {}
        }
        ev
      }
      Event::Error { message, code } => WorkerEvent {
        message: Some(message),
        error_code: Some(code),
        ..WorkerEvent::new("error")
      },
      Event::Sent { token, error } => WorkerEvent {
        token: Some(token),
        message: error,
        ..WorkerEvent::new("sent")
      },
      Event::Internal(v) => WorkerEvent {
        json: Some(v.to_string()),
        ..WorkerEvent::new("internal")
      },
      Event::Forked { slot, info, spec } => WorkerEvent {
        slot: Some(slot),
        pid: Some(info.pid),
        stdin: info.stdin.map(IntoRawFd::into_raw_fd),
        stdout: info.stdout.map(IntoRawFd::into_raw_fd),
        stderr: info.stderr.map(IntoRawFd::into_raw_fd),
        extra: Some(extra_fds(info.extra)),
        json: Some(
          serde_json::json!({
            "file": spec.file,
            "args": spec.args,
            "serialization": spec.serialization.as_str(),
            "stdio": spec.stdio.iter().map(StdioSpec::as_js).collect::<Vec<_>>(),
          })
          .to_string(),
        ),
        ..WorkerEvent::new("forked")
      },
      Event::Restarting { slot, delay } => WorkerEvent {
        slot: Some(slot),
        ms: Some(delay.as_secs_f64() * 1000.0),
        ..WorkerEvent::new("restarting")
      },
      Event::RestartFailed {
        slot,
        errno,
        file,
        args,
      } => WorkerEvent {
        slot: Some(slot),
        code: Some(errno),
        json: Some(serde_json::json!({ "file": file, "args": args }).to_string()),
        ..WorkerEvent::new("restartFailed")
      },
      Event::CrashLoop { slot, crashes } => WorkerEvent {
        slot: Some(slot),
        crashes: Some(crashes),
        ..WorkerEvent::new("crashloop")
      },
      Event::Unresponsive { silent } => WorkerEvent {
        ms: Some(silent.as_secs_f64() * 1000.0),
        ..WorkerEvent::new("unresponsive")
      },
      Event::Recycle { reason } => WorkerEvent {
        reason: Some(reason.into()),
        ..WorkerEvent::new("recycle")
      },
    }
  }
}

/// Milliseconds from JS as a Duration; never panics (JS validates the range,
/// this saturates whatever gets past it).
fn duration_ms(v: f64) -> std::time::Duration {
  let secs = if v.is_finite() {
    (v / 1000.0).clamp(0.0, 1e10)
  } else {
    0.0
  };
  std::time::Duration::try_from_secs_f64(secs).unwrap_or(std::time::Duration::ZERO)
}

fn millis(v: Option<f64>) -> Option<std::time::Duration> {
  v.filter(|v| v.is_finite() && *v > 0.0).map(duration_ms)
}

fn extra_fds(extra: Vec<(usize, OwnedFd)>) -> Vec<i32> {
  let len = extra.iter().map(|(i, _)| i - 2).max().unwrap_or(0);
  let mut out = vec![-1; len];
  for (i, fd) in extra {
    out[i - 3] = fd.into_raw_fd();
  }
  out
}

fn errno_of(e: &std::io::Error) -> i32 {
  -e.raw_os_error().unwrap_or(libc::EINVAL)
}

/// Starts a worker. `onEvent` receives every event of that worker; it keeps
/// the Node process alive until the worker has exited and disconnected.
#[napi]
pub fn fork(options: ForkOptions, on_event: Function<'_, WorkerEvent, ()>) -> Result<ForkResult> {
  let serialization = Serialization::parse(&options.serialization)
    .ok_or_else(|| Error::new(Status::InvalidArg, "serialization must be 'json' or 'advanced'"))?;
  let mut stdio = options
    .stdio
    .iter()
    .map(|s| StdioSpec::parse(s).ok_or_else(|| Error::new(Status::InvalidArg, format!("bad stdio entry {s:?}"))))
    .collect::<Result<Vec<_>>>()?;
  while stdio.len() < 3 {
    stdio.push(StdioSpec::Inherit);
  }
  let env = options
    .env
    .into_iter()
    .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
    .collect();
  let spec = SpawnSpec {
    file: options.file,
    args: options.args,
    env,
    cwd: options.cwd,
    stdio,
    uid: options.uid,
    gid: options.gid,
    serialization,
    death_signal: false,
  };
  let tsfn: EventFn = on_event
    .build_threadsafe_function::<WorkerEvent>()
    .callee_handled::<false>()
    .build_callback(|ctx| Ok(ctx.value))?;
  let handle = tsfn.handle.clone();
  let sink: EventSink = std::sync::Arc::new(move |id: u32, event: Event| {
    let mut ev = WorkerEvent::from(event);
    ev.id = id;
    tsfn.call(ev, ThreadsafeFunctionCallMode::NonBlocking);
  });
  let supervision = options.slot.map(|slot| Supervision {
    slot,
    restart: options.restart.map(RestartPolicy::from),
    hang_timeout: millis(options.hang_timeout),
    max_memory: options.max_memory.filter(|m| *m > 0.0).map(|m| m as u64),
    max_age: millis(options.max_age),
  });
  let core = core()?;
  let id = core.next_id();
  match core.fork(id, spec, sink, supervision, options.standby.unwrap_or(false)) {
    Ok(info) => Ok({
      EVENT_FNS.with(|m| m.borrow_mut().insert(id, handle));
      ForkResult {
        id,
        pid: Some(info.pid),
        errno: None,
        stdin: info.stdin.map(IntoRawFd::into_raw_fd),
        stdout: info.stdout.map(IntoRawFd::into_raw_fd),
        stderr: info.stderr.map(IntoRawFd::into_raw_fd),
        extra: extra_fds(info.extra),
      }
    }),
    Err(e) => Ok(ForkResult {
      id,
      pid: None,
      errno: Some(errno_of(&e)),
      stdin: None,
      stdout: None,
      stderr: None,
      extra: Vec::new(),
    }),
  }
}

/// Queues a complete frame for the worker, with a duplicate of `fd` when
/// given. Returns the bytes queued for that worker, or -1 if its channel is
/// closed. With `token`, a `sent` event reports when the frame is written.
#[napi]
pub fn send(id: u32, frame: Buffer, fd: Option<i32>, token: Option<u32>) -> Result<i64> {
  let dup = match fd {
    Some(fd) => Some(
      sockets::dup_fd(fd)
        .map_err(|errno| Error::from_reason(format!("cannot duplicate handle fd {fd}: errno {}", -errno)))?,
    ),
    None => None,
  };
  match core()?.send(id, frame.to_vec(), dup, token) {
    Ok(n) => Ok(n as i64),
    Err(_) => Ok(-1),
  }
}

/// `worker.disconnect()` in the primary; `graceMs`: how long the reaper lets
/// it finish should the primary die meanwhile.
#[napi]
pub fn disconnect(id: u32, grace_ms: Option<f64>) -> Result<()> {
  let grace = millis(grace_ms).unwrap_or(crate::primary::DEFAULT_KILL_TIMEOUT);
  core()?.disconnect(id, grace);
  Ok(())
}

/// `killTimeout` from setupPrimary: the grace of workers that leave by
/// themselves, should the primary die meanwhile.
#[napi]
pub fn set_kill_timeout(ms: f64) -> Result<()> {
  core()?.set_kill_timeout(millis(Some(ms)).unwrap_or(crate::primary::DEFAULT_KILL_TIMEOUT));
  Ok(())
}

/// Called as the primary exits: lets queued messages (a `disconnect()` just
/// before `process.exit()`) reach the workers, waiting at most `limitMs`.
#[napi]
pub fn flush(limit_ms: f64) {
  if let Some(c) = CORE.get() {
    c.flush(duration_ms(limit_ms));
  }
}

/// `worker.process.disconnect()`: close the channel after queued messages.
#[napi]
pub fn close_channel(id: u32) -> Result<()> {
  core()?.close_channel(id);
  Ok(())
}

/// Signals a worker; returns 0 or a negative errno (ESRCH once it has exited).
#[napi]
pub fn kill(id: u32, signal: i32) -> Result<i32> {
  Ok(match core()?.kill(id, signal) {
    Ok(()) => 0,
    Err(e) => errno_of(&e),
  })
}

/// Sets the scheduling policy for server handles created from now on.
#[napi]
pub fn set_scheduling_policy(policy: u32) -> Result<()> {
  let p = Policy::from_u32(policy).ok_or_else(|| Error::new(Status::InvalidArg, "unknown scheduling policy"))?;
  core()?.set_policy(p);
  Ok(())
}

/// Closes an fd that JS received but will not use.
#[napi]
pub fn close_fd(fd: i32) {
  if fd >= 0 {
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
  }
}

/// What an fd is (tcp, tcp-server, pipe, pipe-server, udp4, udp6, unknown).
#[napi]
pub fn describe_fd(fd: i32) -> String {
  sockets::describe(fd).to_string()
}

/// `worker.process.ref()` / `unref()`: whether this worker keeps Node alive.
#[napi]
pub fn ref_worker(env: Env, id: u32, keep_alive: bool) -> Result<()> {
  EVENT_FNS.with(|m| {
    if let Some(f) = m.borrow().get(&id) {
      // SAFETY: called on the JS thread with a live threadsafe function.
      let status = unsafe {
        if keep_alive {
          napi::sys::napi_ref_threadsafe_function(env.raw(), f.get_raw())
        } else {
          napi::sys::napi_unref_threadsafe_function(env.raw(), f.get_raw())
        }
      };
      if status != napi::sys::Status::napi_ok {
        return Err(Error::from_reason("cannot change the worker's ref state"));
      }
    }
    Ok(())
  })
}

/// Drops the JS side's reference to a finished worker's event function.
#[napi]
pub fn release_worker(id: u32) {
  EVENT_FNS.with(|m| m.borrow_mut().remove(&id));
}

/// Makes a standby worker (forked with `standby`) its slot's current worker.
#[napi]
pub fn promote(id: u32) -> Result<()> {
  core()?.promote(id);
  Ok(())
}

/// Stops restarting `slot` (its worker is being retired on purpose); with
/// `forget`, the slot is gone (scale-down) and its restart count too.
#[napi]
pub fn unsupervise(slot: u32, forget: Option<bool>) -> Result<()> {
  core()?.unsupervise(slot, forget.unwrap_or(false));
  Ok(())
}

#[napi(object)]
pub struct SlotRestarts {
  pub slot: u32,
  pub restarts: u32,
}

/// The slots as the core numbers them (it owns them).
#[napi(object)]
pub struct NativeSlots {
  /// The lowest slot neither held by a worker nor waiting for a restart.
  pub free: u32,
  /// Slots held by a worker (alive, not being retired) or waiting for a
  /// restart, ascending.
  pub occupied: Vec<u32>,
  /// Slots waiting out a restart delay, ascending.
  pub pending: Vec<u32>,
  pub restarts: Vec<SlotRestarts>,
}

#[napi]
pub fn slots() -> Result<NativeSlots> {
  let v = core()?.slots();
  Ok(NativeSlots {
    free: v.free,
    occupied: v.occupied,
    pending: v.pending,
    restarts: v
      .restarts
      .into_iter()
      .map(|(slot, restarts)| SlotRestarts { slot, restarts })
      .collect(),
  })
}

#[napi(object)]
pub struct NativeWorkerStats {
  pub pid: i32,
  /// Connections the primary handed to this worker (round-robin, drained).
  pub handoffs: f64,
  pub rss: Option<f64>,
  /// CPU seconds, user and system.
  pub cpu_user: Option<f64>,
  pub cpu_system: Option<f64>,
}

impl NativeWorkerStats {
  fn new(pid: i32, handoffs: u64, usage: Option<crate::supervisor::Usage>) -> Self {
    NativeWorkerStats {
      pid,
      handoffs: handoffs as f64,
      rss: usage.as_ref().map(|u| u.rss_bytes as f64),
      cpu_user: usage.as_ref().map(|u| u.cpu_user_s),
      cpu_system: usage.as_ref().map(|u| u.cpu_system_s),
    }
  }
}

/// Per-worker figures for `cluster.stats()`; null once the worker is gone.
#[napi]
pub fn worker_stats(id: u32) -> Result<Option<NativeWorkerStats>> {
  Ok(
    core()?
      .stats(id)
      .map(|s| NativeWorkerStats::new(s.pid, s.handoffs, s.usage)),
  )
}

/// Usage of any process (the primary's own, for `stats()` totals).
#[napi]
pub fn process_usage(pid: i32) -> Option<NativeWorkerStats> {
  crate::supervisor::usage(pid).map(|u| NativeWorkerStats::new(pid, 0, Some(u)))
}
