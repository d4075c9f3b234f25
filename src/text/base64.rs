//! Base64 text known to be base64: [`Base64Str`] (borrowed) and [`Base64`]
//! (owned) can only be made by checking text against the standard alphabet or by
//! encoding bytes, so they never hold a byte a JSON string must escape, and are
//! written into JSON without looking at them again. Every media frame's payload,
//! in and out, is one of these (BENCHMARKS.md, issue 17, twelfth session).
//!
//! Only the alphabet is checked here; whether the text also decodes (its length,
//! the bits left over in its last symbol) is the decoder's business, see
//! `media::protocol::Media::check_payload`.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The standard alphabet; padding written when encoding, optional when decoding.
pub const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which bytes are in the standard alphabet (`=` is not).
pub static IN_ALPHABET: [bool; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [false; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = true;
        i += 1;
    }
    table
};

/// Text of the standard alphabet followed by at most two `=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base64Str<'a>(&'a str);

impl<'a> Base64Str<'a> {
    /// `text`, if it is made of the standard alphabet followed by at most two `=`.
    pub fn new(text: &'a str) -> Option<Self> {
        let bytes = text.as_bytes();
        let pads = bytes
            .iter()
            .rev()
            .take(2)
            .take_while(|&&b| b == b'=')
            .count();
        all_in_alphabet(&bytes[..bytes.len() - pads]).then_some(Self(text))
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }

    /// An owned copy.
    pub fn to_base64(self) -> Base64 {
        Base64(self.0.to_owned())
    }

    /// Appends the text as a JSON string. Nothing in it needs escaping.
    pub fn push_json(self, out: &mut String) {
        out.push('"');
        out.push_str(self.0);
        out.push('"');
    }
}

/// Owned base64 text: bytes encoded here, or text checked as [`Base64Str`] is.
/// Serialised as a plain string; deserialising checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base64(String);

impl Base64 {
    /// `bytes` encoded, with padding.
    pub fn encode(bytes: &[u8]) -> Self {
        Self(ENGINE.encode(bytes))
    }

    /// Replaces the text with `bytes` encoded, reusing the buffer.
    pub fn encode_from(&mut self, bytes: &[u8]) {
        self.0.clear();
        ENGINE.encode_string(bytes, &mut self.0);
    }

    /// `text`, if [`Base64Str::new`] accepts it.
    pub fn check(text: String) -> Result<Self, String> {
        match Base64Str::new(&text) {
            Some(_) => Ok(Self(text)),
            None => Err(text),
        }
    }

    pub fn as_b64(&self) -> Base64Str<'_> {
        Base64Str(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Base64> for String {
    fn from(b64: Base64) -> String {
        b64.0
    }
}

impl Serialize for Base64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::check(String::deserialize(d)?)
            .map_err(|_| serde::de::Error::custom("not base64 text"))
    }
}

/// Whether every byte of `text` is in the standard alphabet. Eight bytes at a
/// time: a byte is in it if it is ASCII and, with the case bit set, a lowercase
/// letter, or else one of `/0123456789` or `+` (each test a range: two additions
/// that carry into the byte's top bit or not).
pub fn all_in_alphabet(text: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const TOPS: u64 = ONES << 7;
    /// Top bit of each byte set where the byte is in `lo..=hi` (bytes below 0x80).
    const fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
        let at_least = x.wrapping_add(ONES * (0x80 - lo as u64));
        let above = x.wrapping_add(ONES * (0x7F - hi as u64));
        at_least & !above & TOPS
    }
    let mut chunks = text.chunks_exact(8);
    let mut outside = 0;
    for chunk in &mut chunks {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        let x = u64::from_le_bytes(bytes);
        let inside = in_range(x | (ONES * 0x20), b'a', b'z')
            | in_range(x, b'/', b'9')
            | in_range(x, b'+', b'+');
        outside |= (x & TOPS) | (inside ^ TOPS);
    }
    outside == 0
        && chunks
            .remainder()
            .iter()
            .all(|&b| IN_ALPHABET[usize::from(b)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_test_reads_eight_bytes_as_the_table_reads_one() {
        for byte in 0..=255u8 {
            for at in 0..16 {
                let mut text = *b"QUJDRGVmZ2g0NTY3";
                text[at] = byte;
                let one_by_one = text.iter().all(|&b| IN_ALPHABET[usize::from(b)]);
                assert_eq!(all_in_alphabet(&text), one_by_one, "{byte:#04x} at {at}");
                assert_eq!(
                    all_in_alphabet(&text[..at + 1]),
                    one_by_one,
                    "{byte:#04x} at {at}"
                );
            }
        }
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        assert!(all_in_alphabet(alphabet));
        assert_eq!(IN_ALPHABET.iter().filter(|&&inside| inside).count(), 64);
    }

    #[test]
    fn checked_text_is_the_alphabet_then_at_most_two_pads() {
        for good in [
            "", "QQ==", "QUI=", "QUJD", "ab+/09", "A", "A=", "==", "Zm9vYmFy",
        ] {
            assert!(Base64Str::new(good).is_some(), "{good:?}");
        }
        for bad in [
            "===",
            "Q=Q=",
            "=QQ",
            "QQ ",
            "Q\"Q",
            "Q\\Q",
            "Q\nQ",
            "é",
            "QUJDQUJD-",
            "QUJD_QUJD",
        ] {
            assert!(Base64Str::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn what_is_accepted_needs_no_json_escape_and_is_written_as_serde_writes_it() {
        // Every byte, alone and inside a long valid run, with and without pads.
        for byte in 0..=255u8 {
            for text in [vec![byte], [&[b'A'; 20][..], &[byte], b"AB=="].concat()] {
                let Ok(text) = String::from_utf8(text) else {
                    continue;
                };
                if let Some(b64) = Base64Str::new(&text) {
                    let mut ours = String::new();
                    b64.push_json(&mut ours);
                    assert_eq!(ours, serde_json::to_string(&text).unwrap());
                }
            }
        }
    }

    #[test]
    fn encoded_bytes_round_trip_and_deserialising_checks() {
        let mut b64 = Base64::encode(&[0xff, 0x7f, 0x00]);
        assert_eq!(b64.as_str(), "/38A");
        b64.encode_from(&[1, 2, 3, 4]);
        assert_eq!(b64.as_str(), "AQIDBA==");
        let json = serde_json::to_string(&b64).unwrap();
        assert_eq!(serde_json::from_str::<Base64>(&json).unwrap(), b64);
        assert!(serde_json::from_str::<Base64>(r#""a\"b""#).is_err());
        assert!(Base64::check("x y".into()).is_err());
    }
}
