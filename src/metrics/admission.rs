//! Which connections the endpoint serves when every slot is taken.
//!
//! A slot is held from accept to the end of the response, and a client gets
//! `http::READ_TIMEOUT` to send its request head. Without eviction, 64 idle
//! or slow clients would keep every probe out for that long — a liveness
//! probe failing because of a port scanner. So connections still waiting for
//! their head are listed, oldest first, and a newcomer that finds no slot
//! makes the oldest of them give way. Connections being answered are never
//! evicted; with all slots answering, the newcomer is closed unanswered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Default)]
pub struct Waiting {
  inner: Mutex<List>,
}

#[derive(Default)]
struct List {
  next: u64,
  /// (id, the evicted signal), oldest first.
  heads: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// A connection's place in the list; dropping it leaves the list.
pub struct Place {
  id: u64,
  waiting: Arc<Waiting>,
  /// Resolves when a newcomer evicts this connection.
  pub evicted: oneshot::Receiver<()>,
}

impl Waiting {
  /// Lists a connection that is about to read its request head.
  pub fn join(self: &Arc<Self>) -> Place {
    let (tx, rx) = oneshot::channel();
    let mut list = self.inner.lock().unwrap();
    let id = list.next;
    list.next += 1;
    list.heads.push_back((id, tx));
    Place {
      id,
      waiting: self.clone(),
      evicted: rx,
    }
  }

  /// Signals the oldest connection still waiting for its head; false when
  /// there is none.
  pub fn evict_oldest(&self) -> bool {
    let mut list = self.inner.lock().unwrap();
    while let Some((_, tx)) = list.heads.pop_front() {
      // Err: that connection has finished meanwhile.
      if tx.send(()).is_ok() {
        return true;
      }
    }
    false
  }

  #[cfg(test)]
  fn len(&self) -> usize {
    self.inner.lock().unwrap().heads.len()
  }
}

impl Drop for Place {
  fn drop(&mut self) {
    let mut list = self.waiting.inner.lock().unwrap();
    if let Some(i) = list.heads.iter().position(|(id, _)| *id == self.id) {
      list.heads.remove(i);
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_oldest_waiting_connection_gives_way_and_served_ones_never_do() {
    let w = Arc::new(Waiting::default());
    let mut a = w.join();
    let b = w.join();
    let mut c = w.join();
    // b got its head: it is being answered and leaves the list.
    drop(b);
    assert_eq!(w.len(), 2);
    assert!(w.evict_oldest());
    assert!(a.evicted.try_recv().is_ok(), "the oldest is evicted first");
    assert!(c.evicted.try_recv().is_err());
    assert!(w.evict_oldest());
    assert!(c.evicted.try_recv().is_ok());
    assert!(!w.evict_oldest(), "nobody left waiting");
    drop((a, c));
    assert_eq!(w.len(), 0);
  }
}
