//! SPEC §4 hints and `routing.reads`: what `wants_replica` decides for each
//! kind of statement. Pure: no I/O here.

use super::*;
use crate::sql::Hint;

fn hint_of(sql: &str) -> Option<Hint> {
    classify(sql, &[]).hint
}

#[test]
fn a_hint_comment_before_the_first_keyword_is_read() {
    let cases: &[(&str, Option<Hint>)] = &[
        ("/* pggate:primary */ SELECT 1", Some(Hint::Primary)),
        ("/* pggate:replica */ SELECT 1", Some(Hint::Replica)),
        ("/*pggate:replica*/SELECT 1", Some(Hint::Replica)),
        ("/*  PgGate : Primary  */ SELECT 1", Some(Hint::Primary)),
        ("/*\tpggate:REPLICA\n*/ SELECT 1", Some(Hint::Replica)),
        (
            "-- first\n/* pggate:replica */ SELECT 1",
            Some(Hint::Replica),
        ),
        (
            "/* other */ /* pggate:primary */ SELECT 1",
            Some(Hint::Primary),
        ),
        ("( /* pggate:replica */ SELECT 1)", Some(Hint::Replica)),
        (
            "/* pggate:replica */ /* pggate:primary */ SELECT 1",
            Some(Hint::Primary),
        ),
        (
            "/* pggate:primary */ /* pggate:replica */ SELECT 1",
            Some(Hint::Primary),
        ),
        (
            "/* pggate:replica */ INSERT INTO t VALUES (1)",
            Some(Hint::Replica),
        ),
    ];
    for &(sql, want) in cases {
        assert_eq!(hint_of(sql), want, "{sql:?}");
    }
}

#[test]
fn a_comment_that_is_not_a_hint_or_comes_too_late_is_ignored() {
    for sql in [
        "SELECT /* pggate:replica */ 1",
        "SELECT 1 /* pggate:primary */",
        "-- pggate:primary\nSELECT 1",
        "/* pggate:somewhere */ SELECT 1",
        "/* pggate primary */ SELECT 1",
        "/* pggate:primary please */ SELECT 1",
        "/* x pggate:primary */ SELECT 1",
        "/* /* pggate:primary */ */ SELECT 1",
        "SELECT '/* pggate:primary */'",
        "/* pggate:primary",
        "EXPLAIN /* pggate:primary */ SELECT 1",
    ] {
        assert_eq!(hint_of(sql), None, "{sql:?}");
    }
}

#[test]
fn a_primary_hint_sends_a_read_to_the_primary() {
    let c = classify("/* pggate:primary */ SELECT * FROM t", &[]);
    assert_eq!(c.kind, READ);
    assert!(!c.wants_replica(false));
    assert!(!c.wants_replica(true));
    assert!(!classify("/* pggate:primary */ BEGIN READ ONLY", &[]).wants_replica(false));
}

#[test]
fn a_replica_hint_sends_a_read_to_a_replica_even_when_reads_go_to_the_primary() {
    let c = classify("/* pggate:replica */ SELECT * FROM t", &[]);
    assert!(c.wants_replica(false));
    assert!(c.wants_replica(true));
    let c = classify("/* pggate:replica */ BEGIN READ ONLY", &[]);
    assert!(c.wants_replica(true));
}

#[test]
fn a_replica_hint_never_sends_a_write_unknown_pinning_or_read_write_begin_to_a_replica() {
    for sql in [
        "/* pggate:replica */ INSERT INTO t VALUES (1)",
        "/* pggate:replica */ SELECT * FROM t FOR UPDATE",
        "/* pggate:replica */ SELECT nextval('s')",
        "/* pggate:replica */ WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "/* pggate:replica */ COMMIT",
        "/* pggate:replica */ frobnicate",
        "/* pggate:replica */ SET search_path = app",
        "/* pggate:replica */ SELECT pg_advisory_lock(1)",
        "/* pggate:replica */ BEGIN",
        "/* pggate:replica */ START TRANSACTION READ WRITE",
        "/* pggate:replica */ CREATE TEMP TABLE t (id int)",
    ] {
        let c = classify(sql, &[]);
        assert!(!c.wants_replica(false), "{sql:?} went to a replica: {c:?}");
        assert!(!c.wants_replica(true), "{sql:?} went to a replica: {c:?}");
    }
}

#[test]
fn without_a_hint_reads_follow_routing_reads() {
    let read = classify("SELECT 1", &[]);
    assert!(read.wants_replica(false));
    assert!(!read.wants_replica(true));
    let ro = classify("BEGIN READ ONLY", &[]);
    assert!(ro.wants_replica(false));
    assert!(!ro.wants_replica(true));
    let write = classify("UPDATE t SET a = 1", &[]);
    assert!(!write.wants_replica(false));
    assert!(!write.wants_replica(true));
}

#[test]
fn the_hint_of_a_multi_statement_query_is_the_first_statements_unless_any_says_primary() {
    let cases: &[(&str, Option<Hint>)] = &[
        (
            "/* pggate:replica */ SELECT 1; SELECT 2",
            Some(Hint::Replica),
        ),
        ("SELECT 1; /* pggate:replica */ SELECT 2", None),
        (
            "/* pggate:replica */ SELECT 1; /* pggate:primary */ SELECT 2",
            Some(Hint::Primary),
        ),
        (
            "SELECT 1; /* pggate:primary */ SELECT 2",
            Some(Hint::Primary),
        ),
        ("; /* pggate:replica */ SELECT 1", Some(Hint::Replica)),
        ("/* pggate:replica */ ; SELECT 1", None),
    ];
    for &(sql, want) in cases {
        assert_eq!(hint_of(sql), want, "{sql:?}");
    }
    assert!(classify("/* pggate:replica */ SELECT 1; SELECT 2", &[]).wants_replica(true));
    assert!(!classify("/* pggate:replica */ SELECT 1; DELETE FROM t", &[]).wants_replica(true));
}
