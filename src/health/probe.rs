//! What one health probe asks a backend and how the answer is read: the
//! probe statement, its result row turned into a [`Probe`], and WAL
//! positions (`16/B374D848`) as numbers. Pure functions; no I/O here.

use std::time::Duration;

/// One statement per probe: role, WAL position (replay position on a
/// standby, current write position on a primary) and the age of the last
/// replayed transaction (NULL on a primary and on a standby that has not
/// replayed a transaction since it started). PostgreSQL 10 or later.
pub const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
     extract(epoch from now() - pg_last_xact_replay_timestamp())";

/// One backend's answer to [`PROBE_SQL`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// `pg_is_in_recovery()`: a standby.
    pub in_recovery: bool,
    /// Replay position (standby) or current WAL position (primary).
    pub lsn: Option<u64>,
    /// Time since the last replayed transaction committed; never negative
    /// (clock differences between hosts are clamped to zero).
    pub replay_age: Option<Duration>,
}

/// Reads the single row [`PROBE_SQL`] returns.
pub fn parse_probe(rows: &[Vec<Option<String>>]) -> Result<Probe, String> {
    let [row] = rows else {
        return Err(format!(
            "the probe returned {} rows instead of 1",
            rows.len()
        ));
    };
    let [in_recovery, lsn, age] = row.as_slice() else {
        return Err(format!(
            "the probe returned {} columns instead of 3",
            row.len()
        ));
    };
    let in_recovery = match in_recovery.as_deref() {
        Some("t") => true,
        Some("f") => false,
        other => return Err(format!("pg_is_in_recovery() returned {other:?}")),
    };
    let lsn = match lsn.as_deref() {
        None => None,
        Some(text) => Some(parse_lsn(text).ok_or_else(|| format!("invalid LSN {text:?}"))?),
    };
    let replay_age = match age.as_deref() {
        None => None,
        Some(text) => {
            Some(parse_seconds(text).ok_or_else(|| format!("invalid replay age {text:?}"))?)
        }
    };
    Ok(Probe {
        in_recovery,
        lsn,
        replay_age,
    })
}

/// Parses an LSN as PostgreSQL prints it, two hexadecimal halves of up to
/// eight digits each (`16/B374D848`), into a u64.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (high, low) = s.split_once('/')?;
    Some((u64::from(hex_u32(high)?) << 32) | u64::from(hex_u32(low)?))
}

fn hex_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// A number of seconds as `extract(epoch from interval)` prints it
/// (`1.234567`, `-0.5`, `12`); negative becomes zero.
fn parse_seconds(s: &str) -> Option<Duration> {
    // f64 parsing also accepts "inf" and "NaN", which PostgreSQL never
    // prints for an interval; refuse them rather than guess.
    let seconds: f64 = s.parse().ok().filter(|s: &f64| s.is_finite())?;
    Some(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[Option<&str>]) -> Vec<Vec<Option<String>>> {
        vec![cells.iter().map(|c| c.map(str::to_string)).collect()]
    }

    #[test]
    fn lsns_parse_like_postgresql_prints_them() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/3000148"), Some(0x300_0148));
        assert_eq!(parse_lsn("ffffffff/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
    }

    #[test]
    fn malformed_lsns_are_refused() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "16",
            "16:B374D848",
            "1/2/3",
            "+1/0",
            "1/-0",
            "123456789/0",
            "0/123456789",
            "g/0",
            " 1/0",
            "1/0 ",
            "1 /0",
            "０/0",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lsns_order_like_wal_positions() {
        assert!(parse_lsn("1/0") > parse_lsn("0/FFFFFFFF"));
        assert!(parse_lsn("0/3000148") > parse_lsn("0/3000060"));
    }

    #[test]
    fn a_primary_row_is_read() {
        let probe = parse_probe(&row(&[Some("f"), Some("0/3000148"), None])).unwrap();
        assert_eq!(
            probe,
            Probe {
                in_recovery: false,
                lsn: Some(0x300_0148),
                replay_age: None,
            }
        );
    }

    #[test]
    fn a_standby_row_is_read() {
        let probe = parse_probe(&row(&[Some("t"), Some("1/0"), Some("2.500000")])).unwrap();
        assert_eq!(
            probe,
            Probe {
                in_recovery: true,
                lsn: Some(1 << 32),
                replay_age: Some(Duration::from_millis(2500)),
            }
        );
        let skewed = parse_probe(&row(&[Some("t"), None, Some("-0.25")])).unwrap();
        assert_eq!(skewed.replay_age, Some(Duration::ZERO));
        assert_eq!(skewed.lsn, None);
        let huge = parse_probe(&row(&[Some("t"), None, Some("1e300")])).unwrap();
        assert_eq!(huge.replay_age, Some(Duration::MAX));
    }

    #[test]
    fn malformed_probe_results_are_errors() {
        assert!(parse_probe(&[]).is_err());
        assert!(parse_probe(&[vec![], vec![]]).is_err());
        assert!(parse_probe(&row(&[Some("t"), None])).is_err());
        assert!(parse_probe(&row(&[None, None, None])).is_err());
        assert!(parse_probe(&row(&[Some("true"), None, None])).is_err());
        assert!(parse_probe(&row(&[Some("f"), Some("zz"), None])).is_err());
        assert!(parse_probe(&row(&[Some("t"), None, Some("NaN")])).is_err());
        assert!(parse_probe(&row(&[Some("t"), None, Some("inf")])).is_err());
        assert!(parse_probe(&row(&[Some("t"), None, Some("soon")])).is_err());
    }
}
