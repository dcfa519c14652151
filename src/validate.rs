//! Section validation: every configuration section checks its own values and names the
//! key that is wrong, relative to the section; the whole configuration prefixes the
//! section's name. A leaf: it imports nothing from the crate, so every section type,
//! wherever it lives, can use it without reaching up into `config`.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// A value that parses but cannot work, with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key, relative to the section being validated (`batch_size`), or in full once
    /// [`Invalid::within`] has named its section (`scoring.batch_size`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Invalid {
    /// `key` is wrong: `message`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error, with its key inside `section`.
    #[must_use]
    pub fn within(self, section: &str) -> Self {
        Self {
            key: format!("{section}.{}", self.key),
            message: self.message,
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for Invalid {}

/// A configuration section that checks its own values.
pub trait Validate {
    /// `Ok` when every value can work; otherwise the first problem, naming its key.
    fn validate(&self) -> Result<(), Invalid>;
}

/// Check that `value` lies in `range`, naming `key` otherwise.
pub fn in_range<T>(key: &str, value: T, range: std::ops::RangeInclusive<T>) -> Result<(), Invalid>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(Invalid::new(
            key,
            format!(
                "{value} is out of range: must be between {} and {}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// The keys of a table that a section with a flattened part did not recognise. serde
/// cannot refuse unknown keys next to a `#[serde(flatten)]` field, so such sections
/// collect them here and [`UnknownKeys::refuse`] names them at validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnknownKeys(pub Vec<String>);

impl UnknownKeys {
    /// An error naming the first unknown key, if any.
    pub fn refuse(&self) -> Result<(), Invalid> {
        match self.0.first() {
            None => Ok(()),
            Some(k) => Err(Invalid::new(k.clone(), "unknown key")),
        }
    }
}

impl<'de> de::Deserialize<'de> for UnknownKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = UnknownKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UnknownKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                    keys.push(k);
                }
                keys.sort();
                Ok(UnknownKeys(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

impl serde::Serialize for UnknownKeys {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
}

use serde::ser::SerializeMap as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_section() {
        let e = Invalid::new("batch_size", "too big").within("scoring");
        assert_eq!(e.key, "scoring.batch_size");
        assert!(
            in_range("n", 5, 1..=4)
                .unwrap_err()
                .message
                .contains("between 1 and 4")
        );
        assert!(in_range("n", 4, 1..=4).is_ok());
    }
}
