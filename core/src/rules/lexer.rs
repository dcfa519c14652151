//! Text to tokens, and physical lines to directives. A directive is a line that starts
//! at column 1 plus the indented lines after it; comments and blank lines are dropped
//! before grouping, so a comment may sit between a rule and its continuation.
//!
//! The lexer never fails on its own: a character it cannot read becomes a
//! [`Tok::Error`] token, and the parser reports it when it gets there, by then knowing
//! the rule's name.

use super::error::{Pos, RuleError};

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'s> {
    /// `[A-Za-z_][A-Za-z0-9_]*`: a name or a keyword.
    Ident(&'s str),
    /// A finite number.
    Number(f64),
    /// A string literal, unescaped.
    Str(String),
    /// `@name`: the name without the `@`.
    List(&'s str),
    Colon,
    LParen,
    RParen,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    Plus,
    Minus,
    Star,
    Slash,
    /// What is wrong with the text, and where exactly; nothing after it on the
    /// directive is read.
    Error(Pos, String),
}

/// A token and where it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'s> {
    pub tok: Tok<'s>,
    /// Where it starts.
    pub pos: Pos,
    /// Just past its end (same line).
    pub end: Pos,
    /// Its source text.
    pub text: &'s str,
}

/// One directive (`mode …` or `rule …`), its continuation lines included.
#[derive(Debug, Clone)]
pub(crate) struct Directive<'s> {
    pub tokens: Vec<Token<'s>>,
    /// Its lines as written, comments and trailing blanks removed, joined by `\n`.
    pub text: String,
}

/// Split `source` into directives and lex each. Fails only on an indented line that has
/// no directive before it to continue.
pub(crate) fn directives(source: &str) -> Result<Vec<Directive<'_>>, RuleError> {
    let mut out: Vec<Directive<'_>> = Vec::new();
    for (i, raw) in source.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let number = i + 1;
        let indented = line.starts_with(char::is_whitespace);
        let mut tokens = Vec::new();
        let text_end = lex_line(line, number, &mut tokens);
        let text = &line[..text_end];
        match out.last_mut() {
            Some(d) if indented => {
                d.tokens.extend(tokens);
                d.text.push('\n');
                d.text.push_str(text);
            }
            None if indented => {
                let column = line.chars().take_while(|c| c.is_whitespace()).count() + 1;
                return Err(Pos {
                    line: number,
                    column,
                }
                .error(
                    None,
                    "an indented line continues the rule above it, and there is none \
                     (start a directive at column 1)",
                ));
            }
            _ => out.push(Directive {
                tokens,
                text: text.to_owned(),
            }),
        }
    }
    Ok(out)
}

/// A read position in one line.
struct Cursor<'s> {
    line: &'s str,
    /// Byte offset, always on a character boundary.
    at: usize,
    pos: Pos,
}

impl<'s> Cursor<'s> {
    fn peek(&self) -> Option<char> {
        self.line.get(self.at..)?.chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.line.get(self.at..)?.chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        self.pos.column += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.bump();
        }
        hit
    }

    fn eat_while(&mut self, f: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&f) {
            self.bump();
        }
    }

    fn since(&self, start: usize) -> &'s str {
        self.line.get(start..self.at).unwrap_or_default()
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `c` may follow the first character of a list name.
pub(crate) fn is_list_char(c: char) -> bool {
    is_ident_char(c) || c == '.' || c == '-'
}

/// Lex one physical line into `out`; returns the byte length of its content (up to the
/// end of the last token, or of the line after an error).
fn lex_line<'s>(line: &'s str, number: usize, out: &mut Vec<Token<'s>>) -> usize {
    let mut cur = Cursor {
        line,
        at: 0,
        pos: Pos {
            line: number,
            column: 1,
        },
    };
    let mut text_end = 0;
    loop {
        cur.eat_while(char::is_whitespace);
        let (start, pos) = (cur.at, cur.pos);
        let Some(c) = cur.bump() else {
            return text_end;
        };
        let tok = match c {
            '#' => return text_end,
            '0'..='9' => number_token(&mut cur, start, pos),
            c if is_ident_start(c) => {
                cur.eat_while(is_ident_char);
                Tok::Ident(cur.since(start))
            }
            '@' => {
                if cur.peek().is_some_and(is_ident_start) {
                    cur.eat_while(is_list_char);
                    Tok::List(cur.since(start + 1))
                } else {
                    Tok::Error(
                        pos,
                        "`@` must be followed by a list name, like `@blocked_cards`".into(),
                    )
                }
            }
            '"' => string_token(&mut cur, pos),
            ':' => Tok::Colon,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '+' => Tok::Plus,
            '-' => Tok::Minus,
            '*' => Tok::Star,
            '/' => Tok::Slash,
            '<' if cur.eat('=') => Tok::Le,
            '<' => Tok::Lt,
            '>' if cur.eat('=') => Tok::Ge,
            '>' => Tok::Gt,
            '=' if cur.eat('=') => Tok::Eq,
            '=' => Tok::Error(pos, "`=` is not an operator: compare with `==`".into()),
            '!' if cur.eat('=') => Tok::Ne,
            '!' => Tok::Error(
                pos,
                "`!` is not an operator: use `not`, or `!=` to compare".into(),
            ),
            '&' => Tok::Error(pos, "`&` is not an operator: use `and`".into()),
            '|' => Tok::Error(pos, "`|` is not an operator: use `or`".into()),
            c => Tok::Error(pos, format!("unexpected character `{}`", c.escape_debug())),
        };
        let failed = matches!(tok, Tok::Error(..));
        out.push(Token {
            tok,
            pos,
            end: cur.pos,
            text: cur.since(start),
        });
        if failed {
            return line.trim_end().len();
        }
        text_end = cur.at;
    }
}

/// `12`, `0.5`, `1e3`, `2.5E-4`; the first digit (at `pos`) is already read.
fn number_token<'s>(cur: &mut Cursor<'s>, start: usize, pos: Pos) -> Tok<'s> {
    cur.eat_while(|c| c.is_ascii_digit());
    if cur.peek() == Some('.') && cur.peek2().is_some_and(|c| c.is_ascii_digit()) {
        cur.bump();
        cur.eat_while(|c| c.is_ascii_digit());
    }
    if matches!(cur.peek(), Some('e' | 'E')) {
        let signed = matches!(cur.peek2(), Some('+' | '-'));
        cur.bump();
        if signed {
            cur.bump();
        }
        if !cur.peek().is_some_and(|c| c.is_ascii_digit()) {
            cur.eat_while(is_ident_char);
            let text = cur.since(start);
            return Tok::Error(
                pos,
                format!("malformed number `{text}`: the exponent needs digits"),
            );
        }
        cur.eat_while(|c| c.is_ascii_digit());
    }
    if cur.peek().is_some_and(|c| is_ident_char(c) || c == '.') {
        cur.eat_while(|c| is_ident_char(c) || c == '.');
        return Tok::Error(pos, format!("malformed number `{}`", cur.since(start)));
    }
    let text = cur.since(start);
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Tok::Number(v),
        _ => Tok::Error(pos, format!("number `{text}` is out of range")),
    }
}

/// A string literal; the opening quote (at `pos`) is already read.
fn string_token<'s>(cur: &mut Cursor<'s>, pos: Pos) -> Tok<'s> {
    let unterminated = || "unterminated string: close it with `\"` on the same line".to_owned();
    let mut value = String::new();
    loop {
        let here = cur.pos;
        match cur.bump() {
            None => return Tok::Error(pos, unterminated()),
            Some('"') => return Tok::Str(value),
            Some('\\') => match cur.bump() {
                Some(c @ ('"' | '\\')) => value.push(c),
                Some(c) => {
                    let message = format!(
                        "unknown escape `\\{}`: a string knows only `\\\"` and `\\\\`",
                        c.escape_debug()
                    );
                    return Tok::Error(here, message);
                }
                None => return Tok::Error(pos, unterminated()),
            },
            Some(c) => value.push(c),
        }
    }
}
