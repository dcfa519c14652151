//! The one error a rules file can earn: where it is wrong, in which rule, and why.

/// A rules file that does not compile. `line` and `column` are 1-based; the column
/// counts characters, not bytes, so it matches what an editor shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}{}: {message}", rule_suffix(.rule.as_deref()))]
pub struct RuleError {
    /// The rule's name, when the error lies inside a rule whose name was read.
    pub rule: Option<String>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

fn rule_suffix(rule: Option<&str>) -> String {
    rule.map(|r| format!(" (rule {r})")).unwrap_or_default()
}

/// A place in the source: 1-based line and character column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// An error at this place.
    pub(crate) fn error(self, rule: Option<&str>, message: impl Into<String>) -> RuleError {
        RuleError {
            rule: rule.map(str::to_owned),
            line: self.line,
            column: self.column,
            message: message.into(),
        }
    }
}
