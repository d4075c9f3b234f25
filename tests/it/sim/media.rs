//! `voxrelay call --media`: a WAV file streamed to `/media-stream` as a Twilio
//! caller reaches the pipeline (here OpenAI Realtime, faked) byte for byte, and
//! the agent's audio comes back into the output WAV.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use voxrelay::audio::wav::{self, Samples, WavSpec, WavWriter};
use voxrelay::sim::{self, CallOptions};

use crate::support::fake_speech::{FakeConn, FakeWsServer};
use crate::support::spawn_app;

async fn recv_type(conn: &mut FakeConn, kind: &str) -> Value {
    loop {
        let message = conn.recv_json().await;
        if message["type"] == kind {
            return message;
        }
    }
}

#[tokio::test]
async fn a_wav_streams_in_and_the_agent_audio_is_recorded() {
    let mut fake = FakeWsServer::start().await;
    let realtime = format!("{}/v1/realtime", fake.base());
    let app = spawn_app(&[
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_REALTIME_URL", realtime.as_str()),
        ("MEDIA_PIPELINE", "openai-realtime"),
    ])
    .await;

    // 0.6 s of a 440 Hz tone at 16 kHz: the simulator resamples it to 8 kHz μ-law.
    let dir = std::env::temp_dir().join(sim::random_sid("sim-media-"));
    std::fs::create_dir_all(&dir).unwrap();
    let wav_in = dir.join("in.wav");
    let wav_out = dir.join("out.wav");
    let tone: Vec<i16> = (0..9600)
        .map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / 16000.0).sin() * 8000.0) as i16)
        .collect();
    let mut writer = WavWriter::create(&wav_in, WavSpec::pcm16_mono(16000)).unwrap();
    writer.write_pcm16(&tone).unwrap();
    writer.finish().unwrap();
    let expected = sim::media::caller_audio(&wav_in).unwrap();
    assert_eq!(expected.len(), 4800, "0.6 s at 8 kHz");

    let options = CallOptions {
        url: app.ws_url("/media-stream"),
        media: true,
        wav_in: Some(wav_in.clone()),
        wav_out: Some(wav_out.clone()),
        tail: Duration::from_millis(1500),
        ..CallOptions::default()
    };
    let call = tokio::spawn(async move {
        let input = tokio::io::BufReader::new(tokio::io::empty());
        sim::run(&options, input, tokio::io::sink()).await
    });

    let mut conn = fake.next_conn().await;
    assert_eq!(
        recv_type(&mut conn, "session.update").await["type"],
        "session.update"
    );
    // The caller's audio arrives in 20 ms frames, unchanged. Frames sent before the
    // upstream session was up are dropped by the server, so what arrives is the
    // file's tail, contiguous, through its last frame.
    let last = &expected[expected.len() - 160..];
    let mut received = Vec::new();
    while !received.ends_with(last) {
        let append = recv_type(&mut conn, "input_audio_buffer.append").await;
        let frame = STANDARD.decode(append["audio"].as_str().unwrap()).unwrap();
        assert_eq!(frame.len(), 160);
        received.extend_from_slice(&frame);
    }
    assert!(
        received.len() >= 160 * 10,
        "most of the file arrives: {} bytes",
        received.len()
    );
    assert!(
        expected.ends_with(&received),
        "frames arrive in order, unchanged"
    );

    // The agent answers with 0.1 s of audio.
    let agent: Vec<u8> = (0..800u32).map(|i| (i % 251) as u8).collect();
    conn.send_json(json!({"type": "response.output_audio.delta", "response_id": "r1",
        "item_id": "item1", "output_index": 0, "content_index": 0, "delta": STANDARD.encode(&agent)}))
        .await;
    conn.send_json(json!({"type": "response.output_audio.done", "item_id": "item1"}))
        .await;

    let report = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the simulated call ends by itself")
        .unwrap()
        .expect("the call runs");
    assert!(report.agent_audio_bytes >= agent.len(), "{report:?}");
    let recorded = wav::read_file(&wav_out, 1 << 20).unwrap();
    assert_eq!(recorded.spec.sample_rate, 8000);
    let Samples::MuLaw(codes) = recorded.samples else {
        panic!("the output is μ-law")
    };
    assert_eq!(&codes[..agent.len()], &agent[..]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn media_mode_needs_a_wav_and_defaults_to_the_media_url() {
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        CallOptions::from_args(&args(&["--media"])),
        Err(sim::ArgsError::MissingWav)
    );
    let options =
        CallOptions::from_args(&args(&["--media", "--wav", "a.wav", "--out", "b.wav"])).unwrap();
    assert_eq!(options.url, "ws://127.0.0.1:8080/media-stream");
    assert_eq!(
        options.wav_out.as_deref(),
        Some(std::path::Path::new("b.wav"))
    );
}
