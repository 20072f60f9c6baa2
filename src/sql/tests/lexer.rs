//! The lexer's tokens for every quoting form, comment form and literal.
//! Pure: no I/O here.

use crate::sql::{Lexer, Token, TokenKind};
use TokenKind::*;

fn tokens(sql: &str) -> Vec<(TokenKind, &str)> {
    Lexer::new(sql).map(|t| (t.kind, t.text)).collect()
}

#[test]
fn words_numbers_operators_and_punctuation() {
    assert_eq!(
        tokens("SELECT a.b, 1.5e-3::text FROM t WHERE x >= $1;"),
        vec![
            (Ident, "SELECT"),
            (Ident, "a"),
            (Punct(b'.'), "."),
            (Ident, "b"),
            (Punct(b','), ","),
            (Number, "1.5e-3"),
            (Punct(b':'), ":"),
            (Punct(b':'), ":"),
            (Ident, "text"),
            (Ident, "FROM"),
            (Ident, "t"),
            (Ident, "WHERE"),
            (Ident, "x"),
            (Operator, ">="),
            (Param, "$1"),
            (Semicolon, ";"),
        ]
    );
}

#[test]
fn numeric_literals() {
    for (sql, number) in [
        ("42", "42"),
        ("3.14", "3.14"),
        (".5", ".5"),
        ("1e10", "1e10"),
        ("1E+10", "1E+10"),
        ("0x1F", "0x1F"),
        ("0o17", "0o17"),
        ("0b101", "0b101"),
        ("1_000_000", "1_000_000"),
    ] {
        assert_eq!(tokens(sql), vec![(Number, number)], "{sql:?}");
    }
    assert_eq!(
        tokens("1..10"),
        vec![(Number, "1"), (Punct(b'.'), "."), (Number, ".10")]
    );
    // Before PostgreSQL 16, `1for` is `1` then `for`.
    assert_eq!(tokens("1for"), vec![(Number, "1"), (Ident, "for")]);
    assert_eq!(tokens("1e"), vec![(Number, "1"), (Ident, "e")]);
}

#[test]
fn identifiers_take_dollars_digits_and_non_ascii_letters() {
    assert_eq!(
        tokens("a$b _x1 über 名前 c$$"),
        vec![
            (Ident, "a$b"),
            (Ident, "_x1"),
            (Ident, "über"),
            (Ident, "名前"),
            (Ident, "c$$")
        ]
    );
}

#[test]
fn string_literal_forms() {
    for sql in [
        "'plain'",
        "'it''s'",
        "''",
        "E'it\\'s'",
        "e'\\\\'",
        "E'x''y'",
        "U&'d\\0061t'",
        "u&'x'",
        "B'1010'",
        "b'1'",
        "X'1F'",
        "x'ff'",
        "N'national'",
        "n'x'",
        "'back\\'",
        "$$dollar$$",
        "$$$$",
        "$tag$with $ and $$ inside$tag$",
        "$a1$x$a1$",
        "$_$x$_$",
        "$é$x$é$",
    ] {
        assert_eq!(tokens(sql), vec![(String, sql)], "{sql:?}");
    }
}

#[test]
fn quoted_identifier_forms() {
    for sql in [
        "\"x\"",
        "\"a\"\"b\"",
        "\"Mixed Case\"",
        "U&\"d\\0061t\"",
        "u&\"x\"",
    ] {
        assert_eq!(tokens(sql), vec![(QuotedIdent, sql)], "{sql:?}");
    }
}

#[test]
fn the_name_of_an_identifier() {
    fn name(sql: &str) -> Option<&str> {
        Lexer::new(sql).next().and_then(|t| t.ident_name())
    }
    assert_eq!(name("Foo"), Some("Foo"));
    assert_eq!(name("\"Foo\""), Some("Foo"));
    assert_eq!(name("U&\"Foo\""), Some("Foo"));
    assert_eq!(name("\"unterminated"), Some("unterminated"));
    assert_eq!(name("'string'"), None);
    assert_eq!(name("42"), None);
}

#[test]
fn keywords_compare_case_insensitively_and_quoted_identifiers_are_never_keywords() {
    let tok = |sql| {
        Lexer::new(sql).next().unwrap_or(Token {
            kind: Punct(0),
            text: "",
        })
    };
    assert!(tok("SeLeCt").is_keyword("select"));
    assert!(tok("select").is_keyword("SELECT"));
    assert!(!tok("\"select\"").is_keyword("select"));
    assert!(!tok("selects").is_keyword("select"));
    assert!(!tok("'select'").is_keyword("select"));
}

#[test]
fn a_dollar_sign_is_a_parameter_a_quote_or_a_lone_character() {
    assert_eq!(tokens("$12"), vec![(Param, "$12")]);
    assert_eq!(tokens("$1$$x$$"), vec![(Param, "$1"), (String, "$$x$$")]);
    assert_eq!(tokens("$ 1"), vec![(Punct(b'$'), "$"), (Number, "1")]);
    assert_eq!(tokens("$abc"), vec![(Punct(b'$'), "$"), (Ident, "abc")]);
    assert_eq!(tokens("$1abc"), vec![(Param, "$1"), (Ident, "abc")]);
}

#[test]
fn comment_forms() {
    assert_eq!(
        tokens("-- line\nx /* a /* b */ c */ y /**/ z"),
        vec![
            (LineComment, "-- line"),
            (Ident, "x"),
            (BlockComment, "/* a /* b */ c */"),
            (Ident, "y"),
            (BlockComment, "/**/"),
            (Ident, "z"),
        ]
    );
    assert_eq!(
        tokens("a--b\rc"),
        vec![(Ident, "a"), (LineComment, "--b"), (Ident, "c")]
    );
    assert_eq!(tokens("/* /* */"), vec![(BlockComment, "/* /* */")]);
}

#[test]
fn operators_stop_before_a_comment() {
    assert_eq!(
        tokens("1+-- c"),
        vec![(Number, "1"), (Operator, "+"), (LineComment, "-- c")]
    );
    assert_eq!(
        tokens("a*/* c */b"),
        vec![
            (Ident, "a"),
            (Operator, "*"),
            (BlockComment, "/* c */"),
            (Ident, "b")
        ]
    );
    assert_eq!(
        tokens("a->>'k'"),
        vec![(Ident, "a"), (Operator, "->>"), (String, "'k'")]
    );
    assert_eq!(
        tokens("x=>1"),
        vec![(Ident, "x"), (Operator, "=>"), (Number, "1")]
    );
}

#[test]
fn unterminated_tokens_run_to_the_end_of_the_input() {
    for (sql, kind) in [
        ("'abc", String),
        ("E'abc\\'", String),
        ("E'\\", String),
        ("$$abc", String),
        ("$t$abc$t", String),
        ("\"abc", QuotedIdent),
        ("U&\"abc", QuotedIdent),
        ("/* abc /* def */", BlockComment),
        ("-- abc", LineComment),
    ] {
        assert_eq!(tokens(sql), vec![(kind, sql)], "{sql:?}");
    }
}

#[test]
fn whitespace_is_spaces_tabs_newlines_and_form_feeds() {
    assert_eq!(tokens(" \t\r\n\x0b\x0c"), vec![]);
    assert_eq!(tokens("\x0ba\x0cb"), vec![(Ident, "a"), (Ident, "b")]);
}

#[test]
fn other_bytes_are_single_punctuation_tokens() {
    assert_eq!(
        tokens("[a]{\\}"),
        vec![
            (Punct(b'['), "["),
            (Ident, "a"),
            (Punct(b']'), "]"),
            (Punct(b'{'), "{"),
            (Punct(b'\\'), "\\"),
            (Punct(b'}'), "}"),
        ]
    );
}

#[test]
fn token_texts_cover_the_input_between_whitespace() {
    let sql = "SELECT $a$ x $a$, E'\\'', \"q\"\"\", 1.5 /* c */ -- d\n;";
    let mut lex = Lexer::new(sql);
    let mut rebuilt = std::string::String::new();
    while let Some(t) = lex.next_token() {
        rebuilt.push_str(t.text);
        assert!(t.kind != Punct(0));
    }
    let compact: std::string::String = sql.split_whitespace().collect();
    assert_eq!(rebuilt.replace(' ', ""), compact.replace(' ', ""));
    assert_eq!(lex.offset(), sql.len());
}
