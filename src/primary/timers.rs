//! The core's one way to act later: a `Msg` sent to the loop after a delay
//! (or once a socket is readable). Timers with a key replace the one before
//! them and can be cancelled (a restart of a slot that is unsupervised
//! meanwhile must not happen); the loop calls `fired` when a keyed timer's
//! message arrives.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;

use super::Msg;
use crate::readiness::AnyReadable;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TimerKey {
  /// A slot's scheduled restart.
  Respawn(u32),
  /// How long a worker's `'exit'` waits for its channel's EOF.
  ExitDeadline(u32),
  /// The queue watcher's next look (`stalls`): re-armed at every look, so
  /// never `fired`.
  LoadTick,
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

  /// Sends `msg` once any of `bell`'s sockets is readable, unless cancelled;
  /// replaces a timer of `key`.
  pub fn when_readable(&mut self, key: TimerKey, bell: AnyReadable, msg: Msg) {
    let tx = self.tx.clone();
    let handle = tokio::spawn(async move {
      bell.wait().await;
      let _ = tx.send(msg);
    })
    .abort_handle();
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
      // The first tick is the send above the loop, so the interval starts one
      // period later (a plain `interval` completes its first tick at once,
      // which sent two messages back to back at every start).
      let start = tokio::time::Instant::now() + period;
      let mut tick = tokio::time::interval_at(start, period);
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

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn every_sends_once_now_then_once_per_period() {
    let rt = tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .unwrap();
    rt.block_on(async {
      let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
      let timers = Timers::new(tx);
      let handle = timers.every(Duration::from_secs(3600), || Msg::Tick);
      // Well inside the first period: only the tick sent at the start.
      tokio::time::sleep(Duration::from_millis(50)).await;
      let mut sent = 0;
      while rx.try_recv().is_ok() {
        sent += 1;
      }
      handle.abort();
      assert_eq!(sent, 1);
    });
  }

  #[test]
  fn when_readable_sends_once_readable_unless_replaced() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let rt = tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .unwrap();
    rt.block_on(async {
      let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
      let mut timers = Timers::new(tx);
      let (a, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
      let bell = || AnyReadable::new([a.as_raw_fd()]).unwrap();
      timers.when_readable(TimerKey::LoadTick, bell(), Msg::Tick);
      tokio::time::sleep(Duration::from_millis(50)).await;
      assert!(rx.try_recv().is_err(), "nothing to read yet");
      // Replaced by a later timer of the same key: only that one sends.
      timers.schedule(TimerKey::LoadTick, Duration::from_secs(3600), Msg::Tick);
      peer.write_all(b"x").unwrap();
      tokio::time::sleep(Duration::from_millis(50)).await;
      assert!(rx.try_recv().is_err(), "the replaced wait sent nothing");
      timers.when_readable(TimerKey::LoadTick, bell(), Msg::Tick);
      let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
      assert!(matches!(got, Ok(Some(Msg::Tick))), "readable already: sent at once");
    });
  }
}
