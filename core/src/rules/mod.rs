//! Business rules beside the model: a small, typed rule language, compiled once and
//! evaluated per transaction without allocating.
//!
//! # The language
//!
//! A rules file is text, one directive per line. `#` starts a comment (outside a
//! string); blank lines are ignored; a line that starts with whitespace continues the
//! directive above it, so long rules can wrap.
//!
//! ```text
//! # Rules for the card stream
//! mode priority                  # optional, once, before any rule
//! rule blocked_card: block if card_id in @blocked_cards
//! rule big_and_risky: review if risk_score > 60 and Amount > 1000
//! rule trusted_terminal: allow if terminal_id in @trusted_terminals and score < 0.99
//! rule burst: block if card_id_count_1d >= 10
//!   and card_id_mean_amount_1d > 3 * Amount
//! ```
//!
//! - `mode priority | first_matched | all_matched` (default `priority`; see [`Mode`]).
//! - `rule NAME: ACTION if EXPR`: `NAME` is `[A-Za-z_][A-Za-z0-9_]*` and unique in the
//!   file; `ACTION` is `allow`, `review` or `block` ([`Action`]).
//! - Expressions, loosest first: `or`; `and`; `not`; comparisons `< <= > >= == !=` and
//!   membership `in @list` / `not in @list` (which do not chain: `a < b < c` is an
//!   error); `+ -`; `* /`; unary `-`; then numbers (`12`, `0.5`, `1e3`), strings in
//!   double quotes (escapes `\"` and `\\`), `true`, `false`, names and `( … )`.
//! - Types: number (`f64`), string and bool, checked when compiling. Arithmetic and
//!   `< <= > >=` take numbers; `==` and `!=` two numbers, two strings or two bools;
//!   `and`, `or`, `not` bools; `in` a number or a string. A condition is a bool.
//!   `and` and `or` short-circuit.
//! - Numbers follow IEEE 754: division by zero gives an infinity or NaN, and **every
//!   comparison with NaN is false**, `!=` included, as are `in` and `not in` (write
//!   `not (x == y)` to get true for NaN).
//! - Names (case-sensitive): `score` (the model's score in [0, 1]) and `risk_score`
//!   (the same × 100); every numeric field by its schema name (`Time`, `V1`..`V28`,
//!   `Amount`: [`crate::schema::FIELD_NAMES`]); the strings `id`, `card_id` and
//!   `terminal_id` (a missing card or terminal reads as the empty string `""`); every
//!   entity feature of the [`Catalog`] (`card_id_count_1d`, …) as a number; and
//!   `fraud`, the model's own verdict (score ≥ its threshold).
//! - Lists: `@name`, `name` being `[A-Za-z_][A-Za-z0-9_.-]*` and in the catalog. A
//!   string matches a list value exactly; a number matches a value that parses as the
//!   same number ([`ValueList`]).
//!
//! Compiling refuses, with line, column (in characters) and rule ([`RuleError`]):
//! syntax errors, unknown names (suggesting the nearest one), type errors, lists not in
//! the catalog, duplicate rule names, a second `mode` or one after a rule, unknown
//! modes and actions, nesting deeper than [`MAX_DEPTH`] and more than [`MAX_RULES`]
//! rules. An empty file is a rule set with no rules. No input makes it panic (the fuzz
//! target `rules_parse` holds it to that).
//!
//! # Evaluation
//!
//! [`compile`] type-checks and lowers every condition into one arena of nodes whose
//! children are indices ([`RuleSet`]); names are resolved to field indices, entity
//! feature positions and list slots, so evaluating walks the arena over borrowed
//! [`Facts`], compares strings as `&str`, and allocates nothing.
//!
//! # Why not a crate
//!
//! - `cel` (0.15, MIT), the Common Expression Language: its parser is ANTLR-generated
//!   (`antlr4rust`), far heavier per rule than a hand-written one; its variables live
//!   in a `Context` of owned `Value`s (strings and lists behind `Arc`) that each
//!   transaction would have to rebuild, so every evaluation allocates; it has no
//!   `@list` membership over a prebuilt hash set, and its parse errors locate a
//!   problem only coarsely.
//! - `rhai`: a general scripting language (statements, loops, closures) whose
//!   `Dynamic` values and scope allocate per run and whose evaluation is far slower
//!   per expression than a typed arena walk; more power than a rule needs, and more to
//!   sandbox.
//! - `evalexpr` 12 and later is AGPL-3.0-only, which this Apache-2.0 project excludes.
//!
//! The language here is small enough that a hand-written lexer, a recursive-descent
//! parser and a typed arena are a few hundred lines, and they give exact error
//! positions, compile-time types, and no allocation per transaction.

mod compile;
mod decide;
mod each;
mod error;
mod facts;
mod guards;
mod lexer;
mod lists;
mod parser;
mod program;
mod table;
#[cfg(test)]
mod tests;

pub use compile::{Catalog, MAX_RULES, RuleSet, compile};
pub use decide::{Action, Decided, DecidedBy, Mode, Outcome};
pub use error::RuleError;
pub use facts::Facts;
pub use lists::{Lists, ValueList, is_list_name};
pub use parser::MAX_DEPTH;
