//! Workers outlive no primary.
//!
//! When the primary dies, Node's workers see their channel close and exit by
//! themselves (running their `'exit'` handlers) — unless their event loop is
//! blocked. The reaper catches those: a small process forked from the primary
//! (no exec) that holds a pidfd for every worker and waits on a socket whose
//! other end only the primary holds. When that socket reaches EOF — the
//! primary is gone, however it died — the reaper gives the workers a grace
//! period, then SIGKILLs whoever is left, and exits.
//!
//! The child of `fork()` in a multithreaded process may only make
//! async-signal-safe calls, so the reaper's loop uses raw syscalls on stack
//! buffers and never allocates.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// How long workers get to exit on their own after the primary is gone.
pub const GRACE: Duration = Duration::from_millis(1000);

/// Most workers the reaper can track at once.
const CAPACITY: usize = 4096;

const ADD: u8 = b'A';
const REMOVE: u8 = b'R';

/// The primary's end of the reaper's control socket.
pub struct Reaper {
  control: OwnedFd,
  pub pid: i32,
}

impl Reaper {
  /// Forks the reaper. Call from a thread that stays alive; the fork copies
  /// only the calling thread.
  pub fn start() -> io::Result<Reaper> {
    let mut fds = [0; 2];
    // SEQPACKET: message boundaries, and EOF when the primary's end closes.
    let r = unsafe {
      libc::socketpair(
        libc::AF_UNIX,
        libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
        0,
        fds.as_mut_ptr(),
      )
    };
    if r != 0 {
      return Err(io::Error::last_os_error());
    }
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let pid = unsafe { libc::fork() };
    if pid < 0 {
      return Err(io::Error::last_os_error());
    }
    if pid == 0 {
      // SAFETY: in the forked child; `run` only makes raw syscalls.
      unsafe { run(theirs.as_raw_fd()) }
    }
    drop(theirs);
    Ok(Reaper { control: ours, pid })
  }

  /// Tracks a worker: the reaper gets its own copy of the pidfd.
  pub fn add(&self, id: u32, pidfd: RawFd) -> io::Result<()> {
    send(self.control.as_raw_fd(), ADD, id, Some(pidfd))
  }

  /// Forgets a worker that has exited.
  pub fn remove(&self, id: u32) -> io::Result<()> {
    send(self.control.as_raw_fd(), REMOVE, id, None)
  }
}

fn send(sock: RawFd, op: u8, id: u32, fd: Option<RawFd>) -> io::Result<()> {
  let mut data = [0u8; 5];
  data[0] = op;
  data[1..].copy_from_slice(&id.to_le_bytes());
  let mut iov = libc::iovec {
    iov_base: data.as_mut_ptr().cast(),
    iov_len: data.len(),
  };
  let mut cbuf = [0u64; 8];
  let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
  msg.msg_iov = &mut iov;
  msg.msg_iovlen = 1;
  if let Some(fd) = fd {
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    unsafe {
      let c = libc::CMSG_FIRSTHDR(&msg);
      (*c).cmsg_level = libc::SOL_SOCKET;
      (*c).cmsg_type = libc::SCM_RIGHTS;
      (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
      std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
    }
  }
  let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
  if n < 0 {
    return Err(io::Error::last_os_error());
  }
  Ok(())
}

/// The reaper's whole life. Never returns.
unsafe fn run(control: RawFd) -> ! {
  // Hold nothing of the primary's: above all not its listening sockets or
  // the workers' channels, which must close when the primary dies.
  let control = if libc::dup2(control, 3) == 3 { 3 } else { libc::_exit(1) };
  if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
    for fd in 4..65536 {
      libc::close(fd);
    }
  }
  // Nor its stdio: whoever reads the primary's output must see EOF when the
  // primary exits, not when the reaper does.
  let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
  if null >= 0 {
    for fd in 0..3 {
      libc::dup2(null, fd);
    }
    if null > 3 {
      libc::close(null);
    }
  }
  // Survive the signals aimed at the primary's process group; only the
  // primary's death (EOF) ends the reaper.
  let mut all: libc::sigset_t = std::mem::zeroed();
  libc::sigemptyset(&mut all);
  libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
  for sig in [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGPIPE,
    libc::SIGUSR1,
    libc::SIGUSR2,
  ] {
    libc::signal(sig, libc::SIG_IGN);
  }
  libc::prctl(libc::PR_SET_NAME, c"rcluster-reaper".as_ptr() as libc::c_ulong, 0, 0, 0);

  let mut ids = [0u32; CAPACITY];
  let mut pidfds = [-1 as RawFd; CAPACITY];
  loop {
    let mut data = [0u8; 5];
    let mut iov = libc::iovec {
      iov_base: data.as_mut_ptr().cast(),
      iov_len: data.len(),
    };
    let mut cbuf = [0u64; 8];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = libc::recvmsg(control, &mut msg, libc::MSG_CMSG_CLOEXEC);
    if n < 0 {
      if *libc::__errno_location() == libc::EINTR {
        continue;
      }
      break;
    }
    if n == 0 {
      break; // the primary is gone
    }
    let mut received: RawFd = -1;
    let c = libc::CMSG_FIRSTHDR(&msg);
    if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
      received = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
    }
    let id = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    match data[0] {
      ADD if received >= 0 => match pidfds.iter().position(|fd| *fd < 0) {
        Some(i) => {
          ids[i] = id;
          pidfds[i] = received;
        }
        None => {
          libc::close(received);
        }
      },
      REMOVE => {
        for i in 0..CAPACITY {
          if pidfds[i] >= 0 && ids[i] == id {
            libc::close(pidfds[i]);
            pidfds[i] = -1;
          }
        }
      }
      _ => {
        if received >= 0 {
          libc::close(received);
        }
      }
    }
  }
  let grace = libc::timespec {
    tv_sec: GRACE.as_secs() as libc::time_t,
    tv_nsec: GRACE.subsec_nanos() as libc::c_long,
  };
  libc::nanosleep(&grace, std::ptr::null_mut());
  for fd in pidfds {
    if fd >= 0 {
      // Workers that exited meanwhile answer ESRCH; pidfds never hit a
      // recycled pid.
      libc::syscall(
        libc::SYS_pidfd_send_signal,
        fd,
        libc::SIGKILL,
        std::ptr::null::<u8>(),
        0u32,
      );
    }
  }
  libc::_exit(0)
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::spawn;

  fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
      Ok(s) => !matches!(s[s.rfind(')').unwrap() + 2..].chars().next(), Some('Z') | Some('X')),
      Err(_) => false,
    }
  }

  /// A child that ignores the control socket's EOF (as a blocked worker
  /// would) is killed once the reaper's owner lets go, after the grace.
  #[test]
  fn kills_what_outlives_the_owner() {
    let reaper = Reaper::start().unwrap();
    let child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let pidfd = spawn::pidfd_open(pid).unwrap();
    reaper.add(1, pidfd.as_raw_fd()).unwrap();
    let reaper_pid = reaper.pid;
    let t0 = std::time::Instant::now();
    drop(reaper); // as if the primary died
    let mut child = child;
    let status = child.wait().unwrap();
    let took = t0.elapsed();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
      took >= GRACE - Duration::from_millis(50) && took < GRACE * 3,
      "{took:?}"
    );
    // The reaper exits after its work (we are its parent here: reap it).
    let mut st = 0;
    unsafe { libc::waitpid(reaper_pid, &mut st, 0) };
    assert!(!alive(reaper_pid));
  }

  #[test]
  fn forgets_removed_workers() {
    let reaper = Reaper::start().unwrap();
    let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
    let pidfd = spawn::pidfd_open(child.id() as i32).unwrap();
    reaper.add(7, pidfd.as_raw_fd()).unwrap();
    reaper.remove(7).unwrap();
    let reaper_pid = reaper.pid;
    drop(reaper);
    let mut st = 0;
    unsafe { libc::waitpid(reaper_pid, &mut st, 0) };
    assert!(alive(child.id() as i32), "a removed worker is left alone");
    child.kill().unwrap();
    child.wait().unwrap();
  }
}
