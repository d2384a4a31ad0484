//! The N-API surface: a thin layer that converts JS values to core requests
//! and core events to JS objects. Everything with behaviour lives in the core.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::OnceLock;

use napi::bindgen_prelude::*;
use napi::{JsString, JsValue};
use napi_derive::napi;

use crate::channel::Serialization;
use crate::handles::Policy;
use crate::primary::{Core, Supervision};
use crate::pump;
use crate::sockets;
use crate::spawn::{SpawnSpec, StdioSpec};
use crate::supervisor::RestartPolicy;

static CORE: OnceLock<Core> = OnceLock::new();

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

pub(crate) fn extra_fds(extra: Vec<(usize, OwnedFd)>) -> Vec<i32> {
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

/// Installs the function called (once per batch) when core events wait to
/// be taken with `takeEvents`.
#[napi]
pub fn on_events(env: &Env, pump: Function<'_, (), ()>) -> Result<()> {
  pump::install(env, pump)?;
  // From now on the JS thread reads the workers' channels.
  crate::uv_reader::install();
  Ok(())
}

/// The events queued since the last call, as `{ meta, json, data, others }`
/// (see pump.rs).
#[napi]
pub fn take_events(env: &Env) -> Result<Object<'_>> {
  pump::take(env)
}

/// Starts a worker; its events arrive through the pump (`onEvents`). It keeps
/// the Node process alive until it has exited and disconnected.
#[napi]
pub fn fork(js: &Env, options: ForkOptions) -> Result<ForkResult> {
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
  let supervision = options.slot.map(|slot| Supervision {
    slot,
    restart: options.restart.map(RestartPolicy::from),
    hang_timeout: millis(options.hang_timeout),
    max_memory: options.max_memory.filter(|m| *m > 0.0).map(|m| m as u64),
    max_age: millis(options.max_age),
  });
  let core = core()?;
  let id = core.next_id();
  let sink = pump::sink(js, id, serialization)?;
  match core.fork(id, spec, sink, supervision, options.standby.unwrap_or(false)) {
    Ok(info) => Ok({
      // Its channel's reader starts before any JS runs again.
      crate::uv_reader::adopt(js.raw());
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
    Err(e) => Ok({
      // No Worker will release it: the process never started.
      pump::release_js(js, id)?;
      ForkResult {
        id,
        pid: None,
        errno: Some(errno_of(&e)),
        stdin: None,
        stdout: None,
        stderr: None,
        extra: Vec::new(),
      }
    }),
  }
}

/// Queues a complete frame for the worker, with a duplicate of `fd` when
/// given. Returns the bytes queued for that worker (0: written at once), or
/// -1 if its channel is closed. With `token`, a `sent` event reports when the
/// frame is written. A JSON frame may come as a string: cheaper than a
/// Buffer made for one write.
#[napi]
pub fn send(env: &Env, id: u32, frame: Either<JsString, Buffer>, fd: Option<i32>, token: Option<u32>) -> Result<i64> {
  let dup = match fd {
    Some(fd) => Some(
      sockets::dup_fd(fd)
        .map_err(|errno| Error::from_reason(format!("cannot duplicate handle fd {fd}: errno {}", -errno)))?,
    ),
    None => None,
  };
  let core = core()?;
  let sent = match &frame {
    Either::A(text) => SEND_TEXT.with(|buf| {
      let mut buf = buf.borrow_mut();
      let bytes = utf8_into(env, text, &mut buf)?;
      let sent = core.send(id, bytes, dup, token);
      // One huge message must not pin its buffer for the process's life.
      if buf.capacity() > crate::js_call::KEPT_BYTES {
        *buf = Vec::new();
      }
      Ok::<_, Error>(sent)
    })?,
    Either::B(buf) => core.send(id, buf, dup, token),
  };
  match sent {
    Ok(n) => Ok(n as i64),
    Err(_) => Ok(-1),
  }
}

thread_local! {
  /// Where `send` puts a string's UTF-8 (its capacity kept, up to
  /// `js_call::KEPT_BYTES`): a fresh allocation per corked frame of many KB
  /// costs page faults.
  static SEND_TEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `text` as UTF-8 in `buf`, in one pass (lone surrogates become U+FFFD).
fn utf8_into<'b>(env: &Env, text: &JsString, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
  use napi::sys;
  let raw = text.raw();
  let mut units = 0;
  // SAFETY: a string value of this env; a null buffer asks for the length
  // (in UTF-16 units, which V8 knows without a pass).
  let status = unsafe { sys::napi_get_value_string_utf16(env.raw(), raw, std::ptr::null_mut(), 0, &mut units) };
  if status != sys::Status::napi_ok {
    return Err(Error::from_reason("rcluster: cannot read the frame string"));
  }
  // At most 3 bytes of UTF-8 per UTF-16 unit, and the terminating NUL.
  let room = units * 3 + 1;
  buf.clear();
  buf.reserve(room);
  let mut len = 0;
  // SAFETY: `buf` has `room` bytes of capacity; napi writes at most that.
  let status = unsafe { sys::napi_get_value_string_utf8(env.raw(), raw, buf.as_mut_ptr().cast(), room, &mut len) };
  if status != sys::Status::napi_ok {
    return Err(Error::from_reason("rcluster: cannot read the frame string"));
  }
  // SAFETY: napi wrote `len` bytes.
  unsafe { buf.set_len(len) };
  Ok(&buf[..])
}

/// `worker.disconnect()` in the primary; `graceMs`: how long the reaper lets
/// it finish should the primary die meanwhile.
#[napi]
pub fn disconnect(id: u32, grace_ms: Option<f64>) -> Result<()> {
  // A grace is a duration, 0 included (unlike the optional limits, where 0 is off).
  let grace = grace_ms.map_or(crate::primary::DEFAULT_KILL_TIMEOUT, duration_ms);
  core()?.disconnect(id, grace);
  Ok(())
}

/// `killTimeout` from setupPrimary: the grace of workers that leave by
/// themselves, should the primary die meanwhile.
#[napi]
pub fn set_kill_timeout(ms: f64) -> Result<()> {
  core()?.set_kill_timeout(duration_ms(ms));
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

/// `sticky: 'ip'` (true) or not, for server handles created from now on.
#[napi]
pub fn set_sticky(on: bool) -> Result<()> {
  core()?.set_sticky(on);
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
pub fn ref_worker(env: &Env, id: u32, keep_alive: bool) -> Result<()> {
  pump::set_referenced(env, id, keep_alive)
}

/// JS is done with a finished worker: it no longer keeps Node alive.
#[napi]
pub fn release_worker(env: &Env, id: u32) -> Result<()> {
  pump::release_js(env, id)
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

/// Where the metrics endpoint listens, or why it could not: `errno`
/// (negative) with `syscall` 'getaddrinfo' for a host that does not resolve
/// (libuv's errno: -3008 EAI_NONAME, -3001 EAI_AGAIN...), else 'listen' with
/// `address` and `port` saying where the bind failed.
/// `pending`: a host name, resolved on the core; the outcome comes later.
#[napi(object)]
#[derive(Default)]
pub struct MetricsAddress {
  pub errno: Option<i32>,
  pub syscall: Option<String>,
  pub address: Option<String>,
  /// `'IPv4'` or `'IPv6'`, as `server.address()` says.
  pub family: Option<String>,
  pub port: Option<u32>,
  pub pending: Option<bool>,
}

impl MetricsAddress {
  fn of(r: crate::metrics::Outcome) -> MetricsAddress {
    use crate::metrics::Failure;
    let (errno, syscall, at) = match r {
      Ok(bound) => (None, None, Some(bound)),
      Err(Failure::Lookup(errno)) => (Some(errno), Some("getaddrinfo"), None),
      Err(Failure::Listen(e, at)) => (Some(errno_of(&e)), Some("listen"), Some(at)),
    };
    MetricsAddress {
      errno,
      syscall: syscall.map(String::from),
      address: at.map(|b| b.ip().to_string()),
      family: at.map(|b| if b.is_ipv4() { "IPv4" } else { "IPv6" }.into()),
      port: at.map(|b| b.port() as u32),
      pending: None,
    }
  }
}

/// Starts (or moves) the metrics and health endpoint, served by the core.
/// A numeric host is bound before this returns. A name is resolved on the
/// core (no DNS wait on the JS thread): this returns `pending`, and `done`
/// gets the outcome, unless the endpoint is stopped or moved first.
#[napi]
pub fn start_metrics(host: String, port: u32, done: Function<'_, MetricsAddress, ()>) -> Result<MetricsAddress> {
  let target = crate::metrics::Target::new(&host, port as u16);
  if let crate::metrics::Target::Addr(addr) = target {
    return Ok(MetricsAddress::of(core()?.start_metrics(addr)));
  }
  // Keeps the process alive until the outcome is told (as Node's lookup for
  // `listen(port, host)` does), not after: it is released once called, or
  // dropped unused when the endpoint is stopped or moved first.
  let done = done
    .build_threadsafe_function::<MetricsAddress>()
    .callee_handled::<false>()
    .weak::<false>()
    .build()?;
  let bound = Box::new(move |r| {
    done.call(
      MetricsAddress::of(r),
      napi::threadsafe_function::ThreadsafeFunctionCallMode::NonBlocking,
    );
  });
  core()?
    .start_metrics_then(target, bound)
    .map_err(|e| Error::from_reason(e.to_string()))?;
  Ok(MetricsAddress {
    pending: Some(true),
    ..Default::default()
  })
}

#[napi]
pub fn stop_metrics() -> Result<()> {
  core()?.stop_metrics();
  Ok(())
}

/// Counts a `cluster.reload()` for `rcluster_reloads_total`.
#[napi]
pub fn count_reload() -> Result<()> {
  core()?.count_reload();
  Ok(())
}

#[napi(object)]
pub struct NativeLoadStats {
  /// Reuseport members seen stalled (see `load`).
  pub stalls: f64,
  /// Connections the primary took from stalled members' queues.
  pub taken: f64,
}

/// The queue watcher's counters, for `cluster.stats()`.
#[napi]
pub fn load_stats() -> NativeLoadStats {
  let (stalls, taken) = crate::load::counters();
  NativeLoadStats {
    stalls: stalls as f64,
    taken: taken as f64,
  }
}
