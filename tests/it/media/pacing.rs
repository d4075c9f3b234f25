//! How audio is batched on its way through: agent audio leaves for Twilio paced
//! in real time, never more than the lead plus two frames ahead of it, with the
//! frames due close together in one write (`BATCH_AHEAD` in
//! `src/media/session.rs`); caller audio goes upstream frame by frame, or in
//! chunks with `MEDIA_UPSTREAM_CHUNK_MS`.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use voxrelay::media::protocol::Outbound;

use super::session::{audio_delta, realtime_app, realtime_call, recv_type, unb64};
use crate::support::fake_speech::FakeWsServer;

/// One frame of μ-law.
const FRAME: Duration = Duration::from_millis(20);
/// The most a frame may arrive ahead of its time: the 80 ms lead and two frames
/// sent with the one that was due (120 ms), plus 30 ms for the first frame's own
/// trip, which the times below are measured from.
const MOST_AHEAD: Duration = Duration::from_millis(150);

#[tokio::test]
async fn a_burst_of_agent_audio_is_paced_and_leaves_in_batches() {
    let mut fake = FakeWsServer::start().await;
    let (app, _seen) = realtime_app(&fake, &[]).await;
    let (mut twilio, mut conn, _) = realtime_call(&app, &mut fake, &[]).await;

    // Two seconds of agent audio in one burst of 20 ms deltas, each frame
    // recognisable by its byte.
    let frames = 100usize;
    for i in 0..frames {
        let byte = (i % 120) as u8 + 1;
        conn.send_json(audio_delta("item1", &[byte; 160])).await;
    }
    conn.send_json(json!({"type": "response.output_audio.done", "item_id": "item1"}))
        .await;

    let mut arrivals = Vec::with_capacity(frames);
    while arrivals.len() < frames {
        match twilio.recv().await {
            Outbound::Media { media, .. } => {
                let frame = unb64(media.payload.as_str());
                let want = (arrivals.len() % 120) as u8 + 1;
                assert_eq!(frame, [want; 160], "frame {} in order", arrivals.len());
                arrivals.push(Instant::now());
            }
            Outbound::Mark { .. } => {}
            Outbound::Clear { .. } => panic!("unexpected clear"),
        }
    }

    // Paced: frame i plays i × 20 ms after the first, and none arrives more than
    // the lead and a batch ahead of that (unpaced, the last would be ~2 s early).
    let first = arrivals[0];
    for (i, at) in arrivals.iter().enumerate() {
        let plays = first + FRAME * i as u32;
        let ahead = plays.saturating_duration_since(*at);
        assert!(
            ahead <= MOST_AHEAD,
            "frame {i} arrived {ahead:?} ahead of its time"
        );
    }
    // Batched: frames arriving within 5 ms of the one before came in the same
    // write. Three frames a write after the lead makes about 32 writes; one frame
    // a write would be about 96.
    let writes = 1 + arrivals
        .windows(2)
        .filter(|w| w[1] - w[0] > Duration::from_millis(5))
        .count();
    assert!(writes <= 50, "{writes} writes for {frames} frames");
}

#[tokio::test]
async fn caller_audio_goes_upstream_in_chunks_when_configured() {
    let mut fake = FakeWsServer::start().await;
    let (app, _seen) = realtime_app(&fake, &[("MEDIA_UPSTREAM_CHUNK_MS", "60")]).await;
    let (mut twilio, mut conn, _) = realtime_call(&app, &mut fake, &[]).await;

    let frames: Vec<Vec<u8>> = (1..=7u8).map(|i| vec![i; 160]).collect();
    for frame in &frames {
        twilio.media(frame).await;
    }
    // Three frames per append, in order, byte for byte; the seventh waits.
    for chunk in frames[..6].chunks(3) {
        let append = recv_type(&mut conn, "input_audio_buffer.append").await;
        assert_eq!(unb64(append["audio"].as_str().unwrap()), chunk.concat());
    }
    // A keypress goes up at once, and nothing else was sent before it.
    twilio.dtmf("5").await;
    let next = conn.recv_json().await;
    assert_ne!(next["type"], "input_audio_buffer.append", "{next}");
}
