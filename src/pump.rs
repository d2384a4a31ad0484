//! Core events on their way to JS, in batches.
//!
//! The core thread pushes `(worker id, event)` into one queue; the push that
//! finds the queue empty schedules one call of the JS pump, which takes the
//! whole queue (`takeEvents`) and routes it. So a burst of messages costs one
//! wake-up of the JS thread, not one per message.
//!
//! Liveness: the pump's threadsafe function is weak; what keeps Node alive is
//! counted on the JS thread. Each fork registers a keep-alive under its id,
//! held twice: by the core (through the worker's, or its slot's, `EventSink`)
//! and by JS (until `releaseWorker`). The core's hold ends when the sink is
//! dropped, and that end travels through the queue too (`Released`), so Node
//! cannot exit while events before it are still undelivered. While any
//! keep-alive is held and ref'd (`worker.process.ref()`), the pump is ref'd.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::IntoRawFd;
use std::sync::{Arc, Mutex, OnceLock};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

use crate::binding::extra_fds;
use crate::channel::Serialization;
use crate::primary::{Event, EventSink, ExitDecision};
use crate::spawn::StdioSpec;

type PumpFn = ThreadsafeFunction<(), (), (), Status, false, true>;

/// What waits for JS, assembled as it arrives (on the core thread), so that
/// taking it costs the JS thread little more than making the JS values.
#[derive(Default)]
struct Batch {
  /// Four u32 per event: worker id, kind, a, b (see `take`).
  meta: Vec<u32>,
  /// JSON frames, joined by `\n`.
  json: Vec<u8>,
  /// Whether `json` holds bytes past ASCII (else JS gets it as Latin-1: a
  /// copy, without decoding).
  json_non_ascii: bool,
  /// Advanced frames, end to end.
  data: Vec<u8>,
  others: Vec<(u32, Event)>,
  /// Keep-alives whose sink the core dropped.
  released: Vec<u32>,
}

impl Batch {
  fn is_empty(&self) -> bool {
    self.meta.is_empty() && self.released.is_empty()
  }

  /// One user message's payload, copied once, into `json` or `data`.
  fn add_frame(&mut self, id: u32, mode: Serialization, frame: &[u8]) {
    match mode {
      Serialization::Json => {
        if !self.json.is_empty() {
          self.json.push(b'\n');
        }
        self.json.extend_from_slice(frame);
        self.json_non_ascii |= !frame.is_ascii();
        self.meta.extend([id, KIND_JSON, 0, 0]);
      }
      Serialization::Advanced => {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(frame);
        self.meta.extend([id, KIND_ADVANCED, start, self.data.len() as u32]);
      }
    }
  }

  fn add(&mut self, id: u32, mode: Serialization, event: Event) {
    match event {
      Event::Message { frame, handle: None } => self.add_frame(id, mode, &frame),
      Event::Sent { token, error: None } => self.meta.extend([id, KIND_SENT, token, 0]),
      other => {
        self.meta.extend([id, KIND_OTHER, self.others.len() as u32, 0]);
        self.others.push((id, other));
      }
    }
  }
}

struct Pump {
  batch: Mutex<Batch>,
  call: PumpFn,
}

static PUMP: OnceLock<Pump> = OnceLock::new();

impl Pump {
  fn push(&self, add: impl FnOnce(&mut Batch)) {
    let was_empty = {
      let mut b = self.batch.lock().unwrap();
      let was_empty = b.is_empty();
      add(&mut b);
      if was_empty {
        crate::pace::PACE.events_waiting();
      }
      was_empty
    };
    if was_empty {
      call_soon(|| {
        self.call.call((), ThreadsafeFunctionCallMode::NonBlocking);
      });
    }
  }
}

thread_local! {
  /// On the core thread: wakes the task that calls the pump.
  static CALLER: RefCell<Option<Arc<tokio::sync::Notify>>> = const { RefCell::new(None) };
}

/// Calls the pump once the core thread has handled everything it has in hand
/// (every frame of a read, say): called at the first event, JS (quick on the
/// other core) would take each event alone, costing a wake-up of the JS
/// thread per message. Off the core thread, at once.
fn call_soon(call: impl FnOnce()) {
  if tokio::runtime::Handle::try_current().is_err() {
    return call();
  }
  CALLER.with(|c| {
    let mut c = c.borrow_mut();
    let notify = c.get_or_insert_with(|| {
      let notify = Arc::new(tokio::sync::Notify::new());
      let wakes = notify.clone();
      tokio::spawn(async move {
        loop {
          wakes.notified().await;
          if let Some(p) = PUMP.get() {
            p.call.call((), ThreadsafeFunctionCallMode::NonBlocking);
          }
        }
      });
      notify
    });
    notify.notify_one();
  });
}

/// Installs the JS function called (without arguments) when events wait, or
/// (from the JS thread's own loop) with a worker's frames.
pub fn install(env: &Env, pump: Function<'_, (), ()>) -> Result<()> {
  if PUMP.get().is_some() {
    return Ok(());
  }
  crate::js_call::install(env, pump.raw())?;
  let call: PumpFn = pump
    .build_threadsafe_function::<()>()
    .callee_handled::<false>()
    .weak::<true>()
    .build_callback(|_| Ok(()))?;
  let _ = PUMP.set(Pump {
    batch: Mutex::default(),
    call,
  });
  Ok(())
}

fn add_wire(b: &mut Batch, id: u32, mode: Serialization, wire: &mut Vec<u8>) {
  for frame in crate::framing::payloads(mode, wire) {
    b.add_frame(id, mode, frame);
  }
  wire.clear();
}

/// Queues user frames read on the JS thread (`wire`: as they were on the
/// wire; no wake-up: `call_now` follows). Behind whatever the core queued:
/// the reader hands nothing to the core while its frames wait here.
pub fn queue_frames(id: u32, mode: Serialization, wire: &mut Vec<u8>) {
  if wire.is_empty() {
    return;
  }
  if let Some(p) = PUMP.get() {
    add_wire(&mut p.batch.lock().unwrap(), id, mode, wire);
  }
}

/// User frames read on the JS thread, for `call_now`. When nothing from the
/// core waits, they go as the pump's arguments `(id, frames)`: a string of
/// JSON lines, or a Buffer of advanced frames each behind its 4-byte length
/// (as on the wire), with no batch object to build (`Some`). Otherwise they
/// are queued behind what waits, and the pump takes it all (`None`).
pub fn direct_frames(id: u32, mode: Serialization, wire: &mut Vec<u8>) -> Option<(u32, Serialization, Vec<u8>)> {
  let p = PUMP.get()?;
  {
    let mut b = p.batch.lock().unwrap();
    if !b.is_empty() {
      add_wire(&mut b, id, mode, wire);
      return None;
    }
  }
  // Copied into the JS heap by `frame_args`; the two buffers take turns, so
  // neither is allocated afresh per read (that costs page faults).
  let mut bytes = std::mem::replace(wire, crate::js_call::spare_bytes());
  if mode == Serialization::Json {
    // Lines joined by newlines: the last one's goes.
    bytes.pop();
  }
  Some((id, mode, bytes))
}

/// The core's hold on a keep-alive; its drop is reported through the queue.
struct CoreHold(u32);

impl Drop for CoreHold {
  fn drop(&mut self) {
    if let Some(p) = PUMP.get() {
      p.push(|b| b.released.push(self.0));
    }
  }
}

/// A sink for the worker forked as `id` (and, if supervised, its slot's
/// successors), registering its keep-alive. Call on the JS thread.
pub fn sink(env: &Env, id: u32, mode: Serialization) -> Result<EventSink> {
  if PUMP.get().is_none() {
    return Err(Error::from_reason("rcluster: the event pump is not installed"));
  }
  KEEP.with(|k| k.borrow_mut().insert(id, Keep::default()));
  update_ref(env)?;
  let hold = CoreHold(id);
  Ok(Arc::new(move |worker: u32, event: Event| {
    let _ = &hold;
    if let Some(p) = PUMP.get() {
      p.push(|b| b.add(worker, mode, event));
    }
  }))
}

/// Who still holds a worker's keep-alive.
struct Keep {
  core: bool,
  js: bool,
  referenced: bool,
}

impl Default for Keep {
  fn default() -> Self {
    Keep {
      core: true,
      js: true,
      referenced: true,
    }
  }
}

impl Keep {
  fn alive(&self) -> bool {
    self.referenced && (self.core || self.js)
  }
}

thread_local! {
  static KEEP: RefCell<HashMap<u32, Keep>> = RefCell::new(HashMap::new());
  static PUMP_REFERENCED: RefCell<bool> = const { RefCell::new(false) };
}

fn update_ref(env: &Env) -> Result<()> {
  let Some(p) = PUMP.get() else { return Ok(()) };
  let want = KEEP.with(|k| k.borrow().values().any(Keep::alive));
  PUMP_REFERENCED.with(|r| {
    if *r.borrow() == want {
      return Ok(());
    }
    // SAFETY: on the JS thread, with a threadsafe function that lives as long
    // as the process (it is never released).
    let status = unsafe {
      if want {
        napi::sys::napi_ref_threadsafe_function(env.raw(), p.call.raw())
      } else {
        napi::sys::napi_unref_threadsafe_function(env.raw(), p.call.raw())
      }
    };
    if status != napi::sys::Status::napi_ok {
      return Err(Error::from_reason("rcluster: cannot change the event pump's ref state"));
    }
    *r.borrow_mut() = want;
    Ok(())
  })
}

fn change_keep(env: &Env, id: u32, change: impl FnOnce(&mut Keep)) -> Result<()> {
  KEEP.with(|k| {
    let mut k = k.borrow_mut();
    if let Some(keep) = k.get_mut(&id) {
      change(keep);
      if !keep.core && !keep.js {
        k.remove(&id);
      }
    }
  });
  update_ref(env)
}

/// `worker.process.ref()` / `unref()`.
pub fn set_referenced(env: &Env, id: u32, referenced: bool) -> Result<()> {
  change_keep(env, id, |k| k.referenced = referenced)
}

/// JS is done with the worker forked as `id`.
pub fn release_js(env: &Env, id: u32) -> Result<()> {
  change_keep(env, id, |k| k.js = false)
}

// Entry kinds in `meta` (four u32 per event: id, kind, a, b).
const KIND_JSON: u32 = 0; // the next line of `json`
const KIND_ADVANCED: u32 = 1; // data[a..b]
const KIND_SENT: u32 = 2; // a: token
const KIND_OTHER: u32 = 3; // others[a]

const COPY_LIMIT: usize = 64 * 1024;

/// JSON frames (lines joined by `\n`) as one JS string, for the batch and for
/// frames delivered directly alike. ASCII (`ascii`, known to the caller) goes
/// as Latin-1: a copy, without decoding. Otherwise as UTF-8, decoded as Node
/// decodes the channel: invalid bytes become U+FFFD.
pub fn json_string<'e>(env: &'e Env, json: &[u8], ascii: bool) -> Result<napi::JsString<'e>> {
  if ascii {
    env.create_string_latin1(json)
  } else {
    env.create_string(String::from_utf8_lossy(json))
  }
}

/// Everything queued, as `{ meta, json?, data?, others? }`: user messages and
/// successful writes in `meta` (with frames in the string `json`, lines
/// joined by `\n`, and the Buffer `data`), every other event as a plain object in `others`, one shape
/// per kind. Call on the JS thread.
pub fn take(env: &Env) -> Result<Object<'_>> {
  // Channels the core started since (a restarted worker's, say: its
  // `forked` event is in this batch) get their reader on this thread now.
  crate::uv_reader::adopt(env.raw());
  let batch = match PUMP.get() {
    Some(p) => {
      let mut b = p.batch.lock().unwrap();
      crate::pace::PACE.taken();
      std::mem::take(&mut *b)
    }
    None => Batch::default(),
  };
  for &id in &batch.released {
    change_keep(env, id, |k| k.core = false)?;
  }
  // Small batches are copied into the JS heap: cheaper than external memory
  // with a finalizer each.
  let mut out = Object::new(env)?;
  out.set("meta", Uint32ArraySlice::copy_from(env, &batch.meta)?)?;
  if !batch.json.is_empty() {
    out.set("json", json_string(env, &batch.json, !batch.json_non_ascii)?)?;
  }
  if batch.data.len() > COPY_LIMIT {
    out.set("data", Buffer::from(batch.data))?;
  } else if !batch.data.is_empty() {
    out.set("data", BufferSlice::copy_from(env, &batch.data)?)?;
  }
  if !batch.others.is_empty() {
    let mut others = env.create_array(batch.others.len() as u32)?;
    for (i, (id, event)) in batch.others.into_iter().enumerate() {
      others.set(i as u32, to_object(env, id, event)?)?;
    }
    out.set("others", others)?;
  }
  Ok(out)
}

fn ms(d: std::time::Duration) -> f64 {
  d.as_secs_f64() * 1000.0
}

/// One event (other than the hot ones) as `{ id, kind, … }`.
fn to_object(env: &Env, id: u32, event: Event) -> Result<Object<'_>> {
  let mut o = Object::new(env)?;
  o.set("id", id)?;
  let kind = match event {
    Event::Online => "online",
    Event::Listening(info) => {
      o.set("json", info.to_string())?;
      "listening"
    }
    Event::Message { frame, handle } => {
      o.set("data", Buffer::from(frame))?;
      if let Some(h) = handle {
        o.set("fd", h.fd.into_raw_fd())?;
        o.set("handleType", h.handle_type)?;
        o.set("socket", h.socket)?;
      }
      "message"
    }
    Event::ExitedAfterDisconnect => "exitedAfterDisconnect",
    Event::Disconnect => "disconnect",
    Event::Exit { code, signal, decision } => {
      o.set("code", code)?;
      o.set("signal", signal)?;
      // What supervision does next, if anything: `{ kind, slot, ms | crashes }`.
      if let Some(decision) = decision {
        let mut n = Object::new(env)?;
        match decision {
          ExitDecision::Restart { slot, delay } => {
            n.set("kind", "restarting")?;
            n.set("slot", slot)?;
            n.set("ms", ms(delay))?;
          }
          ExitDecision::CrashLoop { slot, crashes } => {
            n.set("kind", "crashloop")?;
            n.set("slot", slot)?;
            n.set("crashes", crashes)?;
          }
        }
        o.set("next", n)?;
      }
      "exit"
    }
    Event::Error { message, code } => {
      o.set("message", message)?;
      o.set("errorCode", code)?;
      "error"
    }
    Event::Sent { token, error } => {
      o.set("token", token)?;
      o.set("message", error)?;
      "sent"
    }
    Event::Internal(v) => {
      o.set("json", v.to_string())?;
      "internal"
    }
    Event::Forked { slot, info, spec } => {
      o.set("slot", slot)?;
      o.set("pid", info.pid)?;
      o.set("stdin", info.stdin.map(IntoRawFd::into_raw_fd))?;
      o.set("stdout", info.stdout.map(IntoRawFd::into_raw_fd))?;
      o.set("stderr", info.stderr.map(IntoRawFd::into_raw_fd))?;
      o.set("extra", extra_fds(info.extra))?;
      // The slot's spawn spec, so JS builds the worker as it was forked.
      let spec = serde_json::json!({
        "file": spec.file,
        "args": spec.args,
        "serialization": spec.serialization.as_str(),
        "stdio": spec.stdio.iter().map(StdioSpec::as_js).collect::<Vec<_>>(),
      });
      o.set("json", spec.to_string())?;
      "forked"
    }
    Event::Restarting { slot, delay } => {
      o.set("slot", slot)?;
      o.set("ms", ms(delay))?;
      "restarting"
    }
    Event::RestartFailed {
      slot,
      errno,
      file,
      args,
    } => {
      o.set("slot", slot)?;
      o.set("code", errno)?;
      o.set("json", serde_json::json!({ "file": file, "args": args }).to_string())?;
      "restartFailed"
    }
    Event::CrashLoop { slot, crashes } => {
      o.set("slot", slot)?;
      o.set("crashes", crashes)?;
      "crashloop"
    }
    Event::Unresponsive { silent } => {
      o.set("ms", ms(silent))?;
      "unresponsive"
    }
    Event::Recycle { reason } => {
      o.set("reason", reason)?;
      "recycle"
    }
    Event::SteeringRefused(r) => {
      o.set("errno", r.errno)?;
      o.set("sticky", r.sticky)?;
      o.set("port", r.port)?;
      "steeringRefused"
    }
  };
  o.set("kind", kind)?;
  Ok(o)
}
