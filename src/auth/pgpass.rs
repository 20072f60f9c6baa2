//! Credentials files in libpq's `.pgpass` format, with libpq's rules:
//! `hostname:port:database:username:password` per line, `#` comment lines and
//! blank lines skipped, `\:` and `\\` escapes in every field, a field that is
//! exactly `*` matching anything in the first four, and the first matching
//! line winning. Lines libpq would silently never match are reported as
//! warnings instead. Reading the file is the only I/O; passwords never
//! appear in Debug output or warnings.

use std::fmt;
use std::io;
use std::path::Path;

/// Fields on a complete line.
const FIELD_COUNT: usize = 5;
/// Host libpq looks up when none is given.
const DEFAULT_HOST: &str = "localhost";

/// A parsed credentials file.
#[derive(Clone, Default)]
pub struct PgPass {
    entries: Vec<Entry>,
    warnings: Vec<String>,
}

#[derive(Clone)]
struct Entry {
    line: usize,
    host: Pattern,
    port: Pattern,
    database: Pattern,
    user: Pattern,
    password: String,
}

/// One of the first four fields of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// The field was exactly `*` (unescaped).
    Any,
    Exact(String),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(expected) => expected == value,
        }
    }
}

impl PgPass {
    /// Parses the text of a credentials file. Never fails: lines that cannot
    /// match are skipped and described in [`warnings`](Self::warnings).
    pub fn parse(text: &str) -> PgPass {
        PgPass::parse_bytes(text.as_bytes())
    }

    /// Reads and parses the credentials file at `path`. Errors (naming the
    /// path) if it cannot be read or is not a regular file. On Unix, a file
    /// readable by group or others is still used, with a warning: libpq would
    /// ignore it.
    pub fn load(path: &Path) -> io::Result<PgPass> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let metadata = std::fs::metadata(path).map_err(with_path)?;
        if !metadata.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file", path.display()),
            ));
        }
        let bytes = std::fs::read(path).map_err(with_path)?;
        let mut pgpass = PgPass::parse_bytes(&bytes);
        pgpass.warnings = permission_warning(&metadata)
            .into_iter()
            .chain(pgpass.warnings)
            .map(|w| format!("{}: {w}", path.display()))
            .collect();
        Ok(pgpass)
    }

    /// Problems found while parsing, one per skipped or suspicious line, each
    /// naming its line number. Never contains a password.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The password of the first line matching all four keys, as libpq would
    /// choose it. An empty `host` means `localhost`, as in libpq; a Unix
    /// socket directory must be passed as the host name libpq would use
    /// (`localhost` for the default socket directory). A matching line with
    /// an empty password yields `Some("")`.
    pub fn lookup(&self, host: &str, port: u16, database: &str, user: &str) -> Option<&str> {
        let host = if host.is_empty() { DEFAULT_HOST } else { host };
        let port = port.to_string();
        self.entries
            .iter()
            .find(|e| {
                e.host.matches(host)
                    && e.port.matches(&port)
                    && e.database.matches(database)
                    && e.user.matches(user)
            })
            .map(|e| e.password.as_str())
    }

    /// Number of usable lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no line is usable.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn parse_bytes(bytes: &[u8]) -> PgPass {
        let mut pgpass = PgPass::default();
        for (index, raw_line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_number = index + 1;
            let Ok(line) = std::str::from_utf8(raw_line) else {
                pgpass
                    .warnings
                    .push(format!("line {line_number}: not valid UTF-8; line ignored"));
                continue;
            };
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_fields(line);
            if fields.len() < FIELD_COUNT {
                pgpass.warnings.push(format!(
                    "line {line_number}: expected {FIELD_COUNT} ':'-separated fields \
                     (hostname:port:database:username:password), found {}; line ignored",
                    fields.len()
                ));
                continue;
            }
            if fields.len() > FIELD_COUNT {
                pgpass.warnings.push(format!(
                    "line {line_number}: more than {FIELD_COUNT} ':'-separated fields; \
                     the password ends at the first unescaped ':' (write ':' as '\\:')"
                ));
            }
            let mut fields = fields.into_iter();
            let mut next_pattern = || fields.next().map(Field::into_pattern);
            let (Some(host), Some(port), Some(database), Some(user), Some(password)) = (
                next_pattern(),
                next_pattern(),
                next_pattern(),
                next_pattern(),
                next_pattern(),
            ) else {
                continue;
            };
            let password = match password {
                Pattern::Any => "*".to_owned(),
                Pattern::Exact(password) => password,
            };
            pgpass.entries.push(Entry {
                line: line_number,
                host,
                port,
                database,
                user,
                password,
            });
        }
        pgpass
    }
}

/// A field with its escapes resolved.
struct Field {
    value: String,
    escaped: bool,
}

impl Field {
    fn into_pattern(self) -> Pattern {
        if self.value == "*" && !self.escaped {
            Pattern::Any
        } else {
            Pattern::Exact(self.value)
        }
    }
}

/// Splits a line on unescaped `:`. A backslash makes the next character
/// literal; a trailing lone backslash is kept, as libpq keeps it.
fn split_fields(line: &str) -> Vec<Field> {
    let mut fields = Vec::with_capacity(FIELD_COUNT);
    let mut current = Field {
        value: String::new(),
        escaped: false,
    };
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => {
                    current.value.push(next);
                    current.escaped = true;
                }
                None => current.value.push('\\'),
            },
            ':' => fields.push(std::mem::replace(
                &mut current,
                Field {
                    value: String::new(),
                    escaped: false,
                },
            )),
            _ => current.value.push(c),
        }
    }
    fields.push(current);
    fields
}

#[cfg(unix)]
fn permission_warning(metadata: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "has group or world access (mode {:o}); permissions should be u=rw (0600) or less",
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
fn permission_warning(_metadata: &std::fs::Metadata) -> Option<String> {
    None
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("line", &self.line)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for PgPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPass")
            .field("entries", &self.entries)
            .field("warnings", &self.warnings)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_line_matches_all_four_fields() {
        let pgpass = PgPass::parse("db1.example:5432:app:alice:s3cret\n");
        assert_eq!(
            pgpass.lookup("db1.example", 5432, "app", "alice"),
            Some("s3cret")
        );
        assert_eq!(pgpass.lookup("db2.example", 5432, "app", "alice"), None);
        assert_eq!(pgpass.lookup("db1.example", 5433, "app", "alice"), None);
        assert_eq!(pgpass.lookup("db1.example", 5432, "other", "alice"), None);
        assert_eq!(pgpass.lookup("db1.example", 5432, "app", "bob"), None);
        assert!(pgpass.warnings().is_empty());
        assert_eq!(pgpass.len(), 1);
    }

    #[test]
    fn star_matches_anything_in_the_first_four_fields() {
        let pgpass = PgPass::parse("*:*:*:*:any\n");
        assert_eq!(pgpass.lookup("h", 1, "d", "u"), Some("any"));
        let pgpass = PgPass::parse("*:5432:*:alice:pw\n");
        assert_eq!(
            pgpass.lookup("replica-3", 5432, "sales", "alice"),
            Some("pw")
        );
        assert_eq!(pgpass.lookup("replica-3", 6432, "sales", "alice"), None);
    }

    #[test]
    fn star_is_a_wildcard_only_as_a_whole_unescaped_field() {
        let pgpass =
            PgPass::parse("db*:5432:app:alice:a\n\\*:5432:app:bob:b\nh:5432:app:carol:*\n");
        assert_eq!(pgpass.lookup("db1", 5432, "app", "alice"), None);
        assert_eq!(pgpass.lookup("db*", 5432, "app", "alice"), Some("a"));
        assert_eq!(pgpass.lookup("h", 5432, "app", "bob"), None);
        assert_eq!(pgpass.lookup("*", 5432, "app", "bob"), Some("b"));
        assert_eq!(pgpass.lookup("h", 5432, "app", "carol"), Some("*"));
    }

    #[test]
    fn first_matching_line_wins() {
        let pgpass = PgPass::parse(
            "db1:5432:app:alice:specific\n*:*:*:alice:generic\ndb1:5432:app:alice:shadowed\n",
        );
        assert_eq!(pgpass.lookup("db1", 5432, "app", "alice"), Some("specific"));
        assert_eq!(pgpass.lookup("db2", 5432, "app", "alice"), Some("generic"));
    }

    #[test]
    fn escapes_work_in_every_field() {
        let pgpass = PgPass::parse(
            "fe80\\:\\:1:5432:my\\\\db:us\\:er:pa\\:ss\\\\word\\:\n\
             h:5432:d:u:\\p\\a\\s\\s\n",
        );
        assert_eq!(
            pgpass.lookup("fe80::1", 5432, "my\\db", "us:er"),
            Some("pa:ss\\word:")
        );
        assert_eq!(pgpass.lookup("h", 5432, "d", "u"), Some("pass"));
        assert!(pgpass.warnings().is_empty());
    }

    #[test]
    fn trailing_lone_backslash_is_kept() {
        let pgpass = PgPass::parse("h:5432:d:u:pass\\");
        assert_eq!(pgpass.lookup("h", 5432, "d", "u"), Some("pass\\"));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let pgpass =
            PgPass::parse("# production\n\n#h:5432:d:u:commented\r\n\r\nh:5432:d:u:real\r\n");
        assert_eq!(pgpass.lookup("h", 5432, "d", "u"), Some("real"));
        assert_eq!(pgpass.lookup("#h", 5432, "d", "u"), None);
        assert!(pgpass.warnings().is_empty());
        assert_eq!(pgpass.len(), 1);
    }

    #[test]
    fn short_lines_are_ignored_with_a_warning_naming_the_line() {
        let pgpass = PgPass::parse("# header\nh:5432:d:u\nh:5432:d:u:pw\n  \nonly-a-host\n");
        assert_eq!(pgpass.lookup("h", 5432, "d", "u"), Some("pw"));
        assert_eq!(pgpass.warnings().len(), 3, "{:?}", pgpass.warnings());
        assert!(pgpass.warnings()[0].starts_with("line 2:"));
        assert!(pgpass.warnings()[0].contains("found 4"));
        assert!(pgpass.warnings()[1].starts_with("line 4:"));
        assert!(pgpass.warnings()[2].starts_with("line 5:"));
    }

    #[test]
    fn extra_fields_are_ignored_after_the_password_with_a_warning() {
        let pgpass = PgPass::parse("h:5432:d:u:pass:xyzzy\n");
        assert_eq!(pgpass.lookup("h", 5432, "d", "u"), Some("pass"));
        assert_eq!(pgpass.warnings().len(), 1);
        assert!(pgpass.warnings()[0].starts_with("line 1:"));
        assert!(!pgpass.warnings()[0].contains("xyzzy"));
    }

    #[test]
    fn empty_password_is_returned_as_empty() {
        let pgpass = PgPass::parse("h:5432:d:u:\n");
        assert_eq!(pgpass.lookup("h", 5432, "d", "u"), Some(""));
    }

    #[test]
    fn empty_host_means_localhost() {
        let pgpass = PgPass::parse("localhost:5432:d:u:pw\n");
        assert_eq!(pgpass.lookup("", 5432, "d", "u"), Some("pw"));
    }

    #[test]
    fn port_is_compared_as_its_decimal_text() {
        let pgpass = PgPass::parse("h:05432:d:u:padded\nh:5432:d:u:plain\n");
        assert_eq!(pgpass.lookup("h", 5432, "d", "u"), Some("plain"));
    }

    #[test]
    fn non_utf8_lines_are_skipped_with_a_warning() {
        let pgpass = PgPass::parse_bytes(b"h:5432:d:u:\xff\xfe\nh:5432:d:v:ok\n");
        assert_eq!(pgpass.lookup("h", 5432, "d", "u"), None);
        assert_eq!(pgpass.lookup("h", 5432, "d", "v"), Some("ok"));
        assert_eq!(pgpass.warnings().len(), 1);
        assert!(pgpass.warnings()[0].starts_with("line 1:"));
    }

    #[test]
    fn debug_output_redacts_passwords() {
        let pgpass = PgPass::parse("h:5432:d:u:hunter2\nshort:line:with:hunter3\n");
        let rendered = format!("{pgpass:?}");
        assert!(!rendered.contains("hunter2"), "{rendered}");
        assert!(!rendered.contains("hunter3"), "{rendered}");
        assert!(rendered.contains("<redacted>"), "{rendered}");
        assert!(rendered.contains("Exact(\"h\")"), "{rendered}");
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_warnings() {
        let dir = std::env::temp_dir().join(format!("pggate-pgpass-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("pgpass");
        std::fs::write(&path, "h:5432:d:u:pw\nbad line\n").expect("write temp file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let pgpass = PgPass::load(&path).expect("readable file");
        assert_eq!(pgpass.lookup("h", 5432, "d", "u"), Some("pw"));
        assert_eq!(pgpass.warnings().len(), 1, "{:?}", pgpass.warnings());
        assert!(pgpass.warnings()[0].starts_with(&format!("{}: line 2:", path.display())));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let pgpass = PgPass::load(&path).expect("readable file");
            assert!(pgpass.warnings()[0].contains("group or world access"));
            assert_eq!(pgpass.lookup("h", 5432, "d", "u"), Some("pw"));
        }

        let missing = dir.join("missing");
        let err = PgPass::load(&missing).expect_err("missing file");
        assert!(err.to_string().contains("missing"), "{err}");
        let err = PgPass::load(&dir).expect_err("a directory is not a credentials file");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        std::fs::remove_dir_all(&dir).expect("clean up temp dir");
    }
}
