//! Workers outlive no primary.
//!
//! When the primary dies, Node's workers see their channel close and exit by
//! themselves (running their `'exit'` handlers) — unless their event loop is
//! blocked. The reaper catches those: a small process forked from the primary
//! (no exec) that holds a pidfd for every worker and waits on a socket whose
//! other end only the primary holds. When that socket reaches EOF — the
//! primary is gone, however it died — the reaper waits for the workers to
//! exit, SIGKILLs those still alive at their deadline, and exits as soon as
//! none is left.
//!
//! A worker asked to leave (`disconnect()`, or its channel closed cleanly)
//! may be finishing requests: it gets the primary's kill timeout, counted
//! from the request, as the primary itself would have given it. Any other
//! worker gets `GRACE` from the primary's death. The reaper also keeps the
//! primary's end of the channel of a worker the primary asked to leave: that
//! worker tells the primary as it closes its servers, and a write to a dead
//! primary (EPIPE) would crash it, cutting its last requests short.
//!
//! The child of `fork()` in a multithreaded process may only make
//! async-signal-safe calls, so the reaper's loop uses raw syscalls on stack
//! buffers and never allocates.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// How long workers get to exit on their own after the primary is gone.
pub const GRACE: Duration = Duration::from_millis(1000);

/// What `ps`, `pgrep` and `top` show for the reaper (comm holds 15 bytes).
const TITLE: &[u8] = b"rcluster-reaper";

/// Most workers the reaper can track at once.
const CAPACITY: usize = 4096;

const ADD: u8 = b'A';
const REMOVE: u8 = b'R';
const LEAVE: u8 = b'L';

/// op, worker id, grace in ms (LEAVE only).
const MESSAGE_LEN: usize = 13;

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
    send(self.control.as_raw_fd(), ADD, id, 0, Some(pidfd))
  }

  /// Forgets a worker that has exited.
  pub fn remove(&self, id: u32) -> io::Result<()> {
    send(self.control.as_raw_fd(), REMOVE, id, 0, None)
  }

  /// The worker is leaving gracefully: should the primary die, it may take
  /// `grace` from now to finish. The first call for a worker counts.
  /// `channel`: the primary's end of its channel, kept open until it exits.
  pub fn leave(&self, id: u32, grace: Duration, channel: Option<RawFd>) -> io::Result<()> {
    let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    send(self.control.as_raw_fd(), LEAVE, id, ms, channel)
  }
}

fn send(sock: RawFd, op: u8, id: u32, grace_ms: u64, fd: Option<RawFd>) -> io::Result<()> {
  let mut data = [0u8; MESSAGE_LEN];
  data[0] = op;
  data[1..5].copy_from_slice(&id.to_le_bytes());
  data[5..].copy_from_slice(&grace_ms.to_le_bytes());
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

/// When a worker is killed: `GRACE` after the primary died, or later if it
/// was leaving and its own deadline is later. Times are ms on the monotonic
/// clock.
fn kill_deadline(primary_died: u64, leave_by: Option<u64>) -> u64 {
  let short = primary_died.saturating_add(GRACE.as_millis() as u64);
  leave_by.map_or(short, |t| t.max(short))
}

/// The workers the reaper watches, in fixed arrays (the reaper must not
/// allocate). Holds fds but makes no syscalls: callers close what it returns.
struct Watchlist {
  ids: [u32; CAPACITY],
  /// -1: a free entry.
  pidfds: [RawFd; CAPACITY],
  /// The primary's end of a leaving worker's channel, or -1.
  channels: [RawFd; CAPACITY],
  /// When a leaving worker's grace ends; `u64::MAX` if it is not leaving.
  leave_by: [u64; CAPACITY],
  /// Set once the primary is gone.
  kill_at: [u64; CAPACITY],
}

const NOT_LEAVING: u64 = u64::MAX;

impl Watchlist {
  fn new() -> Watchlist {
    Watchlist {
      ids: [0; CAPACITY],
      pidfds: [-1; CAPACITY],
      channels: [-1; CAPACITY],
      leave_by: [NOT_LEAVING; CAPACITY],
      kill_at: [0; CAPACITY],
    }
  }

  /// Takes `pidfd`, or hands it back when full.
  fn add(&mut self, id: u32, pidfd: RawFd) -> Result<(), RawFd> {
    match self.pidfds.iter().position(|fd| *fd < 0) {
      Some(i) => {
        self.ids[i] = id;
        self.pidfds[i] = pidfd;
        self.channels[i] = -1;
        self.leave_by[i] = NOT_LEAVING;
        Ok(())
      }
      None => Err(pidfd),
    }
  }

  /// Forgets worker `id`; returns its fds to close.
  fn remove(&mut self, id: u32) -> Option<Gone> {
    let i = self.find(id)?;
    Some(self.take(i))
  }

  /// Returns `channel` when it is not kept (to close).
  fn leave(&mut self, id: u32, by: u64, channel: RawFd) -> Option<RawFd> {
    let unwanted = (channel >= 0).then_some(channel);
    let Some(i) = self.find(id) else { return unwanted };
    if self.leave_by[i] == NOT_LEAVING {
      self.leave_by[i] = by;
    }
    if self.channels[i] >= 0 {
      return unwanted;
    }
    self.channels[i] = channel;
    None
  }

  fn find(&self, id: u32) -> Option<usize> {
    (0..CAPACITY).find(|&i| self.pidfds[i] >= 0 && self.ids[i] == id)
  }

  fn take(&mut self, i: usize) -> Gone {
    let gone = Gone {
      pidfd: self.pidfds[i],
      channel: self.channels[i],
    };
    self.pidfds[i] = -1;
    self.channels[i] = -1;
    gone
  }

  /// The primary died at `now`: every worker gets its deadline.
  fn arm(&mut self, now: u64) {
    for i in 0..CAPACITY {
      let leaving = self.leave_by[i] != NOT_LEAVING;
      self.kill_at[i] = kill_deadline(now, leaving.then_some(self.leave_by[i]));
    }
  }

  fn is_empty(&self) -> bool {
    self.pidfds.iter().all(|fd| *fd < 0)
  }

  /// The earliest deadline of a watched worker.
  fn next_deadline(&self) -> Option<u64> {
    (0..CAPACITY)
      .filter(|&i| self.pidfds[i] >= 0)
      .map(|i| self.kill_at[i])
      .min()
  }

  /// Removes a worker whose deadline has passed.
  fn take_due(&mut self, now: u64) -> Option<Gone> {
    let i = (0..CAPACITY).find(|&i| self.pidfds[i] >= 0 && self.kill_at[i] <= now)?;
    Some(self.take(i))
  }
}

/// The fds of a worker the reaper no longer watches.
#[derive(Debug, PartialEq)]
struct Gone {
  pidfd: RawFd,
  /// -1 if none was kept.
  channel: RawFd,
}

impl Gone {
  unsafe fn close(self) {
    libc::close(self.pidfd);
    if self.channel >= 0 {
      libc::close(self.channel);
    }
  }
}

/// ms on the monotonic clock.
unsafe fn now_ms() -> u64 {
  let mut ts: libc::timespec = std::mem::zeroed();
  libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
  (ts.tv_sec as u64).saturating_mul(1000) + ts.tv_nsec as u64 / 1_000_000
}

/// The `n`th field (1-based, as in proc(5)) of /proc/self/stat, a number.
unsafe fn stat_field(n: usize) -> Option<u64> {
  let fd = libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
  if fd < 0 {
    return None;
  }
  let mut buf = [0u8; 2048];
  let mut len = 0;
  while len < buf.len() {
    let r = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
    if r <= 0 {
      break;
    }
    len += r as usize;
  }
  libc::close(fd);
  crate::supervisor::stat_field(&buf[..len], n)
}

/// Makes `ps -ef` and `pgrep -f` show `rcluster-reaper` rather than the
/// primary's command line (which `pkill -f app.js` would otherwise match).
/// They read the process's argument area, which the fork copied from the
/// primary and which only this process now uses (Node keeps its own copy of
/// argv): overwrite it, and it shows the title. The area is zeroed by a
/// read() from /dev/zero first, so memory that is not writable fails with
/// EFAULT instead of crashing the reaper.
unsafe fn set_title() {
  libc::prctl(libc::PR_SET_NAME, c"rcluster-reaper".as_ptr() as libc::c_ulong, 0, 0, 0);
  let (Some(start), Some(end)) = (stat_field(48), stat_field(49)) else {
    return;
  };
  let len = end.saturating_sub(start) as usize;
  // Keep the final NUL: without it the kernel reads on into the environment.
  if len <= TITLE.len() || len > 1 << 24 {
    return;
  }
  let zero = libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
  if zero < 0 {
    return;
  }
  let area = start as usize as *mut u8;
  let mut done = 0;
  while done < len {
    let r = libc::read(zero, area.add(done).cast(), len - done);
    if r <= 0 {
      break;
    }
    done += r as usize;
  }
  libc::close(zero);
  if done == len {
    std::ptr::copy_nonoverlapping(TITLE.as_ptr(), area, TITLE.len());
  }
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
  set_title();

  let mut watched = Watchlist::new();
  loop {
    let mut data = [0u8; MESSAGE_LEN];
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
    let mut grace = [0u8; 8];
    grace.copy_from_slice(&data[5..]);
    match data[0] {
      ADD if received >= 0 => {
        if let Err(fd) = watched.add(id, received) {
          libc::close(fd);
        }
        received = -1;
      }
      REMOVE => {
        while let Some(gone) = watched.remove(id) {
          gone.close();
        }
      }
      LEAVE => {
        let by = now_ms().saturating_add(u64::from_le_bytes(grace));
        received = watched.leave(id, by, received).unwrap_or(-1);
      }
      _ => {}
    }
    if received >= 0 {
      libc::close(received);
    }
  }

  watched.arm(now_ms());
  let mut polled = [libc::pollfd {
    fd: -1,
    events: 0,
    revents: 0,
  }; CAPACITY];
  while !watched.is_empty() {
    let now = now_ms();
    while let Some(gone) = watched.take_due(now) {
      // pidfds never hit a recycled pid; one that exited answers ESRCH.
      libc::syscall(
        libc::SYS_pidfd_send_signal,
        gone.pidfd,
        libc::SIGKILL,
        std::ptr::null::<u8>(),
        0u32,
      );
      gone.close();
    }
    let Some(deadline) = watched.next_deadline() else { break };
    // A pidfd turns readable when its process exits.
    let mut count = 0;
    for &fd in watched.pidfds.iter().filter(|fd| **fd >= 0) {
      polled[count] = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
      };
      count += 1;
    }
    let wait = deadline.saturating_sub(now).min(i32::MAX as u64) as libc::c_int;
    let r = libc::poll(polled.as_mut_ptr(), count as libc::nfds_t, wait);
    if r < 0 {
      if *libc::__errno_location() != libc::EINTR {
        // Cannot watch them: wait out the deadline, then kill.
        let ts = libc::timespec {
          tv_sec: (wait / 1000) as libc::time_t,
          tv_nsec: ((wait % 1000) * 1_000_000) as libc::c_long,
        };
        libc::nanosleep(&ts, std::ptr::null_mut());
      }
      continue;
    }
    for p in &polled[..count] {
      if p.revents != 0 {
        if let Some(i) = (0..CAPACITY).find(|&i| watched.pidfds[i] == p.fd) {
          watched.take(i).close();
        }
      }
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
      Ok(s) => !matches!(
        s.get(s.rfind(')').unwrap() + 2..).and_then(|r| r.chars().next()),
        Some('Z') | Some('X')
      ),
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
    reap(reaper_pid);
    assert!(!alive(reaper_pid));
  }

  fn reap(pid: i32) -> Duration {
    let t0 = std::time::Instant::now();
    let mut st = 0;
    unsafe { libc::waitpid(pid, &mut st, 0) };
    t0.elapsed()
  }

  #[test]
  fn deadlines() {
    let grace = GRACE.as_millis() as u64;
    assert_eq!(kill_deadline(5_000, None), 5_000 + grace);
    // Leaving: its own deadline, but never less than the short grace.
    assert_eq!(kill_deadline(5_000, Some(20_000)), 20_000);
    assert_eq!(kill_deadline(5_000, Some(5_100)), 5_000 + grace);
    assert_eq!(kill_deadline(u64::MAX - 1, None), u64::MAX);
  }

  #[test]
  fn watchlist_tracks_leaving_workers() {
    let mut w = Watchlist::new();
    assert!(w.is_empty());
    w.add(1, 10).unwrap();
    w.add(2, 11).unwrap();
    w.add(3, 12).unwrap();
    assert_eq!(w.leave(2, 9_000, 20), None);
    // The first request counts; a second channel is not kept.
    assert_eq!(w.leave(2, 50_000, 21), Some(21));
    assert_eq!(w.leave(2, 50_000, -1), None);
    assert_eq!(w.leave(99, 1, 22), Some(22)); // unknown worker
    assert_eq!(w.remove(3), Some(Gone { pidfd: 12, channel: -1 }));
    assert_eq!(w.remove(3), None);
    w.arm(1_000);
    assert_eq!(w.next_deadline(), Some(2_000));
    assert_eq!(w.take_due(1_999), None);
    assert_eq!(w.take_due(2_000), Some(Gone { pidfd: 10, channel: -1 }));
    assert_eq!(w.take_due(2_000), None);
    assert_eq!(w.next_deadline(), Some(9_000));
    assert_eq!(w.take_due(9_000), Some(Gone { pidfd: 11, channel: 20 }));
    assert!(w.is_empty());
    assert_eq!(w.next_deadline(), None);
  }

  #[test]
  fn watchlist_hands_back_what_does_not_fit() {
    let mut w = Watchlist::new();
    for i in 0..CAPACITY {
      w.add(i as u32, i as RawFd).unwrap();
    }
    assert_eq!(w.add(9999, 77), Err(77));
    assert_eq!(w.remove(5).map(|g| g.pidfd), Some(5));
    w.add(9999, 77).unwrap();
    // A reused entry does not inherit its predecessor's deadline or channel.
    assert_eq!(w.leave(4, 0, 40), None);
    assert_eq!(w.remove(4), Some(Gone { pidfd: 4, channel: 40 }));
    w.add(4444, 44).unwrap();
    w.arm(0);
    assert_eq!(w.take_due(0), None);
  }

  /// With nothing left to watch, the reaper exits the moment its owner is
  /// gone instead of sleeping out a grace period.
  #[test]
  fn exits_at_once_when_no_worker_is_alive() {
    let reaper = Reaper::start().unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pidfd = spawn::pidfd_open(child.id() as i32).unwrap();
    reaper.add(1, pidfd.as_raw_fd()).unwrap();
    child.wait().unwrap(); // exited, never removed: its pidfd says so
    let reaper_pid = reaper.pid;
    drop(reaper);
    let took = reap(reaper_pid);
    assert!(took < GRACE / 2, "{took:?}");
  }

  /// A leaving worker gets its own grace, not the short one.
  #[test]
  fn leaving_workers_get_their_grace() {
    let reaper = Reaper::start().unwrap();
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let pidfd = spawn::pidfd_open(child.id() as i32).unwrap();
    reaper.add(1, pidfd.as_raw_fd()).unwrap();
    let grace = GRACE * 2;
    reaper.leave(1, grace, None).unwrap();
    let reaper_pid = reaper.pid;
    let t0 = std::time::Instant::now();
    drop(reaper);
    let status = child.wait().unwrap();
    let took = t0.elapsed();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
      took >= grace - Duration::from_millis(50) && took < grace * 3,
      "{took:?}"
    );
    reap(reaper_pid);
  }

  /// `ps -ef` and `pgrep -f` see the title, not the test binary's command line.
  #[test]
  fn shows_its_name() {
    let reaper = Reaper::start().unwrap();
    let cmdline = (0..100)
      .map(|_| {
        std::thread::sleep(Duration::from_millis(10));
        std::fs::read(format!("/proc/{}/cmdline", reaper.pid)).unwrap()
      })
      .find(|c| c.starts_with(TITLE))
      .expect("the reaper renames itself");
    assert!(cmdline[TITLE.len()..].iter().all(|&b| b == 0), "{cmdline:?}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", reaper.pid)).unwrap();
    assert_eq!(comm.trim_end(), "rcluster-reaper");
    let reaper_pid = reaper.pid;
    drop(reaper);
    reap(reaper_pid);
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
