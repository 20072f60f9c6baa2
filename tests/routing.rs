//! Integration tests of SQL routing (SPEC §3 Pinning, §4 Routing rules)
//! against a real PostgreSQL cluster (a primary and two streaming replicas
//! built once for this test binary).
//!
//! Every statement sent through PgGate carries a unique marker (a trailing
//! `/* rt-<run>-<n> */` comment). The cluster logs every statement
//! (`log_statement = 'all'`), so the three server logs say which server(s)
//! ran it: a read-class statement must show up only in replica logs, a
//! write-class one only in the primary's. Lines without a marker (PgGate's
//! own `set_config`/`RESET`, health probes) are ignored. Where a result can
//! say it too, `inet_server_port()` and `pg_backend_pid()` are checked as
//! well. Each test reports every misrouted statement at once.
//!
//! One test puts a stand-in server in place of a replica, for an answer a
//! real server cannot be timed to give (a refusal and a shutdown in one packet).

#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::fake::{self, Answer, FakeServer};
use common::tools;
use common::{describe_error, random_hex, Cluster, PgGate};

/// Where a statement must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Only on replicas (at least one).
    Replica,
    /// Only on the primary.
    Primary,
}

/// A statement that was sent, and where it must have run.
struct Sent {
    sql: String,
    marker: String,
    expect: Expect,
}

/// Collects the statements of one test, runs them through PgGate, then
/// checks the server logs for each and reports every problem together.
struct Routes<'a> {
    cluster: &'a Cluster,
    run: String,
    next: usize,
    sent: Vec<Sent>,
    problems: Vec<String>,
}

impl<'a> Routes<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        Routes {
            cluster,
            run: random_hex(8),
            next: 0,
            sent: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// A fresh marker; fixed width, so no marker is a prefix of another.
    fn marker(&mut self) -> String {
        self.next += 1;
        format!("rt-{}-{:04}", self.run, self.next)
    }

    /// `sql` with a fresh marker comment appended, and the marker.
    fn tag(&mut self, sql: &str) -> (String, String) {
        let marker = self.marker();
        (format!("{sql} /* {marker} */"), marker)
    }

    fn expect(&mut self, sql: &str, marker: &str, expect: Expect) {
        self.sent.push(Sent {
            sql: sql.to_string(),
            marker: marker.to_string(),
            expect,
        });
    }

    fn problem(&mut self, text: String) {
        self.problems.push(text);
    }

    /// Runs `sql` (tagged) with the simple query protocol and expects it to
    /// succeed and to run where `expect` says. Returns its rows.
    fn run(
        &mut self,
        client: &mut postgres::Client,
        sql: &str,
        expect: Expect,
    ) -> Vec<Vec<Option<String>>> {
        let (tagged, marker) = self.tag(sql);
        self.expect(sql, &marker, expect);
        match client.simple_query(&tagged) {
            Ok(messages) => common::rows_of(messages),
            Err(e) => {
                self.problem(format!("{sql:?} failed: {}", describe_error(&e)));
                Vec::new()
            }
        }
    }

    /// Runs `sql` (tagged) and expects PostgreSQL to reject it with
    /// SQLSTATE `code`, having run it where `expect` says.
    fn run_failing(
        &mut self,
        client: &mut postgres::Client,
        sql: &str,
        code: &str,
        expect: Expect,
    ) {
        let (tagged, marker) = self.tag(sql);
        self.expect(sql, &marker, expect);
        match client.simple_query(&tagged) {
            Ok(_) => self.problem(format!("{sql:?} succeeded; expected SQLSTATE {code}")),
            Err(e) => {
                let got = e.as_db_error().map(|db| db.code().code().to_string());
                if got.as_deref() != Some(code) {
                    self.problem(format!(
                        "{sql:?} failed with {} instead of SQLSTATE {code}",
                        describe_error(&e)
                    ));
                }
            }
        }
    }

    /// Runs `psql -c SQL` (tagged) through `gate`, feeding `stdin`, and
    /// expects it to succeed. Returns its stdout.
    fn psql(&mut self, gate: &PgGate, sql: &str, stdin: Option<&[u8]>, expect: Expect) -> String {
        let (tagged, marker) = self.tag(sql);
        self.expect(sql, &marker, expect);
        let out = tools::psql_with_stdin(
            gate.port,
            "postgres",
            "postgres",
            &["-q", "-c", &tagged],
            stdin,
        );
        if !out.success() {
            self.problem(format!(
                "psql -c {sql:?} failed ({}): {}",
                out.status,
                out.stderr.trim()
            ));
        }
        out.stdout
    }

    /// The servers whose logs hold each marker, polling the logs for up to
    /// 2 s until every marker shows up somewhere.
    fn locate(&self, markers: &[&str]) -> Vec<Vec<u16>> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let logs: Vec<(u16, String)> = self
                .cluster
                .all_ports()
                .iter()
                .map(|&port| (port, self.cluster.server_log(port)))
                .collect();
            let found: Vec<Vec<u16>> = markers
                .iter()
                .map(|marker| {
                    logs.iter()
                        .filter(|(_, log)| log.contains(*marker))
                        .map(|(port, _)| *port)
                        .collect()
                })
                .collect();
            if found.iter().all(|ports| !ports.is_empty()) || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pid of the backend that logged the statement carrying `marker`
    /// on the server at `port` (from the `[%p]` of its log line prefix).
    fn logged_pid(&self, port: u16, marker: &str) -> Option<u32> {
        let log = self.cluster.server_log(port);
        let mut pid = None;
        for line in log.lines() {
            // Continuation lines of a multi-line statement have no prefix.
            if !line.starts_with(char::is_whitespace) {
                pid = line
                    .split_once(" [")
                    .and_then(|(_, rest)| rest.split_once(']'))
                    .and_then(|(p, _)| p.parse().ok());
            }
            if line.contains(marker) {
                return pid;
            }
        }
        None
    }

    fn names(&self, ports: &[u16]) -> String {
        if ports.is_empty() {
            return "no server".to_string();
        }
        ports
            .iter()
            .map(|&p| self.cluster.server_name(p))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// Checks every statement sent against the server logs and fails the
    /// test with the full list of problems, if any.
    fn check(mut self, what: &str) {
        let markers: Vec<&str> = self.sent.iter().map(|s| s.marker.as_str()).collect();
        let found = self.locate(&markers);
        let primary = self.cluster.primary_port;
        let mut misrouted = Vec::new();
        for (sent, ports) in self.sent.iter().zip(&found) {
            let ok = match sent.expect {
                Expect::Replica => {
                    !ports.is_empty() && ports.iter().all(|p| self.cluster.is_replica_port(*p))
                }
                Expect::Primary => !ports.is_empty() && ports.iter().all(|p| *p == primary),
            };
            if !ok {
                misrouted.push(format!(
                    "{:?}: expected {}, ran on {}",
                    sent.sql,
                    match sent.expect {
                        Expect::Replica => "replicas only",
                        Expect::Primary => "the primary only",
                    },
                    self.names(ports)
                ));
            }
        }
        let total = self.sent.len();
        self.problems.extend(misrouted);
        assert!(
            self.problems.is_empty(),
            "{what}: {} problem(s) among {total} statements:\n  {}",
            self.problems.len(),
            self.problems.join("\n  ")
        );
    }
}

/// Runs setup SQL directly on the primary (not through PgGate).
fn on_primary(cluster: &Cluster, sql: &str) {
    cluster
        .connect_direct(cluster.primary_port, "postgres", "postgres")
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("setup on the primary failed: {}", describe_error(&e)));
}

fn port_of(value: &Option<String>) -> u16 {
    value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a port: {value:?}"))
}

#[test]
fn every_read_class_statement_runs_only_on_replicas() {
    let cluster = Cluster::shared();
    on_primary(
        cluster,
        "CREATE TABLE rt_reads (id int, x text, updated_at timestamptz, insertion int, \
                                deleted bool, setting text, created date, beginning int, \
                                nextval_count int);
         INSERT INTO rt_reads VALUES
           (1, 'abcdef', now(), 10, false, 'on', current_date, 100, 1000),
           (2, 'ghijkl', now(), 20, true, 'off', current_date, 200, 2000);
         CREATE TABLE \"update\" (id int);
         INSERT INTO \"update\" VALUES (1), (2);",
    );
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(cluster, "");
    let mut client = gate.connect("postgres", "postgres");
    let mut routes = Routes::new(cluster);

    let reads = [
        // The read forms of SPEC §4.
        "SELECT 1",
        "SELECT id, x FROM rt_reads ORDER BY id",
        "VALUES (1), (2)",
        "TABLE rt_reads",
        "SHOW work_mem",
        "SHOW search_path",
        "WITH a AS (SELECT id FROM rt_reads) SELECT count(*) FROM a",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) \
         SELECT sum(n) FROM r",
        "EXPLAIN SELECT * FROM rt_reads",
        "EXPLAIN ANALYZE SELECT * FROM rt_reads",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM rt_reads",
        "EXPLAIN DELETE FROM rt_reads WHERE id = 0",
        "SELECT 1; SELECT 2",
        // Keywords inside string literals.
        "SELECT 'insert into t'",
        "SELECT 'a''b update rt_reads set id = 0'",
        "SELECT E'\\'delete from rt_reads'",
        "SELECT E'it\\'s; delete from rt_reads'",
        "SELECT U&'\\0075pdate rt_reads set id = 0'",
        "SELECT U&'d!0061t!+000061 update' UESCAPE '!'",
        "SELECT $$ drop table rt_reads $$",
        "SELECT $$ drop table rt_reads; $$",
        "SELECT $tag$ insert $tag$",
        "SELECT $tag$ insert $$ update $$ $tag$",
        "SELECT count(*) FROM rt_reads WHERE x <> 'update'",
        // Keywords inside comments.
        "SELECT 1 -- delete\n",
        "SELECT /* /* update */ */ 1",
        "SELECT 1 /* ; update rt_reads set id = 0 */",
        // Quoted identifiers.
        "SELECT * FROM \"update\"",
        "TABLE \"update\"",
        "SELECT \"delete\".id FROM \"update\" AS \"delete\"",
        "SELECT 1 AS \"insert\", 2 AS \"for update\"",
        // Longer identifiers that start with keywords.
        "SELECT updated_at, insertion, deleted, setting, created, beginning, nextval_count \
         FROM rt_reads",
        "SELECT max(updated_at) AS updated, min(insertion) AS inserted FROM rt_reads",
        // Words that only look like a locking clause.
        "SELECT 'for update'",
        "SELECT 'x' FROM rt_reads WHERE x = 'for share'",
        "SELECT substring(x for 2) FROM rt_reads",
        "SELECT substring(x from 2 for 3) FROM rt_reads",
        // Case.
        "SELECT ID FROM RT_READS WHERE ID = 1",
        "select id from rt_reads where id = 1",
        "sElEcT Id FrOm Rt_ReAdS",
        "values (1)",
        // Leading whitespace, comments, parentheses.
        "   \n\t  SELECT 1",
        "/* leading */ SELECT 1",
        "-- update\nSELECT 1",
        "/* a */ -- b\n  /* c /* nested insert */ */ SELECT 1",
        "(SELECT 1)",
        "((VALUES (1)))",
        "(SELECT 1) UNION ALL (SELECT 2)",
    ];
    for sql in reads {
        routes.run(&mut client, sql, Expect::Replica);
    }

    let out = routes.psql(
        &gate,
        "COPY (SELECT id FROM rt_reads ORDER BY id) TO STDOUT",
        None,
        Expect::Replica,
    );
    if out != "1\n2\n" {
        routes.problem(format!("COPY (SELECT ...) TO STDOUT returned {out:?}"));
    }
    let out = routes.psql(&gate, "COPY rt_reads (id) TO STDOUT", None, Expect::Replica);
    if out != "1\n2\n" {
        routes.problem(format!("COPY rt_reads TO STDOUT returned {out:?}"));
    }
    routes.check("read-class statements");
}

#[test]
fn every_write_class_statement_runs_only_on_the_primary() {
    let cluster = Cluster::shared();
    on_primary(
        cluster,
        "CREATE TABLE rt_w (id int PRIMARY KEY, v text);
         INSERT INTO rt_w SELECT g, 'row ' || g FROM generate_series(1000, 1009) g;
         CREATE TABLE rt_trunc (a int);
         INSERT INTO rt_trunc VALUES (1);
         CREATE SEQUENCE rt_seq;
         CREATE MATERIALIZED VIEW rt_mv AS SELECT count(*) AS n FROM rt_w;
         CREATE TABLE rt_counter (n int NOT NULL);
         INSERT INTO rt_counter VALUES (0);
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql
           AS $$ UPDATE rt_counter SET n = n + 1 RETURNING n $$;
         CREATE PROCEDURE rt_proc() LANGUAGE sql AS $$ UPDATE rt_counter SET n = n + 100 $$;",
    );
    cluster.wait_replicas_caught_up();
    let gate = PgGate::start(cluster, "[routing]\nwrite_functions = [\"bump\"]");
    let mut client = gate.connect("postgres", "postgres");
    let mut routes = Routes::new(cluster);
    let primary = cluster.primary_port.to_string();

    let writes = [
        // DML.
        "INSERT INTO rt_w VALUES (1, 'a')",
        "UPDATE rt_w SET v = 'b' WHERE id = 1",
        "DELETE FROM rt_w WHERE id = 1",
        "MERGE INTO rt_w t USING (VALUES (2, 'm')) AS s(id, v) ON t.id = s.id \
         WHEN MATCHED THEN UPDATE SET v = s.v \
         WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)",
        // DDL and maintenance.
        "CREATE TABLE rt_w_new (a int)",
        "ALTER TABLE rt_w_new ADD COLUMN b int",
        "DROP TABLE rt_w_new",
        "TRUNCATE rt_trunc",
        "GRANT SELECT ON rt_w TO scram_user",
        "REVOKE SELECT ON rt_w FROM scram_user",
        "VACUUM rt_w",
        "ANALYZE rt_w",
        "CLUSTER rt_w USING rt_w_pkey",
        "REINDEX TABLE rt_w",
        "REFRESH MATERIALIZED VIEW rt_mv",
        "CALL rt_proc()",
        "DO $$ BEGIN PERFORM 1; END $$",
        "NOTIFY rt_chan",
        "CHECKPOINT",
        // Locking reads, also in subqueries.
        "SELECT * FROM rt_w FOR UPDATE",
        "SELECT * FROM rt_w FOR NO KEY UPDATE",
        "SELECT * FROM rt_w FOR SHARE",
        "SELECT * FROM rt_w FOR KEY SHARE",
        "SELECT * FROM (SELECT * FROM rt_w FOR UPDATE) s",
        "SELECT id FROM rt_w WHERE id IN (SELECT id FROM rt_w FOR SHARE)",
        "select * from rt_w for key share of rt_w nowait",
        // Queries that write.
        "SELECT * INTO rt_into FROM rt_w",
        "CREATE TABLE rt_ctas AS SELECT * FROM rt_w",
        "WITH x AS (INSERT INTO rt_w VALUES (10, 'c') RETURNING id) SELECT * FROM x",
        "WITH x AS (UPDATE rt_w SET v = 'u' WHERE id = 10 RETURNING id) SELECT count(*) FROM x",
        "WITH x AS (DELETE FROM rt_w WHERE id = 10 RETURNING id) SELECT count(*) FROM x",
        "EXPLAIN ANALYZE INSERT INTO rt_w VALUES (11, 'e')",
        "EXPLAIN (ANALYZE) DELETE FROM rt_w WHERE id = 11",
        // Calls of functions that write.
        "SELECT nextval('rt_seq')",
        "SELECT setval('rt_seq', 100)",
        "SELECT pg_catalog.nextval('rt_seq')",
        "SELECT \"nextval\"('rt_seq')",
        "SELECT nextval ('rt_seq')",
        "SELECT NEXTVAL('rt_seq')",
        "SELECT pg_advisory_xact_lock(7342101)",
        "SELECT pg_notify('rt_chan', 'payload')",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
    ];
    for sql in writes {
        routes.run(&mut client, sql, Expect::Primary);
    }

    // LOCK and a transaction-level advisory lock inside a transaction.
    routes.run(&mut client, "BEGIN", Expect::Primary);
    routes.run(
        &mut client,
        "LOCK TABLE rt_w IN SHARE MODE",
        Expect::Primary,
    );
    routes.run(
        &mut client,
        "SELECT pg_advisory_xact_lock(7342102)",
        Expect::Primary,
    );
    routes.run(&mut client, "COMMIT", Expect::Primary);

    // Large objects.
    let rows = routes.run(&mut client, "SELECT lo_creat(-1)", Expect::Primary);
    match rows.first().and_then(|r| r[0].clone()) {
        Some(oid) => {
            routes.run(
                &mut client,
                &format!("SELECT lo_unlink({oid})"),
                Expect::Primary,
            );
        }
        None => routes.problem(format!("lo_creat(-1) returned {rows:?}")),
    }

    // A function listed in routing.write_functions, twice: both bumps land
    // on the primary's counter.
    let first = routes.run(&mut client, "SELECT bump()", Expect::Primary);
    let second = routes.run(&mut client, "SELECT bump()", Expect::Primary);
    let bumps: Vec<i64> = first
        .iter()
        .chain(&second)
        .filter_map(|r| r[0].as_deref().and_then(|v| v.parse().ok()))
        .collect();
    if bumps.len() != 2 || bumps[1] != bumps[0] + 1 {
        routes.problem(format!("two bump() calls returned {bumps:?}"));
    }

    // Several statements in one Query: primary if any would be, and all of
    // them run there.
    let rows = routes.run(
        &mut client,
        "SELECT inet_server_port(); INSERT INTO rt_w VALUES (20, 'multi') RETURNING inet_server_port()",
        Expect::Primary,
    );
    let ports: Vec<Option<String>> = rows.iter().map(|r| r[0].clone()).collect();
    if ports != vec![Some(primary.clone()), Some(primary.clone())] {
        routes.problem(format!(
            "SELECT ...; INSERT ... ran on ports {ports:?}, expected both on {primary}"
        ));
    }

    // Unknown or invalid statements: the primary rejects them.
    routes.run_failing(&mut client, "FOOBAR", "42601", Expect::Primary);
    routes.run_failing(&mut client, "SELEC 1", "42601", Expect::Primary);
    // The session is usable after the errors.
    let rows = routes.run(
        &mut client,
        "SELECT count(*) FROM rt_w WHERE id = 20",
        Expect::Replica,
    );
    if rows != vec![vec![Some("1".to_string())]] && rows != vec![vec![Some("0".to_string())]] {
        routes.problem(format!("a read after the errors returned {rows:?}"));
    }

    // COPY FROM STDIN.
    routes.psql(
        &gate,
        "COPY rt_w FROM STDIN",
        Some(b"30\tcopied\n31\tcopied\n"),
        Expect::Primary,
    );
    let copied = cluster.psql(
        cluster.primary_port,
        "postgres",
        "postgres",
        "SELECT count(*) FROM rt_w WHERE v = 'copied'",
    );
    if copied != "2" {
        routes.problem(format!("COPY FROM STDIN stored {copied} rows, expected 2"));
    }
    routes.check("write-class statements");
}

#[test]
fn begin_read_only_transactions_run_on_a_replica_and_plain_begin_on_the_primary() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let mut client = gate.connect("postgres", "postgres");
    let mut routes = Routes::new(cluster);

    // Read-only transactions: both selects on one replica.
    let mut read_only_groups: Vec<(&str, Vec<String>)> = Vec::new();
    for begin in ["BEGIN READ ONLY", "START TRANSACTION READ ONLY"] {
        let mut markers = Vec::new();
        let mut ports = Vec::new();
        for sql in [
            begin,
            "SELECT inet_server_port()",
            "SELECT inet_server_port()",
            "COMMIT",
        ] {
            let (tagged, marker) = routes.tag(sql);
            markers.push(marker.clone());
            match client.simple_query(&tagged) {
                Ok(messages) => {
                    for m in messages {
                        if let postgres::SimpleQueryMessage::Row(row) = m {
                            ports.push(port_of(&row.get(0).map(str::to_string)));
                        }
                    }
                }
                Err(e) => {
                    routes.problem(format!("{begin}: {sql:?} failed: {}", describe_error(&e)))
                }
            }
            routes.expect(&format!("{begin}: {sql}"), &marker, Expect::Replica);
        }
        if ports.len() != 2 || ports[0] != ports[1] || !cluster.is_replica_port(ports[0]) {
            routes.problem(format!(
                "{begin}: the two selects ran on ports {ports:?}; expected one replica {:?}",
                cluster.replica_ports
            ));
        }
        read_only_groups.push((begin, markers));
    }

    // Read-write transactions: everything on the primary.
    for begin in ["BEGIN", "START TRANSACTION ISOLATION LEVEL SERIALIZABLE"] {
        routes.run(&mut client, begin, Expect::Primary);
        for _ in 0..2 {
            let rows = routes.run(&mut client, "SELECT inet_server_port()", Expect::Primary);
            if rows.len() != 1 || port_of(&rows[0][0]) != cluster.primary_port {
                routes.problem(format!(
                    "{begin}: SELECT inet_server_port() returned {rows:?}, expected the primary {}",
                    cluster.primary_port
                ));
            }
        }
        routes.run(&mut client, "COMMIT", Expect::Primary);
    }

    // Each read-only transaction ran, from BEGIN to COMMIT, on one replica.
    for (begin, markers) in &read_only_groups {
        let markers: Vec<&str> = markers.iter().map(String::as_str).collect();
        let found = routes.locate(&markers);
        let first = &found[0];
        if first.len() != 1 || found.iter().any(|ports| ports != first) {
            let names: Vec<String> = found.iter().map(|p| routes.names(p)).collect();
            routes.problem(format!(
                "{begin}: BEGIN, SELECT, SELECT, COMMIT ran on {names:?}; expected one replica"
            ));
        }
    }
    routes.check("transactions");
}

#[test]
fn each_pinning_statement_pins_the_session() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let mut routes = Routes::new(cluster);
    let primary = cluster.primary_port;

    // (statements, the pinning one's index, a query showing the session
    // state it set, and the value that query returns on the pinned backend)
    let cases: [(&[&str], usize, &str, &str); 9] = [
        (
            &["SET work_mem = '8MB'"],
            0,
            "SELECT current_setting('work_mem')",
            "8MB",
        ),
        (
            &["RESET work_mem"],
            0,
            "SELECT current_setting('work_mem')",
            "4MB",
        ),
        (
            &["SELECT set_config('work_mem', '9MB', false)"],
            0,
            "SELECT current_setting('work_mem')",
            "9MB",
        ),
        (&["PREPARE rt_p AS SELECT 41 + 1"], 0, "EXECUTE rt_p", "42"),
        (
            &["LISTEN rt_ch"],
            0,
            "SELECT string_agg(c, ',') FROM pg_listening_channels() AS c",
            "rt_ch",
        ),
        (
            &[
                "BEGIN",
                "DECLARE rt_c CURSOR WITH HOLD FOR SELECT 7",
                "COMMIT",
            ],
            1,
            "FETCH rt_c",
            "7",
        ),
        (
            &["CREATE TEMP TABLE rt_tmp (a int)"],
            0,
            "SELECT count(*) FROM rt_tmp",
            "0",
        ),
        (
            &["SELECT pg_advisory_lock(7342201)"],
            0,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND objid = 7342201 AND pid = pg_backend_pid() AND granted",
            "1",
        ),
        (
            &["LOAD 'auto_explain'"],
            0,
            "SELECT coalesce(current_setting('auto_explain.log_min_duration', true), 'missing')",
            "-1",
        ),
    ];

    for (statements, pinning, state_sql, state_value) in cases {
        let what = statements[pinning];
        let mut client = gate.connect("postgres", "postgres");
        let rows = routes.run(&mut client, "SELECT inet_server_port()", Expect::Replica);
        if rows.len() != 1 || !cluster.is_replica_port(port_of(&rows[0][0])) {
            routes.problem(format!(
                "{what}: the first read (before pinning) returned {rows:?}, not a replica port"
            ));
        }
        let mut pin_marker = String::new();
        for (i, sql) in statements.iter().enumerate() {
            let (tagged, marker) = routes.tag(sql);
            routes.expect(sql, &marker, Expect::Primary);
            if i == pinning {
                pin_marker = marker.clone();
            }
            if let Err(e) = client.simple_query(&tagged) {
                routes.problem(format!("{what}: {sql:?} failed: {}", describe_error(&e)));
            }
        }
        let mut seen = Vec::new();
        for _ in 0..5 {
            let rows = routes.run(
                &mut client,
                "SELECT inet_server_port(), pg_backend_pid()",
                Expect::Primary,
            );
            match rows.first() {
                Some(row) => seen.push((port_of(&row[0]), row[1].clone().unwrap_or_default())),
                None => seen.push((0, String::new())),
            }
        }
        let pids: Vec<&str> = seen.iter().map(|(_, pid)| pid.as_str()).collect();
        if seen.iter().any(|(port, _)| *port != primary) || pids.iter().any(|p| *p != pids[0]) {
            routes.problem(format!(
                "{what}: 5 reads after it ran on (port, backend pid) {seen:?}; expected the \
                 primary {primary} and one backend"
            ));
        }
        // The pinned backend is the one that ran the pinning statement.
        if routes.locate(&[&pin_marker])[0] == vec![primary] {
            let logged = routes.logged_pid(primary, &pin_marker);
            if logged.map(|p| p.to_string()).as_deref() != Some(pids[0]) {
                routes.problem(format!(
                    "{what}: ran on backend pid {logged:?}, later reads on pid {}",
                    pids[0]
                ));
            }
        }
        // And it still holds the state the statement set.
        let rows = routes.run(&mut client, state_sql, Expect::Primary);
        if rows != vec![vec![Some(state_value.to_string())]] {
            routes.problem(format!(
                "{what}: {state_sql:?} returned {rows:?}, expected {state_value:?}"
            ));
        }
    }
    routes.check("pinning statements");
}

#[test]
fn set_local_set_transaction_and_local_set_config_do_not_pin() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(cluster, "");
    let mut client = gate.connect("postgres", "postgres");
    let mut routes = Routes::new(cluster);

    let blocks: [&[&str]; 4] = [
        &["BEGIN", "SET LOCAL work_mem = '5MB'", "COMMIT"],
        &[
            "BEGIN",
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "COMMIT",
        ],
        &[
            "BEGIN",
            "SELECT set_config('work_mem', '6MB', true)",
            "COMMIT",
        ],
        &["SELECT set_config('work_mem', '6MB', true)"],
    ];
    for block in blocks {
        for sql in block {
            routes.run(&mut client, sql, Expect::Primary);
        }
        let mut ports = Vec::new();
        for _ in 0..4 {
            let rows = routes.run(
                &mut client,
                "SELECT inet_server_port(), current_setting('work_mem')",
                Expect::Replica,
            );
            if let Some(row) = rows.first() {
                ports.push(port_of(&row[0]));
                if row[1].as_deref() != Some("4MB") {
                    routes.problem(format!(
                        "after {block:?}: work_mem is {:?} outside the transaction",
                        row[1]
                    ));
                }
            }
        }
        if ports.len() != 4 || ports.iter().any(|p| !cluster.is_replica_port(*p)) {
            routes.problem(format!(
                "after {block:?}: reads ran on {ports:?}; expected replicas {:?}",
                cluster.replica_ports
            ));
        }
    }
    routes.check("transaction-scoped settings");
}

#[test]
fn a_set_inside_a_read_only_transaction_on_a_replica_pins_and_its_connection_is_not_reused() {
    let cluster = Cluster::shared();
    let replica1 = cluster.replica_ports[0];
    // One replica and one pooled connection per worker and backend: a reused
    // replica connection would be the very one the SET ran on.
    let gate = PgGate::start(
        cluster,
        &format!(
            "[proxy]\nworkers = 1\n[pool]\nsize = 1\n\
             [[backends]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\n\
             [[backends]]\nname = \"replica1\"\nhost = \"127.0.0.1\"\nport = {replica1}\nrole = \"replica\"\n",
            cluster.primary_port
        ),
    );
    let ask =
        "SELECT inet_server_port()::text, pg_backend_pid()::text, current_setting('work_mem')";
    let row = |client: &mut postgres::Client| -> (u16, String, String) {
        let rows = common::simple_rows(client, ask);
        let get = |i: usize| rows[0][i].clone().unwrap_or_default();
        (get(0).parse().unwrap_or(0), get(1), get(2))
    };

    let mut a = gate.connect("postgres", "postgres");
    for sql in ["BEGIN READ ONLY", "SET work_mem = '1234kB'"] {
        a.batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
    }
    let (port, replica_pid, work_mem) = row(&mut a);
    assert_eq!(
        port, replica1,
        "the read-only transaction runs on the replica"
    );
    assert_eq!(
        work_mem, "1234kB",
        "the SET is visible inside its transaction"
    );
    a.batch_execute("COMMIT")
        .unwrap_or_else(|e| panic!("COMMIT: {}", describe_error(&e)));

    // The SET pinned the session: everything after it goes to the primary,
    // where the setting was never made (see pggate(8)).
    for _ in 0..3 {
        let (port, _, work_mem) = row(&mut a);
        assert_eq!(
            port, cluster.primary_port,
            "after the SET, a read of the pinned session"
        );
        assert_eq!(
            work_mem, "4MB",
            "work_mem on the primary after the replica's SET"
        );
    }

    // Another client's read-only transaction gets a fresh replica connection
    // without the setting.
    let mut b = gate.connect("postgres", "postgres");
    b.batch_execute("BEGIN READ ONLY")
        .unwrap_or_else(|e| panic!("B: BEGIN READ ONLY: {}", describe_error(&e)));
    let (port, pid, work_mem) = row(&mut b);
    b.batch_execute("COMMIT")
        .unwrap_or_else(|e| panic!("B: COMMIT: {}", describe_error(&e)));
    assert_eq!(
        port, replica1,
        "B's read-only transaction runs on the replica"
    );
    assert_ne!(
        pid, replica_pid,
        "B was given the connection A's SET ran on"
    );
    assert_eq!(work_mem, "4MB", "B sees A's session setting");
}

#[test]
fn hints_override_the_table() {
    let cluster = Cluster::shared();
    on_primary(cluster, "CREATE TABLE rt_hints (id int, port int)");
    cluster.wait_replicas_caught_up();
    let primary = cluster.primary_port;
    let mut routes = Routes::new(cluster);

    // (statement returning the port of the server that ran it, expected route)
    let default_cases = [
        (
            "/* pggate:primary */ SELECT inet_server_port()",
            Expect::Primary,
        ),
        (
            "/* pggate:primary */ VALUES (inet_server_port())",
            Expect::Primary,
        ),
        (
            "-- before\n/* pggate:primary */ SELECT inet_server_port()",
            Expect::Primary,
        ),
        (
            "/* pggate:replica */ SELECT inet_server_port()",
            Expect::Replica,
        ),
        (
            "/* pggate:replica */ INSERT INTO rt_hints VALUES (1, inet_server_port()) \
             RETURNING inet_server_port()",
            Expect::Primary,
        ),
        (
            "/* pggate:replica */ SELECT inet_server_port() FROM rt_hints LIMIT 1 FOR UPDATE",
            Expect::Primary,
        ),
        ("SELECT inet_server_port()", Expect::Replica),
    ];
    let primary_reads = [
        ("SELECT inet_server_port()", Expect::Primary),
        ("VALUES (inet_server_port())", Expect::Primary),
        (
            "/* pggate:replica */ SELECT inet_server_port()",
            Expect::Replica,
        ),
        (
            "/* pggate:replica */ INSERT INTO rt_hints VALUES (2, inet_server_port()) \
             RETURNING inet_server_port()",
            Expect::Primary,
        ),
    ];
    for (toml, cases) in [
        ("", &default_cases[..]),
        ("[routing]\nreads = \"primary\"", &primary_reads[..]),
    ] {
        let gate = PgGate::start(cluster, toml);
        let mut client = gate.connect("postgres", "postgres");
        for (sql, expect) in cases {
            let rows = routes.run(&mut client, sql, *expect);
            let ok = rows.len() == 1
                && match expect {
                    Expect::Primary => port_of(&rows[0][0]) == primary,
                    Expect::Replica => cluster.is_replica_port(port_of(&rows[0][0])),
                };
            if !ok {
                routes.problem(format!(
                    "with config {toml:?}: {sql:?} returned {rows:?}, expected {expect:?}"
                ));
            }
        }
    }
    routes.check("hints");
}

#[test]
fn reads_go_to_the_primary_when_no_replica_is_configured() {
    let cluster = Cluster::shared();
    let gate = PgGate::start(
        cluster,
        &format!(
            "[[backends]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"",
            cluster.primary_port
        ),
    );
    assert!(
        !gate
            .files
            .config_text()
            .contains(&cluster.replica_ports[0].to_string()),
        "the config should name no replica:\n{}",
        gate.files.config_text()
    );
    let mut client = gate.connect("postgres", "postgres");
    let mut routes = Routes::new(cluster);
    for sql in [
        "SELECT inet_server_port()",
        "VALUES (inet_server_port())",
        "/* pggate:replica */ SELECT inet_server_port()",
    ] {
        let rows = routes.run(&mut client, sql, Expect::Primary);
        if rows.len() != 1 || port_of(&rows[0][0]) != cluster.primary_port {
            routes.problem(format!(
                "{sql:?} returned {rows:?}, expected the primary {}",
                cluster.primary_port
            ));
        }
    }
    routes.run(&mut client, "BEGIN READ ONLY", Expect::Primary);
    let rows = routes.run(&mut client, "SELECT inet_server_port()", Expect::Primary);
    routes.run(&mut client, "COMMIT", Expect::Primary);
    if rows != vec![vec![Some(cluster.primary_port.to_string())]] {
        routes.problem(format!("BEGIN READ ONLY: a read returned {rows:?}"));
    }
    let rows = routes.run(&mut client, "SHOW port", Expect::Primary);
    if rows != vec![vec![Some(cluster.primary_port.to_string())]] {
        routes.problem(format!("SHOW port returned {rows:?}"));
    }
    routes.check("reads without replicas");
}

/// A server that refuses a read as a write and, in the same packet, says it
/// is shutting down (something a real server cannot be timed to do, hence
/// the stand-in): the read still goes to the primary, and the client gets
/// its answer rather than waiting for one that never comes.
#[test]
fn a_read_refused_by_a_replica_that_then_shuts_down_still_goes_to_the_primary() {
    let cluster = Cluster::shared();
    let db = common::new_database(cluster, "rt_refused");
    common::on_primary_in(
        cluster,
        &db,
        "CREATE TABLE w_log (tag text); \
         CREATE FUNCTION w(tag text) RETURNS text LANGUAGE sql AS \
         $$ INSERT INTO w_log VALUES (tag) RETURNING tag $$",
    );
    // A stand-in replica refuses the call and, in the same packet, says it
    // is shutting down; then it closes. Anything else gets an empty completion.
    let fake = FakeServer::start(|sql| {
        if sql.contains("w('a')") {
            let mut bytes = fake::error(
                "ERROR",
                "25006",
                "cannot execute INSERT in a read-only transaction",
            );
            bytes.extend(fake::ready(b'I'));
            bytes.extend(fake::error(
                "FATAL",
                "57P01",
                "terminating connection due to administrator command",
            ));
            Answer {
                delay: Duration::ZERO,
                bytes,
                close: true,
            }
        } else {
            let mut bytes = fake::complete("SET");
            bytes.extend(fake::ready(b'I'));
            Answer::now(bytes)
        }
    });
    let fake_port = fake.port;
    let gate = PgGate::start(
        cluster,
        &format!(
            "[proxy]\nworkers = 1\n\
             [[backends]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\n\
             [[backends]]\nname = \"fake\"\nhost = \"127.0.0.1\"\nport = {fake_port}\nrole = \"replica\"\n",
            cluster.primary_port
        ),
    );
    let mut client = common::raw::RawConn::connect(gate.port);
    client.login("postgres", &db);
    client.send_query("SELECT w('a')");
    let reply = client.read_until_readies_within(1, Duration::from_secs(10));
    let values: Vec<_> = reply
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.data_row())
        .collect();
    assert_eq!(
        values,
        vec![vec![Some("a".to_string())]],
        "the client got {reply:?}\n{}",
        common::tail(&gate.log_contents(), 20)
    );
    assert!(
        fake.was_sent("w('a')"),
        "the read never reached the replica, so it was not refused there"
    );
    // The session goes on (a write: reads would go to the stand-in again).
    let again = client.query("INSERT INTO w_log VALUES ('b')");
    assert!(
        again.iter().all(|m| m.tag != b'E') && again.last().map(|m| m.tag) == Some(b'Z'),
        "then got {again:?}"
    );
    let logged = common::on_primary_in(cluster, &db, "SELECT tag FROM w_log ORDER BY tag");
    assert_eq!(
        logged,
        vec![vec![Some("a".to_string())], vec![Some("b".to_string())]]
    );
}
