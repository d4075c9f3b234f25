//! Small text helpers shared by the agent core: accent folding for matching what
//! callers say (Portuguese and Spanish accents) regardless of case and diacritics,
//! cutting text to a byte bound on a character boundary, writing a JSON string
//! without a serializer for the hot paths, [`SharedJson`], a JSON value
//! serialised once and then copied, and [`base64`]: base64 text that is known to
//! be base64, so it is written into JSON unchecked.
//!
//! May import nothing of ours: pure functions (the order is checked by
//! `.ci/layers`).

pub mod base64;

use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Appends `value` as a JSON string: copied as it is when nothing in it needs
/// escaping (base64, SIDs, most text), else through serde_json's escaping. The
/// output is the same as serde_json's either way.
pub fn push_json_str(out: &mut String, value: &str) {
    if needs_json_escape(value.as_bytes()) {
        // Writing a string to a String cannot fail.
        out.push_str(&serde_json::to_string(value).unwrap_or_default());
    } else {
        out.push('"');
        out.push_str(value);
        out.push('"');
    }
}

/// Whether `bytes` hold a byte a JSON string must escape: a quote, a backslash or
/// a control character (below 0x20), exactly the bytes serde_json escapes. Eight
/// bytes at a time: every media frame's payload passes through here, in and out
/// (BENCHMARKS.md, issue 17, tenth session).
fn needs_json_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `x` is below `n` (n <= 0x80): the classic bit trick, exact as a
    // yes or no.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let has = |x: u64, b: u8| below(x ^ (ONES * u64::from(b)), 1);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        if below(x, 0x20) || has(x, b'"') || has(x, b'\\') {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
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
            "sixteen bytes ok\u{1f}",
            "quote at byte 9:\"",
            "tab\tinside a longer text",
            "\u{7f} and ~ need nothing",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, value);
            assert_eq!(out, serde_json::to_string(value).unwrap(), "{value:?}");
        }
    }

    #[test]
    fn the_escape_check_agrees_with_serde_json_for_every_byte_at_every_place() {
        for byte in 0u8..0x80 {
            for place in 0..19 {
                let mut text = "base64+/=AbC019xyz".to_string();
                text.insert(place.min(text.len()), char::from(byte));
                let escaped = serde_json::to_string(&text).unwrap();
                let plain = escaped.len() == text.len() + 2;
                assert_eq!(
                    needs_json_escape(text.as_bytes()),
                    !plain,
                    "byte {byte:#04x} at {place}"
                );
            }
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
