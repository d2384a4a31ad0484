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
