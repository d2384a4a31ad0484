//! Channel reads at the JS thread's pace.
//!
//! While events already wait for JS, reading more cannot get them there any
//! sooner: the reader waits until JS takes the queue (or `MAX_WAIT` passes,
//! so heartbeats and hand-off replies are still read while JS is busy). The
//! socket meanwhile gathers more frames per read, and the core thread wakes
//! once per batch JS takes rather than once per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

const MAX_WAIT: Duration = Duration::from_millis(2);

pub struct Pace {
  waiting: AtomicBool,
  taken: Notify,
}

pub static PACE: Pace = Pace {
  waiting: AtomicBool::new(false),
  taken: Notify::const_new(),
};

impl Pace {
  /// Events now wait for JS.
  pub fn events_waiting(&self) {
    self.waiting.store(true, Ordering::Release);
  }

  /// JS took every waiting event.
  pub fn taken(&self) {
    self.waiting.store(false, Ordering::Release);
    self.taken.notify_waiters();
  }

  /// Whether `wait` would wait now.
  pub fn is_waiting(&self) -> bool {
    self.waiting.load(Ordering::Acquire)
  }

  /// Returns once JS has taken what waits, or after `MAX_WAIT`.
  pub async fn wait(&self) {
    if !self.waiting.load(Ordering::Acquire) {
      return;
    }
    let taken = self.taken.notified();
    tokio::pin!(taken);
    taken.as_mut().enable();
    if !self.waiting.load(Ordering::Acquire) {
      return;
    }
    let _ = tokio::time::timeout(MAX_WAIT, taken).await;
  }
}
