//! SPEC §4's routing table, row by row, plus the traps that must not turn a
//! read into a write. Pure: no I/O here.

use super::*;

#[test]
fn select_values_table_show_with_select_explain_and_copy_to_go_to_a_replica() {
    assert_kinds(&[
        ("SELECT 1", READ),
        ("select * from users where id = 1", READ),
        ("VALUES (1, 'a'), (2, 'b')", READ),
        ("TABLE users", READ),
        ("SHOW search_path", READ),
        ("SHOW TIME ZONE", READ),
        ("WITH t AS (SELECT 1) SELECT * FROM t", READ),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 9) SELECT * FROM r", READ),
        ("WITH t AS MATERIALIZED (SELECT 1) SELECT * FROM t", READ),
        ("EXPLAIN SELECT * FROM users", READ),
        ("EXPLAIN VERBOSE SELECT 1", READ),
        ("EXPLAIN (FORMAT JSON) SELECT 1", READ),
        ("COPY users TO STDOUT", READ),
        ("COPY users (id, name) TO STDOUT WITH (FORMAT csv, HEADER)", READ),
        ("COPY (SELECT * FROM users WHERE id < 10) TO STDOUT", READ),
        ("COPY (SELECT * FROM users) TO '/tmp/users.csv'", READ),
        ("SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id GROUP BY u.id", READ),
        ("SELECT * FROM t ORDER BY a LIMIT 10 OFFSET 5", READ),
        ("SELECT * FROM t WHERE a IN (SELECT b FROM u)", READ),
        ("SELECT a FROM t UNION SELECT b FROM u", READ),
        ("SELECT substring(name for 2) FROM t", READ),
        ("SELECT overlay(name placing 'x' from 1 for 2) FROM t", READ),
        ("SELECT * FROM generate_series(1, 10)", READ),
        ("SELECT txid_current_snapshot()", READ),
        ("SELECT pg_advisory_unlocked_count FROM t", READ),
    ]);
}

#[test]
fn explain_analyze_of_a_read_goes_to_a_replica() {
    assert_kinds(&[
        ("EXPLAIN ANALYZE SELECT 1", READ),
        ("EXPLAIN ANALYSE SELECT 1", READ),
        ("EXPLAIN ANALYZE VERBOSE SELECT 1", READ),
        ("EXPLAIN (ANALYZE) SELECT 1", READ),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", READ),
        (
            "EXPLAIN (ANALYZE true, FORMAT JSON) WITH t AS (SELECT 1) SELECT * FROM t",
            READ,
        ),
    ]);
}

#[test]
fn explain_without_analyze_of_a_write_goes_to_a_replica() {
    // Plain EXPLAIN only plans: nothing is executed.
    assert_kinds(&[
        ("EXPLAIN INSERT INTO t VALUES (1)", READ),
        ("EXPLAIN (ANALYZE false) INSERT INTO t VALUES (1)", READ),
        ("EXPLAIN (ANALYZE off, COSTS off) DELETE FROM t", READ),
        ("EXPLAIN (ANALYZE 0) UPDATE t SET a = 1", READ),
        ("EXPLAIN (ANALYZE 'false') UPDATE t SET a = 1", READ),
        ("EXPLAIN (ANALYZE, ANALYZE off) UPDATE t SET a = 1", READ),
        ("EXPLAIN SELECT nextval('s')", READ),
    ]);
}

#[test]
fn explain_analyze_of_a_write_goes_to_the_primary() {
    assert_kinds(&[
        ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", WRITE),
        ("explain analyse delete from t", WRITE),
        ("EXPLAIN ANALYZE VERBOSE UPDATE t SET a = 1", WRITE),
        ("EXPLAIN (ANALYZE) DELETE FROM t", WRITE),
        ("EXPLAIN (ANALYZE true) UPDATE t SET a = 1", WRITE),
        ("EXPLAIN (ANALYZE on, BUFFERS) MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", WRITE),
        ("EXPLAIN (FORMAT JSON, ANALYZE) WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", WRITE),
        ("EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", WRITE),
        ("EXPLAIN ANALYZE SELECT nextval('s')", WRITE),
        ("EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1", WRITE),
        ("EXPLAIN ANALYZE SELECT * INTO t2 FROM t", WRITE),
        ("EXPLAIN ANALYZE EXECUTE stmt", UNKNOWN),
        ("EXPLAIN ANALYZE", UNKNOWN),
    ]);
}

#[test]
fn begin_read_only_goes_to_a_replica_for_the_whole_transaction() {
    assert_kinds(&[
        ("BEGIN READ ONLY", BEGIN_RO),
        ("begin transaction read only", BEGIN_RO),
        ("BEGIN WORK READ ONLY", BEGIN_RO),
        ("START TRANSACTION READ ONLY", BEGIN_RO),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", BEGIN_RO),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
            BEGIN_RO,
        ),
        ("BEGIN READ WRITE, READ ONLY", BEGIN_RO),
        ("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY", BEGIN_RO),
    ]);
    assert_routes(&[
        ("BEGIN READ ONLY", true),
        ("START TRANSACTION READ ONLY", true),
    ]);
}

#[test]
fn begin_read_write_goes_to_the_primary() {
    assert_kinds(&[
        ("BEGIN", BEGIN_RW),
        ("begin;", BEGIN_RW),
        ("BEGIN WORK", BEGIN_RW),
        ("BEGIN TRANSACTION", BEGIN_RW),
        ("START TRANSACTION", BEGIN_RW),
        ("BEGIN READ WRITE", BEGIN_RW),
        ("BEGIN READ ONLY, READ WRITE", BEGIN_RW),
        ("BEGIN ISOLATION LEVEL READ COMMITTED", BEGIN_RW),
        ("BEGIN ISOLATION LEVEL READ UNCOMMITTED", BEGIN_RW),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", BEGIN_RW),
    ]);
    assert_routes(&[("BEGIN", false), ("START TRANSACTION READ WRITE", false)]);
}

#[test]
fn locking_reads_go_to_the_primary() {
    assert_kinds(&[
        ("SELECT * FROM t FOR UPDATE", WRITE),
        ("SELECT * FROM t FOR NO KEY UPDATE", WRITE),
        ("SELECT * FROM t FOR SHARE", WRITE),
        ("SELECT * FROM t FOR KEY SHARE", WRITE),
        ("select * from t for update of t skip locked", WRITE),
        ("SELECT * FROM t FOR SHARE NOWAIT", WRITE),
        (
            "SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)",
            WRITE,
        ),
        ("SELECT * FROM (SELECT * FROM u FOR KEY SHARE) s", WRITE),
        (
            "WITH l AS (SELECT * FROM t FOR SHARE) SELECT * FROM l",
            WRITE,
        ),
        ("SELECT * FROM t FOR /* why not */ SHARE", WRITE),
        ("SELECT * FROM t FOR\nKEY\tSHARE", WRITE),
        ("VALUES (1) FOR UPDATE", WRITE),
    ]);
}

#[test]
fn select_into_create_table_as_and_writing_ctes_go_to_the_primary() {
    assert_kinds(&[
        ("SELECT * INTO t2 FROM t", WRITE),
        ("SELECT a, b INTO UNLOGGED t2 FROM t", WRITE),
        ("WITH x AS (SELECT 1) SELECT * INTO t2 FROM x", WRITE),
        ("CREATE TABLE t2 AS SELECT * FROM t", WRITE),
        ("CREATE MATERIALIZED VIEW mv AS SELECT 1", WRITE),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", WRITE),
        ("WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", WRITE),
        ("WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM u", WRITE),
        ("WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *) SELECT 1", WRITE),
        ("WITH a AS (SELECT 1), b AS (WITH c AS (DELETE FROM t RETURNING 1) SELECT * FROM c) SELECT * FROM b", WRITE),
        ("WITH t AS NOT MATERIALIZED (SELECT 1) INSERT INTO u SELECT * FROM t", WRITE),
        ("WITH t AS (SELECT 1) UPDATE u SET a = 1", WRITE),
        ("WITH t AS (SELECT 1) DELETE FROM u", WRITE),
        ("(WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d)", WRITE),
        ("COPY (DELETE FROM t RETURNING *) TO STDOUT", WRITE),
    ]);
}

#[test]
fn calls_of_write_functions_go_to_the_primary() {
    assert_kinds(&[
        ("SELECT nextval('s')", WRITE),
        ("select setval('s', 42)", WRITE),
        ("SELECT pg_advisory_lock(1)", WRITE),
        ("SELECT pg_advisory_xact_lock(1)", WRITE),
        ("SELECT pg_advisory_lock_shared(1)", WRITE),
        ("SELECT pg_advisory_unlock(1)", WRITE),
        ("SELECT pg_advisory_unlock_all()", WRITE),
        ("SELECT pg_try_advisory_lock(1)", WRITE),
        ("SELECT pg_try_advisory_xact_lock_shared(1)", WRITE),
        ("SELECT pg_notify('ch', 'payload')", WRITE),
        ("SELECT set_config('a.b', 'c', true)", WRITE),
        ("SELECT txid_current()", WRITE),
        ("SELECT pg_current_xact_id()", WRITE),
        ("SELECT lo_creat(-1)", WRITE),
        ("SELECT lo_unlink(1234)", WRITE),
        ("SELECT lo_import('/tmp/x')", WRITE),
        ("SELECT currval('s')", WRITE),
        ("SELECT lastval()", WRITE),
        ("SELECT pg_is_in_recovery()", WRITE),
        ("SELECT pg_current_wal_lsn()", WRITE),
        ("SELECT pg_terminate_backend(123)", WRITE),
        ("SELECT id, nextval('s') FROM t WHERE a = 1", WRITE),
        ("SELECT * FROM t WHERE id = (SELECT nextval('s'))", WRITE),
        ("VALUES (nextval('s'))", WRITE),
        ("WITH n AS (SELECT nextval('s')) SELECT * FROM n", WRITE),
        ("COPY (SELECT nextval('s')) TO STDOUT", WRITE),
    ]);
}

#[test]
fn a_call_may_be_schema_qualified_quoted_spaced_or_commented() {
    assert_kinds(&[
        ("SELECT pg_catalog.nextval('s')", WRITE),
        ("SELECT PG_CATALOG.NEXTVAL('s')", WRITE),
        ("SELECT \"nextval\"('s')", WRITE),
        ("SELECT \"pg_catalog\".\"nextval\"('s')", WRITE),
        ("SELECT pg_catalog . nextval ('s')", WRITE),
        ("SELECT nextval   ('s')", WRITE),
        ("SELECT nextval\n\t('s')", WRITE),
        ("SELECT nextval/* comment */('s')", WRITE),
        ("SELECT nextval -- comment\n('s')", WRITE),
        ("SELECT NextVal('s')", WRITE),
        ("SELECT U&\"nextval\"('s')", WRITE),
    ]);
}

#[test]
fn a_name_not_followed_by_a_parenthesis_is_not_a_call() {
    assert_kinds(&[
        ("SELECT nextval FROM t", READ),
        ("SELECT nextval_count FROM t", READ),
        ("SELECT t.nextval, t.setval FROM t", READ),
        ("SELECT my_nextval('s')", READ),
        ("SELECT \"nextval\" FROM t", READ),
        ("SELECT 'nextval(1)'", READ),
        ("SELECT lo FROM t WHERE lo_x = 1", READ),
        ("SELECT * FROM t WHERE set_config_name = 'x'", READ),
        ("SELECT pg_advisory FROM t", READ),
    ]);
}

#[test]
fn names_in_routing_write_functions_go_to_the_primary() {
    let wf = vec![
        "audit_touch".to_owned(),
        "app.Bump_Counter".to_owned(),
        "\"Mixed\"".to_owned(),
    ];
    assert_kinds_with(
        &[
            ("SELECT audit_touch(1)", WRITE),
            ("SELECT AUDIT_TOUCH(1)", WRITE),
            ("SELECT public.audit_touch(1)", WRITE),
            ("SELECT bump_counter()", WRITE),
            ("SELECT app.bump_counter()", WRITE),
            ("SELECT other.\"bump_counter\"()", WRITE),
            ("SELECT mixed()", WRITE),
            ("SELECT audit_touch FROM t", READ),
            ("SELECT audit_touched(1)", READ),
            ("SELECT lower('x')", READ),
        ],
        &wf,
    );
}

#[test]
fn writes_ddl_and_maintenance_go_to_the_primary() {
    assert_kinds(&[
        ("INSERT INTO t VALUES (1)", WRITE),
        ("UPDATE t SET a = 1", WRITE),
        ("DELETE FROM t", WRITE),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a",
            WRITE,
        ),
        ("COPY t FROM STDIN", WRITE),
        ("COPY t (a, b) FROM '/tmp/x.csv' WITH (FORMAT csv)", WRITE),
        ("CREATE TABLE t (id int)", WRITE),
        ("CREATE INDEX CONCURRENTLY i ON t (a)", WRITE),
        ("CREATE UNLOGGED TABLE t (id int)", WRITE),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", WRITE),
        ("ALTER TABLE t ADD COLUMN b int", WRITE),
        ("ALTER SYSTEM SET work_mem = '64MB'", WRITE),
        ("DROP TABLE t", WRITE),
        ("TRUNCATE t", WRITE),
        ("COMMENT ON TABLE t IS 'x'", WRITE),
        ("SECURITY LABEL ON TABLE t IS 'x'", WRITE),
        ("IMPORT FOREIGN SCHEMA s FROM SERVER f INTO public", WRITE),
        ("REASSIGN OWNED BY a TO b", WRITE),
        ("GRANT SELECT ON t TO r", WRITE),
        ("REVOKE SELECT ON t FROM r", WRITE),
        ("VACUUM", WRITE),
        ("VACUUM (VERBOSE, ANALYZE) t", WRITE),
        ("ANALYZE t", WRITE),
        ("ANALYSE", WRITE),
        ("CLUSTER t USING i", WRITE),
        ("REINDEX TABLE t", WRITE),
        ("REFRESH MATERIALIZED VIEW mv", WRITE),
        ("LOCK TABLE t IN ACCESS SHARE MODE", WRITE),
        ("CALL p(1)", WRITE),
        ("DO $$ BEGIN PERFORM 1; END $$", WRITE),
        ("DO LANGUAGE plpgsql 'BEGIN NULL; END'", WRITE),
        ("NOTIFY ch, 'payload'", WRITE),
        ("CHECKPOINT", WRITE),
        ("DISCARD ALL", WRITE),
        ("DISCARD PLANS", WRITE),
        ("UNLISTEN *", WRITE),
        ("DEALLOCATE ALL", WRITE),
        ("COPY t TO PROGRAM 'gzip > /tmp/t.gz'", WRITE),
        ("SHOW transaction_read_only", WRITE),
        ("SHOW in_hot_standby", WRITE),
        ("SHOW ALL", WRITE),
    ]);
}

#[test]
fn transaction_control_and_cursor_commands_are_unknown_and_go_to_the_primary() {
    assert_kinds(&[
        ("COMMIT", UNKNOWN),
        ("END", UNKNOWN),
        ("ROLLBACK", UNKNOWN),
        ("ABORT", UNKNOWN),
        ("SAVEPOINT s", UNKNOWN),
        ("RELEASE SAVEPOINT s", UNKNOWN),
        ("ROLLBACK TO SAVEPOINT s", UNKNOWN),
        ("PREPARE TRANSACTION 'gid'", UNKNOWN),
        ("COMMIT PREPARED 'gid'", UNKNOWN),
        ("ROLLBACK PREPARED 'gid'", UNKNOWN),
        ("EXECUTE stmt(1)", UNKNOWN),
        ("FETCH 10 FROM c", UNKNOWN),
        ("MOVE NEXT IN c", UNKNOWN),
        ("CLOSE c", UNKNOWN),
        ("DECLARE c CURSOR FOR SELECT 1", UNKNOWN),
        (
            "DECLARE c NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1",
            UNKNOWN,
        ),
    ]);
    assert_routes(&[
        ("COMMIT", false),
        ("FETCH ALL FROM c", false),
        ("DECLARE c CURSOR FOR SELECT 1", false),
    ]);
}

#[test]
fn empty_invalid_or_unrecognised_statements_go_to_the_primary() {
    for sql in [
        "",
        "   ",
        ";",
        ";;  ;",
        "-- only a comment",
        "/* only a comment */",
        "/* pggate:replica */",
        "(",
        "()",
        "42",
        "'just a string'",
        "$1",
        "frobnicate the database",
        "SELEC 1",
        "START",
        "START SOMETHING",
        "EXPLAIN",
        "COPY t",
        "\"select\" 1",
        "* FROM t",
    ] {
        let got = classify(sql, &[]);
        assert_eq!(got.kind, UNKNOWN, "classify({sql:?}) = {got:?}");
        assert!(!got.wants_replica(false), "{sql:?} went to a replica");
    }
    assert_eq!(classify("", &[]).statements, 0);
    assert_eq!(classify("-- x\n/* y */ ;", &[]).statements, 0);
}

#[test]
fn keywords_are_case_insensitive() {
    assert_kinds(&[
        ("select 1", READ),
        ("SeLeCt 1", READ),
        ("Insert Into t Values (1)", WRITE),
        ("sElEcT * FrOm t fOr UpDaTe", WRITE),
        ("select * from t for key share", WRITE),
        ("begin read only", BEGIN_RO),
        ("Start Transaction Read Only", BEGIN_RO),
        ("explain Analyze delete from t", WRITE),
        ("with d as (Delete from t returning *) select 1", WRITE),
    ]);
}

#[test]
fn leading_whitespace_comments_and_parentheses_are_skipped() {
    assert_kinds(&[
        ("   \n\t SELECT 1", READ),
        ("-- leading comment\nSELECT 1", READ),
        ("/* leading */ SELECT 1", READ),
        (
            "/* a /* nested */ comment */ INSERT INTO t VALUES (1)",
            WRITE,
        ),
        ("(SELECT 1)", READ),
        ("((SELECT 1))", READ),
        ("( /* c */ ( VALUES (1) ) )", READ),
        ("(SELECT * FROM t) UNION (SELECT * FROM u)", READ),
        ("(SELECT * FROM t FOR UPDATE)", WRITE),
        ("\r\n\x0c\x0bSELECT 1", READ),
        ("-- delete\nselect 1", READ),
        ("/* drop table t; */ select 1", READ),
    ]);
}

#[test]
fn words_that_only_contain_a_keyword_do_not_count() {
    assert_kinds(&[
        ("select updated_at from t", READ),
        (
            "select insertion, deleted, setting, created, beginning from t",
            READ,
        ),
        ("select * from merged_rows", READ),
        ("select into_account from transfers", READ),
        ("select * from t where shared = true", READ),
        ("select for_update from t", READ),
        ("select * from t where x = 'for update'", READ),
        ("select * from \"update\"", READ),
        ("select \"delete\", \"insert\" from t", READ),
        ("select * from t as \"into\"", READ),
        ("select $1::int", READ),
        ("select $1, $2 from t where a = $3", READ),
        ("select 'insert into t'", READ),
        ("select a from t for share_of_nothing", READ),
        ("select pg_temp.f(1)", READ),
        ("select temp from weather", READ),
        ("select * from lock_table", READ),
    ]);
}

#[test]
fn show_of_ordinary_settings_goes_to_a_replica() {
    assert_routes(&[
        ("SHOW search_path", true),
        ("SHOW work_mem", true),
        ("SHOW transaction_read_only", false),
        ("SHOW default_transaction_read_only", false),
    ]);
}
