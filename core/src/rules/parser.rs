//! The expression grammar, parsed by recursive descent and type-checked as it goes:
//! each parse function emits its nodes into the arena and returns the operand's type,
//! so the first error in reading order is the one reported.
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | cmp
//! cmp     := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum | ["not"] "in" LIST]
//! sum     := product (("+" | "-") product)*
//! product := unary (("*" | "/") unary)*
//! unary   := "-" unary | atom
//! atom    := NUMBER | STRING | "true" | "false" | NAME | "(" expr ")"
//! ```

use super::compile::Compiler;
use super::error::{Pos, RuleError};
use super::lexer::Tok;
use super::program::{Arith, Cmp, Node};
use crate::schema::FIELD_NAMES;

/// How deep an expression may nest: parentheses, `not`, unary minus and each operator
/// level count. Bounds every recursion over the tree, so no input overflows the stack.
pub const MAX_DEPTH: usize = 64;

/// The names every rule may use besides the schema's fields and the entity features.
pub(crate) const BUILTINS: [&str; 6] = [
    "score",
    "risk_score",
    "fraud",
    "id",
    "card_id",
    "terminal_id",
];

const KEYWORDS: [&str; 6] = ["and", "or", "not", "in", "true", "false"];

/// A value's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Num,
    Str,
    Bool,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Self::Num => "a number",
            Self::Str => "a string",
            Self::Bool => "a bool",
        }
    }
}

/// A parsed (sub)expression.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'s> {
    pub node: u32,
    pub ty: Ty,
    /// Where it starts.
    pub pos: Pos,
    /// Height of its tree.
    pub depth: usize,
    /// Its source text when it is one token (for messages).
    pub what: Option<&'s str>,
}

impl Operand<'_> {
    /// "`Amount` is a number", "this operand is a string".
    pub(crate) fn is(&self) -> String {
        let ty = self.ty.name();
        match self.what {
            Some(w) if w.chars().count() <= 40 => format!("`{w}` is {ty}"),
            Some(w) => format!("`{}…` is {ty}", w.chars().take(40).collect::<String>()),
            None => format!("this operand is {ty}"),
        }
    }
}

/// Levenshtein distance in characters, or `None` when it is over `limit`.
fn distance(a: &str, b: &str, limit: usize) -> Option<usize> {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let swap = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + swap).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev.last().copied().filter(|&d| d <= limit)
}

/// The candidate nearest to `name` within edit distance 2.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter_map(|c| distance(name, c, 2).map(|d| (d, c)))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

impl<'s> Compiler<'s, '_> {
    fn peek(&self) -> Option<&Tok<'s>> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn at_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if *w == word)
    }

    fn at_not_in(&self) -> bool {
        self.at_word("not")
            && matches!(
                self.toks.get(self.i + 1).map(|t| &t.tok),
                Some(Tok::Ident("in"))
            )
    }

    /// Where the next token is, or the end of the directive.
    pub(crate) fn here(&self) -> Pos {
        self.toks.get(self.i).map_or(self.end, |t| t.pos)
    }

    pub(crate) fn fail(&self, pos: Pos, message: impl Into<String>) -> RuleError {
        pos.error(self.rule, message)
    }

    /// The error for the next token when `wanted` was expected there; a token the lexer
    /// could not read reports its own error.
    pub(crate) fn unexpected(&self, wanted: &str) -> RuleError {
        match self.toks.get(self.i) {
            Some(t) => match &t.tok {
                Tok::Error(pos, message) => self.fail(*pos, message.clone()),
                _ => {
                    let shown: String = t.text.chars().take(40).collect();
                    let more = if shown.len() < t.text.len() {
                        "…"
                    } else {
                        ""
                    };
                    self.fail(t.pos, format!("expected {wanted}, found `{shown}{more}`"))
                }
            },
            None => self.fail(
                self.end,
                format!("expected {wanted}, found the end of the rule"),
            ),
        }
    }

    /// One more level of parser recursion, for the `(`, `not` or `-` at `at`.
    fn enter(&mut self, at: Pos) -> Result<(), RuleError> {
        self.depth += 1;
        self.check_depth(self.depth, at)
    }

    /// Refuse a tree taller than [`MAX_DEPTH`], at the operator that makes it so.
    fn check_depth(&self, depth: usize, at: Pos) -> Result<(), RuleError> {
        if depth > MAX_DEPTH {
            return Err(self.fail(
                at,
                format!("the expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn push(&mut self, node: Node, at: Pos) -> Result<u32, RuleError> {
        let i = u32::try_from(self.prog.nodes.len())
            .map_err(|_| self.fail(at, "the rule set is too large"))?;
        self.prog.nodes.push(node);
        Ok(i)
    }

    fn operand(
        &mut self,
        node: Node,
        ty: Ty,
        pos: Pos,
        depth: usize,
    ) -> Result<Operand<'s>, RuleError> {
        Ok(Operand {
            node: self.push(node, pos)?,
            ty,
            pos,
            depth,
            what: None,
        })
    }

    fn need(&self, o: &Operand<'s>, ty: Ty, op: &str) -> Result<(), RuleError> {
        if o.ty == ty {
            return Ok(());
        }
        let needs = match ty {
            Ty::Num => "numbers",
            Ty::Str => "strings",
            Ty::Bool => "bools",
        };
        Err(self.fail(o.pos, format!("{}; `{op}` needs {needs}", o.is())))
    }

    /// A whole expression.
    pub(crate) fn expr(&mut self) -> Result<Operand<'s>, RuleError> {
        self.chain("or")
    }

    /// `a or b or …` / `a and b and …`, as one n-ary node.
    fn chain(&mut self, word: &'static str) -> Result<Operand<'s>, RuleError> {
        let first = if word == "or" {
            self.chain("and")?
        } else {
            self.not()?
        };
        if !self.at_word(word) {
            return Ok(first);
        }
        self.need(&first, Ty::Bool, word)?;
        let (pos, word_pos, mut depth) = (first.pos, self.here(), first.depth);
        let mut kids = vec![first.node];
        while self.at_word(word) {
            self.i += 1;
            let next = if word == "or" {
                self.chain("and")?
            } else {
                self.not()?
            };
            self.need(&next, Ty::Bool, word)?;
            depth = depth.max(next.depth);
            kids.push(next.node);
        }
        // Cheapest first (stable, so equal costs keep their order): terms have no side
        // effects, so the order changes the cost and never the result.
        kids.sort_by_cached_key(|&k| self.prog.cost(k));
        let start = u32::try_from(self.prog.kids.len())
            .map_err(|_| self.fail(pos, "the rule set is too large"))?;
        let len =
            u32::try_from(kids.len()).map_err(|_| self.fail(pos, "the rule set is too large"))?;
        self.prog.kids.extend(kids);
        let node = if word == "or" {
            Node::Or { start, len }
        } else {
            Node::And { start, len }
        };
        self.check_depth(depth + 1, word_pos)?;
        self.operand(node, Ty::Bool, pos, depth + 1)
    }

    fn not(&mut self) -> Result<Operand<'s>, RuleError> {
        if !self.at_word("not") {
            return self.comparison();
        }
        let pos = self.here();
        self.i += 1;
        self.enter(pos)?;
        let inner = self.not()?;
        self.depth -= 1;
        self.need(&inner, Ty::Bool, "not")?;
        self.check_depth(inner.depth + 1, pos)?;
        self.operand(Node::Not(inner.node), Ty::Bool, pos, inner.depth + 1)
    }

    fn cmp_op(&self) -> Option<Cmp> {
        Some(match self.peek()? {
            Tok::Lt => Cmp::Lt,
            Tok::Le => Cmp::Le,
            Tok::Gt => Cmp::Gt,
            Tok::Ge => Cmp::Ge,
            Tok::Eq => Cmp::Eq,
            Tok::Ne => Cmp::Ne,
            _ => return None,
        })
    }

    fn comparison(&mut self) -> Result<Operand<'s>, RuleError> {
        let left = self.sum()?;
        let op_pos = self.here();
        let result = if let Some(op) = self.cmp_op() {
            self.i += 1;
            let right = self.sum()?;
            self.compare(op, op_pos, left, right)?
        } else if self.at_word("in") || self.at_not_in() {
            let negated = self.at_word("not");
            self.i += if negated { 2 } else { 1 };
            let word = if negated { "not in" } else { "in" };
            self.check_depth(left.depth + 1, op_pos)?;
            self.membership(word, negated, left)?
        } else {
            return Ok(left);
        };
        if self.cmp_op().is_some() || self.at_word("in") || self.at_not_in() {
            return Err(self.fail(
                self.here(),
                "comparisons do not chain: write `a < b and b < c`, or add parentheses",
            ));
        }
        Ok(result)
    }

    fn compare(
        &mut self,
        op: Cmp,
        op_pos: Pos,
        left: Operand<'s>,
        right: Operand<'s>,
    ) -> Result<Operand<'s>, RuleError> {
        let (a, b) = (left.node, right.node);
        let depth = left.depth.max(right.depth) + 1;
        self.check_depth(depth, op_pos)?;
        let node = match op {
            Cmp::Eq | Cmp::Ne => {
                if left.ty != right.ty {
                    return Err(self.fail(
                        op_pos,
                        format!(
                            "`{}` needs two values of the same type: {}, {}",
                            op.symbol(),
                            left.is(),
                            right.is()
                        ),
                    ));
                }
                let negated = op == Cmp::Ne;
                match left.ty {
                    Ty::Num => self.prog.num_cmp(op, a, b),
                    Ty::Str => Node::StrEq { a, b, negated },
                    Ty::Bool => Node::BoolEq { a, b, negated },
                }
            }
            _ => {
                self.need(&left, Ty::Num, op.symbol())?;
                self.need(&right, Ty::Num, op.symbol())?;
                self.prog.num_cmp(op, a, b)
            }
        };
        self.operand(node, Ty::Bool, left.pos, depth)
    }

    fn membership(
        &mut self,
        word: &str,
        negated: bool,
        value: Operand<'s>,
    ) -> Result<Operand<'s>, RuleError> {
        if value.ty == Ty::Bool {
            return Err(self.fail(
                value.pos,
                format!("{}; `{word}` needs a number or a string", value.is()),
            ));
        }
        let Some(Tok::List(name)) = self.peek() else {
            return Err(self.unexpected(&format!("a list like `@blocked_cards` after `{word}`")));
        };
        let (name, pos) = (*name, self.here());
        let list = self.list_slot(name, pos)?;
        self.i += 1;
        let memo = self.memo_slot(value.node, list);
        let node = if value.ty == Ty::Num {
            Node::InNum {
                value: value.node,
                list,
                negated,
                memo,
            }
        } else {
            Node::InStr {
                value: value.node,
                list,
                negated,
                memo,
            }
        };
        self.operand(node, Ty::Bool, value.pos, value.depth + 1)
    }

    fn sum(&mut self) -> Result<Operand<'s>, RuleError> {
        let mut acc = self.product()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Plus) => Arith::Add,
                Some(Tok::Minus) => Arith::Sub,
                _ => return Ok(acc),
            };
            acc = self.arith(op, acc, Self::product)?;
        }
    }

    fn product(&mut self) -> Result<Operand<'s>, RuleError> {
        let mut acc = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Star) => Arith::Mul,
                Some(Tok::Slash) => Arith::Div,
                _ => return Ok(acc),
            };
            acc = self.arith(op, acc, Self::unary)?;
        }
    }

    /// `left op next()`, the operator being the next token.
    fn arith(
        &mut self,
        op: Arith,
        left: Operand<'s>,
        next: fn(&mut Self) -> Result<Operand<'s>, RuleError>,
    ) -> Result<Operand<'s>, RuleError> {
        self.need(&left, Ty::Num, op.symbol())?;
        let op_pos = self.here();
        self.i += 1;
        let right = next(self)?;
        self.need(&right, Ty::Num, op.symbol())?;
        let depth = left.depth.max(right.depth) + 1;
        self.check_depth(depth, op_pos)?;
        self.operand(
            Node::Arith(op, left.node, right.node),
            Ty::Num,
            left.pos,
            depth,
        )
    }

    fn unary(&mut self) -> Result<Operand<'s>, RuleError> {
        if self.peek() != Some(&Tok::Minus) {
            return self.atom();
        }
        let pos = self.here();
        self.i += 1;
        self.enter(pos)?;
        let inner = self.unary()?;
        self.depth -= 1;
        self.need(&inner, Ty::Num, "-")?;
        self.check_depth(inner.depth + 1, pos)?;
        // Fold a negative literal: the node just emitted is the literal's.
        if let Some(Node::Num(v)) = self.prog.nodes.get_mut(inner.node as usize) {
            *v = -*v;
            return Ok(Operand {
                pos,
                what: None,
                ..inner
            });
        }
        self.operand(Node::Neg(inner.node), Ty::Num, pos, inner.depth + 1)
    }

    fn atom(&mut self) -> Result<Operand<'s>, RuleError> {
        let Some(token) = self.toks.get(self.i) else {
            return Err(self.unexpected("a value"));
        };
        let (pos, text) = (token.pos, token.text);
        let (node, ty) = match &token.tok {
            Tok::Number(v) => (Node::Num(*v), Ty::Num),
            Tok::Str(s) => {
                let i = u32::try_from(self.prog.strings.len())
                    .map_err(|_| self.fail(pos, "the rule set is too large"))?;
                self.prog.strings.push(s.as_str().into());
                (Node::Str(i), Ty::Str)
            }
            Tok::Ident("true") => (Node::Bool(true), Ty::Bool),
            Tok::Ident("false") => (Node::Bool(false), Ty::Bool),
            Tok::Ident(w) if KEYWORDS.contains(w) => return Err(self.unexpected("a value")),
            Tok::Ident(name) => self.name(name, pos)?,
            Tok::LParen => {
                self.i += 1;
                self.enter(pos)?;
                let inner = self.expr()?;
                self.depth -= 1;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(self.unexpected(&format!(
                        "`)` to close the `(` of line {}, column {}",
                        pos.line, pos.column
                    )));
                }
                self.i += 1;
                return Ok(Operand {
                    pos,
                    what: None,
                    ..inner
                });
            }
            Tok::List(_) => {
                return Err(self.fail(pos, "a list can only follow `in` or `not in`"));
            }
            _ => return Err(self.unexpected("a value")),
        };
        self.i += 1;
        let mut o = self.operand(node, ty, pos, 1)?;
        o.what = Some(text);
        Ok(o)
    }

    /// A name's node and type.
    fn name(&mut self, name: &str, pos: Pos) -> Result<(Node, Ty), RuleError> {
        let found = match name {
            "score" => Some((Node::Score, Ty::Num)),
            "risk_score" => Some((Node::RiskScore, Ty::Num)),
            "fraud" => Some((Node::Fraud, Ty::Bool)),
            "id" => Some((Node::Id, Ty::Str)),
            "card_id" => Some((Node::CardId, Ty::Str)),
            "terminal_id" => Some((Node::TerminalId, Ty::Str)),
            _ => None,
        };
        if let Some(f) = found {
            return Ok(f);
        }
        if let Some(k) = FIELD_NAMES.iter().position(|&f| f == name) {
            // FIELD_NAMES has 30 entries.
            return Ok((Node::Field(u8::try_from(k).unwrap_or(u8::MAX)), Ty::Num));
        }
        if let Some(j) = self.derived.iter().position(|d| d == name) {
            self.derived_used[j] = true;
            let j = u32::try_from(j).map_err(|_| self.fail(pos, "too many entity features"))?;
            return Ok((Node::Derived(j), Ty::Num));
        }
        let known = BUILTINS
            .iter()
            .chain(FIELD_NAMES.iter())
            .copied()
            .chain(self.derived.iter().map(String::as_str));
        let mut message = format!("unknown name `{name}`");
        if let Some(near) = closest(name, known) {
            message.push_str(&format!("; did you mean `{near}`?"));
        } else if self.derived.is_empty() {
            message.push_str(" (and no entity features are configured)");
        }
        Err(self.fail(pos, message))
    }
}
