//! Named defaults, in one place: the config loader, `--help`, the example file and the README all
//! quote these, so they cannot drift apart.

use std::time::Duration;

/// How often every address of every target is probed.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// One attempt: TCP connect plus, for `check: ssh`, the identification line.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts before an address counts as failed.
pub const ATTEMPTS: u32 = 3;
/// Attempts a client connecting by name makes (`targets[].client_attempts`): the vendor's advice
/// is "three retries", and it is what the odds a client feels are quoted for.
pub const CLIENT_ATTEMPTS: u32 = 3;
/// Most `targets[].client_attempts`.
pub const CLIENT_ATTEMPTS_MAX: u32 = 10;
/// Pause between two attempts at one address.
pub const RETRY_DELAY: Duration = Duration::from_secs(10);
/// Probes in flight, across all targets.
pub const CONCURRENCY: usize = 256;
/// Probes in flight against one target: low, so the audit never trips the server's `MaxStartups`.
pub const PER_TARGET_CONCURRENCY: usize = 4;
/// The service port probed when a target names none.
pub const PORT: u16 = 22;
/// DNS queries per resolver per refresh; pools answer each query with a subset.
pub const DNS_QUERIES: u32 = 3;
/// How long an address stays in the set after the last answer that contained it.
pub const DNS_RETENTION: Duration = Duration::from_secs(3600);
/// Port of the HTTP endpoint. 9100-9999 of Prometheus' exporter port list is fully allocated.
/// `:PORT` is every interface, IPv6 and IPv4, as other exporters take it.
pub const LISTEN_ADDRESS: &str = ":10022";
/// Most bytes read from a peer while waiting for its SSH identification line (RFC 4253 allows
/// text lines before it; a peer that streams garbage must not grow memory).
pub const MAX_BANNER_BYTES: usize = 8192;
/// How often a published list is fetched again.
pub const LIST_REFRESH: Duration = Duration::from_secs(3600);
/// Total time one fetch of a published list may take.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest published list body read, in bytes.
pub const LIST_MAX_SIZE: u32 = 10 * 1024 * 1024;
/// Most addresses a published list may make the auditor probe (a prefix too large to probe counts
/// as one): an auditor, not a scanner.
pub const LIST_MAX_ADDRESSES: u32 = 65_536;
/// Largest published prefix expanded into addresses to probe (a /24); larger ones are audited only.
pub const MAX_PROBE_ADDRESSES_PER_PREFIX: u32 = 256;
/// Where the last good set of every published list is kept across restarts.
pub const STATE_DIR: &str = "./state";
/// The history file (`state_dir/history.jsonl`) is rotated when it grows by this many MiB: at
/// about 200 bytes a change, some 80,000 changes.
pub const HISTORY_MAX_MIB: u32 = 16;
/// The largest `global.history_max_mib`.
pub const HISTORY_MAX_MIB_MAX: u32 = 1024;
/// Redirects followed when fetching a published list.
pub const LIST_MAX_REDIRECTS: usize = 5;

/// A whitelist entry for IPv4 shorter than this prefix length is broad: it is kept, and reported,
/// because it hides every `missing` finding inside it.
pub const BROAD_ENTRY_PREFIX_IPV4: u8 = 16;
/// The same for IPv6: shorter than a /32, the usual size of a whole provider's allocation.
pub const BROAD_ENTRY_PREFIX_IPV6: u8 = 32;

/// Shortest `global.interval`: one connection a second to each vendor address is already plenty.
pub const INTERVAL_MIN: Duration = Duration::from_secs(1);
/// Longest `global.interval`: a change of the vendor's addresses is seen within a day.
pub const INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Shortest `global.timeout`: below it a distant but healthy server looks like a dropped port.
pub const TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// Longest `global.timeout`: a server that has not answered in a minute is not answering.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Most `global.attempts`: beyond it, retries only add connections to an address that is down.
pub const ATTEMPTS_MAX: u32 = 10;
/// Most probes in flight (`global.concurrency`, `global.per_target_concurrency`): each holds a
/// socket, and one host has 65,535 source ports to connect from.
pub const CONCURRENCY_MAX: u32 = 65_536;

/// Largest configuration or whitelist file read, in bytes: far above any real whitelist (100,000
/// entries take about 6 MiB), and a bound on the memory a runaway or hostile file can take.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Most YAML nodes (keys, values, lists, mappings) in one file. A whitelist entry of one address
/// and one port with `target` and `comment` is 11 nodes, so this reads about 200,000 of them.
pub const MAX_YAML_NODES: usize = 2_200_000;
/// Whitelist entries of one address and one port, with `target` and `comment`, that fit in
/// [`MAX_YAML_NODES`]: the number a refusal quotes.
pub const MAX_WHITELIST_ENTRIES: usize = MAX_YAML_NODES / 11;

/// How often each address is held idle (`ssh.idle_interval`): a hold occupies a server slot for
/// minutes, so once an hour is enough to see a firewall's idle timeout.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(3600);
/// Idle holds in flight against one target (`ssh.idle_concurrency`), so a pool of 50 addresses is
/// never held open all at once.
pub const IDLE_CONCURRENCY: u32 = 4;
/// Longest `ssh.idle_hold`: firewall idle timeouts worth finding are minutes, not hours.
pub const IDLE_HOLD_MAX: Duration = Duration::from_secs(3600);
/// How often each address is logged in to (`ssh.login_interval`): a rejected login is never
/// retried sooner, so an account lockout or fail2ban never sees a burst from the auditor.
pub const LOGIN_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// How often a timed-out address is traced again (`global.diagnosis.trace_interval`).
pub const TRACE_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Shortest `global.diagnosis.trace_interval`: a trace is a few dozen packets; more often is a scan.
pub const TRACE_INTERVAL_MIN: Duration = Duration::from_secs(10);
/// The farthest hop a trace sends to (`global.diagnosis.max_hops`), as traceroute's default.
pub const MAX_HOPS: u8 = 30;
/// Most `global.diagnosis.max_hops`.
pub const MAX_HOPS_MAX: u8 = 64;
/// Hops a reset may lie outside the server's SYN-ACKs and still be the server's
/// (`global.diagnosis.ttl_margin`): a server's reset and SYN-ACK share its stack and path.
pub const TTL_MARGIN: u8 = 0;
/// Most `global.diagnosis.ttl_margin`.
pub const TTL_MARGIN_MAX: u8 = 16;
/// Shortest `ssh.login_interval`: more often looks like a brute force to the vendor's fail2ban.
pub const LOGIN_INTERVAL_MIN: Duration = Duration::from_secs(60);
/// OpenSSH's `LoginGraceTime` default: an unauthenticated session is dropped by the server after
/// it, so a hold without credentials longer than this shows the server, not the path.
pub const OPENSSH_LOGIN_GRACE_TIME: Duration = Duration::from_secs(120);
