//! Calling the JS pump from the JS thread's own loop (the `uv_reader`'s
//! wake-ups), not from a threadsafe function: in a handle scope, through
//! `napi_make_callback` with an async context, so nextTicks and microtasks
//! run after each call, as after Node's own channel reads.

use std::cell::RefCell;

use napi::bindgen_prelude::*;
use napi::sys;

use crate::framing::Serialization;

/// Larger buffers are not kept between wake-ups (nor between sends).
pub const KEPT_BYTES: usize = 256 * 1024;

/// The pump, as the JS thread calls it directly.
struct Direct {
  func: sys::napi_ref,
  context: sys::napi_async_context,
}

thread_local! {
  static DIRECT: RefCell<Option<Direct>> = const { RefCell::new(None) };
  static DIRECT_BYTES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn check(status: sys::napi_status, what: &str) -> Result<()> {
  if status == sys::Status::napi_ok {
    Ok(())
  } else {
    Err(Error::from_reason(format!("rcluster: {what} failed ({status})")))
  }
}

/// Installs the JS function called (without arguments) when events wait.
/// Keeps what `call_now` needs to call `pump`. On the JS thread.
pub fn install(env: &Env, pump: sys::napi_value) -> Result<()> {
  // For calls from the JS thread itself (`call_now`): a strong reference to
  // the function and an async context, so nextTicks and microtasks run after
  // each call, as after Node's own channel reads.
  let raw = env.raw();
  let mut func = std::ptr::null_mut();
  let mut resource = std::ptr::null_mut();
  let mut name = std::ptr::null_mut();
  let mut context = std::ptr::null_mut();
  // SAFETY: on the JS thread, with values of this env; the references are
  // never deleted (the pump lives as long as the process).
  unsafe {
    check(
      sys::napi_create_reference(raw, pump, 1, &mut func),
      "napi_create_reference",
    )?;
    check(sys::napi_create_object(raw, &mut resource), "napi_create_object")?;
    let mut keep = std::ptr::null_mut();
    check(
      sys::napi_create_reference(raw, resource, 1, &mut keep),
      "napi_create_reference",
    )?;
    let label = "rcluster:ipc";
    check(
      sys::napi_create_string_utf8(raw, label.as_ptr().cast(), label.len() as isize, &mut name),
      "napi_create_string_utf8",
    )?;
    check(
      sys::napi_async_init(raw, resource, name, &mut context),
      "napi_async_init",
    )?;
  }
  DIRECT.with(|d| *d.borrow_mut() = Some(Direct { func, context }));
  Ok(())
}

/// An empty buffer for the bytes of direct frames (kept from the last
/// wake-up: fresh allocations of this size per wake-up cost page faults).
pub fn spare_bytes() -> Vec<u8> {
  let mut bytes = DIRECT_BYTES.with(|b| std::mem::take(&mut *b.borrow_mut()));
  bytes.clear();
  bytes
}

/// The pump's arguments for frames delivered directly.
unsafe fn frame_args(
  env: sys::napi_env,
  (id, mode, bytes): (u32, Serialization, Vec<u8>),
  args: &mut [sys::napi_value; 2],
) -> bool {
  let made = make_frame_args(env, id, mode, &bytes, args);
  // Kept for the next wake-up, unless a huge message made it huge.
  if bytes.capacity() <= KEPT_BYTES {
    DIRECT_BYTES.with(|b| *b.borrow_mut() = bytes);
  }
  made
}

unsafe fn make_frame_args(
  env: sys::napi_env,
  id: u32,
  mode: Serialization,
  bytes: &[u8],
  args: &mut [sys::napi_value; 2],
) -> bool {
  use napi::sys;
  if sys::napi_create_uint32(env, id, &mut args[0]) != sys::Status::napi_ok {
    return false;
  }
  match mode {
    Serialization::Json => match crate::pump::json_string(&Env::from_raw(env), bytes, bytes.is_ascii()) {
      Ok(text) => {
        args[1] = text.raw();
        true
      }
      Err(_) => false,
    },
    Serialization::Advanced => {
      let mut data = std::ptr::null_mut();
      let status = sys::napi_create_buffer_copy(env, bytes.len(), bytes.as_ptr().cast(), &mut data, &mut args[1]);
      status == sys::Status::napi_ok
    }
  }
}

/// Calls the pump now, from the JS thread's own loop (not from JS): in a
/// handle scope, through `napi_make_callback`, so nextTicks and microtasks
/// run after it. A listener's exception becomes an uncaught exception, as
/// from any callback Node makes.
///
/// # Safety
/// On the JS thread, outside any JS call, with the env the pump was
/// installed with.
pub unsafe fn call_now(env: sys::napi_env, frames: Option<(u32, Serialization, Vec<u8>)>) {
  use napi::sys;
  DIRECT.with(|d| {
    let d = d.borrow();
    let Some(d) = d.as_ref() else { return };
    let mut scope = std::ptr::null_mut();
    if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
      return;
    }
    let (mut func, mut recv, mut result) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
    let mut args = [std::ptr::null_mut(); 2];
    let argc = match frames {
      Some(frames) => {
        if !frame_args(env, frames, &mut args) {
          // Out of memory, as good as: nothing sensible to deliver.
          sys::napi_close_handle_scope(env, scope);
          return;
        }
        2
      }
      None => 0,
    };
    if sys::napi_get_reference_value(env, d.func, &mut func) == sys::Status::napi_ok
      && sys::napi_get_global(env, &mut recv) == sys::Status::napi_ok
    {
      let status = sys::napi_make_callback(env, d.context, recv, func, argc, args.as_ptr(), &mut result);
      if status == sys::Status::napi_pending_exception {
        let mut error = std::ptr::null_mut();
        if sys::napi_get_and_clear_last_exception(env, &mut error) == sys::Status::napi_ok {
          sys::napi_fatal_exception(env, error);
        }
      }
    }
    sys::napi_close_handle_scope(env, scope);
  });
}
