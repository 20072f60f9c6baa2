//! Words inside comments, string literals of every form, dollar quotes and
//! quoted identifiers never count (SPEC §4's lexer promise). Pure: no I/O here.

use super::*;

#[test]
fn keywords_inside_plain_strings_do_not_count() {
    assert_kinds(&[
        ("select 'insert into t values (1)'", READ),
        ("select 'it''s; delete from t'", READ),
        ("select '''; drop table t; --'", READ),
        ("select 'a' 'for update'", READ),
        ("select 'multi\nline; update t set a = 1'", READ),
        ("insert into t values ('select 1')", WRITE),
    ]);
}

#[test]
fn a_backslash_in_a_plain_string_is_an_ordinary_character() {
    // standard_conforming_strings = on: '\' is a complete string.
    assert_kinds(&[
        ("select '\\'; delete from t", WRITE),
        ("select 'C:\\dir\\' from t", READ),
        ("select 'a\\' || 'b; update t set a = 1'", READ),
    ]);
}

#[test]
fn keywords_inside_escape_strings_do_not_count() {
    assert_kinds(&[
        ("select E'it\\'s; delete from t'", READ),
        ("select e'\\\\'; select 2", READ),
        ("select E'a\\\\' || 'b; update t set a = 1'", READ),
        ("select E'\\x41; for update'", READ),
        ("select E'it''s; nextval(1)'", READ),
        ("select e'\\'' , nextval('s')", WRITE),
    ]);
}

#[test]
fn keywords_inside_prefixed_strings_do_not_count() {
    assert_kinds(&[
        ("select U&'d\\0061t\\+000061; delete'", READ),
        ("select u&'; drop table t'", READ),
        ("select B'1010', X'1F', N'; insert into t'", READ),
        ("select b'1' from t for share", WRITE),
        ("select n'x''; update t'", READ),
        ("select U&\"d\\0061ta\" from t", READ),
        ("select e from t", READ),
        ("select u & 1 from t", READ),
    ]);
}

#[test]
fn keywords_inside_dollar_quotes_do_not_count() {
    assert_kinds(&[
        ("select $$ delete from t $$", READ),
        ("select $$ $a$ insert $$", READ),
        ("select $a$ $$ insert into t $$ $a$", READ),
        ("select $tag$ it's; update t $tag$", READ),
        ("select $tag$ cost $5; for update $tag$", READ),
        ("select $x$ $xy$ delete $xy$ $x$", READ),
        ("select $_1$ nextval('s') $_1$", READ),
        ("select $é$ delete $é$", READ),
        ("select $TAG$ delete $tag$ still inside $TAG$", READ),
        ("select $$ a $$, nextval('s')", WRITE),
        ("select $tag$ x $tag$ from t for update", WRITE),
        (
            "DO $body$ BEGIN INSERT INTO t VALUES (1); END $body$",
            WRITE,
        ),
    ]);
}

#[test]
fn a_dollar_digit_is_a_parameter_not_a_quote() {
    assert_kinds(&[
        ("select $1 from t where a = $2", READ),
        ("select $1, 'x' from t for update", WRITE),
        ("select $1$$ delete $$", READ),
        ("select a$b, c$$ from t", READ),
        ("select foo$$ from t where x = 'for update'", READ),
    ]);
}

#[test]
fn keywords_inside_quoted_identifiers_do_not_count() {
    assert_kinds(&[
        ("select * from \"update\"", READ),
        ("select \"for\" \"update\" from t", READ),
        ("select \"a\"\"; delete from t\" from t", READ),
        ("select \"into\" from t", READ),
        ("\"insert\" into t", UNKNOWN),
    ]);
}

#[test]
fn keywords_inside_comments_do_not_count() {
    assert_kinds(&[
        ("select 1 -- for update", READ),
        ("select 1 -- ; delete from t", READ),
        ("select 1 /* ; delete from t */", READ),
        ("select /* /* nested */ delete from t */ 1", READ),
        ("select /* a /* b /* c */ d */ update */ 1", READ),
        ("select 1 /* unterminated ; delete from t", READ),
        ("select 1 --\rdelete from t", WRITE),
        ("select 1 --\ndelete from t", WRITE),
        ("select 1 /* */ ; delete from t", WRITE),
        ("select 1 /*/ still a comment; delete */", READ),
        ("select 2 --- x\n", READ),
        ("select 1-- x\n", READ),
        ("select 1 +-- x\n 2", READ),
        ("select 1 */* x */ 2", READ),
    ]);
}

#[test]
fn unterminated_quotes_run_to_the_end_of_the_input() {
    assert_kinds(&[
        ("select 'unterminated; delete from t", READ),
        ("select E'unterminated \\'; delete from t", READ),
        ("select $$ unterminated; delete from t", READ),
        ("select $a$ unterminated; delete from t $b$", READ),
        ("select \"unterminated; delete from t", READ),
        ("select U&'x", READ),
        ("select E'\\", READ),
    ]);
}

#[test]
fn non_ascii_letters_are_identifier_characters() {
    assert_kinds(&[
        ("select über, naïve from tëst", READ),
        ("select * from deleteé", READ),
        ("select * from éupdate", READ),
        ("select 名前 from 表 for update", WRITE),
        ("SELECT 'ü' FROM t WHERE a = 'é; delete'", READ),
    ]);
}
