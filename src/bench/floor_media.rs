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
//! With `--paced`, the deltas are paced as our own session paces them ([`Paced`]):
//! the same lead, the same frames per write, a `mark` every 200 ms. That is the
//! least a bridge does that keeps Twilio's unplayed audio short, so the price of
//! the pacing can be told apart from the rest of what our session adds.
//!
//! May import `media`'s protocol types (the order is checked by `.ci/layers`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
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

/// One frame of agent audio (a delta of the fake Realtime).
const FRAME: Duration = Duration::from_millis(20);
/// As `media::session`: audio kept ahead of real time at Twilio, the frames due
/// this much after the one that is due go in the same write, and a timer wakes
/// this much early.
const LEAD: Duration = Duration::from_millis(80);
const BATCH_AHEAD: Duration = Duration::from_millis(50);
const TIMER_SLACK: Duration = Duration::from_millis(1);
/// A mark after every this many frames, as `media::playback`.
const MARK_EVERY: u64 = 10;

/// The paced bridge's queue of Twilio `media` messages, each to play 20 ms after
/// the one before.
#[derive(Default)]
struct Paced {
    queue: VecDeque<String>,
    /// When the first queued frame plays at Twilio.
    plays_at: Option<Instant>,
    sent: u64,
}

impl Paced {
    fn push(&mut self, media: String, now: Instant) {
        if self.queue.is_empty() {
            // A new run starts now, unless what was sent still plays.
            self.plays_at = Some(self.plays_at.map_or(now, |at| at.max(now)));
        }
        self.queue.push_back(media);
    }

    /// When the next frame is due to be written, if one is queued.
    fn due(&self) -> Option<Instant> {
        let plays_at = self.plays_at.filter(|_| !self.queue.is_empty())?;
        Some(plays_at.checked_sub(LEAD).unwrap_or(plays_at))
    }

    /// The messages to write at `now`: every frame due within [`BATCH_AHEAD`], each
    /// tenth followed by its mark.
    fn take(&mut self, now: Instant, stream_sid: &str) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(due) = self.due() {
            if due > now + BATCH_AHEAD {
                break;
            }
            let Some(media) = self.queue.pop_front() else {
                break;
            };
            out.push(media);
            self.plays_at = self.plays_at.map(|at| at + FRAME);
            self.sent += 1;
            if self.sent % MARK_EVERY == 0 {
                out.push(Outbound::mark(stream_sid, format!("f{}", self.sent)).to_json());
            }
        }
        out
    }
}

/// Writes the paced frames that are due in one write.
async fn write_due<S>(twilio: &mut S, paced: &mut Paced, stream_sid: &str) -> Result<(), ()>
where
    S: futures::Sink<Message> + Unpin,
{
    let out = paced.take(Instant::now(), stream_sid);
    if out.is_empty() {
        return Ok(());
    }
    for message in out {
        twilio.feed(Message::text(message)).await.map_err(|_| ())?;
    }
    twilio.flush().await.map_err(|_| ())
}

pub async fn call(socket: TcpStream, url: String, replies: Arc<AtomicU64>, paced: bool) {
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
    let mut pacer = paced.then(Paced::default);
    // One timer, moved only when the next frame's time moves.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let wake = pacer.as_ref().and_then(Paced::due);
        let now = Instant::now();
        let frame_now = wake.is_some_and(|at| at <= now + TIMER_SLACK);
        if let Some(at) = wake.filter(|_| !frame_now)
            && timer.deadline() != at - TIMER_SLACK
        {
            timer.as_mut().reset(at - TIMER_SLACK);
        }
        // A frame that is due goes out at once; a later one waits for the timer.
        let due = async {
            if !frame_now {
                timer.as_mut().await;
            }
        };
        tokio::select! {
            biased;
            () = due, if wake.is_some() => {
                if let Some(p) = pacer.as_mut()
                    && write_due(&mut twilio, p, &stream_sid).await.is_err()
                {
                    return;
                }
            }
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
                        if let Some(p) = pacer.as_mut() {
                            p.push(media, Instant::now());
                        } else if twilio.feed(Message::text(media)).await.is_err() {
                            return;
                        } else {
                            fed = true;
                        }
                    }
                    next = upstream.next().now_or_never();
                }
                if fed && twilio.flush().await.is_err() {
                    return;
                }
                // The lead frames of a reply go out at once, in one write.
                if let Some(p) = pacer.as_mut()
                    && write_due(&mut twilio, p, &stream_sid).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply's first frames go out at once (the lead and the batch), the rest
    /// three at a time as they come due, with a mark after every tenth frame; a
    /// reply that comes while the last still plays queues behind it.
    #[test]
    fn paced_frames_keep_their_lead_and_batch() {
        let start = Instant::now();
        let mut paced = Paced::default();
        for i in 0..25 {
            paced.push(format!("m{i}"), start);
        }
        assert_eq!(paced.due(), Some(start.checked_sub(LEAD).unwrap_or(start)));
        // Frames playing up to LEAD + BATCH_AHEAD from now: 0 to 6.
        let first = paced.take(start, "MZ1");
        assert_eq!(first, (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>());
        assert_eq!(paced.due(), Some(start + 7 * FRAME - LEAD));
        assert!(paced.take(start, "MZ1").is_empty(), "nothing else due yet");
        let later = paced.take(start + 7 * FRAME - LEAD, "MZ1");
        assert_eq!(later.len(), 4, "frames 7, 8, 9 and the mark: {later:?}");
        assert!(later[3].contains(r#""event":"mark""#) && later[3].contains("f10"));
        // The next reply, pushed while the first still plays, follows it.
        let rest = paced.take(start + 25 * FRAME, "MZ1");
        assert_eq!(rest.len(), 15 + 1, "{rest:?}");
        paced.push("n0".into(), start + 26 * FRAME);
        assert_eq!(paced.due(), Some(start + 26 * FRAME - LEAD));
    }

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
