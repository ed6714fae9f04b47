//! The aerleon definitions reader checked by aerleon itself: aerleon from `PyPI` (the venv
//! `.ci/deps` makes) resolves the same tokens of `tests/fixtures/aerleon/`, and `check --output
//! json` must list exactly those addresses as whitelist entries. Only 127.0.0.1 is ever probed:
//! the whitelist is the global one, which belongs to no target, so none of its documentation
//! addresses is probed as a declared host.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_whitelist-audit");
/// Made by `.ci/deps` (`make_venv ... aerleon==1.18.0 ...`).
const AERLEON_VENV: &str = "/opt/whitelist-audit-test/aerleon-venv";
/// A token of the `.net` file, and one defined only in the YAML file that nests `.net` tokens.
const TOKENS: &[&str] = &["MONITORING", "PARTNERS"];

/// The venv's python, if the venv is there. In CI a missing venv is a failure, never a skip.
fn aerleon_python(test: &str) -> Option<PathBuf> {
    let python = Path::new(AERLEON_VENV).join("bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: no aerleon venv at {AERLEON_VENV}; CI must run this test (bash .ci/deps)"
    );
    eprintln!("\n!!! SKIPPED {test}: no aerleon venv at {AERLEON_VENV}. Run `bash .ci/deps` to exercise it. !!!\n");
    None
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aerleon")
}

/// What aerleon's `Naming(dir).GetNet(token)` returns for `tokens`, as entry labels (a bare
/// address for a host prefix, as whitelist-audit writes them).
fn aerleon_resolves(python: &Path, dir: &Path, tokens: &[&str]) -> BTreeSet<String> {
    let script = "\
import sys
from aerleon.lib import naming
definitions = naming.Naming(sys.argv[1])
for token in sys.argv[2:]:
    for net in definitions.GetNet(token):
        print(net.network_address if net.prefixlen == net.max_prefixlen else net.with_prefixlen)
";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(dir)
        .args(tokens)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aerleon failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn whitelist_entries_are_what_aerleon_resolves() {
    let Some(python) = aerleon_python("whitelist_entries_are_what_aerleon_resolves") else {
        return;
    };
    let expected = aerleon_resolves(&python, &fixtures(), TOKENS);
    // The fixture exercises what it should: a YAML-only token nesting `.net` tokens, host bits
    // aerleon clears, IPv6, and a prefix written twice.
    for label in [
        "203.0.113.128/25",
        "198.51.100.64/28",
        "2001:db8:10::/48",
        "2001:db8:20::7",
        "203.0.113.10",
    ] {
        assert!(expected.contains(label), "aerleon resolves {label}: {expected:?}");
    }

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("wla-aerleon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("aerleon.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  timeout: 1s\n  attempts: 1\n  state_dir: state\n  whitelist: {{aerleon: {}, tokens: [{}]}}\ntargets:\n  - {{name: vendor, check: tcp, port: {port}, static: [127.0.0.1]}}\n",
            fixtures().display(),
            TOKENS.join(", ")
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config.file", config.to_str().unwrap(), "--output", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "no JSON ({err}): status {:?}, stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);

    let entries = report["whitelist_entries"].as_array().unwrap();
    let got: BTreeSet<String> = entries
        .iter()
        .map(|e| e["entry"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected, "whitelist-audit vs aerleon for {TOKENS:?}");
    assert!(
        entries.iter().all(|e| e["port"] == port),
        "every entry on the target's port: {entries:?}"
    );
    let probed: Vec<&str> = report["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap())
        .collect();
    assert_eq!(probed, ["127.0.0.1"], "nothing but loopback is probed");
    assert_eq!(
        report["addresses"][0]["probe"]["state"], "open",
        "the target was probed: {report}"
    );
}
