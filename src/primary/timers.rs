//! The core's one way to act later: a `Msg` sent to the loop after a delay.
//! Timers with a key replace the one before them and can be cancelled (a
//! restart of a slot that is unsupervised meanwhile must not happen); the
//! loop calls `fired` when a keyed timer's message arrives.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;

use super::Msg;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TimerKey {
  /// A slot's scheduled restart.
  Respawn(u32),
  /// How long a worker's `'exit'` waits for its channel's EOF.
  ExitDeadline(u32),
}

pub struct Timers {
  tx: UnboundedSender<Msg>,
  keyed: HashMap<TimerKey, AbortHandle>,
}

impl Timers {
  pub fn new(tx: UnboundedSender<Msg>) -> Self {
    Timers {
      tx,
      keyed: HashMap::new(),
    }
  }

  /// Sends `msg` after `delay`.
  pub fn after(&self, delay: Duration, msg: Msg) {
    self.spawn(delay, msg);
  }

  /// Sends `msg` after `delay` unless cancelled; replaces a timer of `key`.
  pub fn schedule(&mut self, key: TimerKey, delay: Duration, msg: Msg) {
    let handle = self.spawn(delay, msg);
    if let Some(old) = self.keyed.insert(key, handle) {
      old.abort();
    }
  }

  pub fn cancel(&mut self, key: &TimerKey) {
    if let Some(h) = self.keyed.remove(key) {
      h.abort();
    }
  }

  /// The message of `key`'s timer arrived.
  pub fn fired(&mut self, key: &TimerKey) {
    self.keyed.remove(key);
  }

  /// Sends `msg` every `period`, the first one now, until the loop is gone
  /// or the returned handle aborts it.
  pub fn every(&self, period: Duration, msg: impl Fn() -> Msg + Send + 'static) -> AbortHandle {
    let tx = self.tx.clone();
    tokio::spawn(async move {
      let mut tick = tokio::time::interval(period);
      // A late tick is not made up for with a burst.
      tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
      while tx.send(msg()).is_ok() {
        tick.tick().await;
      }
    })
    .abort_handle()
  }

  fn spawn(&self, delay: Duration, msg: Msg) -> AbortHandle {
    let tx = self.tx.clone();
    tokio::spawn(async move {
      tokio::time::sleep(delay).await;
      let _ = tx.send(msg);
    })
    .abort_handle()
  }
}
