//! Who reads a worker's channel.
//!
//! By default the core thread does (`channel::read_loop`). In the addon, the
//! JS thread does instead (`uv_reader`): a user message then goes from the
//! worker to JS without crossing a thread, as node:cluster's primary reads
//! its channels. The core still judges everything else: the reader hands each
//! internal frame (and EOF, errors) to the core's loop through `ToCore`,
//! exactly as `read_loop` would have, so the core's state machine is the same
//! whoever reads.
//!
//! Order: a worker's events reach JS in the order the worker sent them. While
//! anything the reader handed to the core is still being handled there
//! (`ToCore::busy`), user frames are handed to the core too, behind it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::channel::ReaderEvent;
use crate::framing::Serialization;

/// A worker's channel, for a reader other than the core's.
pub struct Handover {
  pub id: u32,
  pub mode: Serialization,
  /// The core's socket (shared with its writer); the reader polls a
  /// duplicate, so the core's shutdown still ends it with EOF.
  pub sock: Arc<OwnedFd>,
  pub to_core: ToCore,
}

/// The way from a reader to the core's loop.
pub struct ToCore {
  send: Box<dyn Fn(ReaderEvent, Arc<AtomicUsize>) + Send>,
  /// Sent and not yet handled by the core (decremented there, after the
  /// events it emitted for them are queued for JS).
  in_core: Arc<AtomicUsize>,
}

impl ToCore {
  /// `send` delivers an event to the loop, which must call `handled` with the
  /// counter once it has handled it.
  pub fn new(send: impl Fn(ReaderEvent, Arc<AtomicUsize>) + Send + 'static) -> Self {
    ToCore {
      send: Box::new(send),
      in_core: Arc::default(),
    }
  }

  pub fn send(&self, event: ReaderEvent) {
    self.in_core.fetch_add(1, Ordering::Relaxed);
    (self.send)(event, self.in_core.clone());
  }

  /// Something sent is not handled yet: a user frame must follow it through
  /// the core rather than overtake it.
  pub fn busy(&self) -> bool {
    // Acquire: pairs with `handled`, so once this says false, the events the
    // core emitted are visible in the pump's queue.
    self.in_core.load(Ordering::Acquire) > 0
  }
}

/// Called by the loop once it has handled what a reader sent (and queued its
/// events).
pub fn handled(in_core: &AtomicUsize) {
  in_core.fetch_sub(1, Ordering::Release);
}

type Host = Box<dyn Fn(Handover) + Send + Sync>;

static HOST: OnceLock<Host> = OnceLock::new();

/// Makes `host` the reader of every channel started from now on.
pub fn set_host(host: impl Fn(Handover) + Send + Sync + 'static) {
  let _ = HOST.set(Box::new(host));
}

/// Gives the channel to the host, if there is one; else returns it.
pub fn offer(handover: Handover) -> Option<Handover> {
  match HOST.get() {
    Some(host) => {
      host(handover);
      None
    }
    None => Some(handover),
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn busy_until_everything_sent_is_handled() {
    let (tx, rx) = std::sync::mpsc::channel();
    let to_core = ToCore::new(move |_, counter| tx.send(counter).unwrap());
    assert!(!to_core.busy());
    to_core.send(ReaderEvent::End { error: None });
    to_core.send(ReaderEvent::End { error: None });
    assert!(to_core.busy());
    handled(&rx.recv().unwrap());
    assert!(to_core.busy(), "one is still in the core");
    handled(&rx.recv().unwrap());
    assert!(!to_core.busy());
  }
}
