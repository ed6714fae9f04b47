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
        "invalid-static-address.yml",
        "3:14: targets[0].static[0]: invalid address or CIDR `198.51.100.300`: write 198.51.100.7, 198.51.100.0/28 or 2001:db8::/64",
    ),
    (
        "missing-whitelist.yml",
        "2:14: global.whitelist: cannot read whitelist `tests/fixtures/invalid/does-not-exist.yml`: No such file or directory (os error 2)",
    ),
    ("no-targets.yml", ": targets: no targets: list at least one"),
    (
        "static-prefix.yml",
        "3:14: targets[0].static[0]: `198.51.100.0/28` is a prefix: `static` takes single addresses (198.51.100.7)",
    ),
    (
        "target-without-addresses.yml",
        "2:11: targets[0]: target `a` has no addresses: set `host`, `static` or `published`",
    ),
    (
        "unknown-key.yml",
        "2:3: global.intervall: unknown field `intervall`, expected one of interval, timeout, attempts, retry_delay, concurrency, per_target_concurrency, resolvers, whitelist, state_dir, max_probe_addresses_per_prefix",
    ),
    (
        "unknown-target-key.yml",
        "3:5: targets[0].hostname: unknown field `hostname`, expected one of name, host, port, check, resolvers, address_families, dns_queries, dns_retention, static, whitelist, published",
    ),
    (
        "wrong-type.yml",
        "2:13: global.attempts: invalid count `three`: write a whole number from 1 to 1000000000",
    ),
    ("yaml-syntax.yml", "3:11: targets[0]: unclosed quote"),
    (
        "yaml-tab.yml",
        "2:2: tabs disallowed within this context (block indentation)",
    ),
    (
        "zero-concurrency.yml",
        "2:16: global.concurrency: invalid count 0: write a whole number from 1 to 1000000000",
    ),
    ("zero-interval.yml", "2:13: global.interval: must be greater than zero"),
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
        "wl-unknown-key.yml",
        "3:5: allow[0].port: unknown field `port`, expected one of addresses, ports, target, comment",
    ),
    (
        "wl-unknown-target.yml",
        "4:13: allow[0].target: unknown target `vendor-stfp` (targets: vendor-sftp)",
    ),
];

#[test]
fn every_invalid_config_is_refused_with_its_message() {
    let dir = Path::new("tests/fixtures/invalid");
    for (file, expected) in INVALID {
        let path = dir.join(file);
        let err = config::load(&path).expect_err(file);
        let prefix = if expected.starts_with(':') {
            path.display().to_string()
        } else {
            format!("{}:", path.display())
        };
        assert_eq!(err.summary(), format!("{prefix}{expected}"), "{file}");
    }
    for (file, expected) in INVALID_WHITELIST {
        let path = dir.join(file);
        let whitelist = dir.join(file.replace(".yml", ".whitelist.yml"));
        let err = config::load(&path).expect_err(file);
        assert_eq!(err.summary(), format!("{}:{expected}", whitelist.display()), "{file}");
    }
}

#[test]
fn every_invalid_fixture_is_in_a_table() {
    let listed: Vec<&str> = INVALID.iter().chain(INVALID_WHITELIST).map(|(f, _)| *f).collect();
    for entry in std::fs::read_dir("tests/fixtures/invalid").unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".whitelist.yml") || name == "ok-whitelist.yml" {
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
    assert!(sftp.static_addresses.contains(&ip("198.51.100.7")));

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
    assert_eq!(t.whitelist_file, None, "no whitelist declared");
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
