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
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
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
}

impl StdioSpec {
  pub fn parse(s: &str) -> Option<Self> {
    Some(match s {
      "inherit" => Self::Inherit,
      "pipe" | "overlapped" => Self::Pipe,
      "ignore" => Self::Ignore,
      n => Self::Fd(n.parse().ok().filter(|fd: &RawFd| *fd >= 0)?),
    })
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
  pub stdio: [StdioSpec; 3],
  pub uid: Option<u32>,
  pub gid: Option<u32>,
  pub serialization: Serialization,
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
}

fn stdio_of(spec: &StdioSpec) -> io::Result<Stdio> {
  Ok(match spec {
    StdioSpec::Inherit => Stdio::inherit(),
    StdioSpec::Pipe => Stdio::piped(),
    StdioSpec::Ignore => Stdio::null(),
    StdioSpec::Fd(fd) => {
      // Duplicate: Command closes what it is given once the child has it.
      let dup = nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) })
        .map_err(io::Error::from)?;
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
  let child_fd = theirs.as_raw_fd();

  let mut cmd = Command::new(&spec.file);
  cmd.args(&spec.args);
  cmd.env_clear();
  cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
  cmd.env("NODE_CHANNEL_FD", child_fd.to_string());
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
  cmd.stdin(stdio_of(&spec.stdio[0])?);
  cmd.stdout(stdio_of(&spec.stdio[1])?);
  cmd.stderr(stdio_of(&spec.stdio[2])?);

  let parent = std::process::id() as libc::pid_t;
  // SAFETY: only async-signal-safe calls between fork and exec.
  unsafe {
    cmd.pre_exec(move || {
      // Keep the channel across exec in this child only; other children
      // spawned concurrently never see it.
      if libc::fcntl(child_fd, libc::F_SETFD, 0) == -1 {
        return Err(io::Error::last_os_error());
      }
      // A primary that dies takes its workers with it, even blocked ones.
      if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
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
  let pid = child.id() as i32;
  let pidfd = pidfd_open(pid).ok();
  let take = |fd: Option<OwnedFd>| fd;
  let stdin = take(child.stdin.take().map(OwnedFd::from));
  let stdout = take(child.stdout.take().map(OwnedFd::from));
  let stderr = take(child.stderr.take().map(OwnedFd::from));
  // `child` is dropped without waiting: the exit watcher reaps it.
  drop(child);
  Ok(Spawned { pid, channel: ours, pidfd, stdin, stdout, stderr })
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
  // SAFETY: plain fcntl on an fd we own.
  unsafe {
    let flags = libc::fcntl(fd, libc::F_GETFL);
    if flags == -1 {
      return Err(io::Error::last_os_error());
    }
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
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
  let r = unsafe {
    libc::syscall(libc::SYS_pidfd_send_signal, pidfd, signal, std::ptr::null::<u8>(), 0)
  };
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
  let r = unsafe {
    libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG)
  };
  if r == -1 {
    return Err(io::Error::last_os_error());
  }
  let child = unsafe { info.si_pid() };
  if child == 0 {
    return Ok(None);
  }
  let status = unsafe { info.si_status() };
  Ok(Some(match info.si_code {
    libc::CLD_EXITED => ExitStatus { code: Some(status), signal: None },
    _ => ExitStatus { code: None, signal: Some(status) },
  }))
}

/// Waits for `pid` to exit and reaps it.
pub async fn wait_exit(pid: i32, pidfd: Option<OwnedFd>) -> ExitStatus {
  if let Some(fd) = pidfd {
    if let Ok(afd) = crate::channel::register(fd, tokio::io::Interest::READABLE) {
      loop {
        match afd.readable().await {
          Ok(mut guard) => {
            if let Ok(Some(status)) = try_reap(pid) {
              return status;
            }
            guard.clear_ready();
          }
          Err(_) => break,
        }
      }
    }
  }
  // No pidfd (old kernel): poll for this pid only.
  loop {
    match try_reap(pid) {
      Ok(Some(status)) => return status,
      Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
      Err(_) => return ExitStatus { code: None, signal: None },
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

/// Turns an fd we own into a raw one whose ownership passes to JS.
pub fn release(fd: OwnedFd) -> RawFd {
  fd.into_raw_fd()
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
      stdio: [StdioSpec::Ignore, StdioSpec::Pipe, StdioSpec::Ignore],
      uid: None,
      gid: None,
      serialization: Serialization::Json,
    }
  }

  #[tokio::test]
  async fn exit_code_and_signal_are_observed() {
    let s = spawn(&spec("/bin/sh", &["-c", "exit 7"])).unwrap();
    let status = wait_exit(s.pid, s.pidfd).await;
    assert_eq!(status, ExitStatus { code: Some(7), signal: None });

    let s = spawn(&spec("/bin/sh", &["-c", "kill -TERM $$"])).unwrap();
    let status = wait_exit(s.pid, s.pidfd).await;
    assert_eq!(status, ExitStatus { code: None, signal: Some(libc::SIGTERM) });
    assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
    assert_eq!(signal_number("SIGKILL"), Some(9));
  }

  #[tokio::test]
  async fn child_sees_channel_fd_and_env() {
    use std::io::Read;
    let s = spawn(&spec(
      "/bin/sh",
      &["-c", "echo $NODE_CHANNEL_FD $NODE_CHANNEL_SERIALIZATION_MODE; [ -e /proc/self/fd/$NODE_CHANNEL_FD ] && echo open"],
    ))
    .unwrap();
    let mut out = String::new();
    std::fs::File::from(s.stdout.unwrap()).read_to_string(&mut out).unwrap();
    let status = wait_exit(s.pid, s.pidfd).await;
    assert_eq!(status.code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with(" json"), "{out}");
    assert_eq!(lines[1], "open");
  }

  #[test]
  fn missing_executable_is_an_error() {
    let err = spawn(&spec("/nonexistent/node", &[])).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
  }
}
