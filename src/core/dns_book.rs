//! The DNS retention book. Large pools answer each query with a subset, so an address stays in
//! the set for `dns_retention` after the last answer that contained it; retention pauses while
//! DNS fails, so an outage of the resolver never empties the set. A and AAAA keep books of their
//! own: a resolver that refuses AAAA (dnsmasq without upstreams, split horizons) must not discard
//! the A answers that came.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The addresses DNS has shown for a target, and when each was last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsBook {
    last_seen: BTreeMap<IpAddr, Instant>,
    /// Set while refreshes fail: retention does not run down while DNS cannot be asked.
    failing_since: Option<Instant>,
}

impl DnsBook {
    /// Records a successful refresh at `now`: `answers` are fresh, and addresses not seen within
    /// `retention` (not counting time spent failing) leave the set.
    pub fn record_success(&mut self, now: Instant, answers: &BTreeSet<IpAddr>, retention: Duration) {
        if let Some(since) = self.failing_since.take() {
            let paused = now.saturating_duration_since(since);
            for seen in self.last_seen.values_mut() {
                *seen += paused;
            }
        }
        for &ip in answers {
            self.last_seen.insert(ip, now);
        }
        self.last_seen
            .retain(|_, seen| now.saturating_duration_since(*seen) <= retention);
    }

    /// Records a failed refresh at `now`: the set stays exactly as it was.
    pub fn record_failure(&mut self, now: Instant) {
        self.failing_since.get_or_insert(now);
    }

    /// The addresses currently in the set.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.last_seen.keys().copied().collect()
    }
}

/// An address family, as DNS asks for it: A or AAAA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// Both families, A first.
    pub const ALL: [Self; 2] = [Self::Ipv4, Self::Ipv6];

    /// The `family` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }

    /// The record type asked for.
    pub fn record_type(self) -> &'static str {
        match self {
            Self::Ipv4 => "A",
            Self::Ipv6 => "AAAA",
        }
    }
}

/// One book per family, and whether each family's last refresh succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyBooks {
    books: [DnsBook; 2],
    up: [Option<bool>; 2],
}

impl FamilyBooks {
    /// Records one family's refresh: its answers, or that it failed (its set then stays as it was).
    pub fn record(&mut self, family: Family, now: Instant, answers: Option<&BTreeSet<IpAddr>>, retention: Duration) {
        let index = family as usize;
        match answers {
            Some(answers) => self.books[index].record_success(now, answers, retention),
            None => self.books[index].record_failure(now),
        }
        self.up[index] = Some(answers.is_some());
    }

    /// Drops a family no longer asked for: its addresses leave the set at once.
    pub fn forget(&mut self, family: Family) {
        self.books[family as usize] = DnsBook::default();
        self.up[family as usize] = None;
    }

    /// Every address either family holds.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.books.iter().flat_map(DnsBook::addresses).collect()
    }

    /// Whether `family`'s last refresh succeeded; `None` before the first, or when it is not asked.
    pub fn up(&self, family: Family) -> Option<bool> {
        self.up[family as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
        ips.iter().map(|s| s.parse().unwrap()).collect()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn answers_accumulate_and_age_out() {
        let t0 = Instant::now();
        let mut book = DnsBook::default();
        book.record_success(t0, &set(&["192.0.2.1", "192.0.2.2"]), HOUR);
        book.record_success(t0 + Duration::from_secs(60), &set(&["192.0.2.3"]), HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]));
        book.record_success(t0 + HOUR + Duration::from_secs(1), &set(&["192.0.2.3"]), HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.3"]));
    }

    #[test]
    fn empty_answer_is_a_success_and_ages_out() {
        let t0 = Instant::now();
        let mut book = DnsBook::default();
        book.record_success(t0, &set(&["192.0.2.1"]), Duration::ZERO);
        book.record_success(t0 + Duration::from_secs(1), &BTreeSet::new(), Duration::ZERO);
        assert!(book.addresses().is_empty());
    }

    #[test]
    fn failures_freeze_the_set_and_pause_retention() {
        let t0 = Instant::now();
        let mut book = DnsBook::default();
        book.record_success(t0, &set(&["192.0.2.1", "2001:db8::1"]), HOUR);
        book.record_failure(t0 + Duration::from_secs(600));
        book.record_failure(t0 + 2 * HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.1", "2001:db8::1"]));
        // Healthy again after a 3h outage: the 10 minutes seen before it count, the outage does not.
        let back = t0 + 3 * HOUR;
        book.record_success(back, &set(&["192.0.2.1"]), HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.1", "2001:db8::1"]));
        book.record_success(back + Duration::from_secs(3001), &set(&["192.0.2.1"]), HOUR);
        assert_eq!(book.addresses(), set(&["192.0.2.1"]));
    }

    #[test]
    fn a_failing_family_keeps_its_set_and_the_other_family_moves_on() {
        let t0 = Instant::now();
        let mut books = FamilyBooks::default();
        books.record(Family::Ipv4, t0, Some(&set(&["192.0.2.1"])), HOUR);
        books.record(Family::Ipv6, t0, Some(&set(&["2001:db8::1"])), HOUR);
        let later = t0 + 2 * HOUR;
        books.record(Family::Ipv4, later, Some(&set(&["192.0.2.2"])), HOUR);
        books.record(Family::Ipv6, later, None, HOUR);
        assert_eq!(books.addresses(), set(&["192.0.2.2", "2001:db8::1"]));
        assert_eq!(
            (books.up(Family::Ipv4), books.up(Family::Ipv6)),
            (Some(true), Some(false))
        );
    }
}
