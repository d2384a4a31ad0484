//! Starting a worker process and watching it end.
//!
//! The worker is `node <execArgv> <exec> <args>` with one end of a socketpair
//! as its IPC channel (`NODE_CHANNEL_FD`). Spawning must happen on the core's
//! long-lived thread: `PR_SET_PDEATHSIG` fires when the *thread* that forked
//! the child exits.
//!
//! Exits are observed per worker with a pidfd, never with `waitpid(-1)` or
//! SIGCHLD: the application's own child processes are not ours to reap, and
//! libuv owns the SIGCHLD handler.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::channel::Serialization;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StdioSpec {
  Inherit,
  Pipe,
  Ignore,
  /// An fd of the primary, duplicated into the child.
  Fd(RawFd),
  /// Where the IPC channel goes (its index is `NODE_CHANNEL_FD`).
  Ipc,
}

impl StdioSpec {
  pub fn parse(s: &str) -> Option<Self> {
    Some(match s {
      "inherit" => Self::Inherit,
      "pipe" | "overlapped" => Self::Pipe,
      "ignore" => Self::Ignore,
      "ipc" => Self::Ipc,
      n => Self::Fd(n.parse().ok().filter(|fd: &RawFd| *fd >= 0)?),
    })
  }

  /// The entry as JS's resolved `stdio` list spells it (`parse` reads it back).
  pub fn as_js(&self) -> String {
    match self {
      Self::Inherit => "inherit".into(),
      Self::Pipe => "pipe".into(),
      Self::Ignore => "ignore".into(),
      Self::Ipc => "ipc".into(),
      Self::Fd(fd) => fd.to_string(),
    }
  }
}

#[derive(Clone, Debug)]
pub struct SpawnSpec {
  pub file: String,
  /// argv[1..]
  pub args: Vec<String>,
  /// The complete environment; the channel variables are added here.
  pub env: Vec<(String, String)>,
  pub cwd: Option<String>,
  /// One entry per child fd, as Node's `stdio` array: at least three; the
  /// channel goes where `Ipc` is (fd 3 if absent).
  pub stdio: Vec<StdioSpec>,
  pub uid: Option<u32>,
  pub gid: Option<u32>,
  pub serialization: Serialization,
  /// Kill the child with SIGKILL when the spawning thread dies. Only a
  /// fallback: normally the reaper (see `reaper`) handles a dead primary,
  /// giving workers the chance to exit on their own first.
  pub death_signal: bool,
}

pub struct Spawned {
  pub pid: i32,
  /// The primary's end of the IPC socketpair (non-blocking, close-on-exec).
  pub channel: OwnedFd,
  /// A pidfd for the child: readable once it has exited; also lets signals be
  /// sent without racing pid reuse.
  pub pidfd: Option<OwnedFd>,
  pub stdin: Option<OwnedFd>,
  pub stdout: Option<OwnedFd>,
  pub stderr: Option<OwnedFd>,
  /// The primary's ends of `Pipe` entries past the first three, by index.
  pub extra: Vec<(usize, OwnedFd)>,
}

fn stdio_of(spec: &StdioSpec) -> io::Result<Stdio> {
  Ok(match spec {
    StdioSpec::Inherit => Stdio::inherit(),
    StdioSpec::Pipe => Stdio::piped(),
    StdioSpec::Ignore | StdioSpec::Ipc => Stdio::null(),
    StdioSpec::Fd(fd) => {
      // Duplicate: Command closes what it is given once the child has it.
      let dup = nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) }).map_err(io::Error::from)?;
      Stdio::from(dup)
    }
  })
}

pub fn spawn(spec: &SpawnSpec) -> io::Result<Spawned> {
  let (ours, theirs) = socketpair(
    AddressFamily::Unix,
    SockType::Stream,
    None,
    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
  )
  .map_err(io::Error::from)?;
  // The child's end must be blocking-agnostic: libuv sets what it needs. But
  // SOCK_NONBLOCK was applied to both ends, and O_NONBLOCK lives on the open
  // file description, so clear it on the child's end.
  set_nonblocking(theirs.as_raw_fd(), false)?;
  let channel_at = spec
    .stdio
    .iter()
    .position(|s| *s == StdioSpec::Ipc)
    .filter(|i| *i >= 3)
    .unwrap_or(3);

  // Entries from fd 3 up are placed with dup2 between fork and exec:
  // (target fd in the child, source fd here). Pipes are socket pairs, duplex
  // like libuv's.
  let mut placed: Vec<(RawFd, RawFd)> = vec![(channel_at as RawFd, theirs.as_raw_fd())];
  let mut extra = Vec::new();
  let mut child_ends = Vec::new();
  for (i, entry) in spec.stdio.iter().enumerate().skip(3) {
    if i == channel_at {
      continue;
    }
    match entry {
      StdioSpec::Pipe => {
        let (mine, child) =
          socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
        placed.push((i as RawFd, child.as_raw_fd()));
        child_ends.push(child);
        extra.push((i, mine));
      }
      StdioSpec::Fd(fd) => placed.push((i as RawFd, *fd)),
      StdioSpec::Inherit => placed.push((i as RawFd, i as RawFd)),
      StdioSpec::Ignore | StdioSpec::Ipc => {}
    }
  }
  // Temporary copies go above every target so no source is overwritten early.
  let base = placed.iter().map(|(t, _)| *t).max().unwrap_or(3) + 1;

  let mut cmd = Command::new(&spec.file);
  cmd.args(&spec.args);
  cmd.env_clear();
  cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
  cmd.env("NODE_CHANNEL_FD", channel_at.to_string());
  cmd.env("NODE_CHANNEL_SERIALIZATION_MODE", spec.serialization.as_str());
  if let Some(cwd) = &spec.cwd {
    cmd.current_dir(cwd);
  }
  if let Some(uid) = spec.uid {
    cmd.uid(uid);
  }
  if let Some(gid) = spec.gid {
    cmd.gid(gid);
  }
  let std_entry = |i: usize| spec.stdio.get(i).cloned().unwrap_or(StdioSpec::Inherit);
  cmd.stdin(stdio_of(&std_entry(0))?);
  cmd.stdout(stdio_of(&std_entry(1))?);
  cmd.stderr(stdio_of(&std_entry(2))?);

  // Node marks its own fds 0-2 close-on-exec; `Stdio::inherit()` leaves them
  // as they are, so the child would lose them at exec. Clear the flag there.
  let inherit: Vec<RawFd> = (0..3)
    .filter(|i| std_entry(*i as usize) == StdioSpec::Inherit)
    .collect();
  let mut temps: Vec<RawFd> = vec![-1; placed.len()];
  let parent = std::process::id() as libc::pid_t;
  let death_signal = spec.death_signal;
  // libuv drops the supplementary groups whenever uid or gid is set; std only
  // does so for uid (before this closure runs, so only the gid-only case is
  // left).
  let drop_groups = spec.gid.is_some() && spec.uid.is_none();
  // SAFETY: only async-signal-safe calls between fork and exec.
  unsafe {
    cmd.pre_exec(move || {
      // Keep the channel across exec in this child only; other children
      // spawned concurrently never see it.
      for (n, (_, source)) in placed.iter().enumerate() {
        temps[n] = libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, base);
        if temps[n] == -1 {
          return Err(io::Error::last_os_error());
        }
      }
      // dup2 leaves the target without close-on-exec: it survives exec.
      for (n, (target, _)) in placed.iter().enumerate() {
        if libc::dup2(temps[n], *target) == -1 {
          return Err(io::Error::last_os_error());
        }
      }
      for fd in &inherit {
        libc::fcntl(*fd, libc::F_SETFD, 0);
      }
      // Best effort, as in libuv: it fails (EPERM) without CAP_SETGID.
      if drop_groups {
        libc::setgroups(0, std::ptr::null());
      }
      if death_signal && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
        return Err(io::Error::last_os_error());
      }
      // The primary may already have died between fork and prctl.
      if libc::getppid() != parent {
        libc::_exit(1);
      }
      Ok(())
    });
  }
  let mut child = cmd.spawn()?;
  drop(theirs);
  drop(child_ends);
  let pid = child.id() as i32;
  let pidfd = pidfd_open(pid).ok();
  let take = |fd: Option<OwnedFd>| fd;
  let stdin = take(child.stdin.take().map(OwnedFd::from));
  let stdout = take(child.stdout.take().map(OwnedFd::from));
  let stderr = take(child.stderr.take().map(OwnedFd::from));
  // `child` is dropped without waiting: the exit watcher reaps it.
  drop(child);
  Ok(Spawned {
    pid,
    channel: ours,
    pidfd,
    stdin,
    stdout,
    stderr,
    extra,
  })
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
  // SAFETY: plain fcntl on an fd we own.
  unsafe {
    let flags = libc::fcntl(fd, libc::F_GETFL);
    if flags == -1 {
      return Err(io::Error::last_os_error());
    }
    let flags = if on {
      flags | libc::O_NONBLOCK
    } else {
      flags & !libc::O_NONBLOCK
    };
    if libc::fcntl(fd, libc::F_SETFL, flags) == -1 {
      return Err(io::Error::last_os_error());
    }
  }
  Ok(())
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
  // SAFETY: raw syscall; a non-negative return is a new fd we own.
  let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
  if fd < 0 {
    return Err(io::Error::last_os_error());
  }
  let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
  set_cloexec(fd.as_raw_fd());
  Ok(fd)
}

fn set_cloexec(fd: RawFd) {
  unsafe {
    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
  }
}

/// Sends `signal` (0 probes) to the process behind `pidfd`.
pub fn pidfd_send_signal(pidfd: RawFd, signal: i32) -> io::Result<()> {
  let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, signal, std::ptr::null::<u8>(), 0) };
  if r < 0 {
    return Err(io::Error::last_os_error());
  }
  Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
  pub code: Option<i32>,
  pub signal: Option<i32>,
}

/// Reaps `pid` if it has exited (never blocks, never touches other children).
pub fn try_reap(pid: i32) -> io::Result<Option<ExitStatus>> {
  let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
  let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG) };
  if r == -1 {
    return Err(io::Error::last_os_error());
  }
  let child = unsafe { info.si_pid() };
  if child == 0 {
    return Ok(None);
  }
  let status = unsafe { info.si_status() };
  Ok(Some(match info.si_code {
    libc::CLD_EXITED => ExitStatus {
      code: Some(status),
      signal: None,
    },
    _ => ExitStatus {
      code: None,
      signal: Some(status),
    },
  }))
}

/// Waits for `pid` to exit and reaps it.
pub async fn wait_exit(pid: i32, pidfd: Option<OwnedFd>) -> ExitStatus {
  if let Some(fd) = pidfd {
    if let Ok(afd) = crate::channel::register(fd, tokio::io::Interest::READABLE) {
      while let Ok(mut guard) = afd.readable().await {
        if let Ok(Some(status)) = try_reap(pid) {
          return status;
        }
        guard.clear_ready();
      }
    }
  }
  // No pidfd (old kernel): poll for this pid only.
  loop {
    match try_reap(pid) {
      Ok(Some(status)) => return status,
      Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
      Err(_) => {
        return ExitStatus {
          code: None,
          signal: None,
        }
      }
    }
  }
}

pub fn signal_name(signo: i32) -> String {
  nix::sys::signal::Signal::try_from(signo)
    .map(|s| s.as_str().to_string())
    .unwrap_or_else(|_| format!("SIG{signo}"))
}

pub fn signal_number(name: &str) -> Option<i32> {
  name.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

#[cfg(test)]
mod tests {
  use super::*;

  fn spec(file: &str, args: &[&str]) -> SpawnSpec {
    SpawnSpec {
      file: file.into(),
      args: args.iter().map(|s| s.to_string()).collect(),
      env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
      cwd: None,
      stdio: vec![StdioSpec::Ignore, StdioSpec::Pipe, StdioSpec::Ignore, StdioSpec::Ipc],
      uid: None,
      gid: None,
      serialization: Serialization::Json,
      death_signal: true,
    }
  }

  #[tokio::test]
  async fn exit_code_and_signal_are_observed() {
    let s = spawn(&spec("/bin/sh", &["-c", "exit 7"])).unwrap();
    let status = wait_exit(s.pid, s.pidfd).await;
    assert_eq!(
      status,
      ExitStatus {
        code: Some(7),
        signal: None
      }
    );

    let s = spawn(&spec("/bin/sh", &["-c", "kill -TERM $$"])).unwrap();
    let status = wait_exit(s.pid, s.pidfd).await;
    assert_eq!(
      status,
      ExitStatus {
        code: None,
        signal: Some(libc::SIGTERM)
      }
    );
    assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
    assert_eq!(signal_number("SIGKILL"), Some(9));
  }

  #[tokio::test]
  async fn child_sees_channel_fd_and_env() {
    use std::io::Read;
    let s = spawn(&spec(
      "/bin/sh",
      &["-c", "echo $NODE_CHANNEL_FD $NODE_CHANNEL_SERIALIZATION_MODE; [ -e /proc/self/fd/$NODE_CHANNEL_FD ] && echo open; [ -e /proc/self/fd/4 ] || echo no4"],
    ))
    .unwrap();
    let mut out = String::new();
    std::fs::File::from(s.stdout.unwrap()).read_to_string(&mut out).unwrap();
    let status = wait_exit(s.pid, s.pidfd).await;
    assert_eq!(status.code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "3 json", "{out}");
    assert_eq!(lines[1], "open");
    assert_eq!(lines[2], "no4", "only the channel is placed");
  }

  #[test]
  fn missing_executable_is_an_error() {
    let err = spawn(&spec("/nonexistent/node", &[])).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
  }
}
