//! The simulator's Media Streams mode (`voxrelay call --media --wav in.wav --out
//! out.wav`): connects to `/media-stream` as Twilio does, sends `connected` and
//! `start`, streams the WAV file as the caller's audio in real time (μ-law 8 kHz,
//! one 20 ms frame per message), echoes the agent's marks, and records the agent's
//! audio to a μ-law WAV. After the file ends it keeps listening for `--tail`
//! seconds, then sends `stop` and hangs up.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};

use super::peer::{MediaPeer, PeerError, Received};
use super::{CallError, CallOptions, CallReport, random_sid};
use crate::audio::wav::{self, WavSpec, WavWriter};
use crate::audio::{mulaw, resample};
use crate::media::protocol::{Media, Outbound};

/// Bytes of one 20 ms frame of 8 kHz μ-law.
const FRAME: usize = 160;
/// Largest input WAV read.
const MAX_WAV_BYTES: u64 = 200 * 1024 * 1024;

/// The caller's audio as 8 kHz μ-law, from any PCM16 or μ-law WAV.
pub fn caller_audio(path: &Path) -> Result<Vec<u8>, CallError> {
    let bad = |reason: String| CallError::Audio(format!("{}: {reason}", path.display()));
    let input = wav::read_file(path, MAX_WAV_BYTES).map_err(|e| bad(e.to_string()))?;
    let mono = input.to_mono_pcm16();
    let rate = input.spec.sample_rate;
    let pcm = if rate == 8000 {
        mono
    } else {
        resample::resample(&mono, rate, 8000).map_err(|e| bad(e.to_string()))?
    };
    Ok(mulaw::encode(&pcm))
}

/// Streams `options.wav_in` to the server and records the agent to `options.wav_out`.
pub async fn run<W: AsyncWrite + Unpin>(
    options: &CallOptions,
    mut out: W,
) -> Result<CallReport, CallError> {
    let Some(wav_in) = &options.wav_in else {
        return Err(CallError::Audio("--media needs --wav FILE".into()));
    };
    let audio = caller_audio(wav_in)?;
    let call_sid = random_sid("CA");
    let request = super::handshake::request(options, &call_sid, true).await?;
    let mut peer = MediaPeer::connect(request, &random_sid("MZ"))
        .await
        .map_err(|e| CallError::Connect {
            url: options.url.clone(),
            reason: e.to_string(),
        })?;
    let socket_error = |e: PeerError| CallError::Socket(e.to_string());
    let mut parameters: std::collections::HashMap<String, String> =
        options.params.clone().into_iter().collect();
    parameters
        .entry("from".into())
        .or_insert_with(|| options.from.clone());
    parameters
        .entry("to".into())
        .or_insert_with(|| options.to.clone());
    peer.start(&call_sid, parameters)
        .await
        .map_err(socket_error)?;
    out.write_all(
        format!(
            "call {call_sid}: streaming {:.1} s of caller audio to {}\n",
            audio.len() as f64 / 8000.0,
            options.url
        )
        .as_bytes(),
    )
    .await?;
    out.flush().await?;

    let mut recorded: Vec<u8> = Vec::new();
    let mut clears = 0u32;
    let mut marks = 0u32;
    let mut closed_by_server = false;
    let mut frames = audio.chunks(FRAME);
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tail_until: Option<Instant> = None;
    loop {
        let tail = async {
            match tail_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ticker.tick(), if tail_until.is_none() => {
                match frames.next() {
                    Some(chunk) => {
                        let mut frame = chunk.to_vec();
                        frame.resize(FRAME, 0xFF);
                        peer.media(&frame).await.map_err(socket_error)?;
                    }
                    None => tail_until = Some(Instant::now() + options.tail),
                }
            }
            () = tail => break,
            received = peer.next() => match received {
                Received::Closed(_) => {
                    closed_by_server = true;
                    break;
                }
                Received::Message(Outbound::Media { media, .. }) => {
                    let payload = Media { payload: media.payload.into(), ..Media::default() };
                    match payload.decode_payload() {
                        Ok(bytes) => recorded.extend_from_slice(&bytes),
                        Err(e) => {
                            out.write_all(format!("bad audio from the server: {e}\n").as_bytes()).await?;
                        }
                    }
                }
                Received::Message(Outbound::Mark { mark, .. }) => {
                    // Played at once from the server's point of view: echo it.
                    marks += 1;
                    peer.mark(&mark.name).await.map_err(socket_error)?;
                }
                Received::Message(Outbound::Clear { .. }) => clears += 1,
                Received::Unreadable(text) => {
                    let text = crate::transport::excerpt(&text, 200);
                    out.write_all(format!("unexpected message from the server: {text}\n").as_bytes()).await?;
                }
            },
        }
    }
    if !closed_by_server {
        let _ = peer.stop().await;
        peer.close(Duration::from_secs(2)).await;
    }
    if let Some(path) = &options.wav_out {
        let mut writer = WavWriter::create(path, WavSpec::mulaw_8k())
            .map_err(|e| CallError::Audio(format!("{}: {e}", path.display())))?;
        writer
            .write_mulaw(&recorded)
            .and_then(|_| writer.finish().map(|_| ()))
            .map_err(|e| CallError::Audio(format!("{}: {e}", path.display())))?;
    }
    out.write_all(
        format!(
            "call ended: received {:.2} s of agent audio, {marks} marks, {clears} clears{}{}\n",
            recorded.len() as f64 / 8000.0,
            if closed_by_server {
                ", closed by the server"
            } else {
                ""
            },
            options
                .wav_out
                .as_ref()
                .map(|p| format!(", saved to {}", p.display()))
                .unwrap_or_default(),
        )
        .as_bytes(),
    )
    .await?;
    out.flush().await?;
    Ok(CallReport {
        call_sid,
        closed_by_server,
        agent_audio_bytes: recorded.len(),
        ..CallReport::default()
    })
}
