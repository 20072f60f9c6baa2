//! Duration and size strings as written in the configuration file
//! (`"250ms"`, `"10m"`, `"64MiB"`). Pure functions: no I/O, no panics, and
//! every error says what was expected.

use std::time::Duration;

/// Longest accepted duration: 100 years. Anything longer is surely a typo, and
/// the cap keeps `Instant::now() + duration` from ever overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

const DURATION_EXAMPLES: &str =
    "a number with a unit, such as \"250ms\", \"5s\", \"10m\" or \"1h\"";

/// Parse a duration such as `"250ms"`, `"5s"`, `"10m"`, `"1h"`, `"1h 30m"`
/// or `"0s"` (humantime syntax; a bare `"0"` is also accepted).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty duration; expected {DURATION_EXAMPLES}"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) && text.bytes().any(|b| b != b'0') {
        return Err(format!(
            "duration {s:?} has no unit; expected {DURATION_EXAMPLES}"
        ));
    }
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("invalid duration {s:?} ({err}); expected {DURATION_EXAMPLES}"))?;
    if duration > MAX_DURATION {
        return Err(format!("duration {s:?} is too long; at most 100 years"));
    }
    Ok(duration)
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

const SIZE_EXAMPLES: &str =
    "a whole number of bytes with an optional unit B, KiB, MiB, GiB, TiB (powers of 1024) \
     or KB, MB, GB, TB (powers of 1000), such as \"64KiB\" or \"64MiB\"";

/// Parse a size in bytes such as `"512B"`, `"64KiB"`, `"64MiB"`, `"1GiB"`,
/// `"10MB"` or `"1024"`. Units are case-insensitive; KiB/MiB/GiB/TiB are
/// powers of 1024, KB/MB/GB/TB powers of 1000.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let text = s.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("invalid size {s:?}; expected {SIZE_EXAMPLES}"));
    }
    let unit = unit.trim_start();
    let multiplier = SIZE_UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|&(_, multiplier)| multiplier)
        .ok_or_else(|| format!("invalid size {s:?}; expected {SIZE_EXAMPLES}"))?;
    let too_large = || format!("size {s:?} is too large");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    let bytes = number.checked_mul(multiplier).ok_or_else(too_large)?;
    usize::try_from(bytes).map_err(|_| too_large())
}
