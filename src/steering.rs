//! The `sticky: 'ip'` steering program of a reuseport group: classic BPF
//! that the kernel runs per SYN. It reads the client's source address from
//! the packet's network header (IPv4 or IPv6, told by the version nibble),
//! hashes it exactly as `sticky::bucket_of` does, and finds the bucket's
//! member with a binary search over bucket ranges (`sticky::runs`).
//!
//! Size: the search costs 3 instructions per range, and there are at most
//! `BUCKETS` (512) ranges, so a program stays far below `BPF_MAXINSNS`
//! (4096) whatever the number of workers.

use crate::sticky::{self, BUCKET_BITS, FINAL, MIX, SEED4, SEED6};

type Insn = libc::sock_filter;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const ALU_XOR_K: u16 = 0xa4;
const ALU_XOR_X: u16 = 0xac;
const ALU_MUL_K: u16 = 0x24;
const ALU_RSH_K: u16 = 0x74;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
const TAX: u16 = 0x07; // BPF_MISC | BPF_TAX

/// Loads at `SKF_NET_OFF + n` read the network header's byte `n`.
const SKF_NET_OFF: i32 = -0x10_0000;
/// An index out of the group's range: the kernel then picks by its own hash.
const FALLBACK: u32 = u32::MAX;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
  Insn { code, jt, jf, k }
}

fn net(offset: i32) -> u32 {
  (SKF_NET_OFF + offset) as u32
}

/// The program for a group whose live members are `(index in the group,
/// supervised slot)`. Several members of one slot (a reload's successor
/// next to its predecessor): the first listed takes the slot's clients.
pub fn sticky_program(members: &[(u32, u32)]) -> Vec<Insn> {
  if members.is_empty() {
    return vec![op(RET_K, 0, 0, FALLBACK)];
  }
  let slots: Vec<u32> = members.iter().map(|m| m.1).collect();
  let member_of = |slot: u32| members.iter().find(|m| m.1 == slot).map(|m| m.0);
  let table: Vec<u32> = sticky::table(&slots)
    .into_iter()
    .map(|s| s.and_then(member_of).unwrap_or(FALLBACK))
    .collect();
  let mut v6 = Vec::new();
  for (i, off) in [8, 12, 16, 20].into_iter().enumerate() {
    v6.push(op(LD_W_ABS, 0, 0, net(off)));
    v6.push(if i == 0 {
      op(ALU_XOR_K, 0, 0, SEED6)
    } else {
      op(ALU_XOR_X, 0, 0, 0)
    });
    v6.push(op(ALU_MUL_K, 0, 0, MIX));
    if i < 3 {
      v6.push(op(TAX, 0, 0, 0));
    }
  }
  let v4 = [
    op(LD_W_ABS, 0, 0, net(12)),
    op(ALU_XOR_K, 0, 0, SEED4),
    op(ALU_MUL_K, 0, 0, MIX),
  ];
  // v6 ends with a jump over v4 to the common finish.
  let mut p = vec![
    op(LD_B_ABS, 0, 0, net(0)),
    op(ALU_RSH_K, 0, 0, 4),
    op(JMP_JEQ_K, (2 + v6.len() + 1) as u8, 0, 4),
    op(JMP_JEQ_K, 1, 0, 6),
    op(RET_K, 0, 0, FALLBACK),
  ];
  p.extend(v6);
  p.push(op(JMP_JA, 0, 0, v4.len() as u32));
  p.extend(v4);
  p.extend([
    op(TAX, 0, 0, 0),
    op(ALU_RSH_K, 0, 0, 15),
    op(ALU_XOR_X, 0, 0, 0),
    op(ALU_MUL_K, 0, 0, FINAL),
    op(TAX, 0, 0, 0),
    op(ALU_RSH_K, 0, 0, 13),
    op(ALU_XOR_X, 0, 0, 0),
    op(ALU_RSH_K, 0, 0, 32 - BUCKET_BITS),
  ]);
  let ranges = sticky::runs(&table);
  p.extend(search(&ranges, 0, ranges.len()));
  p
}

/// Returns the value of the range holding A, for ranges `lo..hi`: "A >= the
/// first bucket of the upper half" jumps (through a `JA`, whose offset is 32
/// bits; `jt`/`jf` are only 8) to the upper half's search.
fn search(ranges: &[(u32, u32)], lo: usize, hi: usize) -> Vec<Insn> {
  if hi - lo == 1 {
    return vec![op(RET_K, 0, 0, ranges[lo].1)];
  }
  let mid = (lo + hi) / 2;
  let left = search(ranges, lo, mid);
  let right = search(ranges, mid, hi);
  let mut v = vec![
    op(JMP_JGE_K, 0, 1, ranges[mid - 1].0),
    op(JMP_JA, 0, 0, left.len() as u32),
  ];
  v.extend(left);
  v.extend(right);
  v
}

/// Runs a program built here on a packet whose network header is `net`
/// (test support: the kernel's answer, without a kernel). A load beyond the
/// header ends the program with 0, as in the kernel.
#[cfg(test)]
pub fn run(prog: &[Insn], net_header: &[u8]) -> u32 {
  let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
  let load = |k: u32, n: usize| -> Option<u32> {
    let off = (k as i32 - SKF_NET_OFF) as usize;
    let bytes = net_header.get(off..off + n)?;
    Some(bytes.iter().fold(0u32, |acc, b| acc << 8 | *b as u32))
  };
  loop {
    let i = prog[pc];
    pc += 1;
    match i.code {
      LD_W_ABS | LD_B_ABS => match load(i.k, if i.code == LD_W_ABS { 4 } else { 1 }) {
        Some(v) => a = v,
        None => return 0,
      },
      ALU_XOR_K => a ^= i.k,
      ALU_XOR_X => a ^= x,
      ALU_MUL_K => a = a.wrapping_mul(i.k),
      ALU_RSH_K => a >>= i.k,
      TAX => x = a,
      JMP_JA => pc += i.k as usize,
      JMP_JEQ_K => pc += if a == i.k { i.jt } else { i.jf } as usize,
      JMP_JGE_K => pc += if a >= i.k { i.jt } else { i.jf } as usize,
      RET_K => return i.k,
      c => panic!("opcode {c:#x} not built here"),
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::sockets::{self, Kind};
  use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
  use std::os::fd::AsRawFd;

  fn ipv4_header(src: Ipv4Addr) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    h.extend(src.octets());
    h.extend([127, 0, 0, 1]);
    h
  }

  fn ipv6_header(src: Ipv6Addr) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
    h.extend(src.octets());
    h.extend(Ipv6Addr::LOCALHOST.octets());
    h
  }

  /// What the program should answer: the member of the owner slot.
  fn expected(members: &[(u32, u32)], ip: IpAddr) -> u32 {
    let slot = sticky::owner(sticky::bucket_of(ip), members.iter().map(|m| m.1)).unwrap();
    members.iter().find(|m| m.1 == slot).unwrap().0
  }

  #[test]
  fn the_program_answers_the_owner_for_every_address() {
    for members in [
      vec![(0, 0), (1, 1)],
      vec![(2, 7), (0, 3), (1, 5)],
      (0..8).map(|i| (i, i * 3)).collect(),
    ] {
      let prog = sticky_program(&members);
      for i in 0..=255u8 {
        let v4 = Ipv4Addr::new(10, i, 7, i.wrapping_mul(37));
        assert_eq!(run(&prog, &ipv4_header(v4)), expected(&members, IpAddr::V4(v4)), "{v4}");
        let v6 = Ipv6Addr::new(0xfd00, i as u16, 0, 0, 0, 0, 0x1234, i as u16 * 3);
        assert_eq!(run(&prog, &ipv6_header(v6)), expected(&members, IpAddr::V6(v6)), "{v6}");
      }
    }
    let prog = sticky_program(&[(0, 0), (1, 1)]);
    assert_eq!(run(&prog, &[0x20, 0, 0]), FALLBACK, "neither IPv4 nor IPv6");
    assert_eq!(sticky_program(&[]), vec![op(RET_K, 0, 0, FALLBACK)]);
  }

  #[test]
  fn many_workers_fit_the_kernel_limit() {
    let members: Vec<(u32, u32)> = (0..256).map(|i| (i, i)).collect();
    let prog = sticky_program(&members);
    assert!(prog.len() < 4096, "{}", prog.len());
    let v4 = Ipv4Addr::new(192, 168, 3, 9);
    assert_eq!(run(&prog, &ipv4_header(v4)), expected(&members, IpAddr::V4(v4)));
  }

  /// Attaches the program to a real two-member group and connects from
  /// bound source addresses: the kernel agrees with `sticky::owner`.
  fn kernel_agrees(listen: IpAddr, sources: &[IpAddr], configs: &[[(u32, u32); 2]]) {
    let kind = if listen.is_ipv4() { Kind::Tcp4 } else { Kind::Tcp6 };
    let addr = listen.to_string();
    let Ok(a) = sockets::bind_tcp(kind, Some(&addr), 0, sockets::FLAG_IPV6ONLY, true) else {
      panic!("cannot bind {addr}");
    };
    sockets::listen(&a, 64).unwrap();
    let port = sockets::local_port(&a).unwrap();
    let b = sockets::bind_tcp(kind, Some(&addr), port, sockets::FLAG_IPV6ONLY, true).unwrap();
    sockets::listen(&b, 64).unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    for members in configs {
      let mut prog = sticky_program(members);
      sockets::attach_reuseport_cbpf(a.as_raw_fd(), &mut prog).unwrap();
      for src in sources {
        for _ in 0..3 {
          let c = socket2::Socket::new(
            socket2::Domain::for_address(SocketAddr::new(*src, 0)),
            socket2::Type::STREAM,
            None,
          )
          .unwrap();
          c.bind(&SocketAddr::new(*src, 0).into()).unwrap();
          c.connect(&SocketAddr::new(listen, port).into()).unwrap();
          std::thread::sleep(std::time::Duration::from_millis(2));
          let got = [&a, &b].iter().position(|s| s.accept().is_ok());
          assert_eq!(got, Some(expected(members, *src) as usize), "{src} with {members:?}");
        }
      }
    }
  }

  #[test]
  fn the_kernel_steers_ipv4_sources_by_the_program() {
    let sources: Vec<IpAddr> = (2..18).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))).collect();
    kernel_agrees(
      IpAddr::V4(Ipv4Addr::LOCALHOST),
      &sources,
      &[[(0, 0), (1, 1)], [(0, 1), (1, 0)]],
    );
  }

  /// Only `::1` is a loopback IPv6 source; varying the slots' numbers moves
  /// its bucket between members, and the kernel follows every time, which a
  /// program reading the wrong words would not (1 in 2^8).
  #[test]
  fn the_kernel_steers_ipv6_sources_by_the_program() {
    let configs: Vec<[(u32, u32); 2]> = (0..8).map(|k| [(0, 2 * k), (1, 2 * k + 1)]).collect();
    let answers: std::collections::HashSet<u32> = configs
      .iter()
      .map(|m| expected(m, IpAddr::V6(Ipv6Addr::LOCALHOST)))
      .collect();
    assert_eq!(answers.len(), 2, "the configs send ::1 to both members");
    kernel_agrees(
      IpAddr::V6(Ipv6Addr::LOCALHOST),
      &[IpAddr::V6(Ipv6Addr::LOCALHOST)],
      &configs,
    );
  }
}
