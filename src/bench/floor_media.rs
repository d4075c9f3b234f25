//! The Media Streams side of `voxrelay-floor`: the least a bridge between a
//! Twilio media stream and OpenAI Realtime does, to measure what our own media
//! session adds to it.
//!
//! Per call: accept Twilio's socket, open the upstream socket, send one
//! `session.update`; then every caller frame becomes an `input_audio_buffer.append`
//! (Twilio's base64 passed through), and every audio delta a Twilio `media` message,
//! sent as soon as it arrives: no pacing, no marks, no barge-in, no resampling, no
//! records. Deltas that arrive together go out in one write, the fewest writes a
//! bridge can make. See `floor.rs` for how it is run and why.
//!
//! May import `media`'s protocol types (the order is checked by `.ci/layers`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::media::protocol::{Inbound, Outbound, parse_inbound};
use crate::text::base64::Base64;

const SESSION_UPDATE: &str = r#"{"type":"session.update","session":{"type":"realtime","instructions":"Você é a assistente virtual de uma clínica.","audio":{"input":{"format":{"type":"audio/pcmu"},"turn_detection":{"type":"server_vad"}},"output":{"format":{"type":"audio/pcmu"},"voice":"alloy"}}}}"#;

/// What the bridge reads of an upstream event.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    delta: Option<&'a str>,
}

/// The `media` message for an upstream audio event, if it is one (counting replies).
fn twilio_media(text: &str, stream_sid: &str, replies: &AtomicU64) -> Option<String> {
    let event: Event = serde_json::from_str(text).ok()?;
    match event.kind {
        "response.output_audio.delta" | "response.audio.delta" => Some(
            Outbound::Media {
                stream_sid: stream_sid.to_string(),
                media: crate::media::protocol::OutboundMedia {
                    payload: Base64::check(event.delta?.to_string()).ok()?,
                },
            }
            .to_json(),
        ),
        "response.created" => {
            replies.fetch_add(1, Ordering::Relaxed);
            None
        }
        _ => None,
    }
}

pub async fn call(socket: TcpStream, url: String, replies: Arc<AtomicU64>) {
    let config = super::floor::socket_config();
    let Ok(mut twilio) = tokio_tungstenite::accept_async_with_config(socket, Some(config)).await
    else {
        return;
    };
    let stream_sid = loop {
        match twilio.next().await {
            Some(Ok(Message::Text(text))) => {
                if let Ok(Inbound::Start(start)) = parse_inbound(&text) {
                    break start.stream_sid;
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => {}
        }
    };
    let Ok((mut upstream, _)) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await
    else {
        return;
    };
    if upstream.send(Message::text(SESSION_UPDATE)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            biased;
            message = twilio.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                match parse_inbound(&text) {
                    Ok(Inbound::Media(frame)) => {
                        let append = format!(
                            r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#,
                            frame.media.payload
                        );
                        if upstream.send(Message::text(append)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Inbound::Stop(_)) => return,
                    _ => {}
                }
            }
            message = upstream.next() => {
                let mut next = Some(message);
                let mut fed = false;
                // This event and every one already read with it, then one write.
                while let Some(message) = next {
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                        Some(Ok(_)) => {
                            next = upstream.next().now_or_never();
                            continue;
                        }
                    };
                    if let Some(media) = twilio_media(&text, &stream_sid, &replies) {
                        if twilio.feed(Message::text(media)).await.is_err() {
                            return;
                        }
                        fed = true;
                    }
                    next = upstream.next().now_or_never();
                }
                if fed && twilio.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_deltas_become_media_and_replies_are_counted() {
        let replies = AtomicU64::new(0);
        let delta = r#"{"type":"response.output_audio.delta","item_id":"i","delta":"f39/"}"#;
        let media = twilio_media(delta, "MZ1", &replies).unwrap();
        assert_eq!(
            media,
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"f39/"}}"#
        );
        assert_eq!(
            twilio_media(r#"{"type":"response.created"}"#, "MZ1", &replies),
            None
        );
        assert_eq!(replies.load(Ordering::Relaxed), 1);
        assert_eq!(twilio_media("not json", "MZ1", &replies), None);
    }
}
