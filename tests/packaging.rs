//! Packaging checks that need no PostgreSQL: the manual pages are clean roff
//! and describe every configuration key, the systemd unit carries the
//! directives the package relies on, and the shipped example configuration
//! passes `pggate --check`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const MAN_PAGES: &[&str] = &["man/pggate.8", "man/pggate.toml.5"];

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn man_pages_are_clean_under_mandoc_lint() {
    for page in MAN_PAGES {
        let output = match Command::new("mandoc")
            .arg("-Tlint")
            .arg(repo_path(page))
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "mandoc is not installed, so the manual pages cannot be checked; \
                 install it (Debian: apt-get install mandoc) and run the tests again"
            ),
            Err(e) => panic!("cannot run mandoc: {e}"),
        };
        let messages = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && messages.trim().is_empty(),
            "mandoc -Tlint {page} is not clean ({}):\n{messages}",
            output.status
        );
    }
}

/// Every `(section, key)` of config/pggate.toml, commented-out examples
/// included (`# name = "replica1"` under `# [[backends]]`).
fn example_keys() -> BTreeSet<(String, String)> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in read("config/pggate.toml").lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.trim_start_matches('[');
            if let Some(end) = name.find(']') {
                section = name[..end].trim().to_string();
            }
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.insert((section.clone(), key.to_string()));
        }
    }
    keys
}

#[test]
fn the_key_list_covers_the_parsed_example() {
    // Guards the line-based reader above: every key TOML itself finds in the
    // uncommented file must be in the list.
    let keys = example_keys();
    let table: toml::Table = read("config/pggate.toml")
        .parse()
        .expect("config/pggate.toml is valid TOML");
    for (section, value) in &table {
        let tables: Vec<&toml::Table> = match value {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(items) => items.iter().filter_map(|i| i.as_table()).collect(),
            other => panic!("unexpected top-level value {section} = {other}"),
        };
        for t in tables {
            for key in t.keys() {
                assert!(
                    keys.contains(&(section.clone(), key.clone())),
                    "{section}.{key} was missed by the key reader"
                );
            }
        }
    }
    assert!(
        keys.len() >= 40,
        "only {} keys read from config/pggate.toml",
        keys.len()
    );
}

/// The lines of the `.SS` subsection whose title is `[section]` or
/// `[[section]]`, up to the next `.SS` or `.SH`.
fn man_subsection<'a>(lines: &[&'a str], section: &str) -> Vec<&'a str> {
    let titles = [
        format!(".SS [{section}]"),
        format!(".SS [[{section}]]"),
        format!(".SS \\%[{section}]"),
        format!(".SS \\%[[{section}]]"),
    ];
    let Some(start) = lines
        .iter()
        .position(|l| titles.iter().any(|t| l.trim_end() == t))
    else {
        return Vec::new();
    };
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with(".SS") && !l.starts_with(".SH"))
        .copied()
        .collect()
}

#[test]
fn pggate_toml_5_documents_every_key_with_its_reload_behaviour() {
    let page = read("man/pggate.toml.5");
    let lines: Vec<&str> = page.lines().collect();
    let mut missing = Vec::new();
    for (section, key) in example_keys() {
        let body = man_subsection(&lines, &section);
        if body.is_empty() {
            missing.push(format!(
                "no \".SS [{section}]\" subsection (for {section}.{key})"
            ));
            continue;
        }
        // Each key is a `.TP` entry whose tag is `.B key = default`.
        let tags = [format!(".B {key} = "), format!(".B \\%{key} = ")];
        let Some(at) = body
            .iter()
            .position(|l| tags.iter().any(|t| l.starts_with(t.as_str())))
        else {
            missing.push(format!("{section}.{key}: no \".B {key} = default\" entry"));
            continue;
        };
        let entry: Vec<&str> = body[at + 1..]
            .iter()
            .take_while(|l| !l.starts_with(".TP") && !l.starts_with(".PP"))
            .copied()
            .collect();
        if !entry.iter().any(|l| l.starts_with("Reload: ")) {
            missing.push(format!(
                "{section}.{key}: the entry does not say \"Reload: yes\" or \"Reload: no\""
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "man/pggate.toml.5 is missing:\n{}",
        missing.join("\n")
    );
}

#[test]
fn pggate_8_covers_the_required_sections() {
    let page = read("man/pggate.8");
    for section in [
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH SIGNALS",
        ".SH FILES",
        ".SH EXIT STATUS",
        ".SH EXAMPLES",
        ".SH SEE ALSO",
    ] {
        assert!(page.contains(section), "man/pggate.8 has no {section}");
    }
    for signal in ["SIGHUP", "SIGTERM", "SIGINT"] {
        assert!(
            page.contains(signal),
            "man/pggate.8 does not describe {signal}"
        );
    }
}

#[test]
fn pggate_8_describes_every_metric() {
    let page = read("man/pggate.8");
    let missing: Vec<&str> = pggate::ops::metrics::names::ALL
        .iter()
        .filter(|name| !page.contains(&format!("\\%{name}")))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "man/pggate.8 has no entry for {missing:?}"
    );
}

/// The `Key=value` assignments of a unit file, comments left out.
fn unit_directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_systemd_unit_has_the_required_directives() {
    let text = read("config/pggate.service");
    let directives = unit_directives(&text);
    let value = |key: &str| -> Option<&str> {
        directives
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let expected = [
        ("Type", "notify"),
        ("ExecStart", "/usr/bin/pggate --config /etc/pggate.toml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("User", "pggate"),
        ("Group", "pggate"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("WantedBy", "multi-user.target"),
    ];
    for (key, want) in expected {
        assert_eq!(
            value(key),
            Some(want),
            "config/pggate.service: expected {key}={want}"
        );
    }
    assert!(
        !directives.iter().any(|(k, _)| k == "AmbientCapabilities"),
        "config/pggate.service must grant no ambient capabilities by default"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with('#')
                && l.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE")),
        "config/pggate.service should explain AmbientCapabilities=CAP_NET_BIND_SERVICE in a comment"
    );
    // proxy.max_clients defaults to 10000; each client may hold a backend
    // connection too.
    let nofile: u64 = value("LimitNOFILE")
        .expect("config/pggate.service sets LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    assert!(
        nofile >= 20_000,
        "LimitNOFILE={nofile} is too low for 10000 clients plus their backend connections"
    );
}

#[test]
fn the_example_configuration_passes_check() {
    let output = Command::new(env!("CARGO_BIN_EXE_pggate"))
        .args(["--check", "--config"])
        .arg(repo_path("config/pggate.toml"))
        .output()
        .expect("run pggate --check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pggate --check failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "configuration ok");
}
