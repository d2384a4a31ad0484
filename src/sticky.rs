//! `sticky: 'ip'`: which supervised slot serves a client address.
//!
//! A client address hashes to one of `BUCKETS` buckets (`bucket_of`); a
//! bucket belongs to the slot with the highest rendezvous (HRW) score among
//! the slots that have a live worker (`owner`). The kernel's steering program
//! (`steering::sticky_program`) and the `SCHED_RR` dispatcher both use this,
//! so both policies send an address to the same slot.
//!
//! Why HRW over the live slots is all the state needed: the winner among all
//! configured slots, when it is live, also wins among the live ones; when it
//! is not, the bucket falls to the best live slot, and back once it returns.
//! So a slot leaving moves only its own buckets (spread over the others), a
//! slot returning takes back exactly those, and adding a slot takes about
//! 1/n of every other slot's buckets.
//!
//! The address hash uses only what classic BPF can compute (32-bit xor,
//! multiply and shifts): the steering program runs the same arithmetic.

use std::net::IpAddr;

/// log2 of the bucket count: enough buckets that slots get even shares, few
/// enough that the steering program's search over them stays small.
pub const BUCKET_BITS: u32 = 9;
pub const BUCKETS: u32 = 1 << BUCKET_BITS;

/// Multipliers of the address hash (odd, well-mixing 32-bit constants).
pub const MIX: u32 = 0x9E37_79B1;
pub const FINAL: u32 = 0x85EB_CA6B;
/// Seeds, different per family so `1.2.3.4` and `::1.2.3.4` differ.
pub const SEED4: u32 = 0x0000_0004;
pub const SEED6: u32 = 0x0000_0006;

/// One address word folded into the hash.
pub fn mix(h: u32, word: u32) -> u32 {
  (h ^ word).wrapping_mul(MIX)
}

/// The hash's last step, to a bucket: the top bits after a final mix.
pub fn finish(h: u32) -> u32 {
  let h = h ^ (h >> 15);
  let h = h.wrapping_mul(FINAL);
  let h = h ^ (h >> 13);
  h >> (32 - BUCKET_BITS)
}

/// An IPv4 source address (as the big-endian word the packet carries).
pub fn bucket_v4(saddr: u32) -> u32 {
  finish(mix(SEED4, saddr))
}

/// An IPv6 source address, as four big-endian words.
pub fn bucket_v6(words: [u32; 4]) -> u32 {
  finish(words.iter().fold(SEED6, |h, w| mix(h, *w)))
}

/// A client address's bucket. IPv4-mapped IPv6 (an IPv4 client of a
/// dual-stack listener, as `accept` reports it) counts as IPv4: the kernel
/// sees that client's packets as IPv4.
pub fn bucket_of(ip: IpAddr) -> u32 {
  match ip {
    IpAddr::V4(v4) => bucket_v4(u32::from(v4)),
    IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
      Some(v4) => bucket_v4(u32::from(v4)),
      None => {
        let o = v6.octets();
        let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
        bucket_v6([w(0), w(4), w(8), w(12)])
      }
    },
  }
}

/// The rendezvous score of `slot` for `bucket` (splitmix64 of the pair).
fn score(bucket: u32, slot: u32) -> u64 {
  let mut z = ((slot as u64) << 32 | bucket as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
  z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
  z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
  z ^ (z >> 31)
}

/// The slot serving `bucket` among `live` slots (`None` if there are none).
pub fn owner(bucket: u32, live: impl IntoIterator<Item = u32>) -> Option<u32> {
  live.into_iter().max_by_key(|s| (score(bucket, *s), *s))
}

/// The owner of every bucket, in bucket order.
pub fn table(live: &[u32]) -> Vec<Option<u32>> {
  (0..BUCKETS).map(|b| owner(b, live.iter().copied())).collect()
}

/// Consecutive buckets with the same value, as `(end, value)` with `end`
/// exclusive and increasing; the last ends at `BUCKETS`.
pub fn runs<T: Copy + PartialEq>(table: &[T]) -> Vec<(u32, T)> {
  let mut out: Vec<(u32, T)> = Vec::new();
  for (b, v) in table.iter().enumerate() {
    match out.last_mut() {
      Some((end, last)) if *last == *v => *end = b as u32 + 1,
      _ => out.push((b as u32 + 1, *v)),
    }
  }
  out
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::net::{Ipv4Addr, Ipv6Addr};

  fn moved(a: &[Option<u32>], b: &[Option<u32>]) -> Vec<usize> {
    (0..a.len()).filter(|i| a[*i] != b[*i]).collect()
  }

  #[test]
  fn a_slot_leaving_moves_only_its_buckets_and_they_come_back() {
    let all = table(&[0, 1, 2, 3]);
    let without2 = table(&[0, 1, 3]);
    for b in moved(&all, &without2) {
      assert_eq!(all[b], Some(2), "bucket {b} moved but was not slot 2's");
    }
    // Slot 2's buckets are spread over the others, not dumped on one.
    let heirs: std::collections::HashSet<_> = (0..all.len())
      .filter(|b| all[*b] == Some(2))
      .map(|b| without2[b])
      .collect();
    assert_eq!(heirs.len(), 3, "{heirs:?}");
    // Returning, it takes back exactly what it had.
    assert_eq!(table(&[3, 1, 0, 2]), all, "order of the live set does not matter");
  }

  #[test]
  fn scaling_moves_about_one_share() {
    for n in 1..16u32 {
      let before: Vec<u32> = (0..n).collect();
      let after: Vec<u32> = (0..=n).collect();
      let (a, b) = (table(&before), table(&after));
      let m = moved(&a, &b);
      // Only buckets the new slot takes move, about BUCKETS / (n + 1).
      assert!(m.iter().all(|i| b[*i] == Some(n)));
      let share = BUCKETS as f64 / (n + 1) as f64;
      assert!(
        (m.len() as f64) < share * 1.5 + 8.0,
        "n={n}: {} moved, share {share}",
        m.len()
      );
      assert!(
        (m.len() as f64) > share * 0.5 - 8.0,
        "n={n}: {} moved, share {share}",
        m.len()
      );
    }
  }

  #[test]
  fn buckets_and_addresses_spread_over_slots() {
    for n in [2u32, 3, 4, 8] {
      let live: Vec<u32> = (0..n).collect();
      let t = table(&live);
      for s in &live {
        let c = t.iter().filter(|o| **o == Some(*s)).count() as f64;
        let share = BUCKETS as f64 / n as f64;
        assert!(
          c > share * 0.7 && c < share * 1.3,
          "n={n} slot {s}: {c} of share {share}"
        );
      }
    }
    // 16 loopback client addresses (the tests' and the bench's) over 2 slots.
    let per: Vec<u32> = (2..18u8)
      .map(|i| owner(bucket_of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))), [0, 1]).unwrap())
      .collect();
    let ones = per.iter().filter(|s| **s == 1).count();
    assert!((4..=12).contains(&ones), "{per:?}");
    // Neighbouring addresses land in many buckets.
    let buckets: std::collections::HashSet<_> = (0..=255u8)
      .map(|i| bucket_of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))))
      .collect();
    assert!(buckets.len() > 150, "{}", buckets.len());
  }

  #[test]
  fn mapped_ipv4_is_ipv4_and_families_differ() {
    let v4 = Ipv4Addr::new(127, 0, 0, 5);
    assert_eq!(bucket_of(IpAddr::V6(v4.to_ipv6_mapped())), bucket_of(IpAddr::V4(v4)));
    assert_eq!(bucket_of(IpAddr::V6(Ipv6Addr::LOCALHOST)), bucket_v6([0, 0, 0, 1]));
    assert!(bucket_of(IpAddr::V4(v4)) < BUCKETS);
    assert_eq!(owner(3, []), None);
  }

  #[test]
  fn runs_cover_the_table() {
    let t = table(&[4, 9]);
    let r = runs(&t);
    assert_eq!(r.last().unwrap().0, BUCKETS);
    let mut start = 0;
    for (end, v) in &r {
      assert!(*end > start);
      assert!((start..*end).all(|b| t[b as usize] == *v));
      start = *end;
    }
    assert_eq!(runs(&[1, 1, 2, 1]), vec![(2, 1), (3, 2), (4, 1)]);
  }
}
