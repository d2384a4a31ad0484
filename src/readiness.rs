//! Waiting for a channel socket to be readable or writable, registered with
//! the reactor only while someone waits.
//!
//! Edge-triggered epoll wakes the core thread at every edge of a registered
//! socket, whether or not a task waits on it: a socket registered for
//! writability wakes it each time the peer reads, and one registered for
//! reading each time the peer writes, also while the reader is paced (see
//! `pace`) and will not read. So the channel socket itself is not registered;
//! its reader and writer each register a duplicate of the fd when they must
//! wait, and drop it when they stop waiting for a while.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct Readiness {
  fd: RawFd,
  interest: Interest,
  registered: Option<AsyncFd<OwnedFd>>,
  /// The duplicate while unregistered, kept for the next wait.
  spare: Option<OwnedFd>,
}

impl Readiness {
  /// For `sock`, which must outlive this.
  pub fn new(sock: &impl AsRawFd, interest: Interest) -> Self {
    Readiness {
      fd: sock.as_raw_fd(),
      interest,
      registered: None,
      spare: None,
    }
  }

  /// Returns once the socket is ready, or may be: call after an attempt said
  /// `WouldBlock`, then attempt again. (Registering reports a socket that is
  /// already ready.)
  pub async fn ready(&mut self) -> io::Result<()> {
    if self.registered.is_none() {
      let dup = match self.spare.take() {
        Some(fd) => fd,
        // SAFETY: `fd` stays open while this lives (see `new`).
        None => unsafe { BorrowedFd::borrow_raw(self.fd) }.try_clone_to_owned()?,
      };
      self.registered = Some(crate::channel::register(dup, self.interest)?);
    }
    let afd = self.registered.as_ref().expect("registered above");
    let mut guard = afd.ready(self.interest).await?;
    // Cleared before the next attempt, so an edge after it is not missed.
    guard.clear_ready();
    Ok(())
  }

  /// Nobody waits for a while: stop hearing about the socket.
  pub fn idle(&mut self) {
    if let Some(afd) = self.registered.take() {
      self.spare = Some(afd.into_inner());
    }
  }
}

/// Waiting for any of several sockets to be readable, holding none of them
/// open: the sockets go into a private epoll set (which does not keep a file
/// alive: a socket whose last fd is closed meanwhile leaves the set; one
/// still open elsewhere, a worker's or a duplicate, stays and can still ring,
/// which only costs a look), and only that set's fd is registered with the
/// reactor. A set is built for one wait and never changed, so a reused fd
/// number never enters an old set. For a watcher that stops ticking while
/// nothing happens and must hear of the first thing that does.
pub struct AnyReadable {
  set: AsyncFd<OwnedFd>,
}

impl AnyReadable {
  /// Every fd must be open now; any may close later.
  pub fn new(fds: impl IntoIterator<Item = RawFd>) -> io::Result<Self> {
    // SAFETY: plain syscall; the result is checked.
    let set = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if set < 0 {
      return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    let set = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(set) };
    for fd in fds {
      // Level-triggered inside the set: a socket readable already makes the
      // set readable at once, so nothing that came before is missed.
      let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
      };
      // SAFETY: both fds are open; `ev` is valid for the call.
      if unsafe { libc::epoll_ctl(set.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
      }
    }
    Ok(AnyReadable {
      set: crate::channel::register(set, Interest::READABLE)?,
    })
  }

  /// Returns once some socket is readable (or hung up, or in error): at once
  /// if one was when the set was made.
  pub async fn wait(&self) {
    // An error of the set itself is as good as a wake-up: the caller looks.
    let _ = self.set.readable().await;
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::io::Write;
  use std::os::unix::net::UnixStream;
  use std::time::Duration;

  fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .unwrap()
  }

  async fn rings(bell: &AnyReadable) -> bool {
    tokio::time::timeout(Duration::from_millis(200), bell.wait())
      .await
      .is_ok()
  }

  #[test]
  fn any_readable_rings_for_data_before_or_after_and_not_without() {
    runtime().block_on(async {
      let (a, mut a_peer) = UnixStream::pair().unwrap();
      let (b, mut b_peer) = UnixStream::pair().unwrap();
      let bell = AnyReadable::new([a.as_raw_fd(), b.as_raw_fd()]).unwrap();
      assert!(!rings(&bell).await, "nothing to read yet");
      b_peer.write_all(b"x").unwrap();
      assert!(rings(&bell).await, "written after the set was made");
      // Already readable when the set is made.
      a_peer.write_all(b"y").unwrap();
      let again = AnyReadable::new([a.as_raw_fd()]).unwrap();
      assert!(rings(&again).await);
    });
  }

  #[test]
  fn any_readable_does_not_keep_a_socket_open() {
    runtime().block_on(async {
      let (a, mut a_peer) = UnixStream::pair().unwrap();
      let bell = AnyReadable::new([a.as_raw_fd()]).unwrap();
      drop(a);
      // The peer sees the close: the set held no reference to the socket.
      let mut buf = [0u8; 1];
      a_peer.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
      assert_eq!(std::io::Read::read(&mut a_peer, &mut buf).unwrap(), 0);
      assert!(!rings(&bell).await, "a closed socket left the set without a wake-up");
    });
  }
}
