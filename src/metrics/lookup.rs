//! A host name's first address, from getaddrinfo on the runtime's blocking
//! pool, with its failure as libuv (and so `dns.lookup`) names it.

use std::ffi::CString;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// libuv's UV_EAI_NONAME, which Node reports as ENOTFOUND.
pub const UV_EAI_NONAME: i32 = -3008;

/// glibc's codes the libc crate does not name.
const EAI_ADDRFAMILY: i32 = -9;
const EAI_CANCELED: i32 = -101;

/// libuv's errno for a getaddrinfo result code (EAI_SYSTEM: the errno).
fn uv_errno(code: i32) -> i32 {
  match code {
    EAI_ADDRFAMILY => -3000,
    libc::EAI_AGAIN => -3001,
    libc::EAI_BADFLAGS => -3002,
    EAI_CANCELED => -3003,
    libc::EAI_FAIL => -3004,
    libc::EAI_FAMILY => -3005,
    libc::EAI_MEMORY => -3006,
    libc::EAI_NODATA => -3007,
    libc::EAI_OVERFLOW => -3009,
    libc::EAI_SERVICE => -3010,
    libc::EAI_SOCKTYPE => -3011,
    libc::EAI_SYSTEM => -std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO),
    _ => UV_EAI_NONAME,
  }
}

/// The first address getaddrinfo gives for `host` (any family, in its
/// order, as `dns.lookup` takes it), or libuv's errno for the failure.
pub async fn first_address(host: String, port: u16) -> Result<SocketAddr, i32> {
  tokio::task::spawn_blocking(move || lookup(&host, port))
    .await
    .unwrap_or(Err(UV_EAI_NONAME))
}

fn lookup(host: &str, port: u16) -> Result<SocketAddr, i32> {
  // libuv refuses a name that does not fit its 256-byte buffer before asking.
  if host.len() >= 256 {
    return Err(-libc::EINVAL);
  }
  // No NUL inside: the option's validation refuses one.
  let name = CString::new(host).map_err(|_| -libc::EINVAL)?;
  // SAFETY: a zeroed addrinfo is the "no hints" value; only the fields set below matter.
  let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
  hints.ai_family = libc::AF_UNSPEC;
  hints.ai_socktype = libc::SOCK_STREAM;
  let mut list: *mut libc::addrinfo = std::ptr::null_mut();
  // SAFETY: `name` and `hints` outlive the call; `list` is freed below.
  let code = unsafe { libc::getaddrinfo(name.as_ptr(), std::ptr::null(), &hints, &mut list) };
  if code != 0 {
    return Err(uv_errno(code));
  }
  let mut found = None;
  let mut at = list;
  while found.is_none() && !at.is_null() {
    // SAFETY: a node of the list getaddrinfo gave; ai_addr's size matches ai_family.
    found = unsafe { socket_addr(&*at, port) };
    at = unsafe { (*at).ai_next };
  }
  // SAFETY: the list getaddrinfo allocated, freed once.
  unsafe { libc::freeaddrinfo(list) };
  found.ok_or(UV_EAI_NONAME)
}

/// # Safety
/// `ai.ai_addr` points at a sockaddr of `ai.ai_family`.
unsafe fn socket_addr(ai: &libc::addrinfo, port: u16) -> Option<SocketAddr> {
  match ai.ai_family {
    libc::AF_INET => {
      let sa = &*(ai.ai_addr as *const libc::sockaddr_in);
      let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
      Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    }
    libc::AF_INET6 => {
      let sa = &*(ai.ai_addr as *const libc::sockaddr_in6);
      let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
      Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, sa.sin6_scope_id)))
    }
    _ => None,
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn names_resolve_and_failures_are_named_as_libuv_names_them() {
    let local = lookup("localhost", 7).unwrap();
    assert!(local.ip().is_loopback() && local.port() == 7, "{local}");
    assert_eq!(lookup("no-such-host.invalid", 0), Err(UV_EAI_NONAME));
    assert_eq!(lookup(&"x".repeat(300), 0), Err(-libc::EINVAL));
    assert_eq!(uv_errno(libc::EAI_AGAIN), -3001);
    assert_eq!(uv_errno(libc::EAI_FAIL), -3004);
  }
}
