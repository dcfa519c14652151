//! Directives to a [`RuleSet`]: the `mode` line, each rule's header, the checks that
//! span rules (unique names, the rule limit), and the resolution of lists.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::decide::{Action, Mode};
use super::error::{Pos, RuleError};
use super::guards::Guards;
use super::lexer::{Tok, Token, directives};
use super::lists::names_fingerprint;
use super::parser::{Ty, closest};
use super::program::{ListRef, MEMO_SLOTS, NO_MEMO, Program, memo_key};

/// How many rules a file may hold.
pub const MAX_RULES: usize = 10_000;

/// What a compiled rule set may name: the entity features the serving model or stream
/// computes (in the order transactions carry them), and the lists that exist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Entity-feature names, in [`crate::schema::Transaction::derived`] order
    /// ([`crate::velocity::VelocitySpec::names`]). A name equal to a built-in one
    /// (`score`, `Amount`, …) is shadowed by the built-in.
    pub derived: Vec<String>,
    /// List names (any order; duplicates are ignored).
    pub lists: Vec<String>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: Arc<str>,
    pub action: Action,
    pub text: String,
    pub line: usize,
    /// Its condition's root node.
    pub root: u32,
}

/// A compiled rule set: the rules in file order, their conditions in one arena, and
/// the lists they name. Evaluate it with [`RuleSet::evaluate`] or [`RuleSet::decide`].
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) mode: Mode,
    pub(crate) rules: Vec<Rule>,
    /// Rule indices in `priority` order: block rules, then review, then allow, each in
    /// file order.
    pub(crate) by_severity: Vec<u16>,
    pub(crate) prog: Program,
    /// The lists the rules name, by slot.
    pub(crate) lists: Vec<ListRef>,
    /// The fingerprint of the catalog's list names.
    pub(crate) list_fingerprint: u64,
    /// The entity features the rules name, sorted.
    pub(crate) derived_used: Vec<String>,
    /// The rules' guards, to skip the rules that cannot match a transaction.
    pub(crate) guards: Guards,
}

/// The compiler's state while it reads one file.
pub(crate) struct Compiler<'s, 'c> {
    pub(crate) toks: Vec<Token<'s>>,
    pub(crate) i: usize,
    /// Just past the directive's last token.
    pub(crate) end: Pos,
    /// The rule being read, once its name is known.
    pub(crate) rule: Option<&'s str>,
    /// Parser recursion depth.
    pub(crate) depth: usize,
    pub(crate) prog: Program,
    pub(crate) derived: &'c [String],
    pub(crate) derived_used: Vec<bool>,
    /// The catalog's list names, sorted and deduplicated.
    catalog_lists: Vec<&'c str>,
    list_refs: Vec<ListRef>,
    /// The lookups that have a [`super::program::Memo`] slot, by slot.
    memo_keys: Vec<(u64, u32)>,
}

impl<'s> Compiler<'s, '_> {
    /// The slot of the list `name` (at `pos`), added on first use.
    pub(crate) fn list_slot(&mut self, name: &str, pos: Pos) -> Result<u32, RuleError> {
        let Ok(index) = self.catalog_lists.binary_search(&name) else {
            let mut message = format!("list @{name} does not exist");
            if let Some(near) = closest(name, self.catalog_lists.iter().copied()) {
                message.push_str(&format!("; did you mean @{near}?"));
            } else if self.catalog_lists.is_empty() {
                message.push_str(" (no lists are loaded)");
            }
            return Err(self.fail(pos, message));
        };
        let slot = match self.list_refs.iter().position(|r| r.index == index) {
            Some(s) => s,
            None => {
                self.list_refs.push(ListRef {
                    name: name.into(),
                    index,
                });
                self.list_refs.len() - 1
            }
        };
        u32::try_from(slot).map_err(|_| self.fail(pos, "too many lists"))
    }

    /// The [`super::program::Memo`] slot of a lookup of node `value` in list slot `list`:
    /// shared by every lookup of the same field in the same list, [`NO_MEMO`] when the
    /// value is computed or the slots are taken.
    pub(crate) fn memo_slot(&mut self, value: u32, list: u32) -> u8 {
        let Some(key) = self
            .prog
            .nodes
            .get(value as usize)
            .and_then(|&n| memo_key(n, list))
        else {
            return NO_MEMO;
        };
        if let Some(slot) = self.memo_keys.iter().position(|&k| k == key) {
            return slot as u8;
        }
        if self.memo_keys.len() >= MEMO_SLOTS {
            return NO_MEMO;
        }
        self.memo_keys.push(key);
        (self.memo_keys.len() - 1) as u8
    }

    fn word(&self, at: usize) -> Option<&'s str> {
        match self.toks.get(at).map(|t| &t.tok) {
            Some(Tok::Ident(w)) => Some(w),
            _ => None,
        }
    }

    /// `mode NAME`.
    fn mode(&mut self) -> Result<Mode, RuleError> {
        self.i = 1;
        let Some(word) = self.word(1) else {
            return Err(self.unexpected("a mode (priority, first_matched or all_matched)"));
        };
        let mode = word
            .parse::<Mode>()
            .map_err(|e| self.fail(self.here(), e))?;
        self.i = 2;
        if self.i < self.toks.len() {
            return Err(self.unexpected("the end of the `mode` line"));
        }
        Ok(mode)
    }

    /// `rule NAME: ACTION if EXPR`, the `rule` keyword read; returns the name and
    /// action, with the condition parsed (its root is the last node).
    fn rule_header(&mut self) -> Result<(&'s str, Pos, Action), RuleError> {
        self.i = 1;
        let name_pos = self.here();
        let Some(name) = self.word(1) else {
            return Err(self.unexpected("the rule's name after `rule`"));
        };
        self.rule = Some(name);
        self.i = 2;
        if self.toks.get(2).map(|t| &t.tok) != Some(&Tok::Colon) {
            return Err(self.unexpected("`:` after the rule's name"));
        }
        self.i = 3;
        let Some(word) = self.word(3) else {
            return Err(self.unexpected("an action (allow, review or block)"));
        };
        let action = word
            .parse::<Action>()
            .map_err(|e| self.fail(self.here(), e))?;
        self.i = 4;
        if self.word(4) != Some("if") {
            return Err(self.unexpected("`if` after the action"));
        }
        self.i = 5;
        Ok((name, name_pos, action))
    }
}

/// Compile a rules file against what `catalog` offers. The error names the line, the
/// column and the rule.
pub fn compile(source: &str, catalog: &Catalog) -> Result<RuleSet, RuleError> {
    // A byte-order mark is not part of the first line.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut catalog_lists: Vec<&str> = catalog.lists.iter().map(String::as_str).collect();
    catalog_lists.sort_unstable();
    catalog_lists.dedup();
    let mut c = Compiler {
        toks: Vec::new(),
        i: 0,
        end: Pos::default(),
        rule: None,
        depth: 0,
        prog: Program::default(),
        derived: &catalog.derived,
        derived_used: vec![false; catalog.derived.len()],
        catalog_lists,
        list_refs: Vec::new(),
        memo_keys: Vec::new(),
    };
    let mut mode: Option<(Mode, usize)> = None;
    let mut rules: Vec<Rule> = Vec::new();
    // Rule name → its line.
    let mut lines: HashMap<&str, usize> = HashMap::new();
    for d in directives(source)? {
        let Some(first) = d.tokens.first() else {
            continue;
        };
        let (start, keyword) = (first.pos, first.tok.clone());
        c.end = d.tokens.last().map_or(start, |t| t.end);
        c.toks = d.tokens;
        c.i = 0;
        c.rule = None;
        c.depth = 0;
        match keyword {
            Tok::Ident("mode") => {
                if let Some((_, line)) = mode {
                    return Err(c.fail(start, format!("the mode is already set on line {line}")));
                }
                if let Some(r) = rules.first() {
                    return Err(c.fail(
                        start,
                        format!("`mode` must come before the first rule (line {})", r.line),
                    ));
                }
                mode = Some((c.mode()?, start.line));
            }
            Tok::Ident("rule") => {
                if rules.len() >= MAX_RULES {
                    return Err(c.fail(
                        start,
                        format!("a rules file holds at most {MAX_RULES} rules"),
                    ));
                }
                let (name, name_pos, action) = c.rule_header()?;
                if let Some(line) = lines.insert(name, start.line) {
                    return Err(c.fail(
                        name_pos,
                        format!("rule `{name}` is already defined on line {line}"),
                    ));
                }
                let cond = c.expr()?;
                if c.i < c.toks.len() {
                    return Err(c.unexpected("`and`, `or` or the end of the rule"));
                }
                if cond.ty != Ty::Bool {
                    return Err(c.fail(
                        cond.pos,
                        format!(
                            "{}; a rule's condition must be a bool (true or false)",
                            cond.is()
                        ),
                    ));
                }
                rules.push(Rule {
                    name: name.into(),
                    action,
                    text: d.text,
                    line: start.line,
                    root: cond.node,
                });
            }
            _ => {
                c.i = 0;
                return Err(c.unexpected("`rule` or `mode`"));
            }
        }
    }
    let by_severity = [Action::Block, Action::Review, Action::Allow]
        .into_iter()
        .flat_map(|a| {
            rules
                .iter()
                .enumerate()
                .filter(move |(_, r)| r.action == a)
                // At most MAX_RULES rules, which fits.
                .map(|(i, _)| u16::try_from(i).unwrap_or(u16::MAX))
        })
        .collect();
    let mut derived_used: Vec<String> = catalog
        .derived
        .iter()
        .zip(&c.derived_used)
        .filter(|(_, used)| **used)
        .map(|(d, _)| d.clone())
        .collect();
    derived_used.sort_unstable();
    derived_used.dedup();
    let guards = Guards::new(&c.prog, rules.iter().map(|r| r.root));
    Ok(RuleSet {
        guards,
        mode: mode.map_or(Mode::default(), |(m, _)| m),
        rules,
        by_severity,
        list_fingerprint: names_fingerprint(c.catalog_lists.iter().copied()),
        prog: c.prog,
        lists: c.list_refs,
        derived_used,
    })
}

impl RuleSet {
    /// How rules combine.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules: every decision is the model's.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The name of rule `i` (in file order).
    ///
    /// # Panics
    /// When `i >= self.len()`.
    #[must_use]
    pub fn name(&self, i: usize) -> &Arc<str> {
        &self.rules[i].name
    }

    /// The action of rule `i`.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    #[must_use]
    pub fn action(&self, i: usize) -> Action {
        self.rules[i].action
    }

    /// The source text of rule `i`, as written: its lines with comments removed,
    /// continuation lines kept on their own lines.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    #[must_use]
    pub fn text(&self, i: usize) -> &str {
        &self.rules[i].text
    }

    /// The line rule `i` starts on.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    #[must_use]
    pub fn line(&self, i: usize) -> usize {
        self.rules[i].line
    }

    /// The names of the lists the rules use, sorted.
    #[must_use]
    pub fn lists_used(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lists.iter().map(|r| r.name.to_string()).collect();
        v.sort_unstable();
        v
    }

    /// The entity features the rules use, sorted.
    #[must_use]
    pub fn derived_used(&self) -> Vec<String> {
        self.derived_used.clone()
    }
}
