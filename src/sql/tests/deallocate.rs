//! `DEALLOCATE`/`DISCARD ALL`, which PgGate answers itself (SPEC §3
//! prepared statements). Pure: no I/O here.

use crate::sql::{deallocate_target, Deallocate};

fn name(n: &str) -> Option<Deallocate> {
    Some(Deallocate::Name(n.to_owned()))
}

#[test]
fn deallocate_of_one_statement_names_it_as_postgresql_would() {
    let cases: &[(&str, Option<Deallocate>)] = &[
        ("DEALLOCATE s1", name("s1")),
        ("deallocate prepare s1", name("s1")),
        ("DEALLOCATE MyStmt", name("mystmt")),
        ("DEALLOCATE \"MyStmt\"", name("MyStmt")),
        ("DEALLOCATE \"a\"\"b\"", name("a\"b")),
        ("DEALLOCATE \"all\"", name("all")),
        ("DEALLOCATE prepare", name("prepare")),
        ("DEALLOCATE PREPARE prepare", name("prepare")),
        ("  /* c */ DEALLOCATE s1 ; ", name("s1")),
        ("DEALLOCATE s1;;", name("s1")),
        ("-- c\nDEALLOCATE -- d\n s1 -- e", name("s1")),
        ("DEALLOCATE ÜBER", name("Über")),
        // Every byte PostgreSQL counts as white space may come first.
        ("\t\r\n\x0b\x0cDEALLOCATE s1", name("s1")),
    ];
    for (sql, want) in cases {
        assert_eq!(&deallocate_target(sql), want, "{sql:?}");
    }
}

#[test]
fn deallocate_all_and_discard_all_drop_every_statement() {
    for sql in [
        "DEALLOCATE ALL",
        "deallocate all;",
        "DEALLOCATE PREPARE ALL",
        "DISCARD ALL",
        "discard all ;",
    ] {
        assert_eq!(deallocate_target(sql), Some(Deallocate::All), "{sql:?}");
    }
}

#[test]
fn a_long_name_is_truncated_to_63_bytes() {
    let long = "a".repeat(70);
    assert_eq!(
        deallocate_target(&format!("DEALLOCATE {long}")),
        name(&long[..63])
    );
    // Truncation never splits a character.
    let wide = format!("\"{}é\"", "a".repeat(62));
    assert_eq!(
        deallocate_target(&format!("DEALLOCATE {wide}")),
        name(&"a".repeat(62))
    );
}

#[test]
fn anything_else_is_not_a_deallocate() {
    for sql in [
        "",
        "DEALLOCATE",
        "DEALLOCATE s1 s2",
        "DEALLOCATE s1; SELECT 1",
        "SELECT 1; DEALLOCATE s1",
        "DEALLOCATE 's1'",
        "DEALLOCATE 1",
        "DEALLOCATE \"\"",
        "DISCARD PLANS",
        "DISCARD ALL PLEASE",
        "DISCARD",
        "(DEALLOCATE s1)",
        "SELECT 'DEALLOCATE s1'",
        "PREPARE s1 AS SELECT 1",
        "/* DEALLOCATE s1 */",
        ";DEALLOCATE s1",
        "\u{a0}DEALLOCATE s1",
    ] {
        assert_eq!(deallocate_target(sql), None, "{sql:?}");
    }
}
