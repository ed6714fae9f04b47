//! What a client feels: the chance that a client connecting to a target by name succeeds within a
//! number of attempts. A per-address state answers the firewall team ("which address is
//! blocked?"); this answers the people whose transfers fail ("how often?"), and it is what turns
//! "2 of 6 addresses blocked" into "1 connection in 27 still fails after three attempts".
//!
//! The model: a client takes one of the addresses the name resolves to, each equally likely (a
//! rotating DNS answer spreads clients that way), and every attempt picks again, independently.
//! With `w` working addresses among `c` candidates, one attempt succeeds with `p = w / c` and at
//! least one of `n` attempts with `1 - (1 - p)^n`.

use std::sync::Arc;

use serde::Serialize;

use super::outcome::ProbeState;
use super::source::SourceKind;
use super::ssh::SshProblem;

/// The SSH problems after which a client's connection fails even though the port is open: it
/// cannot agree on algorithms, or it refuses a host key that is not the pinned one. `weak_only`
/// still connects, and `host_key_changed` fails only the clients that knew the old key. Either
/// problem is set when any one configured client fails, so with several clients an address works
/// only when it works for all of them.
pub const FAILING_PROBLEMS: [SshProblem; 2] = [SshProblem::NoCommonAlgorithm, SshProblem::HostKeyMismatch];

/// The chance that a client succeeds within `attempts` connections.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClientSuccess {
    pub attempts: u32,
    /// 0 to 1.
    pub ratio: f64,
}

/// What the odds need to know of one address of a target (the audit's `AddressReport` has it).
#[derive(Debug, Clone, Copy)]
pub struct Address<'a> {
    /// In the published set: not a bogus address, not a stale whitelist entry.
    pub published: bool,
    /// The sources that publish it (`dns`, `static`, a list's URL).
    pub published_by: &'a [Arc<str>],
    /// For a bogus address: the source that returned it.
    pub bogus_source: Option<SourceKind>,
    /// How its last probe ended; `None` before the first.
    pub state: Option<ProbeState>,
    /// Its SSH problems, if it is an open SSH address.
    pub ssh_problems: &'a [SshProblem],
}

impl Address<'_> {
    fn resolved_by_dns(&self) -> bool {
        let dns = SourceKind::Dns.as_label();
        self.published_by.iter().any(|s| &**s == dns)
    }
}

/// The addresses a client may pick and how many of them work, counting only those with a
/// network verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub working: usize,
    pub candidates: usize,
}

/// The pool a client connecting by name sees, from a target's addresses: what its DNS source
/// returns when it returns anything, else every published address. `None` when no candidate has
/// a verdict: an address never probed, or whose probe failed on this host (`error`), says nothing
/// about the path, and a chance made of nothing would be invented.
///
/// A bogus address (a sinkhole's `0.0.0.0`) is never probed, so it is left out although a client
/// resolving the name would try it: the odds are then too good, and `bogus_address` says so. A
/// name that resolves to bogus addresses only has no value, rather than the list's odds, which
/// no client resolving the name gets.
pub fn pool(addresses: &[Address<'_>]) -> Option<Pool> {
    let resolves = addresses
        .iter()
        .any(|a| a.resolved_by_dns() || a.bogus_source == Some(SourceKind::Dns));
    let mut pool = Pool {
        working: 0,
        candidates: 0,
    };
    for address in addresses
        .iter()
        .filter(|a| a.published && a.bogus_source.is_none() && (!resolves || a.resolved_by_dns()))
    {
        let Some(state) = address.state.filter(|s| s.is_verdict()) else {
            continue;
        };
        pool.candidates += 1;
        let fails_handshake = FAILING_PROBLEMS.iter().any(|p| address.ssh_problems.contains(p));
        if state == ProbeState::Open && !fails_handshake {
            pool.working += 1;
        }
    }
    (pool.candidates > 0).then_some(pool)
}

/// The chance of success within one attempt and within `attempts` (once when `attempts` is 1).
pub fn client_success(pool: Pool, attempts: u32) -> Vec<ClientSuccess> {
    // Counts of addresses are far below 2^52: exact as floats.
    #[allow(clippy::cast_precision_loss)]
    let p = pool.working as f64 / pool.candidates as f64;
    let within = |n: u32| ClientSuccess {
        attempts: n,
        ratio: 1.0 - (1.0 - p).powi(i32::try_from(n).unwrap_or(i32::MAX)),
    };
    let mut odds = vec![within(1)];
    if attempts > 1 {
        odds.push(within(attempts));
    }
    odds
}

/// [`pool`] then [`client_success`]: empty when there is no value.
pub fn of_target(addresses: &[Address<'_>], attempts: u32) -> Vec<ClientSuccess> {
    pool(addresses).map_or_else(Vec::new, |p| client_success(p, attempts))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "https://vendor.example/sftp-ips.txt";

    /// One address of the lab's `vendor-sftp`, owning what [`Address`] borrows.
    #[derive(Clone)]
    struct Lab {
        published: bool,
        sources: Vec<Arc<str>>,
        bogus_source: Option<SourceKind>,
        state: Option<ProbeState>,
        problems: Vec<SshProblem>,
    }

    fn lab(sources: &[&str], state: Option<ProbeState>) -> Lab {
        Lab {
            published: true,
            sources: sources.iter().map(|s| Arc::from(*s)).collect(),
            bogus_source: None,
            state,
            problems: Vec::new(),
        }
    }

    fn open_with(problems: &[SshProblem]) -> Lab {
        Lab {
            problems: problems.to_vec(),
            ..lab(&["dns"], Some(ProbeState::Open))
        }
    }

    fn view(labs: &[Lab]) -> Vec<Address<'_>> {
        labs.iter()
            .map(|l| Address {
                published: l.published,
                published_by: &l.sources,
                bogus_source: l.bogus_source,
                state: l.state,
                ssh_problems: &l.problems,
            })
            .collect()
    }

    fn pool_of(labs: &[Lab]) -> Option<Pool> {
        pool(&view(labs))
    }

    fn ratios(labs: &[Lab], attempts: u32) -> Vec<(u32, String)> {
        of_target(&view(labs), attempts)
            .into_iter()
            .map(|s| (s.attempts, format!("{:.3}", s.ratio)))
            .collect()
    }

    /// `open` open and `blocked` dropped addresses, all returned by DNS.
    fn resolved(open: usize, blocked: usize) -> Vec<Lab> {
        (0..open + blocked)
            .map(|i| {
                let state = if i < open {
                    ProbeState::Open
                } else {
                    ProbeState::Timeout
                };
                lab(&["dns"], Some(state))
            })
            .collect()
    }

    #[test]
    fn two_of_six_blocked_is_the_issues_example() {
        let six = resolved(4, 2);
        assert_eq!(
            pool_of(&six),
            Some(Pool {
                working: 4,
                candidates: 6
            })
        );
        assert_eq!(
            ratios(&six, 3),
            vec![(1, "0.667".to_string()), (3, "0.963".to_string())]
        );
        let exact = of_target(&view(&six), 3);
        assert!((exact[1].ratio - (1.0 - (1.0_f64 / 3.0).powi(3))).abs() < 1e-15);
    }

    #[test]
    fn one_attempt_gives_one_value_and_the_extremes_are_exact() {
        assert_eq!(ratios(&resolved(4, 2), 1), vec![(1, "0.667".to_string())]);
        let ratio = |labs: &[Lab]| -> Vec<f64> { of_target(&view(labs), 10).iter().map(|s| s.ratio).collect() };
        assert_eq!(ratio(&resolved(3, 0)), vec![1.0, 1.0]);
        assert_eq!(ratio(&resolved(0, 3)), vec![0.0, 0.0]);
    }

    #[test]
    fn a_name_that_resolves_counts_only_what_dns_returns() {
        // The list also publishes a blocked address no resolver returns: clients never try it.
        let mut labs = resolved(2, 1);
        labs.push(lab(&[LIST], Some(ProbeState::Timeout)));
        labs.push(lab(&["static"], Some(ProbeState::Refused)));
        labs.push(lab(&[LIST, "dns"], Some(ProbeState::Open)));
        assert_eq!(
            pool_of(&labs),
            Some(Pool {
                working: 3,
                candidates: 4
            })
        );
    }

    #[test]
    fn without_dns_every_published_address_is_a_candidate() {
        let labs = [
            lab(&[LIST], Some(ProbeState::Open)),
            lab(&[LIST, "static"], Some(ProbeState::Unreachable)),
            lab(&["static"], Some(ProbeState::Open)),
        ];
        assert_eq!(
            pool_of(&labs),
            Some(Pool {
                working: 2,
                candidates: 3
            })
        );
        assert_eq!(
            ratios(&labs, 3),
            vec![(1, "0.667".to_string()), (3, "0.963".to_string())]
        );
    }

    #[test]
    fn error_unprobed_and_unpublished_addresses_are_neither_working_nor_failing() {
        let mut labs = resolved(1, 1);
        labs.push(lab(&["dns"], Some(ProbeState::Error)));
        labs.push(lab(&["dns"], None));
        // A stale whitelist entry: probed, published by nobody.
        labs.push(Lab {
            published: false,
            ..lab(&[], Some(ProbeState::Timeout))
        });
        assert_eq!(
            pool_of(&labs),
            Some(Pool {
                working: 1,
                candidates: 2
            })
        );
    }

    #[test]
    fn no_verdict_is_no_value() {
        let labs = [lab(&["dns"], Some(ProbeState::Error)), lab(&["dns"], None)];
        assert_eq!(pool_of(&labs), None);
        assert!(of_target(&view(&labs), 3).is_empty());
        assert!(of_target(&[], 3).is_empty());
    }

    #[test]
    fn an_open_port_a_client_cannot_use_is_failing() {
        let labs = [
            open_with(&[SshProblem::NoCommonAlgorithm]),
            open_with(&[SshProblem::HostKeyMismatch]),
            open_with(&[SshProblem::WeakOnly, SshProblem::HostKeyChanged]),
            lab(&["dns"], Some(ProbeState::ProtocolError)),
        ];
        assert_eq!(
            pool_of(&labs),
            Some(Pool {
                working: 1,
                candidates: 4
            })
        );
    }

    #[test]
    fn a_sinkholed_name_is_not_replaced_by_the_list() {
        let sinkhole = Lab {
            published: false,
            bogus_source: Some(SourceKind::Dns),
            ..lab(&[], None)
        };
        let list = lab(&[LIST], Some(ProbeState::Open));
        assert_eq!(pool_of(&[sinkhole.clone(), list.clone()]), None);
        // Beside real answers the sinkhole is left out: never probed.
        let answered = lab(&["dns"], Some(ProbeState::Open));
        assert_eq!(
            pool_of(&[sinkhole, list, answered]),
            Some(Pool {
                working: 1,
                candidates: 1
            })
        );
        // A bogus address from a list does not make the name resolve.
        let listed_bogus = Lab {
            published: false,
            bogus_source: Some(SourceKind::Published),
            ..lab(&[], None)
        };
        assert_eq!(
            pool_of(&[listed_bogus, lab(&[LIST], Some(ProbeState::Open))]),
            Some(Pool {
                working: 1,
                candidates: 1
            })
        );
    }
}
