//! Small text helpers shared by the agent core: accent folding for matching what
//! callers say (Portuguese and Spanish accents) regardless of case and diacritics,
//! cutting text to a byte bound on a character boundary, writing a JSON string
//! without a serializer for the hot paths, and [`SharedJson`], a JSON value
//! serialised once and then copied.
//!
//! May import nothing of ours: pure functions (the order is checked by
//! `.ci/layers`).

use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Bytes a JSON string may hold unescaped that base64 and SIDs are made of.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_' | b'.');
        b += 1;
    }
    table
};

/// Appends `value` as a JSON string. Base64 and SIDs need no escaping, so they are
/// copied as they are; anything else goes through serde_json's escaping.
pub fn push_json_str(out: &mut String, value: &str) {
    let plain = value.bytes().all(|b| PLAIN[usize::from(b)]);
    if plain {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        // Writing a string to a String cannot fail.
        out.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
}

/// `text` cut to at most `max` bytes on a character boundary; whether it was cut.
pub fn cut_to(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// `c` lower-cased with its accent removed (`Á` → `a`, `ç` → `c`); other characters
/// are only lower-cased.
pub fn fold_char(c: char) -> char {
    match c.to_lowercase().next().unwrap_or(c) {
        'á' | 'à' | 'â' | 'ã' | 'ä' => 'a',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
        'ú' | 'ù' | 'û' | 'ü' => 'u',
        'ç' => 'c',
        'ñ' => 'n',
        other => other,
    }
}

/// `text` lower-cased without accents.
pub fn fold(text: &str) -> String {
    text.chars().map(fold_char).collect()
}

/// A JSON value kept with its serialised text, shared: built once (a tool's
/// parameter schema, say) and written into every request as a copy of that text
/// instead of being serialised again (issue 17: the tools' schemas were about 5 %
/// of a ConversationRelay turn's instructions). Reads as the [`Value`] it holds.
#[derive(Clone)]
pub struct SharedJson(Arc<(Value, Box<RawValue>)>);

impl SharedJson {
    pub fn new(value: Value) -> Self {
        let text = serde_json::value::to_raw_value(&value)
            .expect("a JSON value always serialises (its keys are strings)");
        Self(Arc::new((value, text)))
    }

    /// The serialised text, compact.
    pub fn text(&self) -> &str {
        self.0.1.get()
    }
}

impl From<Value> for SharedJson {
    fn from(value: Value) -> Self {
        Self::new(value)
    }
}

impl std::ops::Deref for SharedJson {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0.0
    }
}

impl PartialEq for SharedJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.0 == other.0.0
    }
}

impl std::fmt::Debug for SharedJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.0.fmt(f)
    }
}

impl Serialize for SharedJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.1.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_json_writes_the_same_text_as_its_value() {
        let value = serde_json::json!({"type": "object", "properties": {
            "day": {"type": "string", "description": "Dia \"útil\"\n"}},
            "required": ["day"]});
        let shared = SharedJson::new(value.clone());
        assert_eq!(*shared, value);
        assert_eq!(shared.text(), serde_json::to_string(&value).unwrap());
        let wrapped = serde_json::json!({"parameters": shared.clone(), "n": 1});
        assert_eq!(wrapped, serde_json::json!({"parameters": value, "n": 1}));
        assert_eq!(
            serde_json::to_string(&vec![shared.clone(), shared]).unwrap(),
            format!("[{0},{0}]", serde_json::to_string(&value).unwrap())
        );
    }

    #[test]
    fn json_strings_are_copied_only_when_nothing_needs_escaping() {
        for value in [
            "",
            "MZ0123abc",
            "/38AgBI=",
            "a\"b",
            "x\\y",
            "é",
            "line\nbreak",
            "<tag>",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, value);
            assert_eq!(out, serde_json::to_string(value).unwrap(), "{value:?}");
        }
    }

    #[test]
    fn folds_case_and_accents() {
        assert_eq!(
            fold("Olá, AMANHÃ às Três, João! Ñandú"),
            "ola, amanha as tres, joao! nandu"
        );
        assert_eq!(fold_char('Ç'), 'c');
        assert_eq!(fold_char('?'), '?');
    }
}
