//! SPEC §4: a simple Query holding several statements goes to the primary if
//! any of them would. Pure: no I/O here.

use super::*;
use crate::sql::PinReason;

#[test]
fn several_reads_are_a_read() {
    assert_kinds(&[
        ("SELECT 1; SELECT 2", READ),
        ("SELECT 1; VALUES (2); TABLE t; SHOW work_mem;", READ),
        ("select 1;;; select 2;", READ),
    ]);
    assert_eq!(classify("SELECT 1; SELECT 2", &[]).statements, 2);
    assert_eq!(classify("select 1;;; select 2;", &[]).statements, 2);
    assert_eq!(classify("SELECT 1; -- trailing\n", &[]).statements, 1);
}

#[test]
fn any_write_makes_the_query_a_write() {
    assert_kinds(&[
        ("SELECT 1; INSERT INTO t VALUES (1)", WRITE),
        ("INSERT INTO t VALUES (1); SELECT 1", WRITE),
        ("SELECT 1; SELECT nextval('s')", WRITE),
        ("SELECT 1; SELECT * FROM t FOR SHARE", WRITE),
        ("BEGIN READ ONLY; SELECT 1; UPDATE t SET a = 1", WRITE),
        ("COMMIT; DELETE FROM t", WRITE),
        ("DELETE FROM t; frobnicate", WRITE),
    ]);
    assert_routes(&[("SELECT 1; INSERT INTO t VALUES (1)", false)]);
}

#[test]
fn any_unknown_statement_sends_the_query_to_the_primary() {
    assert_kinds(&[
        ("SELECT 1; COMMIT", UNKNOWN),
        ("BEGIN; SELECT 1; COMMIT", UNKNOWN),
        ("SELECT 1; frobnicate", UNKNOWN),
        ("SELECT 1; 42", UNKNOWN),
    ]);
    assert_routes(&[("BEGIN READ ONLY; SELECT 1; COMMIT", false)]);
}

#[test]
fn a_begin_among_reads_decides_the_route() {
    assert_kinds(&[
        ("BEGIN READ ONLY; SELECT 1", BEGIN_RO),
        ("SELECT 1; BEGIN READ ONLY", BEGIN_RO),
        ("BEGIN; SELECT 1", BEGIN_RW),
        ("SELECT 1; BEGIN", BEGIN_RW),
        ("BEGIN READ ONLY; BEGIN", BEGIN_RW),
    ]);
    assert_routes(&[
        ("BEGIN READ ONLY; SELECT 1", true),
        ("SELECT 1; BEGIN", false),
    ]);
}

#[test]
fn the_first_pin_reason_of_any_statement_is_reported() {
    let c = classify("SELECT 1; SET search_path = app; LISTEN ch", &[]);
    assert_eq!(c.pin, Some(PinReason::Set));
    assert_eq!(c.kind, WRITE);
    assert_eq!(c.statements, 3);
    let c = classify("LISTEN ch; SET a = 1", &[]);
    assert_eq!(c.pin, Some(PinReason::Listen));
    let c = classify("SELECT 1; SELECT pg_advisory_lock(1)", &[]);
    assert_eq!(c.pin, Some(PinReason::AdvisoryLock));
}

#[test]
fn a_semicolon_inside_parentheses_does_not_end_the_statement() {
    // PostgreSQL rejects such text as a whole; counting it as one statement
    // keeps any write in it visible.
    let c = classify("SELECT (1; DELETE FROM t)", &[]);
    assert_eq!(c.statements, 1);
    assert_eq!(c.kind, WRITE);
}

#[test]
fn a_sql_standard_function_body_is_one_statement() {
    let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql \
               BEGIN ATOMIC SELECT pg_advisory_lock(1); SELECT CASE WHEN true THEN 1 END; END; SELECT 2";
    let c = classify(sql, &[]);
    assert_eq!(c.statements, 2, "{c:?}");
    assert_eq!(c.kind, WRITE);
    let c = classify(
        "CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END; SELECT 1",
        &[],
    );
    assert_eq!(c.statements, 2, "{c:?}");
    // Outside CREATE FUNCTION, BEGIN and END are ordinary statements.
    assert_eq!(classify("BEGIN; SELECT 1; END", &[]).statements, 3);
}

#[test]
fn begin_inside_a_dollar_quoted_body_never_counts() {
    assert_kinds(&[
        ("DO $$ BEGIN RAISE NOTICE 'x'; END $$", WRITE),
        ("SELECT $$BEGIN$$", READ),
        ("SELECT 'BEGIN READ ONLY'", READ),
    ]);
    assert_eq!(
        classify("DO $$ BEGIN PERFORM 1; PERFORM 2; END $$; SELECT 1", &[]).statements,
        2
    );
}
