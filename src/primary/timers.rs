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
  /// The supervisor watchdog's next look: re-armed after each while a
  /// watched worker is left.
  Watchdog,
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

  /// A timer of `key` is running, or its message has not been handled yet.
  pub fn is_scheduled(&self, key: &TimerKey) -> bool {
    self.keyed.contains_key(key)
  }

  pub fn cancel(&mut self, key: &TimerKey) {
    if let Some(h) = self.keyed.remove(key) {
      h.abort();
    }
  }

  /// The message of `key`'s timer arrived. A timer scheduled under the key
  /// after that message was sent is still running and stays (removing it
  /// would leave it unabortable: two chains of a periodic look, or a restart
  /// that skips its backoff). On the core's single thread a timer's task has
  /// finished by the time the loop handles its message.
  pub fn fired(&mut self, key: &TimerKey) {
    if self.keyed.get(key).is_some_and(AbortHandle::is_finished) {
      self.keyed.remove(key);
    }
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

  fn timers() -> (Timers, tokio::sync::mpsc::UnboundedReceiver<Msg>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (Timers::new(tx), rx)
  }

  #[tokio::test]
  async fn a_late_fired_keeps_the_timer_scheduled_after_its_message() {
    let (mut timers, mut rx) = timers();
    timers.schedule(TimerKey::Watchdog, Duration::ZERO, Msg::Tick);
    assert!(matches!(rx.recv().await, Some(Msg::Tick)));
    // Its message is in hand; meanwhile the key is scheduled again.
    timers.schedule(TimerKey::Watchdog, Duration::from_millis(100), Msg::Tick);
    timers.fired(&TimerKey::Watchdog);
    // The newer timer is still the key's: cancelling it stops it.
    timers.cancel(&TimerKey::Watchdog);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "the newer timer was cancelled");
    // A fired timer's key is free again.
    timers.schedule(TimerKey::Watchdog, Duration::ZERO, Msg::Tick);
    assert!(matches!(rx.recv().await, Some(Msg::Tick)));
    timers.fired(&TimerKey::Watchdog);
    assert!(timers.keyed.is_empty());
  }

  #[tokio::test]
  async fn when_readable_sends_once_readable_unless_replaced() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (mut timers, mut rx) = timers();
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
  }
}
