//! Connection hand-off for `SCHED_RR`: the primary accepts in Rust, in
//! batches, and gives each connection to the least-loaded worker (fewest
//! hand-offs not yet answered), never to one that is going away. No
//! JavaScript runs per connection.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use serde_json::Value;
use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::handles::Unlink;
use crate::sockets;

/// Hand-offs a worker may have unanswered; beyond it connections wait in the
/// primary. Small, so a worker busy running JavaScript (it cannot answer)
/// does not collect connections the others could serve; two rather than
/// Node's one, so a worker's next connection is already on its way while it
/// answers the last (measured: more requests/s and a lower p99 than one).
pub const MAX_UNANSWERED: usize = 2;

/// Accepted at most per wake-up, so one busy listener cannot starve the rest
/// of the core's work.
const ACCEPT_BATCH: usize = 64;

/// Picks workers for connections the primary accepted: the round-robin
/// listener's, and those drained from a departed worker's reuseport socket.
#[derive(Default)]
pub struct Dispatcher {
  /// The server key (shared with the hand-offs, which cost no copy of it).
  pub key: Arc<str>,
  /// The workers that may take connections for this key: round-robin's in
  /// join order; a reuseport group's rebuilt by `steer` (member order).
  pub workers: Vec<u32>,
  /// Accepted connections no worker could take yet.
  /// (Shared: a connection handed to a worker that died may still be
  /// referenced by its writer for a moment.)
  pub backlog: VecDeque<Arc<OwnedFd>>,
  /// Rotates ties so equally loaded workers take turns.
  cursor: usize,
  /// Each worker's supervised slot, and whether connections go by client
  /// address to the slot that owns it (`sticky: 'ip'`, see `take_sticky`).
  pub slots: std::collections::HashMap<u32, u32>,
  pub sticky: bool,
  /// Queued connections' client buckets by fd, so a connection passed over
  /// (its worker busy) is not looked up again (`getpeername`) on each pass.
  buckets: std::collections::HashMap<RawFd, Option<u32>>,
  /// `take_sticky`'s list of live slots (slot, worker, load), kept so a
  /// hand-off refills it instead of allocating one.
  live: Vec<(u32, u32, usize)>,
}

impl Dispatcher {
  pub fn add_worker(&mut self, id: u32) {
    if !self.workers.contains(&id) {
      self.workers.push(id);
    }
  }

  pub fn remove_worker(&mut self, id: u32) {
    self.workers.retain(|w| *w != id);
    self.slots.remove(&id);
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
        if l < MAX_UNANSWERED && best.is_none_or(|(bl, _, _)| l < bl) {
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

/// How far `take_sticky` looks past a connection whose worker is busy.
const STICKY_SCAN: usize = 64;

impl Dispatcher {
  /// `sticky: 'ip'`: the first queued connection (within `STICKY_SCAN`)
  /// whose client's slot (`sticky::owner` over the slots with an available
  /// worker) can take it now, with that slot's worker. A busy worker keeps
  /// its clients waiting rather than losing them to another; connections
  /// without an IP peer (Unix sockets) go to the least loaded.
  pub fn take_sticky(&mut self, load: impl Fn(u32) -> Option<usize>) -> Option<(u32, Arc<OwnedFd>)> {
    let mut live = std::mem::take(&mut self.live);
    live.clear();
    for id in &self.workers {
      let slot = self.slots.get(id).copied().unwrap_or(u32::MAX - id);
      if let Some(l) = load(*id) {
        if !live.iter().any(|e| e.0 == slot) {
          live.push((slot, *id, l));
        }
      }
    }
    let taken = self.take_sticky_among(&live);
    self.live = live;
    taken
  }

  fn take_sticky_among(&mut self, live: &[(u32, u32, usize)]) -> Option<(u32, Arc<OwnedFd>)> {
    let least = live.iter().min_by_key(|e| e.2).copied()?;
    for i in 0..self.backlog.len().min(STICKY_SCAN) {
      let conn = &self.backlog[i];
      let bucket = *self.buckets.entry(conn.as_raw_fd()).or_insert_with(|| {
        let peer = socket2::SockRef::from(&**conn).peer_addr().ok();
        peer
          .and_then(|a| a.as_socket())
          .map(|a| crate::sticky::bucket_of(a.ip()))
      });
      let target = match bucket {
        Some(b) => {
          let slot = crate::sticky::owner(b, live.iter().map(|e| e.0));
          live.iter().find(|e| Some(e.0) == slot).copied()?
        }
        None => least,
      };
      if target.2 < MAX_UNANSWERED {
        let conn = self.backlog.remove(i)?;
        self.buckets.remove(&conn.as_raw_fd());
        return Some((target.1, conn));
      }
    }
    None
  }
}

/// A task accepting on a listening socket; stops (and closes its copy of the
/// socket) when dropped.
pub struct Acceptor(JoinHandle<()>);

impl Drop for Acceptor {
  fn drop(&mut self) {
    self.0.abort();
  }
}

impl Acceptor {
  /// Accepts on `listener` (already listening) until dropped; each batch of
  /// connections goes to `deliver`.
  pub fn start(listener: Socket, deliver: impl Fn(Vec<OwnedFd>) + Send + 'static) -> Result<Acceptor, i32> {
    listener.set_nonblocking(true).map_err(|e| sockets::neg_errno(&e))?;
    let afd = crate::channel::register(listener, tokio::io::Interest::READABLE).map_err(|e| sockets::neg_errno(&e))?;
    Ok(Acceptor(tokio::spawn(accept_loop(afd, deliver))))
  }
}

/// `SCHED_RR`: the primary's own listening socket and the workers it feeds.
pub struct RoundRobin {
  pub dispatcher: Dispatcher,
  pub sockname: Option<Value>,
  /// A Unix socket's path, removed with the listener.
  _unlink: Option<Unlink>,
  _acceptor: Acceptor,
}

impl RoundRobin {
  pub fn start(
    listener: Socket,
    unlink: Option<Unlink>,
    deliver: impl Fn(Vec<OwnedFd>) + Send + 'static,
  ) -> Result<RoundRobin, i32> {
    let sockname = sockets::sockname_json(&listener).filter(|_| unlink.is_none());
    let acceptor = Acceptor::start(listener, deliver)?;
    Ok(RoundRobin {
      dispatcher: Dispatcher::default(),
      sockname,
      _unlink: unlink,
      _acceptor: acceptor,
    })
  }
}

async fn accept_loop(listener: AsyncFd<Socket>, deliver: impl Fn(Vec<OwnedFd>)) {
  let fd = listener.get_ref().as_raw_fd();
  // TCP listeners tell how many connections wait (unix ones do not): with
  // that, each wake-up asks once and accepts that many, instead of calling
  // accept until EAGAIN, which costs the kernel a socket made and freed.
  let mut queue_told = accept_queue_len(fd).is_some();
  loop {
    let mut guard = match listener.readable().await {
      Ok(g) => g,
      Err(_) => return,
    };
    let mut batch = Vec::new();
    let mut pause = false;
    // Connections queued now: exactly those are accepted. One arriving
    // meanwhile is a new readiness event, which `clear_ready` keeps.
    let mut known = if queue_told { accept_queue_len(fd) } else { None };
    queue_told = known.is_some();
    while batch.len() < ACCEPT_BATCH {
      if known == Some(0) {
        guard.clear_ready();
        break;
      }
      match sockets::accept(fd) {
        Ok(conn) => {
          batch.push(conn);
          known = known.map(|n| n - 1);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
          guard.clear_ready();
          break;
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        // The peer gave up before we accepted: nothing to hand off. (The
        // count may or may not have included it: accept until EAGAIN.)
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => known = None,
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

/// `tcp_states.h`'s TCP_LISTEN (not in libc).
const TCP_LISTEN: u8 = 10;

/// How many connections wait in a TCP listener's accept queue (Linux reports
/// it as `tcpi_unacked` for listening sockets); `None` for other sockets.
pub fn accept_queue_len(listener: RawFd) -> Option<usize> {
  // SAFETY: a zeroed tcp_info is valid; getsockopt writes at most `len`.
  let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
  let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
  let ptr = &mut info as *mut libc::tcp_info as *mut libc::c_void;
  let rc = unsafe { libc::getsockopt(listener, libc::IPPROTO_TCP, libc::TCP_INFO, ptr, &mut len) };
  let listening = rc == 0 && info.tcpi_state == TCP_LISTEN;
  listening.then_some(info.tcpi_unacked as usize)
}

/// A connection waiting for a worker's `{accepted}` answer (kept in that
/// worker's pending requests, by the `newconn`'s seq).
pub struct HandOff {
  pub key: Arc<str>,
  pub conn: Arc<OwnedFd>,
}

#[cfg(test)]
mod tests {
  use super::*;

  fn rr_with(workers: &[u32]) -> Dispatcher {
    let mut d = Dispatcher::default();
    for w in workers {
      d.add_worker(*w);
    }
    d
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
    assert_eq!(rr.pick(|w| if w == 1 { None } else { Some(0) }), Some(2));
    assert_eq!(rr.pick(|_| Some(MAX_UNANSWERED)), None);
    rr.remove_worker(2);
    assert_eq!(rr.pick(|w| if w == 1 { None } else { Some(0) }), None);
  }

  /// `sticky`: each connection goes to its client's slot; one whose worker
  /// is saturated waits (affinity wins) while others pass it.
  #[test]
  fn sticky_picks_by_client_address_and_waits_for_a_busy_owner() {
    let s = sockets::bind_tcp(sockets::Kind::Tcp4, Some("127.0.0.1"), 0, 0, false).unwrap();
    sockets::listen(&s, 64).unwrap();
    let port = sockets::local_port(&s).unwrap();
    let mut d = rr_with(&[10, 20]);
    d.slots.extend([(10, 0), (20, 1)]);
    d.sticky = true;
    let owner_of = |i: u8| {
      let slot = crate::sticky::owner(crate::sticky::bucket_of([127, 0, 0, i].into()), [0, 1]).unwrap();
      if slot == 0 {
        10
      } else {
        20
      }
    };
    let sources: Vec<u8> = (2..18).collect();
    let first = sources.iter().copied().find(|i| owner_of(*i) == 10).unwrap();
    let other = sources.iter().copied().find(|i| owner_of(*i) == 20).unwrap();
    let mut clients = Vec::new();
    let mut queue_from = |d: &mut Dispatcher, i: u8| {
      let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
      c.bind(&std::net::SocketAddr::from(([127, 0, 0, i], 0)).into()).unwrap();
      c.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
      clients.push(c);
      std::thread::sleep(std::time::Duration::from_millis(10));
      d.backlog.push_back(Arc::new(sockets::accept(s.as_raw_fd()).unwrap()));
    };
    queue_from(&mut d, first);
    queue_from(&mut d, other);
    // Worker 10 is saturated: its client waits, the other one goes.
    let busy10 = |w: u32| Some(if w == 10 { MAX_UNANSWERED } else { 0 });
    assert_eq!(d.take_sticky(busy10).map(|(w, _)| w), Some(20));
    assert!(d.take_sticky(busy10).is_none(), "127.0.0.{first} waits for its worker");
    assert_eq!(d.take_sticky(|_| Some(0)).map(|(w, _)| w), Some(10));
    // Its slot without an available worker: the client goes to the live one.
    queue_from(&mut d, first);
    let only20 = |w: u32| if w == 20 { Some(0) } else { None };
    assert_eq!(d.take_sticky(only20).map(|(w, _)| w), Some(20));
  }

  #[test]
  fn tcp_listeners_tell_their_accept_queue() {
    let s = sockets::bind_tcp(sockets::Kind::Tcp4, Some("127.0.0.1"), 0, 0, false).unwrap();
    sockets::listen(&s, 64).unwrap();
    let port = sockets::local_port(&s).unwrap();
    assert_eq!(accept_queue_len(s.as_raw_fd()), Some(0));
    let _clients: Vec<_> = (0..3)
      .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
      .collect();
    assert_eq!(accept_queue_len(s.as_raw_fd()), Some(3));
    let _conn = sockets::accept(s.as_raw_fd()).unwrap();
    assert_eq!(accept_queue_len(s.as_raw_fd()), Some(2));
    let unix = std::os::unix::net::UnixListener::bind(std::env::temp_dir().join(format!("rr9-{}", std::process::id())));
    if let Ok(u) = unix {
      assert_eq!(accept_queue_len(u.as_raw_fd()), None);
      let _ = std::fs::remove_file(std::env::temp_dir().join(format!("rr9-{}", std::process::id())));
    }
  }

  #[test]
  fn accepts_in_batches() {
    let rt = tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .unwrap();
    rt.block_on(async {
      let s = sockets::bind_tcp(sockets::Kind::Tcp4, Some("127.0.0.1"), 0, 0, false).unwrap();
      sockets::listen(&s, 64).unwrap();
      let port = sockets::local_port(&s).unwrap();
      let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
      let _acceptor = Acceptor::start(s, move |b| {
        let _ = tx.send(b.len());
      })
      .unwrap();
      let clients: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
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
