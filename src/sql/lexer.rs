//! The SQL lexer: splits a query string into tokens the way PostgreSQL's own
//! scanner does, far enough that words inside comments, string literals,
//! dollar-quoted bodies and quoted identifiers never look like keywords.
//! Pure: no I/O here, no allocation, never panics, always makes progress.
//!
//! Tokens borrow from the input (`Token::text` is a slice of it). Malformed
//! input is tolerated: an unterminated string, quoted identifier or comment
//! simply runs to the end of the input. Plain `'...'` strings follow
//! `standard_conforming_strings = on` (PostgreSQL's default since 9.1):
//! a backslash is an ordinary character there; only `E'...'` strings have
//! backslash escapes.

/// What a token is. The text of every token is in [`Token::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted identifier or keyword (`select`, `users`, `pg_catalog`).
    /// PostgreSQL folds these to lower case: compare with
    /// [`Token::is_keyword`] (ASCII case-insensitive).
    Ident,
    /// A quoted identifier `"..."` (with `""` for a quote) or `U&"..."`.
    /// The text includes the quotes; [`Token::ident_name`] gives the name.
    QuotedIdent,
    /// A string literal: `'...'`, `E'...'`, `U&'...'`, `B'...'`, `X'...'`,
    /// `N'...'` or a dollar-quoted `$tag$...$tag$`. The text includes the
    /// prefix and quotes.
    String,
    /// A numeric literal (`42`, `3.14`, `.5`, `1e-3`, `0x1F`, `1_000`).
    Number,
    /// A positional parameter `$1`.
    Param,
    /// A run of operator characters (`=`, `<>`, `::` is two `Punct(b':')`,
    /// `->>`, `=>`). Never contains the start of a comment.
    Operator,
    /// A single punctuation byte: `(`, `)`, `[`, `]`, `,`, `.`, `:`, or any
    /// other ASCII byte PostgreSQL does not accept (a lone `$`, `\`, `{`).
    Punct(u8),
    /// `;`: ends a statement when it is outside parentheses.
    Semicolon,
    /// `-- ...` up to (not including) the end of the line.
    LineComment,
    /// `/* ... */`, nesting like PostgreSQL's (`/* a /* b */ c */`).
    BlockComment,
}

/// One token: its kind and the slice of the input it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
}

impl<'a> Token<'a> {
    /// Whether this is the unquoted keyword `kw` (given in lower case or
    /// any case; compared ASCII case-insensitively). A quoted identifier is
    /// never a keyword.
    #[inline]
    pub fn is_keyword(&self, kw: &str) -> bool {
        self.kind == TokenKind::Ident && self.text.eq_ignore_ascii_case(kw)
    }

    /// The identifier's name: the text of an unquoted identifier, or the
    /// content between the quotes of a quoted one (doubled `""` and `U&`
    /// escapes are left as written). `None` for every other token.
    pub fn ident_name(&self) -> Option<&'a str> {
        match self.kind {
            TokenKind::Ident => Some(self.text),
            TokenKind::QuotedIdent => {
                let t = self.text;
                let t = match t.as_bytes() {
                    [b'u' | b'U', b'&', ..] => t.get(2..).unwrap_or(""),
                    _ => t,
                };
                let inner = t.strip_prefix('"').unwrap_or(t);
                Some(inner.strip_suffix('"').unwrap_or(inner))
            }
            _ => None,
        }
    }

    /// Whether this token is a comment (line or block).
    #[inline]
    pub fn is_comment(&self) -> bool {
        matches!(self.kind, TokenKind::LineComment | TokenKind::BlockComment)
    }
}

/// A lexer over one query string. `Copy`, so looking ahead is a copy and a
/// few more calls to [`Lexer::next_token`].
#[derive(Debug, Clone, Copy)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    /// Byte offset of the next unread byte.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// The next token (comments included), or `None` at the end of input.
    pub fn next_token(&mut self) -> Option<Token<'a>> {
        self.next_token_inline()
    }

    /// [`Lexer::next_token`], for the statement cursor's hot loop.
    #[inline(always)]
    pub(crate) fn next_token_inline(&mut self) -> Option<Token<'a>> {
        let b = self.src.as_bytes();
        let mut i = self.pos;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            self.pos = b.len();
            return None;
        }
        let start = i;
        let c = b[i];
        let next = byte_at(b, i + 1);
        let (kind, end) = match c {
            b'-' if next == b'-' => (TokenKind::LineComment, line_comment_end(b, i + 2)),
            b'/' if next == b'*' => (TokenKind::BlockComment, block_comment_end(b, i + 2)),
            b'\'' => (TokenKind::String, quoted_end(b, i + 1, b'\'', false)),
            b'"' => (TokenKind::QuotedIdent, quoted_end(b, i + 1, b'"', false)),
            b'$' => self.dollar(i),
            b'0'..=b'9' => (TokenKind::Number, number_end(b, i)),
            b'.' if next.is_ascii_digit() => (TokenKind::Number, number_end(b, i)),
            b'e' | b'E' if next == b'\'' => (TokenKind::String, quoted_end(b, i + 2, b'\'', true)),
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if next == b'\'' => {
                (TokenKind::String, quoted_end(b, i + 2, b'\'', false))
            }
            b'u' | b'U' if next == b'&' && byte_at(b, i + 2) == b'\'' => {
                (TokenKind::String, quoted_end(b, i + 3, b'\'', false))
            }
            b'u' | b'U' if next == b'&' && byte_at(b, i + 2) == b'"' => {
                (TokenKind::QuotedIdent, quoted_end(b, i + 3, b'"', false))
            }
            _ if is_ident_start(c) => {
                let mut j = i + 1;
                while j < b.len() && is_ident_cont(b[j]) {
                    j += 1;
                }
                (TokenKind::Ident, j)
            }
            b';' => (TokenKind::Semicolon, i + 1),
            _ if is_op_char(c) => (TokenKind::Operator, operator_end(b, i)),
            // Every byte >= 0x80 is an identifier byte, so this is ASCII.
            _ => (TokenKind::Punct(c), i + 1),
        };
        let end = end.min(b.len());
        self.pos = end;
        // Token boundaries always fall on ASCII bytes or the end of input,
        // so this slice is on char boundaries; `get` keeps that a promise
        // rather than a panic.
        let text = self.src.get(start..end).unwrap_or("");
        Some(Token { kind, text })
    }

    /// A `$` at `i`: a parameter `$1`, a dollar-quoted string, or a lone `$`.
    #[inline(never)]
    fn dollar(&self, i: usize) -> (TokenKind, usize) {
        let b = self.src.as_bytes();
        let next = byte_at(b, i + 1);
        if next.is_ascii_digit() {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            return (TokenKind::Param, j);
        }
        // Opening delimiter: `$` [tag] `$`, tag = identifier bytes without `$`.
        let mut j = i + 1;
        if is_ident_start(next) {
            j += 1;
            while j < b.len() && is_dollar_tag_cont(b[j]) {
                j += 1;
            }
        }
        if byte_at(b, j) != b'$' {
            return (TokenKind::Punct(b'$'), i + 1);
        }
        let body = j + 1;
        let end = match (self.src.get(i..body), self.src.get(body..)) {
            (Some(tag), Some(rest)) => match rest.find(tag) {
                Some(at) => body + at + tag.len(),
                None => b.len(),
            },
            _ => b.len(),
        };
        (TokenKind::String, end)
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        self.next_token()
    }
}

#[inline]
fn byte_at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

// Byte classes, looked up in one table: the lexer's inner loops test a
// class per byte.
const SPACE: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;
const DOLLAR_TAG_CONT: u8 = 8;
const OP_CHAR: u8 = 16;

static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut class = 0;
        // PostgreSQL's `space`: ` \t\n\r\f\v`.
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            class |= SPACE;
        }
        // `ident_start`: letters, `_` and every byte >= 0x80.
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            class |= IDENT_START | IDENT_CONT | DOLLAR_TAG_CONT;
        }
        // `ident_cont` adds digits and `$`; `dolq_cont` only digits.
        if c.is_ascii_digit() {
            class |= IDENT_CONT | DOLLAR_TAG_CONT;
        }
        if c == b'$' {
            class |= IDENT_CONT;
        }
        // `op_chars`.
        if matches!(
            c,
            b'~' | b'!'
                | b'@'
                | b'#'
                | b'^'
                | b'&'
                | b'|'
                | b'`'
                | b'?'
                | b'+'
                | b'-'
                | b'*'
                | b'/'
                | b'%'
                | b'<'
                | b'>'
                | b'='
        ) {
            class |= OP_CHAR;
        }
        t[i] = class;
        i += 1;
    }
    t
};

#[inline]
fn is_space(c: u8) -> bool {
    CLASSES[c as usize] & SPACE != 0
}

#[inline]
fn is_ident_start(c: u8) -> bool {
    CLASSES[c as usize] & IDENT_START != 0
}

#[inline]
fn is_ident_cont(c: u8) -> bool {
    CLASSES[c as usize] & IDENT_CONT != 0
}

#[inline]
fn is_dollar_tag_cont(c: u8) -> bool {
    CLASSES[c as usize] & DOLLAR_TAG_CONT != 0
}

#[inline]
fn is_op_char(c: u8) -> bool {
    CLASSES[c as usize] & OP_CHAR != 0
}

#[inline(never)]
fn line_comment_end(b: &[u8], mut j: usize) -> usize {
    while j < b.len() && b[j] != b'\n' && b[j] != b'\r' {
        j += 1;
    }
    j
}

#[inline(never)]
fn block_comment_end(b: &[u8], mut j: usize) -> usize {
    let mut depth = 1usize;
    while j < b.len() {
        match (b[j], byte_at(b, j + 1)) {
            (b'/', b'*') => {
                depth += 1;
                j += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return j;
                }
            }
            _ => j += 1,
        }
    }
    b.len()
}

/// End (exclusive) of a literal quoted with `quote` whose body starts at
/// `j`; a doubled quote stands for itself, and with `backslash` a backslash
/// escapes the next byte.
#[inline(never)]
fn quoted_end(b: &[u8], mut j: usize, quote: u8, backslash: bool) -> usize {
    while j < b.len() {
        let c = b[j];
        if c == quote {
            if byte_at(b, j + 1) == quote {
                j += 2;
            } else {
                return j + 1;
            }
        } else if backslash && c == b'\\' {
            j += 2;
        } else {
            j += 1;
        }
    }
    b.len()
}

#[inline(never)]
fn number_end(b: &[u8], i: usize) -> usize {
    let radix_digit: Option<fn(u8) -> bool> = match (byte_at(b, i), byte_at(b, i + 1)) {
        (b'0', b'x' | b'X') => Some(|c: u8| c.is_ascii_hexdigit()),
        (b'0', b'o' | b'O') => Some(|c: u8| (b'0'..=b'7').contains(&c)),
        (b'0', b'b' | b'B') => Some(|c: u8| c == b'0' || c == b'1'),
        _ => None,
    };
    if let Some(is_digit) = radix_digit {
        if is_digit(byte_at(b, i + 2)) || byte_at(b, i + 2) == b'_' {
            let mut j = i + 2;
            while j < b.len() && (is_digit(b[j]) || b[j] == b'_') {
                j += 1;
            }
            return j;
        }
    }
    let digits = |mut j: usize| {
        while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
        j
    };
    let mut j = digits(i);
    // `1..10` is `1` then `..10` in PostgreSQL (a PL/pgSQL range).
    if byte_at(b, j) == b'.' && byte_at(b, j + 1) != b'.' {
        j = digits(j + 1);
    }
    if matches!(byte_at(b, j), b'e' | b'E') {
        let k = if matches!(byte_at(b, j + 1), b'+' | b'-') {
            j + 2
        } else {
            j + 1
        };
        if byte_at(b, k).is_ascii_digit() {
            j = digits(k);
        }
    }
    j
}

/// A run of operator characters starting at `i`, stopping before anything
/// that would start a comment.
fn operator_end(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() && is_op_char(b[j]) {
        let n = byte_at(b, j + 1);
        if (b[j] == b'-' && n == b'-') || (b[j] == b'/' && n == b'*') {
            break;
        }
        j += 1;
    }
    j
}
