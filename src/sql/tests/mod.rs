//! Table tests for the SQL module, one file per promise of SPEC §3 and §4.
//! Pure: no I/O here.

mod deallocate;
mod hints;
mod lexer;
mod multi;
mod no_panic;
mod pinning;
mod quoting;
mod routing;

use super::{classify, Kind, PinReason};

pub(super) const READ: Kind = Kind::Read;
pub(super) const WRITE: Kind = Kind::Write;
pub(super) const UNKNOWN: Kind = Kind::Unknown;
pub(super) const BEGIN_RO: Kind = Kind::Begin { read_only: true };
pub(super) const BEGIN_RW: Kind = Kind::Begin { read_only: false };

/// Every query in `cases` is classified as the given kind.
#[track_caller]
pub(super) fn assert_kinds(cases: &[(&str, Kind)]) {
    assert_kinds_with(cases, &[]);
}

/// As [`assert_kinds`], with `routing.write_functions`.
#[track_caller]
pub(super) fn assert_kinds_with(cases: &[(&str, Kind)], write_functions: &[String]) {
    for &(sql, want) in cases {
        let got = classify(sql, write_functions);
        assert_eq!(got.kind, want, "classify({sql:?}) = {got:?}");
    }
}

/// Every query in `cases` pins (or not) for the given reason.
#[track_caller]
pub(super) fn assert_pins(cases: &[(&str, Option<PinReason>)]) {
    for &(sql, want) in cases {
        let got = classify(sql, &[]);
        assert_eq!(got.pin, want, "classify({sql:?}) = {got:?}");
        if want.is_some() {
            assert!(
                !got.wants_replica(false),
                "a pinning statement went to a replica: {sql:?}"
            );
        }
    }
}

/// Every query in `cases` may (or may not) go to a replica with default
/// routing (`routing.reads = "replicas"`).
#[track_caller]
pub(super) fn assert_routes(cases: &[(&str, bool)]) {
    for &(sql, replica) in cases {
        let got = classify(sql, &[]);
        assert_eq!(
            got.wants_replica(false),
            replica,
            "classify({sql:?}) = {got:?}"
        );
    }
}
