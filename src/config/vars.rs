//! The reading machinery every section shares: [`Vars`] (the variables and the
//! problems found so far), [`Secret`], [`ConfigError`]. Imports nothing of the
//! other sections.

use std::collections::HashMap;
use std::fmt;

/// A string that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that must send it (an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Every problem found in the environment, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

/// The variables being read, and the problems found so far.
pub(super) struct Vars {
    pub(super) vars: HashMap<String, String>,
    pub(super) errors: Vec<String>,
}

impl Vars {
    /// A set, non-blank value.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// A set value, which may be empty (an empty greeting turns the greeting off).
    pub(super) fn get_allow_empty(&self, name: &str) -> Option<String> {
        self.vars.get(name).map(|v| v.trim().to_string())
    }

    /// Sets `name` to `value` unless the environment already has it.
    pub(super) fn fill(&mut self, name: &str, value: Option<String>) {
        if let Some(value) = value
            && self.get(name).is_none()
        {
            self.vars.insert(name.to_string(), value);
        }
    }

    /// Sets `name` to `value`: over what is set when `overwrite`, else only where
    /// nothing is (see [`super::agent_file::Precedence`]).
    pub(super) fn put(&mut self, name: &str, value: Option<String>, overwrite: bool) {
        match value {
            Some(value) if overwrite => {
                self.vars.insert(name.to_string(), value);
            }
            value => self.fill(name, value),
        }
    }

    /// A value from a fixed list (`default` when unset); anything else is a problem.
    pub(super) fn one_of(&mut self, name: &str, default: &str, allowed: &[&str]) -> String {
        let value = self.get(name).unwrap_or_else(|| default.to_string());
        if !allowed.contains(&value.as_str()) {
            self.errors.push(format!(
                "{name} must be one of {}; got {value:?}",
                allowed.join(", ")
            ));
        }
        value
    }

    /// Variables for a section's unit tests.
    #[cfg(test)]
    pub(super) fn of(pairs: &[(&str, &str)]) -> Self {
        Self {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            errors: Vec::new(),
        }
    }

    pub(super) fn parse<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        self.parse_opt(name).unwrap_or(default)
    }

    pub(super) fn parse_opt<T: std::str::FromStr>(&mut self, name: &str) -> Option<T> {
        let raw = self.get(name)?;
        match raw.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.errors
                    .push(format!("{name} has an invalid value {raw:?}"));
                None
            }
        }
    }
}

/// 32 random bytes as hex, for a generated API token.
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source only fails on broken systems; a panic at start is clear.
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
