//! Times `sql::classify` on representative queries and prints ns/op. Uses
//! only std (`harness = false`): `cargo bench --bench sql_classify`.
//! Pure computation: no I/O beyond printing the results.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pggate::sql::{classify, Lexer};

const CASES: &[(&str, &str)] = &[
    (
        "typical SELECT (~200 bytes)",
        "SELECT u.id, u.name, u.email, o.total, o.created_at FROM users u \
         JOIN orders o ON o.user_id = u.id WHERE u.id = $1 AND o.status = 'shipped' \
         AND o.created_at > now() - interval '30 days' ORDER BY o.created_at DESC LIMIT 50",
    ),
    ("short SELECT", "SELECT 1"),
    (
        "INSERT ... RETURNING",
        "INSERT INTO events (user_id, kind, payload) VALUES ($1, $2, $3) RETURNING id",
    ),
    (
        "writing CTE",
        "WITH moved AS (DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id \
         LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING *) INSERT INTO done SELECT * FROM moved",
    ),
    (
        "hinted SELECT with comments",
        "/* pggate:replica */ -- dashboard\nSELECT count(*) FROM t WHERE note <> 'for update'",
    ),
    ("SET", "SET search_path TO app, public"),
];

/// Best and median ns/op over several batches of about 10 ms each: the best
/// batch is the least disturbed by other work on the machine.
fn time_per_op(
    sql: &str,
    write_functions: &[String],
    f: fn(&str, &[String]) -> usize,
) -> (f64, f64) {
    let mut iterations = 1_000u64;
    loop {
        let started = Instant::now();
        for _ in 0..iterations {
            black_box(f(black_box(sql), write_functions));
        }
        if started.elapsed() >= Duration::from_millis(10) {
            break;
        }
        iterations *= 2;
    }
    let mut samples: Vec<f64> = (0..25)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iterations {
                black_box(f(black_box(sql), write_functions));
            }
            started.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[0], samples[samples.len() / 2])
}

fn run_classify(sql: &str, write_functions: &[String]) -> usize {
    let c = classify(sql, write_functions);
    c.statements + usize::from(c.wants_replica(false))
}

fn run_lexer(sql: &str, _: &[String]) -> usize {
    Lexer::new(sql).count()
}

fn main() {
    let write_functions = vec!["audit_touch".to_owned()];
    println!(
        "{:<30} {:>6} {:>22} {:>22}",
        "query", "bytes", "classify best/median", "lex only best/median"
    );
    for (name, sql) in CASES {
        let (classify_best, classify_median) = time_per_op(sql, &write_functions, run_classify);
        let (lex_best, lex_median) = time_per_op(sql, &write_functions, run_lexer);
        println!(
            "{name:<30} {:>6} {:>9.1} /{:>7.1} ns {:>9.1} /{:>7.1} ns",
            sql.len(),
            classify_best,
            classify_median,
            lex_best,
            lex_median
        );
    }
}
