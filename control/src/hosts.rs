//! The order in which an AP tries the edges of its cluster
//! (`mxcluster.tunterm_hosts` per `tunterm_hosts_selection`).
//!
//! One function, used by both sides: the AP simulator walks the list in
//! this order, and the daemon computes the same list to know an AP's
//! preferred edge (its first) when it preempts.
//!
//! - `ordered`: `tunterm_hosts_order` (indices into `tunterm_hosts`), then
//!   any host it leaves out, in their written order.
//! - `shuffle`: a permutation seeded by the AP's MAC, so each AP has its own
//!   fixed order and the APs of a site spread over the edges.
//! - `shuffle-by-site`: a permutation seeded by site id + tunnel id, so every
//!   AP of a site on one tunnel has the same order (and tunnels spread).
//!
//! The permutation is Fisher–Yates driven by SplitMix64 from an FNV-1a hash
//! of the seed string: stable across runs, builds and platforms.

use crate::HostsSelection;
use crate::mac::MacAddr;

/// What the order depends on, besides the cluster's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostsKey<'a> {
    /// The AP's MAC (`shuffle`).
    pub ap_mac: MacAddr,
    /// The AP's site id (`shuffle-by-site`).
    pub site_id: &'a str,
    /// The mxtunnel id (`shuffle-by-site`).
    pub tunnel_id: &'a str,
}

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Indices into a `tunterm_hosts` of `n` entries, in the order the AP
/// tries them. Out-of-range or repeated indices in `order` are skipped.
pub fn host_order(n: usize, selection: HostsSelection, order: &[u32], key: HostsKey) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::with_capacity(n);
    match selection {
        HostsSelection::Ordered => {
            for &i in order {
                let i = i as usize;
                if i < n && !out.contains(&i) {
                    out.push(i);
                }
            }
            out.extend((0..n).filter(|i| !order.contains(&(*i as u32))));
        }
        HostsSelection::Shuffle | HostsSelection::ShuffleBySite => {
            let mut state = match selection {
                HostsSelection::Shuffle => fnv1a(key.ap_mac.octets()),
                _ => fnv1a(
                    key.site_id
                        .bytes()
                        .chain([b'+'])
                        .chain(key.tunnel_id.bytes()),
                ),
            };
            out.extend(0..n);
            for i in (1..n).rev() {
                let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
                out.swap(i, j);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mac: u8) -> HostsKey<'static> {
        HostsKey {
            ap_mac: MacAddr([0x5c, 0x5b, 0x35, 0, 0, mac]),
            site_id: "site-1",
            tunnel_id: "t-1",
        }
    }

    #[test]
    fn ordered_follows_the_order_then_the_rest() {
        let o = host_order(4, HostsSelection::Ordered, &[2, 0, 9, 2], key(1));
        assert_eq!(o, vec![2, 0, 1, 3]);
        assert_eq!(
            host_order(2, HostsSelection::Ordered, &[], key(1)),
            vec![0, 1]
        );
    }

    #[test]
    fn shuffle_is_a_stable_permutation_per_mac_that_spreads_aps() {
        let a = host_order(3, HostsSelection::Shuffle, &[], key(1));
        assert_eq!(a, host_order(3, HostsSelection::Shuffle, &[], key(1)));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
        // 200 APs over 2 edges: each edge is first for a fair share.
        let first0 = (0..200u8)
            .filter(|&m| host_order(2, HostsSelection::Shuffle, &[], key(m))[0] == 0)
            .count();
        assert!((60..=140).contains(&first0), "{first0} of 200");
    }

    #[test]
    fn shuffle_by_site_ignores_the_mac_but_not_the_site() {
        let by_site = |m: u8, site: &'static str| {
            host_order(
                5,
                HostsSelection::ShuffleBySite,
                &[],
                HostsKey {
                    site_id: site,
                    ..key(m)
                },
            )
        };
        assert!((0..50).all(|m| by_site(m, "s1") == by_site(0, "s1")));
        let sites = ["s1", "s2", "s3", "s4", "s5", "s6"];
        assert!(sites.iter().any(|s| by_site(0, s) != by_site(0, "s1")));
    }
}
