//! The JS thread reads worker channels itself, on Node's libuv loop.
//!
//! Why: read on the core thread, every worker message crossed a thread
//! (worker → core thread → JS thread), paying a cross-thread wake-up and the
//! core's work on top of JS's. node:cluster's primary reads its channels on
//! its JS thread; so does this: a `uv_poll` handle per channel, and on
//! readable, non-blocking reads, framing, and one call of the JS pump for the
//! user messages of that wake-up.
//!
//! Everything else a worker says (cluster acts, handles and their ACKs, fds,
//! heartbeats), and EOF or errors, goes to the core's loop as its own reader
//! would have sent it (`handover::ToCore`). While the core still handles any
//! of that, user frames follow the same way, so nothing overtakes what the
//! worker sent before it.
//!
//! The handles are unref'd: what keeps Node alive stays the pump's
//! keep-alives (`worker.process.ref()`/`unref()`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::raw::{c_int, c_void};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use napi::sys::{napi_env, uv_loop_s};

use crate::channel::{FrameSink, Inbox, ReaderEvent, Stop};
use crate::framing::Serialization;
use crate::handover::{self, Channel, Handover};
use crate::protocol::Inbound;

// libuv, as Node exports it to addons.
const UV_POLL: c_int = 8; // uv_handle_type
const UV_READABLE: c_int = 1;

type PollCb = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
type CloseCb = unsafe extern "C" fn(handle: *mut c_void);

extern "C" {
  fn uv_handle_size(kind: c_int) -> usize;
  fn uv_poll_init(event_loop: *mut uv_loop_s, handle: *mut c_void, fd: c_int) -> c_int;
  fn uv_poll_start(handle: *mut c_void, events: c_int, cb: PollCb) -> c_int;
  fn uv_poll_stop(handle: *mut c_void) -> c_int;
  fn uv_close(handle: *mut c_void, cb: Option<CloseCb>);
  fn uv_unref(handle: *mut c_void);
}

/// At most this many reads (of 64 KiB) per wake-up: a flood from one worker
/// must not keep the JS thread from everything else. Level-triggered, the
/// handle fires again on the next loop turn for the rest.
const READS_PER_WAKE: usize = 16;

/// JS is called once per read (at most 64 KiB of frames), not once per
/// wake-up: a string or Buffer past V8's regular object size (about 128 KiB)
/// is a fresh large-object allocation each time, page faults and all, which
/// cost more than the calls saved.
const READS_PER_CALL: usize = 1;

/// Channels waiting for the JS thread to start reading them.
static WAITING: Mutex<Vec<Handover>> = Mutex::new(Vec::new());

/// Makes the JS thread the reader of every channel started from now on.
pub fn install() {
  handover::set_host(|h| WAITING.lock().unwrap().push(h));
}

/// Starts reading the channels handed over since the last call. On the JS
/// thread.
pub fn adopt(env: napi_env) {
  let waiting = std::mem::take(&mut *WAITING.lock().unwrap());
  for h in waiting {
    // SAFETY: on the JS thread, with its env.
    if let Err(h) = unsafe { Reader::start(env, h) } {
      // No handle (libuv refused it): the channel is as good as broken.
      h.channel
        .end(Some("rcluster: cannot watch the channel on the JS thread".into()));
    }
  }
}

/// One channel read on the JS thread. Lives in the uv handle's `data` from
/// `start` until the handle is closed.
struct Reader {
  id: u32,
  mode: Serialization,
  env: napi_env,
  /// A duplicate of the core's socket: ours to poll and close.
  fd: OwnedFd,
  channel: Arc<Channel>,
  /// The uv_poll_t, allocated here (its size comes from libuv).
  handle: *mut c_void,
  /// User frames of this read as they were on the wire, not yet queued for
  /// JS.
  frames: Vec<u8>,
  closing: bool,
}

/// A uv handle's first field is its `void *data`.
unsafe fn reader_of(handle: *mut c_void) -> *mut Reader {
  *(handle as *mut *mut Reader)
}

impl Reader {
  /// # Safety
  /// On the JS thread, with its env.
  unsafe fn start(env: napi_env, h: Handover) -> Result<(), Handover> {
    let Ok(fd) = h.channel.sock.try_clone() else {
      return Err(h);
    };
    let mut event_loop = std::ptr::null_mut();
    if napi::sys::napi_get_uv_event_loop(env, &mut event_loop) != napi::sys::Status::napi_ok || event_loop.is_null() {
      return Err(h);
    }
    // u64 words: at least pointer-aligned, as libuv's structs need.
    let words = uv_handle_size(UV_POLL).div_ceil(8);
    let handle = Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut c_void;
    if uv_poll_init(event_loop, handle, fd.as_raw_fd()) != 0 {
      drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
        handle as *mut u64,
        words,
      )));
      return Err(h);
    }
    let reader = Box::new(Reader {
      id: h.id,
      mode: h.mode,
      env,
      fd,
      channel: h.channel,
      handle,
      frames: Vec::new(),
      closing: false,
    });
    *(handle as *mut *mut Reader) = Box::into_raw(reader);
    uv_unref(handle);
    if uv_poll_start(handle, UV_READABLE, on_readable) != 0 {
      let reader = &mut *reader_of(handle);
      reader.channel.end(Some("rcluster: cannot poll the channel".into()));
      reader.close();
    }
    Ok(())
  }

  /// Reads what is there (a bounded amount), collects user frames for JS and
  /// hands the rest to the core. Returns whether frames were queued in the
  /// pump's batch (behind which the rest must go); the rest is in `frames`.
  /// `drained`: the socket has nothing more (or the channel ended). With
  /// `to_end`, a short read does not count as drained: only EAGAIN or the end.
  fn read(&mut self, inbox: &mut Inbox, to_end: bool, drained: &mut bool) -> bool {
    let fd = self.fd.as_raw_fd();
    let mut sink = ForJs {
      reader: self,
      queued: false,
    };
    let stop = inbox.read_frames(fd, READS_PER_CALL, to_end, &mut sink);
    let mut queued = sink.queued;
    *drained = !matches!(stop, Stop::Limit);
    if let Stop::End(error) = stop {
      queued |= self.flush();
      self.channel.end(error);
    }
    queued
  }

  fn flush(&mut self) -> bool {
    let any = !self.frames.is_empty();
    crate::pump::queue_frames(self.id, self.mode, &mut self.frames);
    // A huge message's buffer is not kept for the channel's life.
    if self.frames.capacity() > crate::js_call::KEPT_BYTES {
      self.frames = Vec::new();
    }
    any
  }

  /// The handle closes (and frees this) on a later loop turn.
  fn close(&mut self) {
    if std::mem::replace(&mut self.closing, true) {
      return;
    }
    // SAFETY: our live handle, on the loop's thread.
    unsafe {
      uv_poll_stop(self.handle);
      uv_close(self.handle, Some(on_closed));
    }
  }
}

/// Where a read on the JS thread puts each frame: a user frame in the
/// reader's `frames` for JS, unless something handed to the core is still
/// there (`ToCore::busy`); everything else to the core, after the frames
/// before it are queued for JS.
struct ForJs<'a> {
  reader: &'a mut Reader,
  /// Frames were queued in the pump's batch.
  queued: bool,
}

impl FrameSink for ForJs<'_> {
  fn user_wire(&mut self) -> Option<&mut Vec<u8>> {
    (!self.reader.channel.to_core.busy()).then_some(&mut self.reader.frames)
  }

  fn take(&mut self, frame: Inbound) {
    let reader = &mut *self.reader;
    match frame {
      Inbound::User(frame) if !reader.channel.to_core.busy() => {
        crate::framing::frame_into(reader.mode, &frame, &mut reader.frames)
      }
      other => {
        self.queued |= reader.flush();
        reader.channel.to_core.send(ReaderEvent::Message(other));
      }
    }
  }
}

unsafe extern "C" fn on_readable(handle: *mut c_void, status: c_int, _events: c_int) {
  let reader = &mut *reader_of(handle);
  // POLLERR (status < 0): libuv has stopped the handle. On a Unix socket
  // that is ECONNRESET, set when the worker exited with our messages unread;
  // frames it wrote before that may still wait, and the error (our end of
  // the channel) is only reported once they are read. So read to the end,
  // and poll again if the bound on reads came first: else neither the rest
  // nor the end would ever be read here.
  let stopped = status < 0;
  handover::JS_TURNS.fetch_add(1, Ordering::Release);
  let channel = reader.channel.clone();
  for _ in 0..READS_PER_WAKE / READS_PER_CALL {
    if reader.closing {
      return;
    }
    let mut drained = true;
    let delivery = {
      // Where each frame goes is decided under the lock: frames the core
      // reads for a stuck JS thread cannot overtake these.
      let mut inbox = channel.inbox.lock().unwrap();
      if channel.ended.load(Ordering::Acquire) {
        None
      } else if reader.read(&mut inbox, stopped, &mut drained) {
        reader.flush();
        Some(None)
      } else if !reader.frames.is_empty() {
        Some(crate::pump::direct_frames(reader.id, reader.mode, &mut reader.frames))
      } else {
        None
      }
    };
    if channel.ended.load(Ordering::Acquire) {
      reader.close();
    }
    if let Some(frames) = delivery {
      crate::js_call::call_now(reader.env, frames);
    }
    if drained {
      break;
    }
  }
  if stopped
    && !reader.closing
    && !channel.ended.load(Ordering::Acquire)
    && uv_poll_start(handle, UV_READABLE, on_readable) != 0
  {
    channel.end(Some("rcluster: cannot poll the channel".into()));
    reader.close();
  }
}

unsafe extern "C" fn on_closed(handle: *mut c_void) {
  drop(Box::from_raw(reader_of(handle)));
  let words = uv_handle_size(UV_POLL).div_ceil(8);
  drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
    handle as *mut u64,
    words,
  )));
}
