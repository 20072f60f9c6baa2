//! SPEC §3 Pinning: every statement that changes session state pins the
//! session to the primary, and the transaction-scoped variants do not.
//! Pure: no I/O here.

use super::*;
use crate::sql::PinReason::*;

#[test]
fn set_pins_the_session() {
    assert_pins(&[
        ("SET search_path TO app", Some(Set)),
        ("set statement_timeout = 0", Some(Set)),
        ("SET SESSION work_mem = '64MB'", Some(Set)),
        ("SET TIME ZONE 'UTC'", Some(Set)),
        ("SET ROLE admin", Some(Set)),
        ("SET SESSION AUTHORIZATION bob", Some(Set)),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            Some(Set),
        ),
        ("SET NAMES 'UTF8'", Some(Set)),
        ("SET SCHEMA 'app'", Some(Set)),
        ("SET \"local\" = 1", Some(Set)),
        ("SET local_preload_libraries = ''", Some(Set)),
        ("SET transaction_isolation = 'serializable'", Some(Set)),
        ("/* pggate:replica */ SET x.y = 1", Some(Set)),
    ]);
    assert_kinds(&[("SET search_path TO app", WRITE)]);
}

#[test]
fn set_local_set_transaction_and_set_constraints_do_not_pin() {
    assert_pins(&[
        ("SET LOCAL search_path TO app", None),
        ("set local statement_timeout = '1s'", None),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None),
        ("SET TRANSACTION READ ONLY", None),
        ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", None),
        ("SET CONSTRAINTS ALL DEFERRED", None),
    ]);
    assert_kinds(&[
        ("SET LOCAL work_mem = '1MB'", WRITE),
        ("SET TRANSACTION READ ONLY", WRITE),
    ]);
}

#[test]
fn reset_pins_the_session() {
    assert_pins(&[
        ("RESET search_path", Some(Reset)),
        ("RESET ALL", Some(Reset)),
        ("reset role", Some(Reset)),
        ("RESET SESSION AUTHORIZATION", Some(Reset)),
    ]);
}

#[test]
fn set_config_with_is_local_false_pins_the_session() {
    assert_pins(&[
        (
            "SELECT set_config('search_path', 'app', false)",
            Some(SetConfig),
        ),
        ("SELECT set_config('a.b', 'c', 'f')", Some(SetConfig)),
        ("SELECT set_config('a.b', 'c', 'false')", Some(SetConfig)),
        ("SELECT set_config('a.b', 'c', 'off')", Some(SetConfig)),
        ("SELECT set_config('a.b', 'c', 0)", Some(SetConfig)),
        (
            "SELECT pg_catalog.set_config('a.b', 'c', FALSE)",
            Some(SetConfig),
        ),
        ("SELECT \"set_config\"('a.b', 'c', false)", Some(SetConfig)),
        (
            "SELECT set_config('a.b', lower('C'), false)",
            Some(SetConfig),
        ),
        ("SELECT set_config('a,b', 'c, d', false)", Some(SetConfig)),
        (
            "SELECT * FROM t WHERE set_config('a.b', 'c', false) IS NOT NULL",
            Some(SetConfig),
        ),
    ]);
}

#[test]
fn set_config_with_a_non_literal_is_local_pins_to_be_safe() {
    assert_pins(&[
        ("SELECT set_config('a.b', 'c', $1)", Some(SetConfig)),
        ("SELECT set_config('a.b', 'c', x) FROM t", Some(SetConfig)),
        (
            "SELECT set_config('a.b', 'c', true::boolean)",
            Some(SetConfig),
        ),
        ("SELECT set_config('a.b', 'c', NOT false)", Some(SetConfig)),
        ("SELECT set_config('a.b', 'c')", Some(SetConfig)),
        ("SELECT set_config('a.b', 'c', true, 1)", Some(SetConfig)),
        ("SELECT set_config('a.b', 'c', 'tru')", Some(SetConfig)),
        ("SELECT set_config(", Some(SetConfig)),
    ]);
}

#[test]
fn set_config_with_is_local_true_is_a_write_that_does_not_pin() {
    assert_pins(&[
        ("SELECT set_config('a.b', 'c', true)", None),
        ("SELECT set_config('a.b', 'c', TRUE)", None),
        ("SELECT set_config('a.b', 'c', 't')", None),
        ("SELECT set_config('a.b', 'c', 'on')", None),
        ("SELECT set_config('a.b', 'c', 'yes')", None),
        ("SELECT set_config('a.b', 'c', ' true ')", None),
        ("SELECT set_config('a.b', coalesce($1, 'x'), true)", None),
        (
            "SELECT set_config(setting_name => 'a.b', new_value => 'c', is_local => true)",
            None,
        ),
        ("SELECT set_config('a.b', 'c', /* local */ true)", None),
    ]);
    assert_kinds(&[("SELECT set_config('a.b', 'c', true)", WRITE)]);
}

#[test]
fn set_config_reports_the_first_pin_of_several_calls() {
    assert_pins(&[
        (
            "SELECT set_config('a.b', 'c', true), set_config('d.e', 'f', false)",
            Some(SetConfig),
        ),
        (
            "SELECT set_config('a.b', set_config('x.y', 'z', false), true)",
            Some(SetConfig),
        ),
    ]);
}

#[test]
fn sql_prepare_pins_the_session_but_prepare_transaction_does_not() {
    assert_pins(&[
        ("PREPARE q AS SELECT 1", Some(Prepare)),
        (
            "PREPARE q (int, text) AS SELECT * FROM t WHERE a = $1 AND b = $2",
            Some(Prepare),
        ),
        ("prepare ins as insert into t values ($1)", Some(Prepare)),
        ("PREPARE transaction AS SELECT 1", Some(Prepare)),
        ("PREPARE TRANSACTION 'gid'", None),
        ("prepare transaction 'x''y'", None),
    ]);
    assert_kinds(&[
        ("PREPARE q AS SELECT 1", WRITE),
        ("PREPARE TRANSACTION 'gid'", UNKNOWN),
    ]);
}

#[test]
fn listen_pins_the_session_but_unlisten_and_notify_do_not() {
    assert_pins(&[
        ("LISTEN ch", Some(Listen)),
        ("listen \"Channel\"", Some(Listen)),
        ("UNLISTEN ch", None),
        ("UNLISTEN *", None),
        ("NOTIFY ch", None),
        ("SELECT pg_notify('ch', 'x')", None),
    ]);
    assert_kinds(&[("UNLISTEN ch", WRITE), ("LISTEN ch", WRITE)]);
}

#[test]
fn declare_with_hold_pins_the_session_but_without_hold_does_not() {
    assert_pins(&[
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            Some(DeclareWithHold),
        ),
        (
            "declare c binary insensitive no scroll cursor with hold for select * from t",
            Some(DeclareWithHold),
        ),
        (
            "DECLARE c SCROLL CURSOR WITH /* c */ HOLD FOR SELECT 1",
            Some(DeclareWithHold),
        ),
        ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", None),
        ("DECLARE c CURSOR FOR SELECT 1", None),
        (
            "DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold",
            None,
        ),
    ]);
    assert_kinds(&[
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", WRITE),
        ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", WRITE),
        ("DECLARE c CURSOR FOR SELECT nextval('s')", WRITE),
    ]);
}

#[test]
fn creating_temporary_objects_pins_the_session() {
    assert_pins(&[
        ("CREATE TEMP TABLE t (id int)", Some(TempObject)),
        ("CREATE TEMPORARY TABLE t (id int)", Some(TempObject)),
        ("create local temp table t (id int)", Some(TempObject)),
        ("CREATE LOCAL TEMPORARY TABLE t (id int)", Some(TempObject)),
        ("CREATE GLOBAL TEMPORARY TABLE t (id int)", Some(TempObject)),
        ("CREATE TEMP TABLE t AS SELECT * FROM u", Some(TempObject)),
        (
            "CREATE TEMP TABLE t (id int) ON COMMIT DROP",
            Some(TempObject),
        ),
        ("CREATE TEMP VIEW v AS SELECT 1", Some(TempObject)),
        (
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
            Some(TempObject),
        ),
        ("CREATE TEMPORARY SEQUENCE s", Some(TempObject)),
        ("CREATE TABLE pg_temp.t (id int)", Some(TempObject)),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            Some(TempObject),
        ),
        ("CREATE VIEW v AS SELECT * FROM pg_temp.t", Some(TempObject)),
        ("SELECT * INTO TEMP t2 FROM t", Some(TempObject)),
        ("SELECT * INTO TEMPORARY TABLE t2 FROM t", Some(TempObject)),
        ("SELECT * INTO LOCAL TEMP t2 FROM t", Some(TempObject)),
        ("CREATE TABLE t (id int)", None),
        ("CREATE UNLOGGED TABLE t (id int)", None),
        ("CREATE TABLE temp (id int)", None),
        ("CREATE TABLE \"temp\" (id int)", None),
        ("SELECT * INTO t2 FROM t", None),
        ("SELECT * INTO temp_copy FROM t", None),
    ]);
    assert_kinds(&[
        ("CREATE TEMP TABLE t (id int)", WRITE),
        ("SELECT * INTO TEMP t2 FROM t", WRITE),
    ]);
}

#[test]
fn session_level_advisory_locks_pin_the_session_but_transaction_level_ones_do_not() {
    assert_pins(&[
        ("SELECT pg_advisory_lock(1)", Some(AdvisoryLock)),
        ("SELECT pg_advisory_lock(1, 2)", Some(AdvisoryLock)),
        ("SELECT pg_advisory_lock_shared(1)", Some(AdvisoryLock)),
        ("SELECT pg_try_advisory_lock(1)", Some(AdvisoryLock)),
        ("SELECT pg_try_advisory_lock_shared(1)", Some(AdvisoryLock)),
        ("SELECT PG_CATALOG.PG_ADVISORY_LOCK(1)", Some(AdvisoryLock)),
        (
            "SELECT * FROM t WHERE pg_try_advisory_lock(t.id)",
            Some(AdvisoryLock),
        ),
        ("SELECT pg_advisory_xact_lock(1)", None),
        ("SELECT pg_advisory_xact_lock_shared(1)", None),
        ("SELECT pg_try_advisory_xact_lock(1)", None),
        ("SELECT pg_try_advisory_xact_lock_shared(1)", None),
        ("SELECT pg_advisory_unlock(1)", None),
        ("SELECT pg_advisory_unlock_all()", None),
        ("SELECT 'pg_advisory_lock(1)'", None),
        ("SELECT pg_advisory_lock FROM t", None),
    ]);
    assert_kinds(&[("SELECT pg_advisory_xact_lock(1)", WRITE)]);
}

#[test]
fn load_pins_the_session() {
    assert_pins(&[
        ("LOAD 'auto_explain'", Some(Load)),
        ("load '$libdir/plugins/x'", Some(Load)),
    ]);
}

#[test]
fn discard_and_other_writes_do_not_pin() {
    assert_pins(&[
        ("DISCARD ALL", None),
        ("DISCARD TEMP", None),
        ("INSERT INTO t VALUES (1)", None),
        ("ALTER ROLE bob SET search_path = app", None),
        ("ALTER TABLE t ALTER COLUMN a SET DEFAULT 1", None),
        ("SELECT nextval('s')", None),
        ("BEGIN", None),
        ("COMMIT", None),
    ]);
}

#[test]
fn a_pin_inside_a_write_statement_is_found() {
    assert_pins(&[
        (
            "INSERT INTO locks SELECT pg_advisory_lock(1)",
            Some(AdvisoryLock),
        ),
        (
            "UPDATE t SET v = set_config('a.b', 'c', false)",
            Some(SetConfig),
        ),
        ("CALL p(pg_try_advisory_lock(1))", Some(AdvisoryLock)),
        (
            "COPY (SELECT pg_advisory_lock(1)) TO STDOUT",
            Some(AdvisoryLock),
        ),
        (
            "EXPLAIN ANALYZE SELECT pg_advisory_lock(1)",
            Some(AdvisoryLock),
        ),
        ("EXPLAIN SELECT pg_advisory_lock(1)", None),
    ]);
}

#[test]
fn pin_reasons_have_their_metric_labels() {
    let labels: Vec<&str> = [
        Set,
        Reset,
        SetConfig,
        Prepare,
        Listen,
        DeclareWithHold,
        TempObject,
        AdvisoryLock,
        Load,
    ]
    .iter()
    .map(|r| r.as_str())
    .collect();
    assert_eq!(
        labels,
        [
            "set",
            "reset",
            "set_config",
            "prepare",
            "listen",
            "declare_with_hold",
            "temp_object",
            "advisory_lock",
            "load"
        ]
    );
}
