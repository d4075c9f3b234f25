//! The simulator's Media Streams mode (`voxrelay call --media --wav in.wav --out
//! out.wav`): connects to `/media-stream` as Twilio does, sends `connected` and
//! `start`, streams the WAV file as the caller's audio in real time (μ-law 8 kHz,
//! one 20 ms frame per message), echoes the agent's marks, and records the agent's
//! audio to a μ-law WAV. After the file ends it keeps listening for `--tail`
//! seconds, then sends `stop` and hangs up.

use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::{CallError, CallOptions, CallReport, random_sid};
use crate::audio::wav::{self, WavSpec, WavWriter};
use crate::audio::{mulaw, resample};
use crate::media::protocol::{
    Connected, Inbound, Mark, MarkEvent, Media, MediaEvent, MediaFormat, Outbound, Start,
    StartEvent, Stop, StopEvent, parse_outbound,
};

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
    let connect_error = |reason: String| CallError::Connect {
        url: options.url.clone(),
        reason,
    };
    let call_sid = random_sid("CA");
    let request = super::handshake::request(options, &call_sid, true).await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| connect_error(e.to_string()))?;
    let socket_error = |e: tokio_tungstenite::tungstenite::Error| CallError::Socket(e.to_string());

    let stream_sid = random_sid("MZ");
    let mut parameters: std::collections::HashMap<String, String> =
        options.params.clone().into_iter().collect();
    parameters
        .entry("from".into())
        .or_insert_with(|| options.from.clone());
    parameters
        .entry("to".into())
        .or_insert_with(|| options.to.clone());
    let opening = [
        Inbound::Connected(Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        }),
        Inbound::Start(StartEvent {
            sequence_number: Some(1),
            stream_sid: stream_sid.clone(),
            start: Start {
                account_sid: random_sid("AC"),
                stream_sid: stream_sid.clone(),
                call_sid: call_sid.clone(),
                tracks: vec!["inbound".into()],
                media_format: MediaFormat::default(),
                custom_parameters: parameters,
            },
        }),
    ];
    for message in opening {
        ws.send(Message::text(message.to_json()))
            .await
            .map_err(socket_error)?;
    }
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
    let started = Instant::now();
    let mut sequence = 2u64;
    let mut frames = audio.chunks(FRAME).enumerate();
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
                    Some((index, chunk)) => {
                        let mut frame = chunk.to_vec();
                        frame.resize(FRAME, 0xFF);
                        let message = Inbound::Media(MediaEvent {
                            sequence_number: Some(sequence),
                            stream_sid: stream_sid.clone(),
                            media: Media {
                                track: Some("inbound".into()),
                                chunk: Some(index as u64 + 1),
                                timestamp: Some(started.elapsed().as_millis() as u64),
                                ..Media::from_mulaw(&frame)
                            },
                        });
                        sequence += 1;
                        ws.send(Message::text(message.to_json())).await.map_err(socket_error)?;
                    }
                    None => tail_until = Some(Instant::now() + options.tail),
                }
            }
            () = tail => break,
            incoming = ws.next() => match incoming {
                None | Some(Ok(Message::Close(_))) | Some(Err(_)) => {
                    closed_by_server = true;
                    break;
                }
                Some(Ok(Message::Text(text))) => match parse_outbound(&text) {
                    Ok(Outbound::Media { media, .. }) => {
                        let payload = Media { payload: media.payload, ..Media::default() };
                        match payload.decode_payload() {
                            Ok(bytes) => recorded.extend_from_slice(&bytes),
                            Err(e) => {
                                out.write_all(format!("bad audio from the server: {e}\n").as_bytes()).await?;
                            }
                        }
                    }
                    Ok(Outbound::Mark { mark, .. }) => {
                        // Played at once from the server's point of view: echo it.
                        marks += 1;
                        let echo = Inbound::Mark(MarkEvent {
                            sequence_number: Some(sequence),
                            stream_sid: stream_sid.clone(),
                            mark: Mark { name: mark.name },
                        });
                        sequence += 1;
                        ws.send(Message::text(echo.to_json())).await.map_err(socket_error)?;
                    }
                    Ok(Outbound::Clear { .. }) => clears += 1,
                    Err(e) => {
                        out.write_all(format!("unexpected message from the server: {e}\n").as_bytes()).await?;
                    }
                },
                Some(Ok(_)) => {}
            },
        }
    }
    if !closed_by_server {
        let stop = Inbound::Stop(StopEvent {
            sequence_number: Some(sequence),
            stream_sid: stream_sid.clone(),
            stop: Stop {
                account_sid: String::new(),
                call_sid: call_sid.clone(),
            },
        });
        let _ = ws.send(Message::text(stop.to_json())).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
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
