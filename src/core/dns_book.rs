//! The DNS retention book. Large pools answer each query with a subset, so an address stays in
//! the set for `dns_retention` after the last answer that contained it; retention pauses while
//! DNS fails, so an outage of the resolver never empties the set.

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
}
