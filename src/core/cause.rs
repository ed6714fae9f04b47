//! Who changed what: each change of an address is attributed to the side that changed (the
//! vendor's published set or service, or our path or whitelist) by what else changed around it.
//! Pure: the history hands over its changes, the views render the attributions.
//!
//! The rule of the house is to never guess: a change is given to one side only when that side's
//! evidence is in the change itself (a published or whitelist aspect moved, the host key changed)
//! or when the other side provably stood still around it; otherwise the cause is `unknown`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::event::published_by;
use super::event::{Aspect, Change, EventQuery, NOT_PUBLISHED, PORT_CHANGED, PUBLISHED, TARGET_REMOVED};
pub use super::event::{Attribution, Cause};
use super::source::SourceKind;
use crate::config::Config;

/// How late each side's changes of one target reach the audit, so changes that happened
/// together but were seen apart still count as together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Two changes seen within this of each other may have happened at the same moment: an
    /// address is probed once per interval, a list fetched once per refresh.
    pub window: Duration,
    /// How much earlier a removal really happened than it was seen: DNS answers are kept for
    /// `dns_retention` after the last answer that had the address.
    pub removal: Duration,
}

impl Default for Lag {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(120),
            removal: Duration::ZERO,
        }
    }
}

/// Every configured target's [`Lag`].
pub fn lags(config: &Config) -> HashMap<String, Lag> {
    config
        .targets
        .iter()
        .map(|target| {
            let refresh = target.published.iter().map(|p| p.refresh).max().unwrap_or_default();
            let lag = Lag {
                window: config.global.interval * 2 + refresh,
                removal: if target.host.is_some() {
                    target.dns_retention
                } else {
                    Duration::ZERO
                },
            };
            (target.name.clone(), lag)
        })
        .collect()
}

/// What a change shows by itself, before anything around it is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Own {
    /// Seen for the first time while the audit of its target was starting.
    Baseline,
    /// Our configuration changed what is audited (a target or a static address removed or
    /// added, another port): no side of the service changed.
    Config(String),
    /// A published aspect moved: the vendor's set changed (cause, why).
    Vendor(Cause, String),
    Service(String),
    Whitelist(String),
    /// The probe's state moved between open and a failure.
    Path(PathMove),
    /// Evidence of both sides in one change.
    Both(String),
    /// Nothing seen decides (the why says what was seen).
    Undecided(String),
}

/// What a move of reachability needs for `local_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PathMove {
    /// Published, and whitelisted (or no whitelist declared): the vendor says it should answer
    /// and we say it may.
    expected_open: bool,
    /// A source of the target was failing: the published set was not known.
    sources_failing: bool,
    /// A reset, which our firewall or the server itself may have sent.
    reset: bool,
}

fn published(value: &str) -> Option<bool> {
    match value {
        PUBLISHED => Some(true),
        NOT_PUBLISHED => Some(false),
        _ => None,
    }
}

/// Whether the address was (`before`) or is published, from the published aspect, or for a
/// history written before that aspect existed, from the finding (`stale` = not published).
fn was_published(change: &Change, before: bool) -> Option<bool> {
    let value = |aspect| {
        if before {
            change.before(aspect)
        } else {
            change.after(aspect)
        }
    };
    match value(Aspect::Published) {
        Some(v) => published(v),
        None => value(Aspect::Finding).map(|f| f != "stale"),
    }
}

/// Whether `static:` in our configuration is the only source that publishes (or published) it.
fn static_only(change: &Change) -> bool {
    change
        .event(Aspect::Published)
        .is_some_and(|e| e.detail == published_by([SourceKind::Static.as_label()]))
}

const FAILURES: [&str; 3] = ["refused", "timeout", "unreachable"];

/// Whether this change moved the published set of its target: `Some(true)` a removal,
/// `Some(false)` an addition.
fn published_change(change: &Change) -> Option<bool> {
    match own(change) {
        Own::Vendor(cause, _) => Some(cause == Cause::VendorRemoved),
        Own::Both(_) => {
            let (before, after) = (was_published(change, true), was_published(change, false));
            (before != after && !change.appeared).then_some(after != Some(true))
        }
        _ => None,
    }
}

fn own(change: &Change) -> Own {
    if change.left() {
        if let Some(event) = change
            .events
            .iter()
            .find(|e| e.detail == TARGET_REMOVED || e.detail == PORT_CHANGED)
        {
            return Own::Config(event.detail.clone());
        }
        if static_only(change) {
            return Own::Config("a static address removed from the configuration".into());
        }
        // A published address leaves only when no source publishes it any more (what the
        // whitelist says of it then is beside the point); one not published, only when the
        // whitelist stopped declaring it.
        return match was_published(change, true) {
            Some(false) => Own::Whitelist("its whitelist entry was removed (no source published it)".into()),
            Some(true) => Own::Vendor(Cause::VendorRemoved, "no source publishes it any more".into()),
            None => Own::Undecided("it left the audit, and what it was before is not recorded".into()),
        };
    }
    if change.appeared {
        // A history written before the published aspect existed has no way to tell: its first
        // sightings are taken as the start of the audit.
        if change.events.iter().any(|e| e.first_sweep) || change.event(Aspect::Published).is_none() {
            return Own::Baseline;
        }
        if static_only(change) {
            return Own::Config("a static address added to the configuration".into());
        }
        let by = change
            .event(Aspect::Published)
            .map(|e| e.detail.as_str())
            .unwrap_or_default();
        return match was_published(change, false) {
            Some(true) => Own::Vendor(Cause::VendorAdded, format!("newly published ({by})")),
            Some(false) => Own::Whitelist("a new whitelist entry declares it (no source publishes it)".into()),
            None => Own::Undecided("it entered the audit, and how is not recorded".into()),
        };
    }
    moved(change)
}

/// What a change of an address already audited shows.
fn moved(change: &Change) -> Own {
    let finding = change.moved(Aspect::Finding);
    let vendor = change.moved(Aspect::Published).is_some()
        || (change.before(Aspect::Published).is_none()
            && finding.is_some_and(|(from, to)| (from == "stale") != (to == "stale")));
    let coverage = change.moved(Aspect::Whitelist).is_some()
        || (change.before(Aspect::Whitelist).is_none()
            && finding.is_some_and(|pair| {
                matches!(
                    pair,
                    ("none", "undeclared") | ("undeclared", "none") | ("blocked", "missing") | ("missing", "blocked")
                )
            }));
    let state = change.moved(Aspect::State);
    let service_moved = change.moved(Aspect::Service);
    let not_ssh = state.filter(|(from, to)| *from == "protocol_error" || *to == "protocol_error");
    // Between open and not-SSH only the server's answer moved; between not-SSH and a failure,
    // reachability moved too, and either side may have done it.
    let answer_moved = not_ssh.is_some_and(|(from, to)| from == "open" || to == "open");
    let path = state
        .filter(|(from, to)| (*from == "open" && FAILURES.contains(to)) || (FAILURES.contains(from) && *to == "open"));
    let service = service_moved.is_some() || answer_moved;
    if (vendor || service) && (coverage || path.is_some()) {
        return Own::Both(format!(
            "{} and {} changed in the same observation",
            if vendor { "the published set" } else { "the server" },
            if coverage { "the whitelist" } else { "the reachability" }
        ));
    }
    if coverage {
        let (from, to) = change.moved(Aspect::Whitelist).unwrap_or(("?", "?"));
        return Own::Whitelist(format!("the declared whitelist changed: {from} -> {to}"));
    }
    if vendor {
        return match was_published(change, false) {
            Some(false) => Own::Vendor(Cause::VendorRemoved, "no source publishes it any more".into()),
            _ => Own::Vendor(Cause::VendorAdded, "published again".into()),
        };
    }
    let still = if was_published(change, false) == Some(true) {
        "; still published, our side unchanged"
    } else {
        "; our side unchanged"
    };
    if let Some((from, to)) = service_moved {
        return Own::Service(format!("the server presents something else: {from} -> {to}{still}"));
    }
    if let Some((from, to)) = not_ssh {
        return if answer_moved {
            Own::Service(format!("the server's answer changed: {from} -> {to} (not SSH){still}"))
        } else {
            Own::Undecided(format!(
                "{from} -> {to}: reachability and the answer both moved, the path or the server"
            ))
        };
    }
    if let Some((from, to)) = path {
        // A move between open and a failure always moves the finding, and `none` or `blocked`
        // is exactly published and covered (or no whitelist declared); a stale address's
        // finding stays `stale`, so it has no finding event at all.
        return Own::Path(PathMove {
            expected_open: matches!(change.after(Aspect::Finding), Some("none" | "blocked")),
            sources_failing: change.events.iter().any(|e| e.sources_failing),
            reset: from == "refused" || to == "refused",
        });
    }
    match state {
        Some((from, to)) => Own::Undecided(format!("it fails another way now ({from} -> {to}): either side")),
        None => Own::Undecided("nothing this audit sees explains it".into()),
    }
}

/// One target's side of the story: when the audit began watching it, and when its published
/// set changed.
#[derive(Debug, Clone, Default)]
struct Sides {
    watching_since: Option<SystemTime>,
    /// Times the published set changed (and whether by a removal), oldest first, the most
    /// recent [`VENDOR_TIMES_KEPT`].
    vendor: VecDeque<(SystemTime, bool)>,
    lag: Lag,
}

/// Changes of one target's published set remembered: far more than any window holds.
const VENDOR_TIMES_KEPT: usize = 10_000;

/// What happened on each side of each target, to attribute changes against. Kept by the history
/// as changes arrive (not rebuilt from the recent ones), so an attribution never changes because
/// older changes were forgotten.
#[derive(Debug, Clone, Default)]
pub struct Context {
    targets: HashMap<String, Sides>,
    /// Counts the changes of the context that can change an attribution.
    generation: u64,
}

impl Context {
    /// The context `changes` (oldest first) make, seen with `lags`.
    pub fn new<'a>(changes: impl IntoIterator<Item = &'a Change>, lags: &HashMap<String, Lag>) -> Self {
        let mut context = Self::default();
        context.set_lags(lags);
        for change in changes {
            context.note(change);
        }
        context
    }

    /// Sets how late each target's changes are seen.
    pub fn set_lags(&mut self, lags: &HashMap<String, Lag>) {
        for (target, lag) in lags {
            let sides = self.targets.entry(target.clone()).or_default();
            if sides.lag != *lag {
                sides.lag = *lag;
                self.generation += 1;
            }
        }
    }

    /// Changes whenever an attribution against this context may have changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The lag of `target`.
    pub fn lag(&self, target: &str) -> Lag {
        self.targets.get(target).map(|s| s.lag).unwrap_or_default()
    }

    /// Takes `change` into account.
    pub fn note(&mut self, change: &Change) {
        let sides = self.targets.entry(change.target.clone()).or_default();
        if sides.watching_since.is_none_or(|t| change.at < t) {
            sides.watching_since = Some(change.at);
            self.generation += 1;
        }
        if let Some(removal) = published_change(change) {
            let entry = (change.at, removal);
            // Changes arrive oldest first; a history replayed from two files may repeat older ones.
            let at = sides.vendor.partition_point(|&known| known <= entry);
            if at == 0 || sides.vendor[at - 1] != entry {
                sides.vendor.insert(at, entry);
                self.generation += 1;
            }
            if sides.vendor.len() > VENDOR_TIMES_KEPT {
                sides.vendor.pop_front();
            }
        }
    }

    /// The cause of `change`, with its evidence.
    pub fn attribute(&self, change: &Change) -> Attribution {
        let unknown_target = Sides::default();
        let sides = self.targets.get(change.target.as_str()).unwrap_or(&unknown_target);
        let attribution = |cause, why: String| Attribution { cause, why };
        match own(change) {
            Own::Baseline => attribution(
                Cause::FirstSeen,
                format!(
                    "first seen when the audit of {} began{}",
                    change.target,
                    sides
                        .watching_since
                        .map(|t| format!(" ({})", clock(t)))
                        .unwrap_or_default()
                ),
            ),
            Own::Config(why) => attribution(Cause::Unknown, format!("our configuration changed: {why}")),
            Own::Vendor(cause, why) => attribution(cause, why),
            Own::Service(why) => attribution(Cause::VendorService, why),
            Own::Whitelist(why) => attribution(Cause::LocalWhitelist, why),
            Own::Both(why) => attribution(Cause::Unknown, format!("{why}: both sides moved")),
            Own::Undecided(why) => attribution(Cause::Unknown, why),
            Own::Path(path) => path_attribution(change, sides, path),
        }
    }
}

fn path_attribution(change: &Change, sides: &Sides, path: PathMove) -> Attribution {
    let unknown = |why: String| Attribution {
        cause: Cause::Unknown,
        why,
    };
    if !path.expected_open {
        return unknown(
            "not both published and whitelisted: nothing says it should answer from here, either side may have moved"
                .into(),
        );
    }
    if path.sources_failing {
        return unknown(format!(
            "a source of {} was failing: what the vendor publishes now is not known",
            change.target
        ));
    }
    let lag = sides.lag;
    // A removal seen later may have happened up to `removal` earlier, at this change.
    let earliest = change.at.checked_sub(lag.window).unwrap_or(SystemTime::UNIX_EPOCH);
    let latest = change.at + lag.window + lag.removal;
    let from = sides.vendor.partition_point(|&(t, _)| t < earliest);
    let near = sides
        .vendor
        .range(from..)
        .take_while(|&&(t, _)| t <= latest)
        .find(|&&(t, removal)| removal || t <= change.at + lag.window)
        .map(|&(t, _)| t);
    if let Some(t) = near {
        return unknown(format!(
            "the published set of {} changed at {}, within {} of it: either side",
            change.target,
            clock(t),
            humantime::format_duration(lag.window)
        ));
    }
    let before = sides.vendor.partition_point(|&(t, _)| t < change.at);
    let unchanged_since = before.checked_sub(1).map(|i| sides.vendor[i].0);
    let since = match (unchanged_since, sides.watching_since) {
        (Some(t), _) => format!("published set unchanged since {}", clock(t)),
        (None, Some(t)) => format!("published set unchanged since the audit began ({})", clock(t)),
        (None, None) => "published set unchanged as far as the history goes".to_string(),
    };
    let reset = if path.reset {
        " (a reset: our firewall's REJECT or the server itself may send it)"
    } else {
        ""
    };
    Attribution {
        cause: Cause::LocalPath,
        why: format!("{since}, whitelist coverage unchanged{reset}"),
    }
}

fn clock(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The recent changes and what to attribute them against, as a snapshot carries them: cheap to
/// clone, attributed when read.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub changes: Arc<VecDeque<Arc<Change>>>,
    pub context: Arc<Context>,
}

/// One line of a timeline.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub change: &'a Change,
    pub attribution: Attribution,
}

impl Timeline {
    /// The `query.limit` most recent changes that match `query` (and `cause`), oldest first;
    /// first sightings only when `with_first_seen`.
    pub fn select(&self, query: &EventQuery, cause: Option<Cause>, with_first_seen: bool) -> Vec<Entry<'_>> {
        let mut selected: Vec<Entry<'_>> = self
            .changes
            .iter()
            .rev()
            .filter(|c| query.admits(c.at, &c.target, c.ip))
            .filter(|c| c.moves())
            .filter(|c| query.aspect.is_none_or(|a| c.event(a).is_some()))
            .map(|c| Entry {
                change: c,
                attribution: self.context.attribute(c),
            })
            .filter(|e| cause.is_none_or(|cause| e.attribution.cause == cause))
            .filter(|e| with_first_seen || cause.is_some() || e.attribution.cause != Cause::FirstSeen)
            .take(query.limit)
            .collect();
        selected.reverse();
        selected
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::core::event::{Event, NO_FINDING, NOT_WHITELISTED, WHITELISTED};

    const WINDOW: Duration = Duration::from_secs(120);

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    /// A change of 192.0.2.`host` at `seconds`, from `(aspect, from, to)` triples.
    fn change(seconds: u64, host: u8, appeared: bool, moves: &[(Aspect, Option<&str>, Option<&str>)]) -> Change {
        let ip = IpAddr::from([192, 0, 2, host]);
        Change {
            at: at(seconds),
            target: "vendor".into(),
            ip,
            port: 22,
            appeared,
            events: moves
                .iter()
                .map(|&(aspect, from, to)| {
                    Arc::new(Event {
                        at: at(seconds),
                        target: "vendor".into(),
                        ip,
                        port: 22,
                        aspect,
                        from: from.map(str::to_string),
                        to: to.map(str::to_string),
                        detail: if aspect == Aspect::Published {
                            "published by dns".into()
                        } else {
                            String::new()
                        },
                        // The first minute is the target's first sweep.
                        first_sweep: appeared && seconds < 60,
                        sources_failing: false,
                    })
                })
                .collect(),
        }
    }

    fn appeared(seconds: u64, host: u8, state: &str, finding: &str, whitelist: &str) -> Change {
        change(
            seconds,
            host,
            true,
            &[
                (Aspect::State, None, Some(state)),
                (Aspect::Finding, None, Some(finding)),
                (Aspect::Published, None, Some(PUBLISHED)),
                (Aspect::Whitelist, None, Some(whitelist)),
            ],
        )
    }

    fn context(changes: &[Change]) -> Context {
        let lags = HashMap::from([(
            "vendor".to_string(),
            Lag {
                window: WINDOW,
                removal: Duration::ZERO,
            },
        )]);
        Context::new(changes, &lags)
    }

    fn causes(changes: &[Change]) -> Vec<Cause> {
        let context = context(changes);
        changes.iter().map(|c| context.attribute(c).cause).collect()
    }

    fn broke(seconds: u64, host: u8, to: &str) -> Change {
        change(
            seconds,
            host,
            false,
            &[
                (Aspect::State, Some("open"), Some(to)),
                (Aspect::Finding, Some(NO_FINDING), Some("blocked")),
            ],
        )
    }

    #[test]
    fn each_side_alone_is_named_and_first_sightings_are_not_changes() {
        let changes = [
            appeared(0, 1, "open", NO_FINDING, WHITELISTED),
            appeared(30, 2, "open", NO_FINDING, WHITELISTED),
            // An hour later the vendor publishes a third address, not whitelisted.
            appeared(3600, 3, "timeout", "missing", NOT_WHITELISTED),
            // Two hours later a rule on our side drops the first.
            broke(7200, 1, "timeout"),
            // The whitelist is edited: the third gains coverage.
            change(
                10_800,
                3,
                false,
                &[
                    (Aspect::Finding, Some("missing"), Some("blocked")),
                    (Aspect::Whitelist, Some(NOT_WHITELISTED), Some(WHITELISTED)),
                ],
            ),
            // The second presents another host key.
            change(
                14_400,
                2,
                false,
                &[(
                    Aspect::Service,
                    Some("ssh-ed25519 SHA256:a"),
                    Some("ssh-ed25519 SHA256:b"),
                )],
            ),
            // The vendor stops publishing the second: its entry is stale.
            change(
                18_000,
                2,
                false,
                &[
                    (Aspect::Finding, Some(NO_FINDING), Some("stale")),
                    (Aspect::Published, Some(PUBLISHED), Some(NOT_PUBLISHED)),
                ],
            ),
        ];
        assert_eq!(
            causes(&changes),
            [
                Cause::FirstSeen,
                Cause::FirstSeen,
                Cause::VendorAdded,
                Cause::LocalPath,
                Cause::LocalWhitelist,
                Cause::VendorService,
                Cause::VendorRemoved,
            ]
        );
        let why = context(&changes).attribute(&changes[3]).why;
        assert!(
            why.contains("published set unchanged since 2023-11-14T23:13:20Z"),
            "{why}"
        );
    }

    #[test]
    fn a_path_change_near_a_change_of_the_published_set_is_unknown_either_way_round() {
        // The vendor adds an address a minute before, or a minute after, the drop is seen.
        let before = [
            appeared(3600, 3, "open", "undeclared", NOT_WHITELISTED),
            broke(3660, 1, "timeout"),
        ];
        assert_eq!(causes(&before), [Cause::VendorAdded, Cause::Unknown]);
        let after = [
            broke(3600, 1, "refused"),
            appeared(3660, 3, "open", "undeclared", NOT_WHITELISTED),
        ];
        assert_eq!(causes(&after), [Cause::Unknown, Cause::VendorAdded]);
        let why = context(&after).attribute(&after[0]).why;
        assert!(why.contains("either side"), "{why}");
        // Outside the window each is its own side's.
        let apart = [
            appeared(3600, 3, "open", "undeclared", NOT_WHITELISTED),
            broke(3600 + 121, 1, "timeout"),
        ];
        assert_eq!(causes(&apart), [Cause::VendorAdded, Cause::LocalPath]);
    }

    #[test]
    fn a_dns_removal_reaches_back_by_the_retention() {
        let removed = change(
            7200,
            2,
            false,
            &[
                (Aspect::Finding, Some(NO_FINDING), Some("stale")),
                (Aspect::Published, Some(PUBLISHED), Some(NOT_PUBLISHED)),
            ],
        );
        let changes = [broke(4000, 1, "timeout"), removed];
        let lag = |removal| {
            HashMap::from([(
                "vendor".to_string(),
                Lag {
                    window: WINDOW,
                    removal,
                },
            )])
        };
        let retained = Context::new(&changes, &lag(Duration::from_secs(3600)));
        assert_eq!(retained.attribute(&changes[0]).cause, Cause::Unknown);
        let listed = Context::new(&changes, &lag(Duration::ZERO));
        assert_eq!(listed.attribute(&changes[0]).cause, Cause::LocalPath);
    }

    #[test]
    fn both_sides_in_one_change_and_leaving_are_told_apart() {
        let both = change(
            3600,
            1,
            false,
            &[
                (Aspect::State, Some("open"), Some("timeout")),
                (Aspect::Published, Some(PUBLISHED), Some(NOT_PUBLISHED)),
            ],
        );
        let left_uncovered = change(
            3600,
            2,
            false,
            &[
                (Aspect::Finding, Some("undeclared"), None),
                (Aspect::Published, Some(PUBLISHED), None),
                (Aspect::Whitelist, Some(NOT_WHITELISTED), None),
            ],
        );
        let entry_removed = change(
            3600,
            3,
            false,
            &[
                (Aspect::Finding, Some("stale"), None),
                (Aspect::Published, Some(NOT_PUBLISHED), None),
                (Aspect::Whitelist, Some(WHITELISTED), None),
            ],
        );
        let mut with_target = change(3600, 4, false, &[(Aspect::State, Some("open"), None)]);
        Arc::make_mut(&mut with_target.events[0]).detail = TARGET_REMOVED.into();
        // A whitelisted address whose entry declares no target is not stale once unpublished: it
        // leaves, and only the vendor's removal can make a published address leave.
        let left_covered = change(
            3600,
            5,
            false,
            &[
                (Aspect::State, Some("timeout"), None),
                (Aspect::Finding, Some("blocked"), None),
                (Aspect::Published, Some(PUBLISHED), None),
                (Aspect::Whitelist, Some(WHITELISTED), None),
            ],
        );
        assert_eq!(
            causes(&[both, left_uncovered, entry_removed, with_target, left_covered]),
            [
                Cause::Unknown,
                Cause::VendorRemoved,
                Cause::LocalWhitelist,
                Cause::Unknown,
                Cause::VendorRemoved
            ]
        );
    }

    #[test]
    fn a_history_written_before_the_published_aspect_is_read_from_its_findings() {
        let stale = change(3600, 1, false, &[(Aspect::Finding, Some(NO_FINDING), Some("stale"))]);
        let covered = change(3600, 2, false, &[(Aspect::Finding, Some("missing"), Some("blocked"))]);
        // The first observation after the upgrade records the new aspects from nothing: no move.
        let recorded = change(3600, 3, false, &[(Aspect::Published, None, Some(PUBLISHED))]);
        assert_eq!(
            causes(&[stale, covered, recorded]),
            [Cause::VendorRemoved, Cause::LocalWhitelist, Cause::Unknown]
        );
    }

    #[test]
    fn only_an_address_expected_open_breaking_or_mending_alone_is_local_path() {
        let reset = broke(3600, 1, "refused");
        let stale = change(
            3600,
            2,
            false,
            &[
                (Aspect::State, Some("open"), Some("timeout")),
                (Aspect::Finding, Some("stale"), Some("stale")),
            ],
        );
        let mut stale = stale;
        Arc::make_mut(&mut stale.events[1]).from = Some(NOT_PUBLISHED.into());
        Arc::make_mut(&mut stale.events[1]).to = Some(NOT_PUBLISHED.into());
        Arc::make_mut(&mut stale.events[1]).aspect = Aspect::Published;
        let mended = change(
            3600,
            3,
            false,
            &[
                (Aspect::State, Some("timeout"), Some("open")),
                (Aspect::Finding, Some("blocked"), Some(NO_FINDING)),
            ],
        );
        let other_failure = change(3600, 4, false, &[(Aspect::State, Some("timeout"), Some("refused"))]);
        let not_ssh_to_timeout = change(
            3600,
            5,
            false,
            &[(Aspect::State, Some("protocol_error"), Some("timeout"))],
        );
        let not_ssh = change(3600, 6, false, &[(Aspect::State, Some("open"), Some("protocol_error"))]);
        let mut failing = broke(3600, 7, "timeout");
        Arc::make_mut(&mut failing.events[0]).sources_failing = true;
        let undeclared = change(
            3600,
            8,
            false,
            &[
                (Aspect::State, Some("open"), Some("timeout")),
                (Aspect::Finding, Some("undeclared"), Some("missing")),
            ],
        );
        let changes = [
            reset,
            stale,
            mended,
            other_failure,
            not_ssh_to_timeout,
            not_ssh,
            failing,
            undeclared,
        ];
        assert_eq!(
            causes(&changes),
            [
                Cause::LocalPath,
                Cause::Unknown,
                Cause::LocalPath,
                Cause::Unknown,
                Cause::Unknown,
                Cause::VendorService,
                Cause::Unknown,
                Cause::Unknown,
            ]
        );
        let context = context(&changes);
        assert!(context.attribute(&changes[0]).why.contains("a reset"));
        assert!(context.attribute(&changes[6]).why.contains("failing"));
    }

    #[test]
    fn our_configuration_is_no_side_of_the_service_and_a_server_change_is_no_change_of_the_set() {
        let mut added_static = appeared(3600, 1, "open", NO_FINDING, WHITELISTED);
        Arc::make_mut(&mut added_static.events[2]).detail = "published by static".into();
        let mut port = change(3600, 2, false, &[(Aspect::State, Some("open"), None)]);
        Arc::make_mut(&mut port.events[0]).detail = PORT_CHANGED.into();
        // A server that comes back with another key is no change of the published set: a drop
        // next to it is our path's.
        let back = change(
            7200,
            3,
            false,
            &[
                (Aspect::State, Some("timeout"), Some("open")),
                (
                    Aspect::Service,
                    Some("ssh-ed25519 SHA256:a"),
                    Some("ssh-ed25519 SHA256:b"),
                ),
            ],
        );
        let changes = [added_static, port, back, broke(7260, 4, "timeout")];
        assert_eq!(
            causes(&changes),
            [Cause::Unknown, Cause::Unknown, Cause::Unknown, Cause::LocalPath]
        );
        assert!(context(&changes).attribute(&changes[0]).why.contains("configuration"));
    }
}
