//! Waiting for a channel socket to take more bytes, registered with the
//! reactor only while a write waits.
//!
//! A socket registered for writability wakes the core thread each time the
//! peer reads from it (edge-triggered epoll reports every freed buffer), and
//! nearly always nobody is waiting: most frames leave in one write, many from
//! the JS thread. So the channel is registered for reading only, and a writer
//! cut short registers a duplicate of the fd for writability until its queue
//! is empty.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct WriteWait {
  fd: RawFd,
  registered: Option<AsyncFd<OwnedFd>>,
}

impl WriteWait {
  /// For `sock`, which must outlive this.
  pub fn new(sock: &impl AsRawFd) -> Self {
    WriteWait {
      fd: sock.as_raw_fd(),
      registered: None,
    }
  }

  /// Returns once the socket may take more bytes: call after a write said
  /// `WouldBlock`. (Registering reports a socket that is already writable.)
  pub async fn ready(&mut self) -> io::Result<()> {
    if self.registered.is_none() {
      // SAFETY: `fd` stays open while this lives (see `new`).
      let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
      let dup = borrowed.as_fd().try_clone_to_owned()?;
      self.registered = Some(crate::channel::register(dup, Interest::WRITABLE)?);
    }
    let afd = self.registered.as_ref().expect("registered above");
    let mut guard = afd.writable().await?;
    // The next write finds out for itself; a later `WouldBlock` waits anew.
    guard.clear_ready();
    Ok(())
  }

  /// Nothing waits to be written: stop hearing about writability.
  pub fn idle(&mut self) {
    self.registered = None;
  }
}
