//! Binding the sockets the primary holds for its workers, as Node's
//! `net._createServerHandle` and `dgram._createSocketHandle` would, plus the
//! `SO_REUSEPORT` variant that gives each worker its own socket.
//!
//! Errors are returned as negative errno values, the form Node's worker-side
//! code turns into `'error'` events with `code`, `errno` and `syscall: 'bind'`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

/// libuv's `UV_TCP_IPV6ONLY` / `UV_UDP_IPV6ONLY`.
pub const FLAG_IPV6ONLY: u32 = 1;
/// libuv's `UV_UDP_REUSEADDR`.
pub const FLAG_UDP_REUSEADDR: u32 = 4;

/// What a worker asked to listen on (`addressType` in `queryServer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
  Tcp4,
  Tcp6,
  Pipe,
  Udp4,
  Udp6,
}

impl Kind {
  pub fn from_address_type(v: &serde_json::Value) -> Option<Kind> {
    match v {
      serde_json::Value::String(s) if s == "udp4" => Some(Kind::Udp4),
      serde_json::Value::String(s) if s == "udp6" => Some(Kind::Udp6),
      serde_json::Value::Number(n) => match n.as_i64()? {
        4 => Some(Kind::Tcp4),
        6 => Some(Kind::Tcp6),
        -1 => Some(Kind::Pipe),
        _ => None,
      },
      _ => None,
    }
  }
  pub fn is_udp(self) -> bool {
    matches!(self, Kind::Udp4 | Kind::Udp6)
  }
  /// The handle type named in the `NODE_HANDLE` envelope.
  pub fn handle_type(self) -> &'static str {
    if self.is_udp() {
      "dgram.Native"
    } else {
      "net.Native"
    }
  }
}

pub fn neg_errno(e: &io::Error) -> i32 {
  -e.raw_os_error().unwrap_or(libc::EINVAL)
}

/// A numeric address as `net.isIP` accepts it, IPv6 with a zone
/// (`fe80::1%eth0`) included, as libuv's `uv_ip6_addr` reads it on Linux: the
/// zone is an interface name, and one no interface has (a number included)
/// is scope 0. `None`: not an address (a host name).
pub fn parse_address(address: &str, port: u16) -> Option<SocketAddr> {
  if let Ok(ip) = address.parse::<IpAddr>() {
    return Some(SocketAddr::new(ip, port));
  }
  let (bare, zone) = address.split_once('%')?;
  let ip = bare.parse::<Ipv6Addr>().ok()?;
  // The characters net.isIP allows in a zone.
  if zone.is_empty() || !zone.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b)) {
    return None;
  }
  let scope = nix::net::if_::if_nametoindex(zone).unwrap_or(0);
  Some(SocketAddr::V6(std::net::SocketAddrV6::new(ip, port, 0, scope)))
}

fn sock_addr(kind: Kind, address: Option<&str>, port: u16) -> Result<SocketAddr, i32> {
  match address {
    Some(a) => parse_address(a, port).ok_or(-libc::EINVAL),
    None => Ok(SocketAddr::new(
      match kind {
        Kind::Tcp6 | Kind::Udp6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
      },
      port,
    )),
  }
}

// Every socket made here is non-blocking, like libuv's: workers adopt the
// open file description as it is, and libuv does not make received listening
// sockets non-blocking itself. A blocking one shared by several workers would
// park the worker that loses an accept race inside accept(2).

/// Binds a TCP socket but does not listen: Node's workers call `listen()`
/// themselves on the handle they receive (with their own backlog).
///
/// `address: None` means "any": like Node, try the dual-stack `::` first and
/// fall back to `0.0.0.0` where IPv6 is unavailable.
pub fn bind_tcp(kind: Kind, address: Option<&str>, port: u16, flags: u32, reuseport: bool) -> Result<Socket, i32> {
  if address.is_none() {
    if let Ok(s) = bind_tcp_at(sock_addr(Kind::Tcp6, None, port)?, flags, reuseport) {
      return Ok(s);
    }
    return bind_tcp_at(sock_addr(Kind::Tcp4, None, port)?, 0, reuseport);
  }
  bind_tcp_at(sock_addr(kind, address, port)?, flags, reuseport)
}

/// Binds a TCP socket at exactly `addr` (the `::` wildcard dual-stack).
pub fn bind_tcp_at(addr: SocketAddr, flags: u32, reuseport: bool) -> Result<Socket, i32> {
  // libuv always sets SO_REUSEADDR on TCP binds.
  bind_inet(addr, Type::STREAM, true, reuseport, flags & FLAG_IPV6ONLY != 0)
}

pub fn bind_udp(kind: Kind, address: Option<&str>, port: u16, flags: u32, reuseport: bool) -> Result<Socket, i32> {
  let addr = sock_addr(kind, address, port)?;
  bind_inet(
    addr,
    Type::DGRAM,
    flags & FLAG_UDP_REUSEADDR != 0,
    reuseport,
    flags & FLAG_IPV6ONLY != 0,
  )
}

fn bind_inet(addr: SocketAddr, ty: Type, reuse_addr: bool, reuseport: bool, ipv6_only: bool) -> Result<Socket, i32> {
  let make = || -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty.cloexec().nonblocking(), None)?;
    s.set_reuse_address(reuse_addr)?;
    if reuseport {
      s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
      s.set_only_v6(ipv6_only)?;
    }
    s.bind(&SockAddr::from(addr))?;
    Ok(s)
  };
  make().map_err(|e| neg_errno(&e))
}

/// Binds a Unix stream socket at `path` (not listening yet, as for TCP).
pub fn bind_pipe(path: &Path) -> Result<Socket, i32> {
  let make = || -> io::Result<Socket> {
    let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec().nonblocking(), None)?;
    s.bind(&SockAddr::unix(path)?)?;
    Ok(s)
  };
  make().map_err(|e| neg_errno(&e))
}

/// `listen({ readableAll, writableAll })` on the socket file, as the libuv
/// of the Node running us does it (`uv_pipe_chmod`): read and/or write for
/// everyone. Since libuv 1.51 (Node 22) that is the whole mode (0444, 0222 or
/// 0666); before, the bits were added to what the umask left.
pub fn chmod_pipe(path: &Path, readable_all: bool, writable_all: bool) -> Result<(), i32> {
  set_pipe_mode(path, readable_all, writable_all, pipe_chmod_sets_whole_mode())
}

fn set_pipe_mode(path: &Path, readable_all: bool, writable_all: bool, whole: bool) -> Result<(), i32> {
  use std::os::unix::fs::PermissionsExt;
  let wanted = if readable_all { 0o444 } else { 0 } | if writable_all { 0o222 } else { 0 };
  if wanted == 0 {
    return Ok(());
  }
  let mode = if whole {
    wanted
  } else {
    let old = std::fs::metadata(path).map_err(|e| neg_errno(&e))?.permissions().mode() & 0o7777;
    if old & wanted == wanted {
      return Ok(());
    }
    old | wanted
  };
  // By path: fchmod on a socket does not reach the file on every system.
  std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| neg_errno(&e))
}

/// Whether the host's libuv is 1.51 or later. Node exports libuv's symbols
/// (for addons); outside Node (`cargo test`) assume a current libuv.
fn pipe_chmod_sets_whole_mode() -> bool {
  static WHOLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
  *WHOLE.get_or_init(|| {
    // SAFETY: a symbol lookup; `uv_version` takes no arguments and returns
    // the version as 0xMMmmpp.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"uv_version".as_ptr()) };
    if sym.is_null() {
      return true;
    }
    let uv_version: extern "C" fn() -> libc::c_uint = unsafe { std::mem::transmute(sym) };
    uv_version() >= 0x01_33_00
  })
}

/// The shortest usable spelling of a socket path (Unix paths are limited to
/// ~107 bytes), as Node's primary does.
pub fn shortest_path(path: &str) -> PathBuf {
  let p = PathBuf::from(path);
  if let Ok(cwd) = std::env::current_dir() {
    if let Ok(rel) = p.strip_prefix(&cwd) {
      if rel.as_os_str().len() < path.len() && !rel.as_os_str().is_empty() {
        return rel.to_path_buf();
      }
    }
  }
  p
}

pub fn listen(sock: &Socket, backlog: i32) -> Result<(), i32> {
  sock.listen(backlog).map_err(|e| neg_errno(&e))
}

/// A duplicate of an fd the primary already has (`listen({ fd })`).
pub fn dup_fd(fd: RawFd) -> Result<OwnedFd, i32> {
  let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
  if r < 0 {
    return Err(neg_errno(&io::Error::last_os_error()));
  }
  Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// `{ address, family, port }` as libuv's `getsockname` reports it to JS.
pub fn sockname_json(sock: &Socket) -> Option<serde_json::Value> {
  let addr = sock.local_addr().ok()?.as_socket()?;
  let family = if addr.is_ipv6() { "IPv6" } else { "IPv4" };
  Some(serde_json::json!({
    "address": addr.ip().to_string(),
    "family": family,
    "port": addr.port(),
  }))
}

pub fn local_port(sock: &Socket) -> Option<u16> {
  sock.local_addr().ok()?.as_socket().map(|a| a.port())
}

/// What kind of socket an fd received from a worker is, so JS can wrap it.
pub fn describe(fd: RawFd) -> &'static str {
  let sock = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
  let ty = sock.r#type().ok();
  let domain = sock.local_addr().ok().map(|a| a.family() as i32);
  let listening = socket2::SockRef::from(&*sock).is_listener().unwrap_or(false);
  match (ty, domain) {
    (Some(t), Some(d)) if t == Type::DGRAM => {
      if d == libc::AF_INET6 {
        "udp6"
      } else {
        "udp4"
      }
    }
    (Some(_), Some(d)) if d == libc::AF_UNIX => {
      if listening {
        "pipe-server"
      } else {
        "pipe"
      }
    }
    (Some(_), Some(_)) => {
      if listening {
        "tcp-server"
      } else {
        "tcp"
      }
    }
    _ => "unknown",
  }
}

/// Accepts one connection: close-on-exec, so a concurrent spawn cannot
/// inherit it, and non-blocking, as the worker's libuv expects.
pub fn accept(listener: RawFd) -> io::Result<OwnedFd> {
  // SAFETY: accept4 on an fd we hold; a non-negative result is ours.
  let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
  let fd = unsafe { libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), flags) };
  if fd < 0 {
    return Err(io::Error::last_os_error());
  }
  Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Accepts everything queued on `listener` now, without blocking.
pub fn accept_all(listener: RawFd) -> Vec<OwnedFd> {
  let _ = crate::spawn::set_nonblocking(listener, true);
  let mut out = Vec::new();
  loop {
    match accept(listener) {
      Ok(c) => out.push(c),
      Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
      Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
      Err(_) => return out,
    }
  }
}

/// Builds the classic-BPF program that picks a socket of a reuseport group:
/// the connection's hash (or a random number when the hash is 0) modulo the
/// number of live sockets, mapped to those sockets' indices in the group.
/// With no live socket it answers an out-of-range index, which makes the
/// kernel fall back to its own hash.
pub fn reuseport_program(live: &[u32]) -> Vec<libc::sock_filter> {
  const LD_ABS_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
  const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
  const MOD_K: u16 = 0x94; // BPF_ALU | BPF_MOD | BPF_K
  const RET_K: u16 = 0x06; // BPF_RET | BPF_K
  const SKF_AD_OFF: i32 = -0x1000;
  const SKF_AD_RXHASH: i32 = 32;
  const SKF_AD_RANDOM: i32 = 56;
  let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
  if live.is_empty() {
    return vec![op(RET_K, 0, 0, u32::MAX)];
  }
  let mut p = vec![
    op(LD_ABS_W, 0, 0, (SKF_AD_OFF + SKF_AD_RXHASH) as u32),
    op(JEQ_K, 0, 1, 0),
    op(LD_ABS_W, 0, 0, (SKF_AD_OFF + SKF_AD_RANDOM) as u32),
    op(MOD_K, 0, 0, live.len() as u32),
  ];
  for (i, idx) in live.iter().enumerate() {
    p.push(op(JEQ_K, 0, 1, i as u32));
    p.push(op(RET_K, 0, 0, *idx));
  }
  p.push(op(RET_K, 0, 0, live[0]));
  p
}

/// Attaches `reuseport_program(live)` to the reuseport group `fd` belongs to
/// (any member will do; the program is the group's).
pub fn steer_reuseport(fd: RawFd, live: &[u32]) -> io::Result<()> {
  attach_reuseport_cbpf(fd, &mut reuseport_program(live))
}

/// Attaches a classic-BPF program to the reuseport group `fd` belongs to.
pub fn attach_reuseport_cbpf(fd: RawFd, prog: &mut [libc::sock_filter]) -> io::Result<()> {
  let fprog = libc::sock_fprog {
    len: prog.len() as u16,
    filter: prog.as_mut_ptr(),
  };
  // SAFETY: fprog points at `prog`, alive for the call; the kernel copies it.
  let r = unsafe {
    libc::setsockopt(
      fd,
      libc::SOL_SOCKET,
      libc::SO_ATTACH_REUSEPORT_CBPF,
      &fprog as *const _ as *const libc::c_void,
      std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
    )
  };
  if r != 0 {
    return Err(io::Error::last_os_error());
  }
  Ok(())
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::os::fd::AsRawFd;

  #[test]
  fn reuseport_group_shares_an_ephemeral_port() {
    let a = bind_tcp(Kind::Tcp4, Some("127.0.0.1"), 0, 0, true).unwrap();
    let port = local_port(&a).unwrap();
    assert_ne!(port, 0);
    let b = bind_tcp(Kind::Tcp4, Some("127.0.0.1"), port, 0, true).unwrap();
    assert_eq!(local_port(&b), Some(port));
    // A plain socket cannot join the group.
    listen(&a, 16).unwrap();
    assert_eq!(
      bind_tcp(Kind::Tcp4, Some("127.0.0.1"), port, 0, false).err(),
      Some(-libc::EADDRINUSE)
    );
  }

  /// With a program steering to one member, every connection lands there and
  /// none in the other (still listening) member's queue.
  #[test]
  fn steering_avoids_vacant_members() {
    let a = bind_tcp(Kind::Tcp4, Some("127.0.0.1"), 0, 0, true).unwrap();
    listen(&a, 64).unwrap();
    let port = local_port(&a).unwrap();
    let b = bind_tcp(Kind::Tcp4, Some("127.0.0.1"), port, 0, true).unwrap();
    listen(&b, 64).unwrap();
    // Group order is listen order: a = 0, b = 1. Steer everything to b.
    steer_reuseport(a.as_raw_fd(), &[1]).unwrap();
    let clients: Vec<_> = (0..20)
      .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
      .collect();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let count = |s: &Socket| std::iter::from_fn(|| s.accept().ok()).count();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(count(&a), 0);
    assert_eq!(count(&b), clients.len());
    // Both live: both get some.
    steer_reuseport(a.as_raw_fd(), &[0, 1]).unwrap();
    let clients: Vec<_> = (0..40)
      .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
      .collect();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (ca, cb) = (count(&a), count(&b));
    assert_eq!(ca + cb, clients.len());
    assert!(ca > 0 && cb > 0, "{ca} / {cb}");
  }

  #[test]
  fn sockets_for_workers_are_non_blocking() {
    let flags = |fd: RawFd| unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let t = bind_tcp(Kind::Tcp4, Some("127.0.0.1"), 0, 0, false).unwrap();
    let u = bind_udp(Kind::Udp4, Some("127.0.0.1"), 0, 0, false).unwrap();
    assert_ne!(flags(t.as_raw_fd()) & libc::O_NONBLOCK, 0);
    assert_ne!(flags(u.as_raw_fd()) & libc::O_NONBLOCK, 0);
    listen(&t, 4).unwrap();
    let port = local_port(&t).unwrap();
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let conn = accept(t.as_raw_fd()).unwrap();
    assert_ne!(flags(conn.as_raw_fd()) & libc::O_NONBLOCK, 0);
  }

  #[test]
  fn errors_are_negative_errno() {
    let a = bind_tcp(Kind::Tcp4, Some("127.0.0.1"), 0, 0, false).unwrap();
    listen(&a, 1).unwrap();
    let port = local_port(&a).unwrap();
    assert_eq!(
      bind_tcp(Kind::Tcp4, Some("127.0.0.1"), port, 0, false).err(),
      Some(-libc::EADDRINUSE)
    );
    assert_eq!(
      bind_tcp(Kind::Tcp4, Some("not an ip"), 0, 0, false).err(),
      Some(-libc::EINVAL)
    );
    assert_eq!(
      bind_tcp(Kind::Tcp4, Some("192.0.2.1"), 0, 0, false).err(),
      Some(-libc::EADDRNOTAVAIL)
    );
  }

  #[test]
  fn sockname_and_describe() {
    let a = bind_tcp(Kind::Tcp6, Some("::1"), 0, FLAG_IPV6ONLY, false);
    if let Ok(a) = a {
      let j = sockname_json(&a).unwrap();
      assert_eq!(j["family"], "IPv6");
      assert_eq!(j["address"], "::1");
      listen(&a, 1).unwrap();
      assert_eq!(describe(a.as_raw_fd()), "tcp-server");
    }
    let u = bind_udp(Kind::Udp4, Some("127.0.0.1"), 0, 0, false).unwrap();
    assert_eq!(describe(u.as_raw_fd()), "udp4");
    let dir = std::env::temp_dir().join(format!("rcluster-sock-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let p = bind_pipe(&dir).unwrap();
    assert_eq!(describe(p.as_raw_fd()), "pipe");
    assert_eq!(bind_pipe(&dir).err(), Some(-libc::EADDRINUSE));
    std::fs::remove_file(&dir).unwrap();
  }

  #[test]
  fn pipe_modes_as_libuv_sets_them() {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("rcluster-chmod-{}", std::process::id()));
    let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    let set = |m: u32| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
    std::fs::write(&path, b"").unwrap();
    // (mode before, readableAll, writableAll, mode after: libuv < 1.51, >= 1.51)
    for (start, readable, writable, added, whole) in [
      (0o700, false, false, 0o700, 0o700),
      (0o700, true, false, 0o744, 0o444),
      (0o700, false, true, 0o722, 0o222),
      (0o700, true, true, 0o766, 0o666),
      (0o755, true, true, 0o777, 0o666),
      (0o755, true, false, 0o755, 0o444),
    ] {
      for (is_whole, end) in [(false, added), (true, whole)] {
        set(start);
        set_pipe_mode(&path, readable, writable, is_whole).unwrap();
        assert_eq!(
          mode(),
          end,
          "{start:o} readable {readable} writable {writable} whole {is_whole}"
        );
      }
    }
    std::fs::remove_file(&path).unwrap();
    assert_eq!(set_pipe_mode(&path, true, false, false), Err(-libc::ENOENT));
  }
}
