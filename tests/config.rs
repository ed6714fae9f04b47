//! Configuration and whitelist loading: every invalid fixture with its exact message, the shipped
//! example, and the ownership rules of whitelist entries.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use whitelist_audit::config::{self, CheckKind, ResolverSpec};
use whitelist_audit::prefix::PrefixIndex;

const INVALID: &[(&str, &str)] = &[
    (
        "bad-check.yml",
        "4:12: targets[0].check: unknown variant `http`, expected one of ssh, tcp, tcp_banner",
    ),
    (
        "bad-duration.yml",
        "2:12: global.timeout: invalid duration `10 parsecs`: write a number with a unit, like 500ms, 30s, 5m or 1h",
    ),
    (
        "bad-family.yml",
        "4:24: targets[0].address_families[0]: unknown variant `ipv5`, expected one of ipv4, ipv6",
    ),
    (
        "bad-port.yml",
        "4:11: targets[0].port: invalid port 70000: write a whole number from 1 to 65535",
    ),
    (
        "broad-prefix-ipv4.yml",
        "3:11: global.broad_entry_prefix.ipv4: invalid prefix length 33: write a whole number from 0 to 32 (an IPv4 address has 32 bits)",
    ),
    (
        "broad-prefix-ipv6.yml",
        "2:30: global.broad_entry_prefix.ipv6: invalid prefix length 129: write a whole number from 0 to 128 (an IPv6 address has 128 bits)",
    ),
    (
        "broad-prefix-unknown-key.yml",
        "2:43: global.broad_entry_prefix.ipv7: unknown field `ipv7`, expected one of ipv4, ipv6",
    ),
    (
        "bad-resolver.yml",
        "2:15: global.resolvers[0]: invalid resolver `dns.example.com`: write `system`, an IP address, IP:PORT or [IPv6]:PORT",
    ),
    (
        "duplicate-target.yml",
        "4:11: targets[1].name: duplicate target name `vendor-sftp` (first defined at line 2): names must be unique, they become the `target` label",
    ),
    ("empty-file.yml", ": the file is empty"),
    (
        "host-is-address.yml",
        "3:11: targets[0].host: `198.51.100.7` is an address, not a host name: list it under `static`",
    ),
    (
        "interval-not-longer-than-default-timeout.yml",
        "2:13: global.timeout (10s, the default) must be shorter than global.interval (5s): a probe would still run when the next one starts",
    ),
    (
        "interval-too-long.yml",
        "2:13: global.interval (48h) must be from 1s to 24h: every address is probed once per interval, and a longer one leaves a closed or new address unseen for more than a day",
    ),
    (
        "interval-too-short.yml",
        "2:13: global.interval (1ns) must be from 1s to 24h: every address is probed once per interval, and more than one connection a second to each vendor address floods its server",
    ),
    (
        "invalid-static-address.yml",
        "3:14: targets[0].static[0]: invalid address or CIDR `198.51.100.300`: write 198.51.100.7, 198.51.100.0/28 or 2001:db8::/64",
    ),
    (
        "missing-whitelist.yml",
        "2:14: global.whitelist: cannot read whitelist `tests/fixtures/invalid/does-not-exist.yml`: No such file or directory (os error 2)",
    ),
    ("no-targets.yml", ": targets: no targets: list at least one"),
    (
        "quoted-attempts-not-a-number.yml",
        "2:13: global.attempts: invalid count `3 times`: write a whole number from 1 to 10",
    ),
    (
        "quoted-port-not-a-number.yml",
        "4:11: targets[0].port: invalid port `ssh`: write a whole number from 1 to 65535",
    ),
    (
        "quoted-port-out-of-range.yml",
        "4:11: targets[0].port: invalid port 70000: write a whole number from 1 to 65535",
    ),
    (
        "retry-delay-longer-than-interval.yml",
        "4:16: global.retry_delay (60s) must be at most global.interval (30s): a retry would wait past the next probe of the same address",
    ),
    (
        "static-broadcast.yml",
        "3:14: targets[0].static[0]: `255.255.255.255` is the broadcast address, not a vendor's: TCP cannot connect to it",
    ),
    (
        "published-duplicate-url.yml",
        "5:9: targets[0].published[1]: `https://vendor.example/ips.json` is already listed at line 4: one list per URL; to take several parts of one document, select them together, e.g. `$['ipv4','ipv6'][*]`",
    ),
    (
        "static-multicast.yml",
        "3:14: targets[0].static[0]: `224.0.0.251` is a multicast address, not a vendor's: TCP cannot connect to it",
    ),
    (
        "static-prefix.yml",
        "3:14: targets[0].static[0]: `198.51.100.0/28` is a prefix: `static` takes single addresses (198.51.100.7)",
    ),
    (
        "static-unspecified.yml",
        "3:28: targets[0].static[1]: `::` is the unspecified address, not a vendor's: a connection to it reaches this host",
    ),
    (
        "target-name-newline.yml",
        "2:11: targets[0].name: target name `vendor\\nsftp` contains a control character (a newline, a tab, ...): it becomes the `target` label and a column of `check`'s table, which must stay on one line",
    ),
    (
        "target-name-tab.yml",
        "2:11: targets[0].name: target name `vendor\\tsftp` contains a control character (a newline, a tab, ...): it becomes the `target` label and a column of `check`'s table, which must stay on one line",
    ),
    (
        "target-name-too-long.yml",
        "2:11: targets[0].name: target name `vendor-sftp-vendor-sftp-...` is 132 characters long: write at most 128, it becomes the `target` label and a column of `check`'s table",
    ),
    (
        "target-without-addresses.yml",
        "2:11: targets[0]: target `a` has no addresses: set `host`, `static` or `published`",
    ),
    (
        "timeout-not-shorter-than-interval.yml",
        "3:12: global.timeout (45s) must be shorter than global.interval (30s): a probe would still run when the next one starts",
    ),
    (
        "timeout-too-long.yml",
        "3:12: global.timeout (2m) must be from 100ms to 60s: a server that has not answered in a minute is not answering, and a longer wait only holds a probe slot",
    ),
    (
        "timeout-too-short.yml",
        "2:12: global.timeout (50ms) must be from 100ms to 60s: a shorter one reports a distant but healthy server as a timeout",
    ),
    (
        "history-too-large.yml",
        "2:20: global.history_max_mib: invalid size in MiB 4096: write a whole number from 1 to 1024 (the history is read whole at start)",
    ),
    (
        "client-attempts-too-many.yml",
        "4:22: targets[0].client_attempts: invalid count 11: write a whole number from 1 to 10 (the odds are quoted for the retries real clients make)",
    ),
    (
        "too-many-attempts.yml",
        "2:13: global.attempts: invalid count 11: write a whole number from 1 to 10 (more attempts only add connections to an address that is down)",
    ),
    (
        "too-much-concurrency.yml",
        "2:16: global.concurrency: invalid count 70000: write a whole number from 1 to 65536 (each probe in flight holds a socket and a source port, and a host has 65536 ports)",
    ),
    (
        "unknown-key.yml",
        "2:3: global.intervall: unknown field `intervall`, expected one of interval, timeout, attempts, retry_delay, concurrency, per_target_concurrency, resolvers, whitelist, state_dir, history_max_mib, max_probe_addresses_per_prefix, broad_entry_prefix, diagnosis",
    ),
    (
        "diagnosis-trace-interval-too-short.yml",
        "3:21: global.diagnosis.trace_interval (5s) must be at least 10s: a trace is dozens of packets, and tracing more often is scanning",
    ),
    (
        "diagnosis-max-hops-too-many.yml",
        "3:15: global.diagnosis.max_hops: invalid hop count 100: write a whole number from 1 to 64 (a path longer than that is a routing loop)",
    ),
    (
        "diagnosis-raw-probes-bad.yml",
        "3:17: global.diagnosis.raw_probes: unknown variant `yes`, expected one of auto, off",
    ),
    (
        "unknown-target-key.yml",
        "3:5: targets[0].hostname: unknown field `hostname`, expected one of name, host, port, check, resolvers, address_families, dns_queries, dns_retention, static, whitelist, published, allow_local_addresses, client_attempts, ssh",
    ),
    (
        "wrong-type.yml",
        "2:13: global.attempts: invalid count `three`: write a whole number from 1 to 10",
    ),
    ("yaml-syntax.yml", "3:11: targets[0]: unclosed quote"),
    (
        "yaml-tab.yml",
        "2:2: tabs disallowed within this context (block indentation)",
    ),
    (
        "zero-concurrency.yml",
        "2:16: global.concurrency: invalid count 0: write a whole number from 1 to 65536",
    ),
    (
        "zero-interval.yml",
        "2:13: global.interval (0s) must be from 1s to 24h: every address is probed once per interval, and more than one connection a second to each vendor address floods its server",
    ),
    (
        "zero-per-target-concurrency.yml",
        "2:27: global.per_target_concurrency: invalid count 0: write a whole number from 1 to 65536",
    ),
    (
        "ssh-unknown-client.yml",
        "5:26: targets[0].ssh.clients[1]: unknown SSH client `winscp`; the shipped profiles are: openssh, openssh-9.2, openssh-7.4, paramiko, paramiko-2.12, jsch, jsch-mwiede, putty, putty-0.83 (or describe yours under `ssh.client_algorithms`)",
    ),
    (
        "ssh-bad-fingerprint.yml",
        "7:11: targets[0].ssh.host_keys[1]: `16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48` is not a host key fingerprint as `ssh-keygen -lf` prints it (SHA256: and 43 base64 characters)",
    ),
    (
        "ssh-on-tcp-check.yml",
        "6:7: targets[0].ssh: `ssh:` applies to `check: ssh` only; this target has `check: tcp`",
    ),
    (
        "ssh-empty-algorithm-list.yml",
        "6:9: targets[0].ssh.client_algorithms.ciphers: empty list: a client offers at least one algorithm of each kind",
    ),
    (
        "ssh-invalid-algorithm-name.yml",
        "8:19: targets[0].ssh.client_algorithms.ciphers[0]: `aes128-ctr,aes256-ctr` is not an SSH algorithm name (1 to 64 printable characters, no comma or space)",
    ),
    (
        "ssh-unknown-key.yml",
        "5:7: targets[0].ssh.client: unknown field `client`, expected one of clients, client_algorithms, host_keys, host_key_change_hold, idle_hold, idle_interval, idle_concurrency, auth, sftp, login_interval",
    ),
    (
        "ssh-no-clients.yml",
        "5:7: targets[0].ssh.clients: no SSH client to check: name at least one (the default is [openssh]) or describe one under `ssh.client_algorithms`",
    ),
    (
        "ssh-auth-env-not-a-name.yml",
        "7:23: targets[0].ssh.auth.password_env: not an environment variable name (letters, digits and _): name the variable that holds the password, never the password itself",
    ),
    (
        "ssh-idle-interval-below-login.yml",
        "6:22: targets[0].ssh.idle_interval: ssh.idle_interval (10m) must not be shorter than ssh.login_interval (15m): with ssh.auth every hold logs in, and logins are bounded by login_interval",
    ),
    (
        "ssh-auth-env-lowercase.yml",
        "7:23: targets[0].ssh.auth.password_env: the environment variable named at this key (not repeated here: it has lower-case letters, as a pasted password would) is not set (or not UTF-8) in this process's environment; `validate` and `check` read the secret as `serve` does",
    ),
    (
        "ssh-auth-two-line-password.yml",
        "7:24: targets[0].ssh.auth.password_file: `tests/fixtures/invalid/../secrets/two-lines.txt` has more than one line: the password is the file's one line",
    ),
    (
        "ssh-auth-env-unset.yml",
        "7:23: targets[0].ssh.auth.password_env: the environment variable `WLA_FIXTURE_UNSET_VARIABLE` is not set (or not UTF-8) in this process's environment; `validate` and `check` read the secret as `serve` does",
    ),
    (
        "ssh-auth-missing-key-file.yml",
        "7:27: targets[0].ssh.auth.private_key_file: cannot read `tests/fixtures/invalid/no-such-key`: No such file or directory (os error 2)",
    ),
    (
        "ssh-auth-no-credential.yml",
        "6:9: targets[0].ssh.auth: no credential: give one of `password_env`, `password_file` or `private_key_file`",
    ),
    (
        "ssh-auth-no-username.yml",
        "6:9: targets[0].ssh.auth.username: missing: the monitoring account's user name",
    ),
    (
        "ssh-auth-not-a-key.yml",
        "7:27: targets[0].ssh.auth.private_key_file: cannot use `tests/fixtures/invalid/ssh-auth-not-a-key.yml`: it is not a private key in OpenSSH or PEM format (Could not read key)",
    ),
    (
        "ssh-auth-password-inline.yml",
        "7:19: targets[0].ssh.auth.password: never write the secret in the configuration: use `password_env` or `password_file` to name where it is read from",
    ),
    (
        "ssh-auth-two-credentials.yml",
        "8:24: targets[0].ssh.auth.password_file: give one credential: `password_env` is already given",
    ),
    (
        "ssh-sftp-without-auth.yml",
        "5:13: targets[0].ssh.sftp: `sftp: true` needs a login: add an `ssh.auth` block with the monitoring account",
    ),
    (
        "ssh-idle-hold-too-long.yml",
        "5:18: targets[0].ssh.idle_hold: 2h is out of range: hold a session idle for 1s to 1h (firewall idle timeouts are seconds to minutes)",
    ),
    (
        "ssh-idle-interval-not-longer.yml",
        "6:22: targets[0].ssh.idle_interval: ssh.idle_interval (1m 30s) must be longer than ssh.idle_hold (1m 40s): an address is held at most once per interval",
    ),
    (
        "ssh-idle-interval-without-hold.yml",
        "5:22: targets[0].ssh.idle_interval: `idle_interval` without `ssh.idle_hold` has no effect: the idle hold is off until `idle_hold` is set",
    ),
    (
        "ssh-login-interval-too-short.yml",
        "8:23: targets[0].ssh.login_interval: 10s is too often: log in at most once a minute per address, or the vendor's fail2ban sees a brute force",
    ),
    (
        "ssh-zero-hold.yml",
        "5:7: targets[0].ssh.host_key_change_hold: 0s would never report a changed host key: give a duration such as 24h",
    ),
    (
        "ssh-markers-only.yml",
        "6:15: targets[0].ssh.client_algorithms.kex: only signalling names (ext-info-*, kex-strict-*), which are never agreed on: list real algorithms",
    ),
    (
        "ssh-fingerprint-typo.yml",
        "5:19: targets[0].ssh.host_keys[0]: `SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2t` cannot be a SHA-256 fingerprint: 32 bytes never end in that last character (a typo?)",
    ),
    (
        "ssh-duplicate-client.yml",
        "5:23: targets[0].ssh.clients[1]: `jsch` is listed twice",
    ),
];

/// Invalid whitelists: the error names the whitelist file, not the configuration.
const INVALID_WHITELIST: &[(&str, &str)] = &[
    (
        "wl-duplicate-key.yml",
        "4:5: allow[0]: duplicate mapping key: addresses",
    ),
    (
        "wl-empty-ports.yml",
        "3:12: allow[0].ports: empty list: name at least one port",
    ),
    (
        "wl-foreign-tag.yml",
        "4:13: allow[0].target: this file is the own whitelist of a; an entry here cannot belong to `b`",
    ),
    (
        "wl-host-bits.yml",
        "2:17: allow[0].addresses[0]: `198.51.100.5/28` has host bits set: did you mean 198.51.100.0/28?",
    ),
    (
        "wl-invalid-cidr.yml",
        "2:34: allow[0].addresses[1]: invalid address or CIDR `203.0.113.0/33`: write 198.51.100.7, 198.51.100.0/28 or 2001:db8::/64",
    ),
    (
        "wl-leading-zero.yml",
        "2:34: allow[0].addresses[1]: `010.0.0.0/8` has a leading zero, which some tools read as octal: write 10.0.0.0/8",
    ),
    (
        "wl-quoted-port-not-a-number.yml",
        "3:19: allow[0].ports[1]: invalid port `ssh`: write a whole number from 1 to 65535",
    ),
    (
        "wl-unknown-key.yml",
        "3:5: allow[0].port: unknown field `port`, expected one of addresses, ports, target, comment",
    ),
    (
        "wl-unknown-target.yml",
        "4:13: allow[0].target: unknown target `vendor-stfp` (targets: vendor-sftp)",
    ),
];

/// Invalid aerleon whitelists: the config file's own mistakes (the message names the config file)
/// and the definition files' (the message names the definition file, under `tests/fixtures/invalid/`).
const INVALID_AERLEON: &[(&str, &str)] = &[
    (
        "aerleon-unknown-token.yml",
        "aerleon-unknown-token.yml:4:60: targets[0].whitelist.tokens[1]: unknown token `VENDR`: no definition file in `tests/fixtures/invalid/aerleon-ok.defs` defines it (2 tokens there)",
    ),
    (
        "aerleon-empty-tokens.yml",
        "aerleon-empty-tokens.yml:4:51: targets[0].whitelist.tokens: empty list: name at least one network token",
    ),
    (
        "aerleon-empty-ports.yml",
        "aerleon-empty-ports.yml:4:68: targets[0].whitelist.ports: empty list: name at least one port",
    ),
    (
        "aerleon-port-out-of-range.yml",
        "aerleon-port-out-of-range.yml:4:73: targets[0].whitelist.ports[1]: invalid port 70000: write a whole number from 1 to 65535",
    ),
    (
        "aerleon-unknown-key.yml",
        "aerleon-unknown-key.yml:4:43: targets[0].whitelist.token: unknown field `token`, expected one of aerleon, tokens, ports",
    ),
    (
        "aerleon-missing-dir.yml",
        "aerleon-missing-dir.yml:4:26: targets[0].whitelist.aerleon: cannot read aerleon definitions directory `tests/fixtures/invalid/no-such-definitions`: No such file or directory (os error 2)",
    ),
    (
        "aerleon-no-definitions.yml",
        "aerleon-no-definitions.yml:4:26: targets[0].whitelist.aerleon: `tests/fixtures/invalid/aerleon-no-definitions.defs` holds no aerleon network definitions: no `*.net` file and no YAML file with `networks:`",
    ),
    (
        "aerleon-global-no-port.yml",
        "aerleon-global-no-port.yml:2:14: global.whitelist: no target is audited against this whitelist (each has its own), so its addresses have no port: name them with `ports: [22]`",
    ),
    (
        "aerleon-cycle.yml",
        "aerleon-cycle.defs/NETWORK.net:4:14: VENDOR_ALL: token cycle VENDOR > VENDOR_V4 > VENDOR_ALL > VENDOR: aerleon recurses until it fails; remove one of the references",
    ),
    (
        "aerleon-bad-address.yml",
        "aerleon-bad-address.defs/NETWORK.net:2:10: VENDOR: `203.0.113.300` is neither an address nor a token name: write 198.51.100.7, 198.51.100.0/28, 2001:db8::/64 or a token of letters, digits, `-` and `_` (aerleon drops it without a word)",
    ),
    (
        "aerleon-duplicate-token.yml",
        "aerleon-duplicate-token.defs/networks.yaml:3:5: VENDOR: token `VENDOR` is already defined at tests/fixtures/invalid/aerleon-duplicate-token.defs/NETWORK.net:1: aerleon refuses a token defined twice",
    ),
    (
        "aerleon-ports-differ.yml",
        "aerleon-ports-differ.yml:2:14: global.whitelist: targets on ports 22, 990 use this aerleon whitelist: say which ports its tokens are for with `ports: [...]`",
    ),
    (
        "aerleon-undefined-reference.yml",
        "aerleon-undefined-reference.defs/NETWORK.net:3:9: OTHER: token `OTHER_TEAM_TYPO` is not defined in any definition file of the directory: aerleon refuses the directory",
    ),
];

#[test]
fn every_invalid_config_is_refused_with_its_message() {
    let dir = Path::new("tests/fixtures/invalid");
    // Every mismatch at once: a reworded rule usually changes several.
    let mut mismatches = Vec::new();
    let mut check = |file: &str, loaded: Result<config::Config, config::ConfigError>, expected: String| match loaded {
        Ok(_) => mismatches.push(format!("{file}: accepted, expected {expected}")),
        Err(err) if err.summary() != expected => {
            mismatches.push(format!("{file}:\n  got      {}\n  expected {expected}", err.summary()));
        }
        Err(_) => {}
    };
    for (file, expected) in INVALID {
        let path = dir.join(file);
        let prefix = if expected.starts_with(':') {
            path.display().to_string()
        } else {
            format!("{}:", path.display())
        };
        check(file, config::load(&path), format!("{prefix}{expected}"));
    }
    for (file, expected) in INVALID_WHITELIST {
        let path = dir.join(file);
        let whitelist = dir.join(file.replace(".yml", ".whitelist.yml"));
        check(file, config::load(&path), format!("{}:{expected}", whitelist.display()));
    }
    for (file, expected) in INVALID_AERLEON {
        // `file.yml:...` is the config file, `name.defs/...` a definition file.
        check(
            file,
            config::load(&dir.join(file)),
            format!("{}/{expected}", dir.display()),
        );
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_invalid_fixture_is_in_a_table() {
    let listed: Vec<&str> = INVALID
        .iter()
        .chain(INVALID_WHITELIST)
        .chain(INVALID_AERLEON)
        .map(|(f, _)| *f)
        .collect();
    for entry in std::fs::read_dir("tests/fixtures/invalid").unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        // `.defs` directories hold the aerleon definitions of the `aerleon-*` cases.
        if name.ends_with(".whitelist.yml")
            || name == "ok-whitelist.yml"
            || Path::new(&name).extension().is_some_and(|e| e == "defs")
        {
            continue;
        }
        assert!(
            listed.contains(&name.as_str()),
            "fixture {name} has no expected message"
        );
    }
}

#[test]
fn a_refusal_shows_the_offending_line() {
    let err = config::load(Path::new("tests/fixtures/invalid/bad-port.yml")).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("    port: 70000"), "{shown}");
    assert!(shown.contains("tests/fixtures/invalid/bad-port.yml:4:11"), "{shown}");
}

#[test]
fn missing_config_file_is_named() {
    let err = config::load(Path::new("tests/fixtures/nope.yml")).unwrap_err();
    assert_eq!(
        err.summary(),
        "tests/fixtures/nope.yml: cannot read `tests/fixtures/nope.yml`: No such file or directory (os error 2)"
    );
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn shipped_example_parses_with_the_documented_values() {
    let config = config::load(Path::new("examples/whitelist-audit.yml")).unwrap();
    let g = &config.global;
    assert_eq!(g.interval, Duration::from_secs(60));
    assert_eq!(g.timeout, Duration::from_secs(10));
    assert_eq!((g.attempts, g.concurrency, g.per_target_concurrency), (3, 256, 4));
    assert_eq!(g.retry_delay, Duration::from_secs(10));
    assert_eq!(g.broad_entry_prefix, config::BroadEntryPrefix { ipv4: 16, ipv6: 32 });
    assert_eq!(
        config::Global {
            state_dir: g.state_dir.clone(),
            ..config::Global::default()
        },
        *g,
        "the example shows the defaults"
    );
    assert_eq!(config.whitelist.broad_entries().count(), 0);

    let sftp = &config.targets[0];
    assert_eq!(sftp.name, "vendor-sftp");
    assert_eq!(sftp.host.as_deref(), Some("sftp.vendor.example"));
    assert_eq!(
        (sftp.port, sftp.check, sftp.ipv4, sftp.ipv6, sftp.dns_queries),
        (22, CheckKind::Ssh, true, true, 3)
    );
    assert_eq!(
        sftp.resolvers,
        vec![ResolverSpec::Server("192.0.2.53:53".parse().unwrap())]
    );
    assert_eq!(sftp.dns_retention, Duration::from_secs(3600));
    assert_eq!(sftp.client_attempts, config::defaults::CLIENT_ATTEMPTS);
    assert!(sftp.static_addresses.contains(&ip("198.51.100.7")));
    assert!(!sftp.allow_local_addresses);

    let ftps = &config.targets[1];
    assert_eq!(
        (ftps.port, ftps.check, ftps.host.is_none()),
        (990, CheckKind::Tcp, true)
    );

    // vendor-sftp is covered by the global file, partner-ftps only by its own.
    assert!(config.whitelist.covers(sftp, ip("198.51.100.7")));
    assert!(config.whitelist.covers(sftp, ip("2001:db8::1234")));
    assert!(
        config.whitelist.covers(sftp, ip("192.0.2.99")),
        "untagged entries cover every target of the file"
    );
    assert!(!config.whitelist.covers(sftp, ip("203.0.113.21")));
    assert!(config.whitelist.covers(ftps, ip("203.0.113.21")));
    assert!(
        !config.whitelist.covers(ftps, ip("192.0.2.99")),
        "a target with its own file is audited against it alone"
    );

    // Stale candidates: single addresses of entries that belong to the target and cover its port.
    assert_eq!(
        config.whitelist.declared_hosts(sftp).into_iter().collect::<Vec<_>>(),
        vec![ip("203.0.113.10")]
    );
    assert_eq!(
        config.whitelist.declared_hosts(ftps).into_iter().collect::<Vec<_>>(),
        vec![ip("203.0.113.21"), ip("2001:db8:21::21")]
    );
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let dir = tempdir();
    let path = dir.join("minimal.yml");
    std::fs::write(&path, "targets:\n  - name: a\n    host: sftp.example.com\n").unwrap();
    let config = config::load(&path).unwrap();
    let t = &config.targets[0];
    assert_eq!((t.port, t.check, t.ipv4, t.ipv6), (22, CheckKind::Ssh, true, true));
    assert_eq!(t.resolvers, vec![ResolverSpec::System]);
    assert_eq!(t.whitelist_source, None, "no whitelist declared");
    let expected = config::Global {
        state_dir: dir.join("state"),
        ..config::Global::default()
    };
    assert_eq!(
        config.global, expected,
        "state_dir is relative to the configuration file"
    );
}

#[test]
fn coverage_needs_the_port_and_containment() {
    let dir = tempdir();
    std::fs::write(
        dir.join("wl.yml"),
        "allow:\n  - addresses: [198.51.100.0/28, \"2001:db8::/64\"]\n    ports: [2222]\n  - addresses: [203.0.113.10]\n    ports: [22]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("c.yml"),
        "global:\n  whitelist: wl.yml\ntargets:\n  - name: a\n    host: a.example.com\n  - name: b\n    host: b.example.com\n    port: 2222\n",
    )
    .unwrap();
    let config = config::load(&dir.join("c.yml")).unwrap();
    let (a, b) = (&config.targets[0], &config.targets[1]);
    assert!(!config.whitelist.covers(a, ip("198.51.100.1")), "wrong port");
    assert!(config.whitelist.covers(b, ip("198.51.100.15")));
    assert!(!config.whitelist.covers(b, ip("198.51.100.16")), "outside the /28");
    assert!(config.whitelist.covers(b, ip("2001:db8::ffff")));
    assert!(!config.whitelist.covers(b, ip("2001:db8:1::1")));
    assert!(config.whitelist.covers(a, ip("203.0.113.10")));
    // Untagged entries of the global file belong to no target: nothing is stale-checked.
    assert!(config.whitelist.declared_hosts(a).is_empty());

    let index = |ip: &str| PrefixIndex::new([ipnet::IpNet::from(self::ip(ip))]);
    let published = BTreeMap::from([(22, index("203.0.113.10")), (2222, index("2001:db8::5"))]);
    let usage: Vec<(String, u16, bool)> = config
        .whitelist
        .usage(&published)
        .into_iter()
        .map(|u| (u.entry, u.port, u.unused))
        .collect();
    assert_eq!(
        usage,
        vec![
            ("198.51.100.0/28".into(), 2222, true),
            ("2001:db8::/64".into(), 2222, false),
            ("203.0.113.10".into(), 22, false),
        ]
    );
}

/// Writes `files` (name, text) into a new directory and loads `c.yml` from it.
fn load_files(files: &[(&str, &str)]) -> Result<config::Config, config::ConfigError> {
    let dir = tempdir();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    config::load(&dir.join("c.yml"))
}

#[test]
fn quoted_numbers_read_like_unquoted_ones() {
    let config = |quote: &str| {
        let q = |n: &str| format!("{quote}{n}{quote}");
        load_files(&[
            (
                "c.yml",
                &format!(
                    "global:\n  attempts: {}\n  concurrency: {}\n  per_target_concurrency: {}\n  max_probe_addresses_per_prefix: {}\n  broad_entry_prefix: {{ipv4: {}, ipv6: {}}}\n  whitelist: wl.yml\ntargets:\n  - name: a\n    host: sftp.example.com\n    port: {}\n    dns_queries: {}\n",
                    q("5"), q("64"), q("2"), q("16"), q("8"), q("24"), q("2222"), q("4")
                ),
            ),
            ("wl.yml", &format!("allow:\n  - addresses: [198.51.100.0/28]\n    ports: [{}, {}]\n", q("2222"), q("22"))),
        ])
        .unwrap()
    };
    let (plain, quoted) = (config(""), config("\""));
    let global = |c: &config::Config| config::Global {
        state_dir: "state".into(),
        ..c.global.clone()
    };
    assert_eq!(global(&quoted), global(&plain));
    assert_eq!(quoted.targets, plain.targets);
    assert_eq!(quoted.whitelist.entries, plain.whitelist.entries);
    let (g, t) = (&quoted.global, &quoted.targets[0]);
    assert_eq!((g.attempts, g.concurrency, g.per_target_concurrency), (5, 64, 2));
    assert_eq!(
        (
            g.max_probe_addresses_per_prefix,
            g.broad_entry_prefix.ipv4,
            g.broad_entry_prefix.ipv6
        ),
        (16, 8, 24)
    );
    assert_eq!((t.port, t.dns_queries), (2222, 4));
    assert_eq!(quoted.whitelist.entries[0].ports, vec![22, 2222]);
    // Spellings of a whole number the YAML parser reads as other types, or with signs and spaces.
    for (written, port) in [("' 22 '", 22), ("'+22'", 22), ("022", 22), ("22.0", 22)] {
        let config = load_files(&[(
            "c.yml",
            &format!("targets:\n  - name: a\n    host: sftp.example.com\n    port: {written}\n"),
        )])
        .unwrap_or_else(|err| panic!("{written}: {err}"));
        assert_eq!(config.targets[0].port, port, "{written}");
    }
    for (written, message) in [
        ("22.5", "invalid port 22.5: write a whole number from 1 to 65535"),
        ("'-1'", "invalid port -1: write a whole number from 1 to 65535"),
        ("'0x16'", "invalid port `0x16`: write a whole number from 1 to 65535"),
    ] {
        let err = load_files(&[(
            "c.yml",
            &format!("targets:\n  - name: a\n    host: sftp.example.com\n    port: {written}\n"),
        )])
        .unwrap_err();
        assert_eq!(err.message, message, "{written}");
    }
}

#[test]
fn ipv4_mapped_addresses_are_ipv4_addresses() {
    let config = load_files(&[
        (
            "c.yml",
            "global:\n  whitelist: wl.yml\ntargets:\n  - name: a\n    static: [\"::ffff:198.51.100.7\", 198.51.100.7, \"::ffff:c633:6408\"]\n",
        ),
        (
            "wl.yml",
            "allow:\n  - addresses: [\"::ffff:198.51.100.7\", \"::ffff:203.0.113.0/120\"]\n    ports: [22]\n    target: a\n",
        ),
    ])
    .unwrap();
    let a = &config.targets[0];
    assert_eq!(
        a.static_addresses.iter().copied().collect::<Vec<_>>(),
        vec![ip("198.51.100.7"), ip("198.51.100.8")],
        "one address however it is written"
    );
    let labels: Vec<String> = config
        .whitelist
        .entries
        .iter()
        .map(config::whitelist::Entry::label)
        .collect();
    assert_eq!(labels, ["198.51.100.7", "203.0.113.0/24"]);
    assert!(config.whitelist.covers(a, ip("198.51.100.7")));
    assert!(config.whitelist.covers(a, ip("203.0.113.200")));
    assert!(!config.whitelist.covers(a, ip("198.51.100.8")));
    assert_eq!(
        config.whitelist.declared_hosts(a).into_iter().collect::<Vec<_>>(),
        vec![ip("198.51.100.7")]
    );

    // The mapped form of an address no server has is refused like the address.
    let err = load_files(&[("c.yml", "targets:\n  - name: a\n    static: [\"::ffff:0.0.0.0\"]\n")]).unwrap_err();
    assert_eq!(
        err.message,
        "`::ffff:0.0.0.0` is the unspecified address, not a vendor's: a connection to it reaches this host"
    );
}

#[test]
fn local_static_addresses_stay_allowed() {
    // Written on purpose (a tunnel, a lab, the loopback tests): they reach a real listener.
    let config = load_files(&[(
        "c.yml",
        "targets:\n  - name: a\n    static: [127.0.0.1, \"::1\", 169.254.10.1, \"fe80::1\", 10.1.2.3]\n",
    )])
    .unwrap();
    assert_eq!(config.targets[0].static_addresses.len(), 5);
}

#[test]
fn timing_bounds_are_inclusive() {
    let global = |settings: &str| {
        load_files(&[(
            "c.yml",
            &format!("global: {{{settings}}}\ntargets:\n  - name: a\n    host: sftp.example.com\n"),
        )])
        .map(|c| c.global)
    };
    let g =
        global("interval: 1s, timeout: 100ms, retry_delay: 1s, attempts: 1, concurrency: 1, per_target_concurrency: 1")
            .unwrap();
    assert_eq!(
        (g.interval, g.timeout, g.retry_delay),
        (
            Duration::from_secs(1),
            Duration::from_millis(100),
            Duration::from_secs(1)
        )
    );
    let g = global(
        "interval: 24h, timeout: 60s, retry_delay: 0s, attempts: 10, concurrency: 65536, per_target_concurrency: 65536",
    )
    .unwrap();
    assert_eq!(
        (g.interval, g.timeout, g.retry_delay),
        (Duration::from_secs(86_400), Duration::from_secs(60), Duration::ZERO)
    );
    assert_eq!(
        (g.attempts, g.concurrency, g.per_target_concurrency),
        (10, 65_536, 65_536)
    );
    let g = global("interval: 1s, timeout: 500ms, attempts: 1").unwrap();
    assert_eq!(
        g.retry_delay,
        Duration::from_secs(10),
        "unused without a retry, so not refused"
    );
    let err = global("interval: 1s, timeout: 500ms, attempts: 2").unwrap_err();
    assert_eq!(
        err.summary().split_once(": ").unwrap().1,
        "global.retry_delay (10s, the default) must be at most global.interval (1s): a retry would wait past the next probe of the same address"
    );
    let err = global("interval: 60s, timeout: 60s").unwrap_err();
    assert_eq!(
        err.summary().split_once(": ").unwrap().1,
        "global.timeout (60s) must be shorter than global.interval (60s): a probe would still run when the next one starts"
    );
}

#[test]
fn target_names_up_to_128_characters_are_accepted() {
    let name = "ü".repeat(128);
    let config = load_files(&[(
        "c.yml",
        &format!("targets:\n  - name: {name}\n    host: sftp.example.com\n"),
    )])
    .unwrap();
    assert_eq!(config.targets[0].name, name, "characters, not bytes");
}

#[test]
fn a_resolver_listed_twice_is_asked_once() {
    let config = load_files(&[(
        "c.yml",
        "global:\n  resolvers: [192.0.2.53, system, \"192.0.2.53:53\", system]\ntargets:\n  - name: a\n    host: sftp.example.com\n",
    )])
    .unwrap();
    assert_eq!(
        config.targets[0].resolvers,
        vec![
            ResolverSpec::Server("192.0.2.53:53".parse().unwrap()),
            ResolverSpec::System
        ]
    );
}

/// Collects what `tracing` writes while `f` runs.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    (value, text)
}

#[test]
fn broad_entries_are_kept_marked_and_logged() {
    let dir = tempdir();
    std::fs::write(
        dir.join("wl.yml"),
        "allow:\n  - addresses: [0.0.0.0/0, \"::/0\"]\n    ports: [22]\n  - addresses: [10.0.0.0/8, 172.16.0.0/16, \"2001:db8::/32\", \"2001::/31\"]\n    ports: [22]\n",
    )
    .unwrap();
    let config_text = "global:\n  whitelist: wl.yml\ntargets:\n  - name: a\n    host: sftp.example.com\n";
    std::fs::write(dir.join("c.yml"), config_text).unwrap();
    let (config, logs) = logs_of(|| config::load(&dir.join("c.yml")).unwrap());
    let broad: Vec<(String, u64)> = config.whitelist.broad_entries().map(|e| (e.label(), e.line)).collect();
    assert_eq!(
        broad,
        [
            ("0.0.0.0/0".into(), 2),
            ("::/0".into(), 2),
            ("10.0.0.0/8".into(), 4),
            ("2001::/31".into(), 4)
        ]
    );
    assert_eq!(config.whitelist.entries.len(), 6, "kept, not refused");
    assert!(
        config.whitelist.covers(&config.targets[0], ip("203.0.113.9")),
        "any address is declared"
    );

    let wl = dir.join("wl.yml").display().to_string();
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 4, "{logs}");
    assert!(
        warnings[0].contains(&format!(
            "{wl}:2: broad whitelist entry 0.0.0.0/0: shorter than /16 (global.broad_entry_prefix.ipv4), it covers every address inside it, so no vendor address there is ever reported missing"
        )),
        "{logs}"
    );
    assert!(
        warnings[3].contains(&format!(
            "{wl}:4: broad whitelist entry 2001::/31: shorter than /32 (global.broad_entry_prefix.ipv6)"
        )),
        "{logs}"
    );

    std::fs::write(
        dir.join("c.yml"),
        config_text.replace("global:\n", "global:\n  broad_entry_prefix: {ipv4: 8, ipv6: 0}\n"),
    )
    .unwrap();
    let config = config::load(&dir.join("c.yml")).unwrap();
    let broad: Vec<String> = config
        .whitelist
        .broad_entries()
        .map(config::whitelist::Entry::label)
        .collect();
    assert_eq!(
        broad,
        ["0.0.0.0/0"],
        "a /8 is not shorter than 8; nothing is shorter than 0"
    );
}

/// A whitelist of `entries` entries of one address and one port, `target` and `comment`: what a
/// firewall team's export looks like.
fn big_whitelist(entries: u32) -> String {
    use std::fmt::Write as _;
    let mut text = String::from("allow:\n");
    for i in 0..entries {
        let [_, a, b, c] = (0x0a00_0000 + i).to_be_bytes();
        let _ = writeln!(
            text,
            "  - addresses: [10.{a}.{b}.{c}]\n    ports: [22]\n    target: a\n    comment: NET-{i}"
        );
    }
    text
}

#[test]
fn a_whitelist_of_100000_entries_loads() {
    let dir = tempdir();
    std::fs::write(dir.join("wl.yml"), big_whitelist(100_000)).unwrap();
    std::fs::write(
        dir.join("c.yml"),
        "global:\n  whitelist: wl.yml\ntargets:\n  - name: a\n    host: sftp.example.com\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let config = config::load(&dir.join("c.yml")).unwrap();
    let took = started.elapsed();
    eprintln!("100,000 entries loaded in {took:?}");
    assert_eq!(config.whitelist.entries.len(), 100_000);
    assert!(
        config.whitelist.covers(&config.targets[0], ip("10.1.134.159")),
        "the last entry"
    );
    // About 1 s in release, and 20 s in a debug build, where the YAML parser itself is unoptimized
    // (7 s once serde-saphyr and granit-parser get opt-level 3 in the dev profile). The bounds
    // catch a blow-up, not a slow machine.
    let bound = Duration::from_secs(if cfg!(debug_assertions) { 90 } else { 10 });
    assert!(took < bound, "took {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_over_the_parser_budget_is_refused_in_words() {
    let dir = tempdir();
    // Two bytes a node (`1,`): the cheapest way past the budget.
    let ports = "1,".repeat(config::defaults::MAX_YAML_NODES);
    std::fs::write(
        dir.join("wl.yml"),
        format!("allow:\n  - addresses: [198.51.100.7]\n    ports: [{ports}]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("c.yml"),
        "global:\n  whitelist: wl.yml\ntargets:\n  - name: a\n    host: sftp.example.com\n",
    )
    .unwrap();
    let err = config::load(&dir.join("c.yml")).unwrap_err();
    assert_eq!(
        err.summary(),
        format!(
            "{}: the file is too large: more than 2,200,000 YAML nodes (keys, values and lists); whitelist-audit reads at most that many, about 200,000 whitelist entries",
            dir.join("wl.yml").display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_over_the_size_limit_is_refused_unread() {
    let dir = tempdir();
    let size = usize::try_from(config::defaults::MAX_FILE_BYTES).unwrap() + 1;
    std::fs::write(dir.join("c.yml"), "#".repeat(size)).unwrap();
    let err = config::load(&dir.join("c.yml")).unwrap_err();
    assert_eq!(
        err.summary(),
        format!(
            "{}: the file is too large: more than 64 MiB; whitelist-audit reads at most that much (a whitelist of 100,000 entries takes about 6 MiB)",
            dir.join("c.yml").display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wla-config-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn aerleon_whitelists_are_their_targets_own_and_reread_on_reload() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.join("defs")).unwrap();
    let net = dir.join("defs/NETWORK.net");
    std::fs::write(&net, "VENDOR = 198.51.100.7  # host\n         203.0.113.0/28\n").unwrap();
    std::fs::write(
        dir.join("c.yml"),
        "global:\n  whitelist: {aerleon: defs, tokens: [VENDOR], ports: [2222]}\ntargets:\n  - {name: own, port: 22, static: [198.51.100.7], whitelist: {aerleon: defs, tokens: [VENDOR]}}\n  - {name: global, port: 990, static: [198.51.100.8]}\n",
    )
    .unwrap();
    let config = config::load(&dir.join("c.yml")).unwrap();
    let [own, global] = &config.targets[..] else {
        panic!("two targets")
    };
    // The own whitelist: the target's port, its entries probed as declared hosts.
    assert_eq!(
        config.whitelist.declared_hosts(own).into_iter().collect::<Vec<_>>(),
        [ip("198.51.100.7")]
    );
    assert!(config.whitelist.covers(own, ip("203.0.113.9")));
    // The global one: its `ports`, which are not the target's port; never probed as hosts.
    assert!(!config.whitelist.covers(global, ip("203.0.113.9")));
    assert!(config.whitelist.declared_hosts(global).is_empty());
    let first = &config.whitelist.entries[0];
    assert_eq!(config.whitelist.files[first.file], net);
    assert_eq!((first.line, first.comment.as_deref()), (1, Some("VENDOR: host")));
    assert_eq!(first.ports, [22]);

    // What a reload does: load again, and apply if it differs.
    std::fs::write(&net, "VENDOR = 198.51.100.9\n").unwrap();
    let reloaded = config::load(&dir.join("c.yml")).unwrap();
    assert!(
        !reloaded.same_as(&config),
        "a changed definition is a changed configuration"
    );
    assert!(!reloaded.whitelist.covers(&reloaded.targets[0], ip("203.0.113.9")));
}
