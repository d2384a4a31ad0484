//! Connection hand-off for `SCHED_RR`: the primary accepts in Rust, in
//! batches, and gives each connection to the least-loaded worker (fewest
//! hand-offs not yet answered), never to one that is going away. No
//! JavaScript runs per connection.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::sockets;

/// Hand-offs a worker may have unanswered before others are preferred
/// absolutely; beyond it connections wait in the primary.
pub const MAX_UNANSWERED: usize = 8;

/// Accepted at most per wake-up, so one busy listener cannot starve the rest
/// of the core's work.
const ACCEPT_BATCH: usize = 64;

pub struct RoundRobin {
  /// The workers using this key, in the order they joined.
  pub workers: Vec<u32>,
  /// Accepted connections no worker could take yet.
  pub backlog: VecDeque<OwnedFd>,
  pub sockname: Option<Value>,
  pub unlink: Option<PathBuf>,
  /// Rotates ties so equally loaded workers take turns.
  cursor: usize,
  acceptor: JoinHandle<()>,
}

impl Drop for RoundRobin {
  fn drop(&mut self) {
    // Stops accepting and closes the listening socket (owned by the task).
    self.acceptor.abort();
  }
}

impl RoundRobin {
  /// Starts accepting on `listener` (already listening). Each batch of
  /// accepted connections goes to `deliver`.
  pub fn start(
    listener: Socket,
    unlink: Option<PathBuf>,
    deliver: impl Fn(Vec<OwnedFd>) + Send + 'static,
  ) -> Result<RoundRobin, i32> {
    let sockname = sockets::sockname_json(&listener).filter(|_| unlink.is_none());
    listener.set_nonblocking(true).map_err(|e| sockets::neg_errno(&e))?;
    let afd = crate::channel::register(listener, tokio::io::Interest::READABLE).map_err(|e| sockets::neg_errno(&e))?;
    let acceptor = tokio::spawn(accept_loop(afd, deliver));
    Ok(RoundRobin { workers: Vec::new(), backlog: VecDeque::new(), sockname, unlink, cursor: 0, acceptor })
  }

  pub fn add_worker(&mut self, id: u32) {
    if !self.workers.contains(&id) {
      self.workers.push(id);
    }
  }

  pub fn remove_worker(&mut self, id: u32) {
    self.workers.retain(|w| *w != id);
  }

  /// Picks a worker for the next connection: the fewest unanswered hand-offs
  /// among those `load` reports as available (`None` = not available).
  pub fn pick(&mut self, load: impl Fn(u32) -> Option<usize>) -> Option<u32> {
    let n = self.workers.len();
    let mut best: Option<(usize, u32, usize)> = None;
    for i in 0..n {
      let idx = (self.cursor + i) % n;
      let id = self.workers[idx];
      if let Some(l) = load(id) {
        if l < MAX_UNANSWERED && best.map_or(true, |(bl, _, _)| l < bl) {
          best = Some((l, id, idx));
        }
      }
    }
    best.map(|(_, id, idx)| {
      self.cursor = (idx + 1) % n.max(1);
      id
    })
  }
}

async fn accept_loop(listener: AsyncFd<Socket>, deliver: impl Fn(Vec<OwnedFd>)) {
  loop {
    let mut guard = match listener.readable().await {
      Ok(g) => g,
      Err(_) => return,
    };
    let mut batch = Vec::new();
    let mut pause = false;
    while batch.len() < ACCEPT_BATCH {
      match accept(listener.get_ref()) {
        Ok(fd) => batch.push(fd),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
          guard.clear_ready();
          break;
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        // The peer gave up before we accepted: nothing to hand off.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
        Err(_) => {
          // EMFILE/ENFILE/ENOMEM: back off instead of spinning; the kernel
          // keeps the connections queued meanwhile.
          pause = true;
          break;
        }
      }
    }
    if !batch.is_empty() {
      deliver(batch);
    }
    drop(guard);
    if pause {
      tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
  }
}

fn accept(listener: &Socket) -> io::Result<OwnedFd> {
  // accept4 with CLOEXEC: a concurrent spawn must not inherit connections.
  let fd = unsafe {
    libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
  };
  if fd < 0 {
    return Err(io::Error::last_os_error());
  }
  Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A connection waiting for a worker's `{accepted}` answer.
pub struct HandOff {
  pub key: String,
  pub worker: u32,
  pub conn: Arc<OwnedFd>,
}

#[cfg(test)]
mod tests {
  use super::*;

  fn rr_with(workers: &[u32]) -> RoundRobin {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _g = rt.enter();
    let s = sockets::bind_tcp(sockets::Kind::Tcp4, Some("127.0.0.1"), 0, 0, false).unwrap();
    sockets::listen(&s, 8).unwrap();
    let mut rr = RoundRobin::start(s, None, |_| {}).unwrap();
    for w in workers {
      rr.add_worker(*w);
    }
    std::mem::forget(rt);
    rr
  }

  #[test]
  fn least_loaded_wins_and_ties_rotate() {
    let mut rr = rr_with(&[1, 2, 3]);
    assert_eq!(rr.pick(|w| Some(if w == 2 { 0 } else { 1 })), Some(2));
    let picks: Vec<_> = (0..6).map(|_| rr.pick(|_| Some(0)).unwrap()).collect();
    assert_eq!(picks, vec![3, 1, 2, 3, 1, 2]);
  }

  #[test]
  fn unavailable_and_saturated_workers_are_skipped() {
    let mut rr = rr_with(&[1, 2]);
    assert_eq!(rr.pick(|w| if w == 1 { None } else { Some(3) }), Some(2));
    assert_eq!(rr.pick(|_| Some(MAX_UNANSWERED)), None);
    rr.remove_worker(2);
    assert_eq!(rr.pick(|w| if w == 1 { None } else { Some(0) }), None);
  }

  #[test]
  fn accepts_in_batches() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
      let s = sockets::bind_tcp(sockets::Kind::Tcp4, Some("127.0.0.1"), 0, 0, false).unwrap();
      sockets::listen(&s, 64).unwrap();
      let port = sockets::local_port(&s).unwrap();
      let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
      let _rr = RoundRobin::start(s, None, move |b| {
        let _ = tx.send(b.len());
      })
      .unwrap();
      let clients: Vec<_> =
        (0..10).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
      let mut total = 0;
      while total < clients.len() {
        total += tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
          .await
          .unwrap()
          .unwrap();
      }
      assert_eq!(total, 10);
    });
  }
}
