//! Arbitrary input never panics, never loops and keeps the module's
//! invariants; pathological nesting stays linear. Pure: no I/O here.

use crate::sql::{classify, deallocate_target, Kind, Lexer};

/// xorshift64*: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces that exercise every lexer state, mixed with raw bytes.
const FRAGMENTS: &[&[u8]] = &[
    b"'",
    b"''",
    b"\"",
    b"$",
    b"$$",
    b"$a$",
    b"$1",
    b"E'",
    b"e'\\",
    b"U&'",
    b"U&\"",
    b"B'",
    b"X'",
    b"N'",
    b"--",
    b"/*",
    b"*/",
    b"\n",
    b"\r",
    b";",
    b"(",
    b")",
    b",",
    b".",
    b"\\",
    b" ",
    b"=>",
    b"select",
    b"SELECT",
    b"insert",
    b"update",
    b"for",
    b"share",
    b"key",
    b"no",
    b"into",
    b"temp",
    b"with",
    b"begin",
    b"atomic",
    b"case",
    b"end",
    b"create",
    b"function",
    b"explain",
    b"analyze",
    b"copy",
    b"to",
    b"from",
    b"program",
    b"declare",
    b"hold",
    b"set",
    b"local",
    b"set_config",
    b"nextval",
    b"pg_advisory_lock",
    b"pg_temp",
    b"true",
    b"false",
    b"read",
    b"only",
    b"1e",
    b"0x",
    b"1.",
    b"/* pggate:replica */",
    b"/* pggate:primary */",
    b"\xc3\xa9",
    b"\xe5\x90\x8d",
    b"\xff",
    b"\xc3",
    b"\x00",
];

fn random_input(rng: &mut Rng, buf: &mut Vec<u8>) {
    buf.clear();
    let pieces = rng.below(24);
    for _ in 0..pieces {
        if rng.below(4) == 0 {
            buf.push(rng.next() as u8);
        } else {
            buf.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
        }
    }
}

fn check(sql: &str, write_functions: &[String]) {
    let mut lex = Lexer::new(sql);
    let mut last = 0;
    while let Some(tok) = lex.next_token() {
        assert!(!tok.text.is_empty(), "empty token in {sql:?}");
        assert!(lex.offset() > last, "no progress in {sql:?}");
        last = lex.offset();
    }
    assert_eq!(lex.offset(), sql.len(), "{sql:?}");

    let c = classify(sql, write_functions);
    assert!(
        c.statements <= sql.matches(';').count() + 1,
        "{sql:?}: {c:?}"
    );
    if c.pin.is_some() {
        assert_eq!(c.kind, Kind::Write, "{sql:?}: {c:?}");
    }
    if c.statements == 0 {
        assert_eq!(
            (c.kind, c.pin, c.hint),
            (Kind::Unknown, None, None),
            "{sql:?}"
        );
    }
    for reads_to_primary in [false, true] {
        if c.wants_replica(reads_to_primary) {
            assert!(
                matches!(c.kind, Kind::Read | Kind::Begin { read_only: true }) && c.pin.is_none(),
                "{sql:?}: {c:?}"
            );
        }
    }
    let _ = deallocate_target(sql);
}

#[test]
fn random_input_never_panics() {
    let write_functions = vec!["audit".to_owned(), "s.f".to_owned()];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut buf = Vec::new();
    for _ in 0..300_000 {
        random_input(&mut rng, &mut buf);
        let sql = String::from_utf8_lossy(&buf);
        check(&sql, &write_functions);
    }
}

#[test]
fn pathological_nesting_stays_linear_and_never_overflows_the_stack() {
    let n = 200_000;
    let inputs = [
        "(".repeat(n),
        ")".repeat(n),
        "select ".to_owned() + &"set_config(".repeat(n),
        "select ".to_owned() + &"set_config('a', ".repeat(n),
        "explain analyze ".repeat(n) + "select 1",
        "explain (".repeat(n),
        "/*".repeat(n),
        "/* */".repeat(n),
        "$a$".repeat(n),
        "'".repeat(n),
        ";".repeat(n),
        "begin ".repeat(n),
        "create function f() begin atomic ".to_owned() + &"begin ".repeat(n) + &"; end".repeat(n),
        "select 1 for ".repeat(n),
        "copy (".repeat(n),
    ];
    let started = std::time::Instant::now();
    for sql in &inputs {
        check(sql, &[]);
    }
    // Quadratic behaviour on 200k-token inputs would take minutes.
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
}
