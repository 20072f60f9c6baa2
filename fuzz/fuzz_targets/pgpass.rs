//! Fuzz target: arbitrary bytes (read as lossy UTF-8) as a `.pgpass` file.
//! `PgPass::parse` and `lookup` must never panic. A line built here from the
//! input bytes (fields escaped as libpq expects) and put first must be the
//! one `lookup` returns, and the password on it must never show in the Debug
//! output or in the warnings, whatever the rest of the file holds.
//! Pure: no I/O here.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pggate::auth::pgpass::PgPass;

/// Marks the password of the built line. It is removed from every other
/// field and from the rest of the file, so if it appears in the Debug output
/// or in a warning, a password has leaked.
const MARK: char = '§';

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // The input as a whole file.
    let file = PgPass::parse(&text);
    check_file(&text, &file);
    // Lookups with keys taken from the input's own lines, split naively.
    for line in text.lines().take(8) {
        let mut f = line.split(':');
        let host = f.next().unwrap_or_default();
        let port = f.next().and_then(|p| p.parse().ok()).unwrap_or(5432);
        let database = f.next().unwrap_or_default();
        let user = f.next().unwrap_or_default();
        if let Some(password) = file.lookup(host, port, database, user) {
            // Whatever matched is a password from the file; a lookup is a
            // pure function of its keys.
            assert_eq!(file.lookup(host, port, database, user), Some(password));
        }
    }
    let _ = file.lookup("", 0, "", "");

    // A line built from the input, put in front of the rest of the input.
    let port = match data {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 5432,
    };
    let shape = data.last().map_or(0, |b| b % 3);
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|&c| c != MARK && c != '\n' && c != '\r')
            .collect()
    };
    let mut parts = text.splitn(5, '\0');
    let mut host = clean(parts.next().unwrap_or_default());
    let database = clean(parts.next().unwrap_or_default());
    let user = clean(parts.next().unwrap_or_default());
    let password = format!("{MARK}{}{MARK}", clean(parts.next().unwrap_or_default()));
    let rest = text.replace(MARK, "");
    if host.is_empty() {
        host = "localhost".to_owned();
    }
    let line = match shape {
        // hostname:port:database:username:password
        0 => format!(
            "{}:{port}:{}:{}:{}",
            escape(&host),
            escape(&database),
            escape(&user),
            escape(&password)
        ),
        // The same with a sixth field after the password.
        1 => format!(
            "{}:{port}:{}:{}:{}:{MARK}extra",
            escape(&host),
            escape(&database),
            escape(&user),
            escape(&password)
        ),
        // One field short: the last one is not a password, but must not show either.
        _ => format!(
            "{}:{port}:{}:{}",
            escape(&host),
            escape(&database),
            escape(&password)
        ),
    };
    let built = PgPass::parse(&format!("{line}\n{rest}"));
    check_file(&format!("{line}\n{rest}"), &built);

    let found = built.lookup(&host, port, &database, &user);
    if shape == 2 {
        // The short line is skipped with a warning naming line 1.
        assert!(built.warnings().iter().any(|w| w.starts_with("line 1:")));
    } else {
        assert_eq!(found, Some(password.as_str()), "line {line:?}");
        if host == "localhost" {
            assert_eq!(built.lookup("", port, &database, &user), found);
        }
        if shape == 1 {
            assert!(built.warnings().iter().any(|w| w.starts_with("line 1:")));
        }
    }

    let debug = format!("{built:?}");
    assert!(!debug.contains(MARK), "password in Debug output: {debug}");
    for warning in built.warnings() {
        assert!(!warning.contains(MARK), "password in a warning: {warning}");
    }
});

/// A field as libpq reads it back: `\` before `:` and `\`, and before a
/// leading `#` so the line is not taken for a comment.
fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len() + 2);
    for (i, c) in field.chars().enumerate() {
        if c == ':' || c == '\\' || (i == 0 && c == '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What holds for any parsed file.
fn check_file(text: &str, file: &PgPass) {
    let lines = text.split('\n').count();
    assert_eq!(file.is_empty(), matches!(file.len(), 0));
    // One entry and at most one warning per line.
    assert!(file.len() <= lines);
    assert!(file.warnings().len() <= lines);
    for warning in file.warnings() {
        let number = warning
            .strip_prefix("line ")
            .and_then(|w| w.split(':').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("warning without a line number: {warning}"));
        assert!((1..=lines).contains(&number), "{warning}");
    }
}
