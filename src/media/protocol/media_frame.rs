//! Twilio's `media` message read in place: [`MediaView`] borrows its strings from
//! the frame's text (copying only a string that holds escapes), because 50 of
//! these arrive every second of every call, and copying the payload, the stream
//! SID and the track into strings of their own was three allocations a frame
//! (BENCHMARKS.md, issue 17, twelfth session).
//!
//! It reads exactly what [`Inbound::Media`] reads, as leniently: numbers as
//! strings or numbers, `null` for any field, unknown fields ignored. Part of
//! `protocol`; imports its parent and `text::base64`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::{Inbound, Media, MediaEvent, ParseError, PayloadError, lenient_u64};
use crate::text::base64::Base64Str;

/// How Twilio begins every `media` message (the event name first).
const MEDIA_PREFIX: &str = r#"{"event":"media","#;

/// A `media` message, its strings borrowed from the frame where they hold no
/// escapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaView<'a> {
    pub sequence_number: Option<u64>,
    pub stream_sid: Cow<'a, str>,
    /// `inbound` (the caller) or `outbound` (what we sent, on `both_tracks`).
    pub track: Option<Cow<'a, str>>,
    pub chunk: Option<u64>,
    /// Milliseconds since the stream started.
    pub timestamp: Option<u64>,
    /// Base64 of raw 8 kHz μ-law, not yet checked.
    pub payload: Cow<'a, str>,
}

/// What a frame from Twilio holds: a `media` message read in place, or any
/// message read into [`Inbound`].
#[derive(Debug, Clone, PartialEq)]
pub enum Received<'a> {
    Media(MediaView<'a>),
    Other(Inbound),
}

/// Parses one text frame from Twilio, reading `media` in place when it comes in
/// Twilio's shape (the event name first); any other message, or a `media` in
/// another shape, is read by [`super::parse_inbound`]'s slower paths.
pub fn parse_received(text: &str) -> Result<Received<'_>, ParseError> {
    match parse_media(text) {
        Some(media) => Ok(Received::Media(media)),
        None => super::parse_any(text).map(Received::Other),
    }
}

/// A `media` message in Twilio's shape, read in place; `None` for anything else.
pub(super) fn parse_media(text: &str) -> Option<MediaView<'_>> {
    if !text.starts_with(MEDIA_PREFIX) {
        return None;
    }
    let frame: Frame<'_> = serde_json::from_str(text).ok()?;
    let body = frame.media.unwrap_or_default();
    Some(MediaView {
        sequence_number: frame.sequence_number,
        stream_sid: frame.stream_sid.0,
        track: body.track.map(|t| t.0),
        chunk: body.chunk,
        timestamp: body.timestamp,
        payload: body.payload.0,
    })
}

impl<'a> MediaView<'a> {
    /// A view of a message read the slow way.
    pub fn of(event: &'a MediaEvent) -> Self {
        Self {
            sequence_number: event.sequence_number,
            stream_sid: Cow::Borrowed(&event.stream_sid),
            track: event.media.track.as_deref().map(Cow::Borrowed),
            chunk: event.media.chunk,
            timestamp: event.media.timestamp,
            payload: Cow::Borrowed(&event.media.payload),
        }
    }

    /// Whether this is the caller's audio (`inbound`, or no track given).
    pub fn is_inbound(&self) -> bool {
        super::is_inbound(self.track.as_deref())
    }

    /// See [`Media::check_payload`].
    pub fn check_payload(&self) -> Result<Base64Str<'_>, PayloadError> {
        super::check_payload(&self.payload)
    }

    /// See [`Media::decode_payload_into`].
    pub fn decode_payload_into(&self, out: &mut Vec<u8>) -> Result<(), PayloadError> {
        super::decode_payload_into(&self.payload, out)
    }

    /// The message as [`Inbound::Media`] reads it.
    pub fn into_event(self) -> MediaEvent {
        MediaEvent {
            sequence_number: self.sequence_number,
            stream_sid: self.stream_sid.into_owned(),
            media: Media {
                track: self.track.map(Cow::into_owned),
                chunk: self.chunk,
                timestamp: self.timestamp,
                payload: self.payload.into_owned(),
            },
        }
    }
}

/// The message as serde reads it. `event` is a field, so a second `event` key is
/// an error as it is for the enum.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Frame<'a> {
    #[serde(rename = "event")]
    _event: MediaTag,
    #[serde(default, with = "lenient_u64")]
    sequence_number: Option<u64>,
    #[serde(default, borrow)]
    stream_sid: Text<'a>,
    #[serde(default, borrow)]
    media: Option<Body<'a>>,
}

/// The only `event` a [`Frame`] accepts.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum MediaTag {
    Media,
}

#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Body<'a> {
    #[serde(borrow)]
    track: Option<Text<'a>>,
    #[serde(with = "lenient_u64")]
    chunk: Option<u64>,
    #[serde(with = "lenient_u64")]
    timestamp: Option<u64>,
    #[serde(borrow)]
    payload: Text<'a>,
}

/// A JSON string, borrowed when it holds no escapes; `null` reads as empty.
#[derive(Default)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'de>, E> {
                Ok(Text::default())
            }
        }
        d.deserialize_any(TextVisitor)
    }
}
