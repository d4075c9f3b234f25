//! The Twilio Media Streams wire protocol as typed serde enums: pure data, no I/O.
//!
//! [`Inbound`] is what Twilio sends (`connected`, `start`, `media`, `dtmf`, `mark`,
//! `stop`), [`Outbound`] what we send back on a bidirectional stream (`media`,
//! `mark`, `clear`); both are tagged by `event` (see `docs/media-streams.md`).
//! Parsing is lenient the way `relay::protocol` is: `sequenceNumber`, `chunk` and
//! `timestamp` may be strings (what Twilio sends) or numbers, optional fields may
//! be missing or `null`, `customParameters` may be `null`, and an event we do not
//! know parses to [`Inbound::Unknown`]. Both enums also serialise and deserialise
//! the other way (numbers as strings, like Twilio), so a fake Twilio in tests and
//! the call simulator can speak the protocol with the same types.
//!
//! Audio payloads stay base64 text until [`Media::decode_payload_into`] turns them
//! into μ-law bytes (into a reused buffer, with a size bound and clear errors).

use std::collections::HashMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::base64::{Base64, Base64Str, ENGINE as BASE64};
use crate::text::push_json_str;

mod media_frame;
pub use media_frame::{MediaView, Received, parse_received};

/// Largest decoded payload accepted in one `media` message (8 s of 8 kHz μ-law;
/// Twilio sends 160 bytes).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// A message from Twilio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Inbound {
    /// First message on the socket.
    Connected(Connected),
    /// Stream metadata; sent once, right after `connected`.
    Start(StartEvent),
    /// 20 ms of caller audio (or our own, on `both_tracks` streams).
    Media(MediaEvent),
    /// A keypad press (bidirectional streams).
    Dtmf(DtmfEvent),
    /// A mark we sent has played (or was flushed by `clear`).
    Mark(MarkEvent),
    /// The stream ended (call hung up or stream stopped).
    Stop(StopEvent),
    /// An event this version does not know: logged and ignored.
    #[serde(other)]
    Unknown,
}

/// `connected`: the protocol greeting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Connected {
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub protocol: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub version: String,
}

/// `start`: which call, which tracks, which format, and the `<Parameter>`s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StartEvent {
    #[serde(with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub stream_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub start: Start,
}

/// The body of `start`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Start {
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub account_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub stream_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub call_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub tracks: Vec<String>,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub media_format: MediaFormat,
    #[serde(deserialize_with = "crate::transport::lenient::params_or_null")]
    pub custom_parameters: HashMap<String, String>,
}

/// `start.mediaFormat`. Twilio documents it as always μ-law, 8000 Hz, mono; a
/// missing field takes that documented value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MediaFormat {
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub encoding: String,
    #[serde(with = "lenient_u32")]
    pub sample_rate: u32,
    #[serde(with = "lenient_u32")]
    pub channels: u32,
}

impl Default for MediaFormat {
    fn default() -> Self {
        Self {
            encoding: MULAW_ENCODING.into(),
            sample_rate: 8000,
            channels: 1,
        }
    }
}

/// The only encoding Twilio sends.
pub const MULAW_ENCODING: &str = "audio/x-mulaw";

impl MediaFormat {
    /// Whether this is the 8 kHz mono μ-law the media path handles.
    pub fn is_mulaw_8k_mono(&self) -> bool {
        self.encoding.eq_ignore_ascii_case(MULAW_ENCODING)
            && self.sample_rate == 8000
            && self.channels == 1
    }
}

/// `media`: one chunk of audio.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MediaEvent {
    #[serde(with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub stream_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub media: Media,
}

/// The body of `media`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Media {
    /// `inbound` (the caller) or `outbound` (what we sent, on `both_tracks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// Chunk counter, from 1.
    #[serde(with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
    /// Milliseconds since the stream started.
    #[serde(with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Base64 of raw 8 kHz μ-law, no header.
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub payload: String,
}

/// Why a `media` payload could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("payload of about {bytes} bytes exceeds the {max}-byte limit")]
    TooLarge { bytes: usize, max: usize },
}

impl Media {
    /// Media carrying `mulaw` (base64-encoded here).
    pub fn from_mulaw(mulaw: &[u8]) -> Self {
        Self {
            payload: BASE64.encode(mulaw),
            ..Self::default()
        }
    }

    /// Whether this is the caller's audio (`inbound`, or no track given).
    pub fn is_inbound(&self) -> bool {
        is_inbound(self.track.as_deref())
    }

    /// Decodes the payload, appending μ-law bytes to `out` (clear it first to reuse
    /// it per frame). On error `out` is left as it was.
    pub fn decode_payload_into(&self, out: &mut Vec<u8>) -> Result<(), PayloadError> {
        decode_payload_into(&self.payload, out)
    }

    /// Checks the payload as [`Media::decode_payload_into`] would, without
    /// writing the bytes anywhere, and hands it back as checked base64 (see
    /// [`check_payload`]).
    pub fn check_payload(&self) -> Result<Base64Str<'_>, PayloadError> {
        check_payload(&self.payload)
    }

    /// Decodes the payload into a new buffer.
    pub fn decode_payload(&self) -> Result<Vec<u8>, PayloadError> {
        let mut out = Vec::with_capacity(self.payload.len() / 4 * 3 + 3);
        self.decode_payload_into(&mut out)?;
        Ok(out)
    }
}

/// Whether a `media` message with this `track` is the caller's audio (`inbound`,
/// or no track given).
fn is_inbound(track: Option<&str>) -> bool {
    track.is_none_or(|t| t == "inbound")
}

/// Decodes the payload, appending μ-law bytes to `out` (clear it first to reuse
/// it per frame). On error `out` is left as it was.
pub fn decode_payload_into(payload: &str, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    check_length(payload)?;
    let before = out.len();
    if let Err(e) = BASE64.decode_vec(payload.as_bytes(), out) {
        out.truncate(before);
        return Err(e.into());
    }
    if out.len() - before > MAX_PAYLOAD_BYTES {
        let bytes = out.len() - before;
        out.truncate(before);
        return Err(PayloadError::TooLarge {
            bytes,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

/// Refuses a payload whose text alone is too long to decode within
/// [`MAX_PAYLOAD_BYTES`], before any of it is read.
fn check_length(payload: &str) -> Result<(), PayloadError> {
    let estimate = payload.len() / 4 * 3;
    if estimate > MAX_PAYLOAD_BYTES + 3 {
        return Err(PayloadError::TooLarge {
            bytes: estimate,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

/// Checks the payload as [`decode_payload_into`] would, without
/// writing the bytes anywhere, and hands it back as checked base64: for calls
/// whose audio goes upstream as Twilio's base64, where decoding every frame
/// only to drop the bytes was the largest share of base64's cost, and where
/// the upstream message then needs no JSON escape check (BENCHMARKS.md, issue
/// 17, eleventh and twelfth sessions).
///
/// Every whole group of four characters before the last (at most eight)
/// characters decodes whatever alphabet characters it holds, so those need only
/// be in the alphabet; the end, where padding and leftover bits are judged, is
/// decoded by the base64 crate itself. A payload refused is decoded in full to
/// say why, so the errors are the decoder's own. A test holds the two verdicts
/// equal.
pub fn check_payload(payload: &str) -> Result<Base64Str<'_>, PayloadError> {
    check_length(payload)?;
    let text = payload.as_bytes();
    let end = text.len().saturating_sub(5) / 4 * 4;
    let mut scratch = [0u8; 6];
    let checked = Base64Str::new(payload).filter(|_| {
        // The alphabet check let `=` through only at the very end, which is
        // inside the part decoded here.
        BASE64
            .decode_slice(&text[end..], &mut scratch)
            .is_ok_and(|bytes| end / 4 * 3 + bytes <= MAX_PAYLOAD_BYTES)
    });
    match checked {
        Some(checked) => Ok(checked),
        None => Err(decode_payload_into(payload, &mut Vec::new())
            .err()
            .unwrap_or(PayloadError::Base64(base64::DecodeError::InvalidPadding))),
    }
}

/// `dtmf`: a keypad press.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DtmfEvent {
    #[serde(with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub stream_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub dtmf: Dtmf,
}

/// The body of `dtmf`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dtmf {
    /// `inbound_track` in Twilio's docs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub digit: String,
}

/// `mark` from Twilio: the named point in our audio has been reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MarkEvent {
    #[serde(with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub stream_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub mark: Mark,
}

/// A mark's label (both directions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mark {
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub name: String,
}

/// `stop`: the stream is over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StopEvent {
    #[serde(with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub stream_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub stop: Stop,
}

/// The body of `stop`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Stop {
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub account_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub call_sid: String,
}

/// A message to Twilio (bidirectional streams accept only these three).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Outbound {
    /// Audio to play: base64 of raw 8 kHz μ-law, no file header.
    Media {
        stream_sid: String,
        media: OutboundMedia,
    },
    /// Ask Twilio to echo `name` back once the audio sent before it has played.
    Mark { stream_sid: String, mark: Mark },
    /// Drop all buffered audio (barge-in); pending marks come back.
    Clear { stream_sid: String },
}

/// The body of an outbound `media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMedia {
    /// Encoded here, or checked when read (a fake Twilio reading ours).
    pub payload: Base64,
}

impl Outbound {
    /// A `media` message carrying `mulaw`.
    pub fn media(stream_sid: impl Into<String>, mulaw: &[u8]) -> Self {
        Self::Media {
            stream_sid: stream_sid.into(),
            media: OutboundMedia {
                payload: Base64::encode(mulaw),
            },
        }
    }

    /// A `mark` message.
    pub fn mark(stream_sid: impl Into<String>, name: impl Into<String>) -> Self {
        Self::Mark {
            stream_sid: stream_sid.into(),
            mark: Mark { name: name.into() },
        }
    }

    /// A `clear` message.
    pub fn clear(stream_sid: impl Into<String>) -> Self {
        Self::Clear {
            stream_sid: stream_sid.into(),
        }
    }

    /// The message as a JSON text frame. `media` and `mark`, sent for every frame
    /// and every 200 ms of every call, are written directly (the same text serde
    /// writes, checked in the tests); `clear` goes through serde.
    pub fn to_json(&self) -> String {
        match self {
            Self::Media { stream_sid, media } => {
                let payload = media.payload.as_b64();
                let names = ["media", stream_sid, "media", "payload"];
                nested_json(names, payload.as_str().len(), |out| payload.push_json(out))
            }
            Self::Mark { stream_sid, mark } => {
                let names = ["mark", stream_sid, "mark", "name"];
                nested_json(names, mark.name.len(), |out| push_json_str(out, &mark.name))
            }
            // Serialising these plain structs cannot fail.
            Self::Clear { .. } => serde_json::to_string(self).unwrap_or_default(),
        }
    }
}

impl Inbound {
    /// The message as a JSON text frame (for fake Twilio peers and the simulator).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The event name, for logs.
    pub fn event(&self) -> &'static str {
        match self {
            Inbound::Connected(_) => "connected",
            Inbound::Start(_) => "start",
            Inbound::Media(_) => "media",
            Inbound::Dtmf(_) => "dtmf",
            Inbound::Mark(_) => "mark",
            Inbound::Stop(_) => "stop",
            Inbound::Unknown => "unknown",
        }
    }
}

/// Why a text frame could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("JSON object without a string \"event\" field")]
    MissingEvent,
    #[error("fields do not fit a {event:?} message: {source}")]
    Fields {
        event: String,
        source: serde_json::Error,
    },
}

/// `{"event":event,"streamSid":stream_sid,"body":{"field":value}}`, as serde
/// writes it (`event`, `body` and `field` are our own plain names); the value, of
/// about `value_len` bytes, is written by `push_value`.
fn nested_json(
    [event, stream_sid, body, field]: [&str; 4],
    value_len: usize,
    push_value: impl FnOnce(&mut String),
) -> String {
    let mut out = String::with_capacity(48 + stream_sid.len() + value_len);
    out.push_str(r#"{"event":""#);
    out.push_str(event);
    out.push_str(r#"","streamSid":"#);
    push_json_str(&mut out, stream_sid);
    out.push_str(r#",""#);
    out.push_str(body);
    out.push_str(r#"":{""#);
    out.push_str(field);
    out.push_str(r#"":"#);
    push_value(&mut out);
    out.push_str("}}");
    out
}

/// Parses one text frame from Twilio. The session reads `media` in place with
/// [`parse_received`] instead.
pub fn parse_inbound(text: &str) -> Result<Inbound, ParseError> {
    match media_frame::parse_media(text) {
        Some(media) => Ok(Inbound::Media(media.into_event())),
        None => parse_any(text),
    }
}

/// Any message, straight into the typed enum; if that fails, once more as a JSON
/// tree, only to say what was wrong.
fn parse_any(text: &str) -> Result<Inbound, ParseError> {
    let error = match serde_json::from_str::<Inbound>(text) {
        Ok(message) => return Ok(message),
        Err(e) => e,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(ParseError::Json)?;
    match value.get("event").and_then(|e| e.as_str()) {
        Some(event) => Err(ParseError::Fields {
            event: event.to_string(),
            source: error,
        }),
        None => Err(ParseError::MissingEvent),
    }
}

/// Parses one text frame we (would) send; used by fake Twilio peers in tests.
pub fn parse_outbound(text: &str) -> Result<Outbound, serde_json::Error> {
    serde_json::from_str(text)
}

/// A number that may arrive as a JSON number or a numeric string. Read with a
/// visitor rather than an untagged enum: an untagged enum buffers the value and
/// builds (and formats) an error for every variant that does not fit, three
/// times per `media` frame.
enum NumOrStr {
    Int(u64),
    Float(f64),
    /// A string that is not a number, or a negative integer.
    Other,
}

impl<'de> Deserialize<'de> for NumOrStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NumOrStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a numeric string")
            }
            fn visit_u64<E>(self, v: u64) -> Result<NumOrStr, E> {
                Ok(NumOrStr::Int(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<NumOrStr, E> {
                Ok(u64::try_from(v).map_or(NumOrStr::Other, NumOrStr::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<NumOrStr, E> {
                Ok(NumOrStr::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<NumOrStr, E> {
                Ok(v.trim().parse().map_or(NumOrStr::Other, NumOrStr::Int))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl NumOrStr {
    fn to_u64(&self) -> Option<u64> {
        match self {
            NumOrStr::Int(n) => Some(*n),
            NumOrStr::Float(f) if *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64 => {
                Some(*f as u64)
            }
            NumOrStr::Float(_) | NumOrStr::Other => None,
        }
    }
}

/// `Option<u64>` read from a number or a string (a non-numeric value becomes
/// `None` rather than failing the message) and written as a string, like Twilio.
mod lenient_u64 {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Option::<NumOrStr>::deserialize(d)?.and_then(|v| v.to_u64()))
    }

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }
}

/// A `u32` read from a number or a string (written as a number, like Twilio's
/// `mediaFormat`); `null`, a bad string or an out-of-range value leaves the default.
mod lenient_u32 {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        Ok(Option::<NumOrStr>::deserialize(d)?
            .and_then(|v| v.to_u64())
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0))
    }

    pub fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(*v)
    }
}

#[cfg(test)]
mod tests;
