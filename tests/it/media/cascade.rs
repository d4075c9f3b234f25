//! The `cascade` Media Streams pipeline end to end: a fake Twilio Media Streams
//! client on `/media-stream`, fake ElevenLabs (Scribe STT and multi-context TTS) and
//! OpenAI Realtime servers on loopback, and the fake LLM. Each test checks what
//! every upstream receives, what reaches Twilio (audio bytes unchanged, `clear`),
//! what the agent reports, and that every socket closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use voxrelay::AppState;
use voxrelay::agent::{CallObserver, CallSummary, ToolCallRecord, TurnRecord};
use voxrelay::config::{DEFAULT_FALLBACK_MESSAGE, DEFAULT_GOODBYE_MESSAGE};
use voxrelay::media::protocol::Outbound;
use voxrelay::sim::peer::{MediaPeer, Received};

use crate::support::agent_app::agent_file;
use crate::support::fake_llm::{FakeLlm, Reply};
use crate::support::fake_speech::{Ending, FakeConn, FakeWsServer};
use crate::support::fake_twilio::{self, FakeTwilio};
use crate::support::{TestApp, eventually, spawn_with_state, test_config};

const WAIT: Duration = Duration::from_secs(10);
const GREETING: &str = "Olá! Como posso ajudar?";

/// Stands in for the store.
#[derive(Default)]
struct Observed {
    turns: Mutex<Vec<TurnRecord>>,
    /// Records of replies still going out (their first words, their progress).
    partials: Mutex<Vec<TurnRecord>>,
    interrupted: Mutex<Vec<(u32, String)>>,
    tools: Mutex<Vec<ToolCallRecord>>,
    ended: Mutex<Vec<CallSummary>>,
}

impl CallObserver for Observed {
    fn turn(&self, _: &str, turn: &TurnRecord) {
        if turn.partial {
            self.partials.lock().unwrap().push(turn.clone());
        } else {
            self.turns.lock().unwrap().push(turn.clone());
        }
    }
    fn turn_interrupted(&self, _: &str, seq: u32, heard: &str) {
        self.interrupted
            .lock()
            .unwrap()
            .push((seq, heard.to_string()));
    }
    fn tool_call(&self, _: &str, record: &ToolCallRecord) {
        self.tools.lock().unwrap().push(record.clone());
    }
    fn call_ended(&self, _: &str, summary: &CallSummary) {
        self.ended.lock().unwrap().push(summary.clone());
    }
}

impl Observed {
    async fn wait_ended(&self) -> CallSummary {
        eventually("the call's end", WAIT, || {
            self.ended.lock().unwrap().first().cloned()
        })
        .await
    }

    fn turns(&self) -> Vec<(String, String)> {
        self.turns
            .lock()
            .unwrap()
            .iter()
            .map(|t| (t.speaker.as_str().to_string(), t.text.clone()))
            .collect()
    }
}

struct Setup {
    app: TestApp,
    llm: FakeLlm,
    /// ElevenLabs (STT and TTS both live there).
    eleven: FakeWsServer,
    observed: Arc<Observed>,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    let llm = FakeLlm::start().await;
    let eleven = FakeWsServer::start().await;
    let llm_base = llm.base_url();
    let eleven_base = eleven.base();
    let mut vars = vec![
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-test-key"),
        ("OPENAI_BASE_URL", llm_base.as_str()),
        ("OPENAI_MODEL", "fake-model"),
        ("SYSTEM_PROMPT", "Você é um assistente de testes."),
        ("WELCOME_GREETING", GREETING),
        ("LLM_TIMEOUT_MS", "5000"),
        ("MEDIA_PIPELINE", "cascade"),
        ("ELEVENLABS_API_KEY", "xi-test-key"),
        ("ELEVENLABS_API_BASE", eleven_base.as_str()),
        ("ELEVENLABS_VOICE_ID", "voz123"),
    ];
    vars.extend_from_slice(extra);
    let observed = Arc::new(Observed::default());
    let mut state = AppState::new(test_config(&vars)).await.expect("app state");
    state.observer = observed.clone();
    Setup {
        app: spawn_with_state(state).await,
        llm,
        eleven,
        observed,
    }
}

/// The two ElevenLabs sockets of a call (they connect concurrently).
async fn upstreams(eleven: &mut FakeWsServer) -> (FakeConn, FakeConn) {
    let a = eleven.next_conn().await;
    let b = eleven.next_conn().await;
    let (stt, tts) = if a.uri.contains("speech-to-text") {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        stt.uri.starts_with("/v1/speech-to-text/realtime?"),
        "{}",
        stt.uri
    );
    assert!(stt.uri.contains("audio_format=ulaw_8000"), "{}", stt.uri);
    assert!(
        tts.uri
            .starts_with("/v1/text-to-speech/voz123/multi-stream-input?"),
        "{}",
        tts.uri
    );
    assert!(tts.uri.contains("output_format=ulaw_8000"), "{}", tts.uri);
    assert_eq!(stt.header("xi-api-key"), Some("xi-test-key"));
    assert_eq!(tts.header("xi-api-key"), Some("xi-test-key"));
    (stt, tts)
}

/// Plays Twilio's side of a Media Streams call; echoes marks as Twilio does once
/// the audio before them has played (here: at once).
struct MediaClient {
    peer: MediaPeer,
    /// Agent audio received, in order.
    audio: Vec<u8>,
    frames: usize,
    marks: usize,
}

/// What Twilio received, besides media (which is collected).
#[derive(Debug, PartialEq)]
enum Got {
    Clear,
    Closed,
}

impl MediaClient {
    async fn start(app: &TestApp, call_sid: &str) -> Self {
        Self::start_with(app, call_sid, json!({})).await
    }

    /// Starts a call whose `<Parameter>`s are `extra` (plus the numbers).
    async fn start_with(app: &TestApp, call_sid: &str, extra: Value) -> Self {
        let mut parameters: HashMap<String, String> = [
            ("from".to_string(), "+5511999990000".to_string()),
            ("to".to_string(), "+5511333330000".to_string()),
        ]
        .into();
        for (name, value) in extra.as_object().unwrap() {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            parameters.insert(name.clone(), value);
        }
        let mut peer = MediaPeer::connect(app.ws_url("/media-stream"), "MZ1")
            .await
            .expect("the media socket opens");
        peer.start(call_sid, parameters)
            .await
            .expect("the media socket is open");
        Self {
            peer,
            audio: Vec::new(),
            frames: 0,
            marks: 0,
        }
    }

    /// The caller hangs up.
    async fn stop(&mut self) {
        self.peer.stop().await.expect("the media socket is open");
    }

    /// One 20 ms frame of caller audio; returns its payload as Twilio sent it.
    async fn speak(&mut self, mulaw: &[u8]) -> String {
        self.peer
            .media(mulaw)
            .await
            .expect("the media socket is open");
        BASE64.encode(mulaw)
    }

    async fn dtmf(&mut self, digit: &str) {
        for key in digit.chars() {
            self.peer.dtmf(key).await.expect("the media socket is open");
        }
    }

    /// Reads until something other than media or a mark arrives, or `until` says
    /// enough audio came; collects the audio on the way. Marks are echoed as
    /// Twilio does once the audio before them has played (here: at once).
    async fn read_until(&mut self, mut until: impl FnMut(&Self) -> bool) -> Option<Got> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if until(self) {
                return None;
            }
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = match self.peer.receive(wait).await {
                None => panic!("Twilio receives nothing in time"),
                Some(Received::Closed(_)) => return Some(Got::Closed),
                Some(Received::Unreadable(text)) => panic!("not a Media Streams message: {text}"),
                Some(Received::Message(message)) => message,
            };
            match message {
                Outbound::Media { stream_sid, media } => {
                    assert_eq!(stream_sid, "MZ1");
                    let bytes = BASE64.decode(media.payload.as_str()).unwrap();
                    assert_eq!(bytes.len(), 160, "one 20 ms frame per message");
                    self.audio.extend_from_slice(&bytes);
                    self.frames += 1;
                }
                Outbound::Mark { stream_sid, mark } => {
                    assert_eq!(stream_sid, "MZ1");
                    self.marks += 1;
                    // The socket may be closing already.
                    let _ = self.peer.mark(&mark.name).await;
                }
                Outbound::Clear { .. } => return Some(Got::Clear),
            }
        }
    }

    /// Waits for at least `bytes` of agent audio.
    async fn audio(&mut self, bytes: usize) -> Vec<u8> {
        let got = self.read_until(|c| c.audio.len() >= bytes).await;
        assert_eq!(got, None, "audio expected");
        self.audio.clone()
    }

    /// Waits for the server to close the call (collecting audio).
    async fn closed(&mut self) {
        assert_eq!(self.read_until(|_| false).await, Some(Got::Closed));
    }
}

/// `n` bytes of recognisable µ-law (never silence).
fn tone(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed | 1)
        .map(|b| b & 0x7F)
        .collect()
}

/// Reads TTS messages until one matches `want`; returns those skipped.
async fn tts_until(tts: &mut FakeConn, want: Value) -> Vec<Value> {
    let mut skipped = Vec::new();
    loop {
        let got = tts.recv_json().await;
        if got == want {
            return skipped;
        }
        skipped.push(got);
    }
}

/// All the text the TTS got for `context` until it was flushed.
async fn tts_turn_text(tts: &mut FakeConn, context: &str) -> String {
    let mut text = String::new();
    loop {
        let got = tts.recv_json().await;
        // Skip other contexts, and context initialisations (text " ").
        if got["context_id"] != context || got.get("voice_settings").is_some() {
            continue;
        }
        if let Some(t) = got["text"].as_str() {
            text.push_str(t);
        }
        if got["flush"] == true {
            return text;
        }
    }
}

fn context_init(context: &str) -> Value {
    json!({"text": " ", "context_id": context,
           "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0},
           "generation_config": {"chunk_length_schedule": [50, 90, 120, 150]}})
}

/// ElevenLabs sends `audio` for `context`, then its final message.
async fn tts_speak(tts: &mut FakeConn, context: &str, audio: &[u8]) {
    tts.send_json(json!({"audio": BASE64.encode(audio), "isFinal": false, "contextId": context}))
        .await;
    tts.send_json(json!({"isFinal": true, "contextId": context}))
        .await;
}

/// Speaks the greeting through the fake TTS (context `ctx-1`; `ctx-2` is prepared
/// for the next reply) and lets Twilio play it out.
async fn greet(tts: &mut FakeConn, twilio: &mut MediaClient) {
    greet_with(tts, twilio, GREETING).await
}

async fn greet_with(tts: &mut FakeConn, twilio: &mut MediaClient, greeting: &str) {
    assert_eq!(tts.recv_json().await, context_init("ctx-1"));
    assert_eq!(tts_turn_text(tts, "ctx-1").await.trim(), greeting);
    assert_eq!(
        tts.recv_json().await,
        json!({"context_id": "ctx-1", "close_context": true})
    );
    assert_eq!(tts.recv_json().await, context_init("ctx-2"));
    let audio = tone(320, 0x11);
    tts_speak(tts, "ctx-1", &audio).await;
    // Both frames, then the turn's closing mark, which Twilio echoes once played.
    let got = twilio
        .read_until(|c| c.audio.len() >= 320 && c.marks >= 1)
        .await;
    assert_eq!(got, None);
    assert_eq!(twilio.audio[..320], audio[..]);
    // Let the echo reach the pipeline (local hops only).
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_full_turn_goes_from_caller_audio_to_agent_audio() {
    let mut s = setup(&[]).await;
    s.llm.push(Reply::tokens(&["Claro! ", "Para quando?"]));
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_turn").await;
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    greet(&mut tts, &mut twilio).await;

    // The caller's audio reaches the transcriber unchanged.
    for seed in 0..3u8 {
        let payload = twilio.speak(&tone(160, seed)).await;
        let got = stt.recv_json().await;
        assert_eq!(got["message_type"], "input_audio_chunk");
        assert_eq!(got["audio_base_64"], payload.as_str());
    }
    stt.send_json(json!({"message_type": "partial_transcript", "text": "quero mar"}))
        .await;
    stt.send_json(
        json!({"message_type": "committed_transcript", "text": "Quero marcar uma consulta"}),
    )
    .await;

    // The LLM sees the greeting and the caller's words.
    let request = &s.llm.wait_requests(1).await[0];
    let messages = request.messages();
    assert_eq!(
        messages[1..],
        [
            ("assistant".to_string(), GREETING.to_string()),
            ("user".to_string(), "Quero marcar uma consulta".to_string()),
        ]
    );
    // Its tokens go to the TTS in the next context, whole words, flushed at the end.
    assert_eq!(
        tts_turn_text(&mut tts, "ctx-2").await,
        "Claro! Para quando? "
    );
    assert_eq!(
        tts.recv_json().await,
        json!({"context_id": "ctx-2", "close_context": true})
    );
    // The TTS audio reaches Twilio byte for byte (the last partial frame padded
    // with µ-law silence).
    let reply = tone(400, 0x22);
    tts_speak(&mut tts, "ctx-2", &reply).await;
    let heard = twilio.audio(320 + 480).await;
    assert_eq!(heard[320..720], reply[..]);
    assert!(heard[720..800].iter().all(|&b| b == 0xFF));

    // Transcripts reach the observer as in ConversationRelay mode.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.observed.turns(),
        vec![
            ("caller".into(), "Quero marcar uma consulta".into()),
            ("agent".into(), "Claro! Para quando?".into()),
        ]
    );
    // The reply was recorded when its first words went out, under the number its
    // end completed.
    let partials = s.observed.partials.lock().unwrap().clone();
    let final_seq = s.observed.turns.lock().unwrap()[1].seq;
    assert!(
        partials
            .first()
            .is_some_and(|p| p.seq == final_seq && "Claro! Para quando?".starts_with(&p.text)),
        "{partials:?}"
    );

    // Twilio stops the stream: both upstream sockets close.
    twilio.stop().await;
    assert_eq!(stt.until_closed().await.1, Ending::CloseFrame(1000));
    let (sent, ending) = tts.until_closed().await;
    assert_eq!(ending, Ending::CloseFrame(1000));
    assert!(sent.contains(&json!({"close_socket": true})), "{sent:?}");
    let summary = s.observed.wait_ended().await;
    assert_eq!(summary.status, "completed");
    assert_eq!(summary.turns, 1);
}

#[tokio::test]
async fn a_per_call_greeting_and_parameters_reach_the_cascade() {
    let mut s = setup(&[]).await;
    s.llm.push(Reply::tokens(&["Certo."]));
    let mut twilio = MediaClient::start_with(
        &s.app,
        "CA_cascade_params",
        json!({"voxrelay_greeting": "Oi, Ana! Aqui é da clínica.", "pipeline": "cascade", "lead": "Ana"}),
    )
    .await;
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    greet_with(&mut tts, &mut twilio, "Oi, Ana! Aqui é da clínica.").await;
    stt.send_json(json!({"message_type": "committed_transcript", "text": "Oi"}))
        .await;
    let messages = s.llm.wait_requests(1).await[0].messages();
    assert!(messages[0].1.contains("lead: Ana"), "{}", messages[0].1);
    assert!(!messages[0].1.contains("pipeline"), "{}", messages[0].1);
    assert!(!messages[0].1.contains("voxrelay_"), "{}", messages[0].1);
    assert_eq!(
        messages[1],
        (
            "assistant".to_string(),
            "Oi, Ana! Aqui é da clínica.".to_string()
        )
    );
    twilio.stop().await;
    assert_eq!(tts.until_closed().await.1, Ending::CloseFrame(1000));
}

/// Words spread over audio: `(chars, ms per char, first char at)`.
fn alignment(text: &str, starts: impl Fn(usize) -> u64) -> Value {
    let chars: Vec<String> = text.chars().map(|c| c.to_string()).collect();
    let times: Vec<u64> = (0..chars.len()).map(starts).collect();
    json!({"chars": chars, "charStartTimesMs": times, "charDurationsMs": vec![50; chars.len()]})
}

#[tokio::test]
async fn barge_in_clears_twilio_drops_the_llm_and_keeps_what_was_heard() {
    let mut s = setup(&[("WELCOME_GREETING", "")]).await;
    let mut long = vec!["Olá, tudo bem? "];
    long.extend(["Eu ", "sou ", "um ", "robô ", "muito ", "falante "].repeat(4));
    s.llm.push(Reply::slow_tokens(&long, 250));
    s.llm.push(Reply::tokens(&["Pois não?"]));
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_barge").await;
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    assert_eq!(tts.recv_json().await, context_init("ctx-1"));

    stt.send_json(json!({"message_type": "committed_transcript", "text": "Me fala do plano"}))
        .await;
    assert_eq!(
        tts.recv_json().await,
        json!({"text": "Olá, tudo bem? ", "context_id": "ctx-1"})
    );
    // 400 ms of audio speaking "Olá, tudo bem? ", then 10 s whose first word starts
    // at once but whose second character only comes 3 s in: whenever the caller
    // speaks between 0.4 and 3.4 s, the words heard are "Olá, tudo bem?".
    let first = tone(3200, 0x33);
    tts.send_json(json!({"audio": BASE64.encode(&first), "contextId": "ctx-1",
        "alignment": alignment("Olá, tudo bem? ", |i| i as u64 * 25)}))
        .await;
    let second = tone(80_000, 0x44);
    tts.send_json(json!({"audio": BASE64.encode(&second), "contextId": "ctx-1",
        "alignment": alignment("Eu sou um robô ", |i| if i == 0 { 0 } else { 3000 + i as u64 * 100 })}))
        .await;
    // Twilio plays about a second of it.
    twilio.audio(160 * 50).await;

    // The caller talks over the agent.
    twilio.speak(&tone(160, 1)).await;
    stt.send_json(json!({"message_type": "partial_transcript", "text": "espera"}))
        .await;
    assert_eq!(twilio.read_until(|_| false).await, Some(Got::Clear));
    // The TTS context is closed, a fresh one prepared; the LLM stream is dropped.
    tts_until(
        &mut tts,
        json!({"context_id": "ctx-1", "close_context": true}),
    )
    .await;
    assert_eq!(tts.recv_json().await, context_init("ctx-2"));
    tokio::time::timeout(WAIT, s.llm.wait_disconnects(1))
        .await
        .expect("the LLM stream is dropped");
    // No more audio of the interrupted reply reaches Twilio.
    tts.send_json(json!({"audio": BASE64.encode(tone(1600, 0x55)), "contextId": "ctx-1"}))
        .await;

    // The caller's turn ends: the next request carries only what was heard.
    stt.send_json(json!({"message_type": "committed_transcript", "text": "Espera, quanto custa?"}))
        .await;
    let requests = s.llm.wait_requests(2).await;
    let messages = requests[1].messages();
    assert_eq!(
        messages[1..],
        [
            ("user".to_string(), "Me fala do plano".to_string()),
            ("assistant".to_string(), "Olá, tudo bem?".to_string()),
            ("user".to_string(), "Espera, quanto custa?".to_string()),
        ]
    );
    assert_eq!(tts_turn_text(&mut tts, "ctx-2").await, "Pois não? ");
    let after = twilio.audio.len();
    tts_speak(&mut tts, "ctx-2", &tone(320, 0x66)).await;
    let heard = twilio.audio(after + 320).await;
    assert_eq!(
        heard[after..after + 320],
        tone(320, 0x66)[..],
        "only the new reply plays"
    );

    // The store hears of the interruption with the words heard.
    let interrupted = s.observed.interrupted.lock().unwrap().clone();
    assert_eq!(interrupted.len(), 1, "{interrupted:?}");
    assert_eq!(interrupted[0].1, "Olá, tudo bem?");
    let turns = s.observed.turns.lock().unwrap().clone();
    let agent_turn = turns.iter().find(|t| t.seq == interrupted[0].0).unwrap();
    assert!(
        agent_turn.text.starts_with("Olá, tudo bem? Eu"),
        "{}",
        agent_turn.text
    );

    drop(twilio);
    assert_eq!(stt.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(tts.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(s.observed.wait_ended().await.interrupts, 1);
    assert_eq!(s.app.state.metrics.interrupts(), 1);
}

#[tokio::test]
async fn a_tool_call_runs_through_the_cascade_and_ends_the_call() {
    let mut s = setup(&[]).await;
    s.llm.push(Reply::tool(
        "call_1",
        "end_call",
        json!({"reason": "o cliente se despediu"}),
    ));
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_tool").await;
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    greet(&mut tts, &mut twilio).await;
    stt.send_json(json!({"message_type": "committed_transcript", "text": "Era só isso, tchau"}))
        .await;

    // The agent says goodbye through the TTS, then the call ends after it played.
    assert_eq!(
        tts_turn_text(&mut tts, "ctx-2").await.trim(),
        DEFAULT_GOODBYE_MESSAGE
    );
    let goodbye = tone(640, 0x77);
    tts_speak(&mut tts, "ctx-2", &goodbye).await;
    twilio.closed().await;
    assert_eq!(
        twilio.audio[320..960],
        goodbye[..],
        "the goodbye played in full"
    );

    let tools = s.observed.tools.lock().unwrap().clone();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "end_call");
    assert!(tools[0].ok);
    let summary = s.observed.wait_ended().await;
    assert_eq!(summary.status, "completed");
    assert!(
        summary
            .handoff_data
            .as_deref()
            .unwrap_or("")
            .contains("end-call"),
        "{summary:?}"
    );
    assert_eq!(stt.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(tts.until_closed().await.1, Ending::CloseFrame(1000));
}

#[tokio::test]
async fn keypad_digits_reach_the_agent_and_send_dtmf_plays_tones() {
    let mut s = setup(&[("AGENT_TOOLS", "send_dtmf"), ("DTMF_TIMEOUT_MS", "3000")]).await;
    s.llm
        .push(Reply::tool("call_1", "send_dtmf", json!({"digits": "5"})));
    s.llm.push(Reply::tokens(&["Apertei."]));
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_dtmf").await;
    let (_stt, mut tts) = upstreams(&mut s.eleven).await;
    greet(&mut tts, &mut twilio).await;

    for digit in ["4", "2", "#"] {
        twilio.dtmf(digit).await;
    }
    let request = &s.llm.wait_requests(1).await[0];
    assert_eq!(
        request.messages().last().unwrap(),
        &("user".to_string(), "DTMF: 42#".to_string())
    );
    // The model pressed 5: 100 ms of its two tones and 100 ms of silence, as audio.
    let audio = twilio.audio(320 + 1600).await;
    let key = &audio[320..1920];
    assert!(key[..800].iter().any(|&b| b != 0xFF), "a tone");
    assert!(key[800..].iter().all(|&b| b == 0xFF), "then silence");
    assert_eq!(tts_turn_text(&mut tts, "ctx-2").await, "Apertei. ");
    let requests = s.llm.wait_requests(2).await;
    assert!(
        requests[1]
            .raw_messages()
            .iter()
            .any(|m| m["role"] == "tool" && m["tool_call_id"] == "call_1"),
        "the tool result goes back to the model"
    );
}

#[tokio::test]
async fn a_transcriber_failure_mid_call_apologises_and_hangs_up() {
    let mut s = setup(&[]).await;
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_stt_fail").await;
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    greet(&mut tts, &mut twilio).await;

    stt.close_with(1011, "transcriber_error").await;
    assert_eq!(
        tts_turn_text(&mut tts, "ctx-2").await.trim(),
        DEFAULT_FALLBACK_MESSAGE
    );
    let apology = tone(480, 0x12);
    tts_speak(&mut tts, "ctx-2", &apology).await;
    twilio.closed().await;
    assert_eq!(twilio.audio[320..800], apology[..], "the apology played");
    assert_eq!(tts.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(s.observed.wait_ended().await.status, "failed");
    assert_eq!(s.app.state.metrics.llm_errors("upstream"), 1);
}

#[tokio::test]
async fn a_tts_failure_mid_call_reconnects_to_apologise_and_hangs_up() {
    let mut s = setup(&[]).await;
    s.llm.push(Reply::slow_tokens(
        &["Deixa ", "eu ", "ver. ", "Um ", "momento. "],
        200,
    ));
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_tts_fail").await;
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    greet(&mut tts, &mut twilio).await;
    stt.send_json(json!({"message_type": "committed_transcript", "text": "Qual meu saldo?"}))
        .await;
    assert_eq!(
        tts.recv_json().await,
        json!({"text": "Deixa ", "context_id": "ctx-2"})
    );
    tts.close_with(1011, "internal error").await;

    // A second TTS socket speaks the apology; then the call ends.
    let mut again = s.eleven.next_conn().await;
    assert!(again.uri.contains("text-to-speech"), "{}", again.uri);
    assert_eq!(again.recv_json().await, context_init("ctx-1"));
    assert_eq!(
        tts_turn_text(&mut again, "ctx-1").await.trim(),
        DEFAULT_FALLBACK_MESSAGE
    );
    let apology = tone(320, 0x21);
    tts_speak(&mut again, "ctx-1", &apology).await;
    twilio.closed().await;
    assert_eq!(twilio.audio[320..640], apology[..]);
    // The LLM stream was dropped, and both upstreams close.
    tokio::time::timeout(WAIT, s.llm.wait_disconnects(1))
        .await
        .expect("the LLM stream is dropped");
    assert_eq!(stt.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(again.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(s.observed.wait_ended().await.status, "failed");
}

#[tokio::test]
async fn the_caller_hanging_up_closes_both_upstreams() {
    let mut s = setup(&[]).await;
    s.llm.push(Reply::Hang);
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_hangup").await;
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    greet(&mut tts, &mut twilio).await;
    stt.send_json(json!({"message_type": "committed_transcript", "text": "Alô?"}))
        .await;
    s.llm.wait_requests(1).await;
    // The caller's phone drops the socket without a stop message.
    drop(twilio);
    assert_eq!(stt.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(tts.until_closed().await.1, Ending::CloseFrame(1000));
    tokio::time::timeout(WAIT, s.llm.wait_disconnects(1))
        .await
        .expect("the LLM request is dropped too");
    s.observed.wait_ended().await;
    s.app.wait_active_calls(0).await;
}

#[tokio::test]
async fn an_unreachable_openai_transcriber_gets_an_apology_and_a_hang_up() {
    let openai = FakeWsServer::rejecting(401).await;
    let url = format!("{}/v1/realtime", openai.base());
    let mut s = setup(&[
        ("CASCADE_STT", "openai"),
        ("OPENAI_REALTIME_URL", url.as_str()),
    ])
    .await;
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_refused").await;
    let mut tts = s.eleven.next_conn().await;
    assert!(tts.uri.contains("text-to-speech"));
    assert_eq!(tts.recv_json().await, context_init("ctx-1"));
    assert_eq!(
        tts_turn_text(&mut tts, "ctx-1").await.trim(),
        DEFAULT_FALLBACK_MESSAGE
    );
    tts_speak(&mut tts, "ctx-1", &tone(160, 3)).await;
    twilio.closed().await;
    assert_eq!(twilio.audio[..160], tone(160, 3)[..]);
    assert_eq!(tts.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(s.observed.wait_ended().await.status, "failed");
}

#[tokio::test]
async fn openai_transcription_drives_turns_and_barge_in() {
    let mut openai = FakeWsServer::start().await;
    let url = format!("{}/v1/realtime", openai.base());
    let mut s = setup(&[
        ("CASCADE_STT", "openai"),
        ("OPENAI_REALTIME_URL", url.as_str()),
    ])
    .await;
    s.llm.push(Reply::Hang);
    s.llm.push(Reply::tokens(&["Certo."]));
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_openai").await;
    let mut stt = openai.next_conn().await;
    assert_eq!(stt.uri, "/v1/realtime?intent=transcription");
    assert_eq!(stt.header("authorization"), Some("Bearer sk-test-key"));
    let update = stt.recv_json().await;
    assert_eq!(update["type"], "session.update");
    assert_eq!(update["session"]["type"], "transcription");
    let mut tts = s.eleven.next_conn().await;
    greet(&mut tts, &mut twilio).await;

    let payload = twilio.speak(&tone(160, 9)).await;
    let appended = stt.recv_json().await;
    assert_eq!(appended["type"], "input_audio_buffer.append");
    assert_eq!(appended["audio"], payload.as_str());
    stt.send_json(
        json!({"type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_1", "content_index": 0, "transcript": "Oi"}),
    )
    .await;
    s.llm.wait_requests(1).await;
    // The reply is still being thought of when the caller speaks again: the LLM
    // request is dropped and the new words answered.
    stt.send_json(json!({"type": "input_audio_buffer.speech_started", "item_id": "item_2", "audio_start_ms": 900}))
        .await;
    tokio::time::timeout(WAIT, s.llm.wait_disconnects(1))
        .await
        .expect("the pending reply is dropped");
    assert_eq!(twilio.read_until(|_| false).await, Some(Got::Clear));
    stt.send_json(
        json!({"type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_2", "content_index": 0, "transcript": "Quero o boleto"}),
    )
    .await;
    let requests = s.llm.wait_requests(2).await;
    let users: Vec<_> = requests[1]
        .messages()
        .into_iter()
        .filter(|(role, _)| role == "user")
        .map(|(_, text)| text)
        .collect();
    assert_eq!(users, vec!["Oi", "Quero o boleto"]);
    drop(twilio);
    assert_eq!(stt.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(tts.until_closed().await.1, Ending::CloseFrame(1000));
}

// ---------------------------------------------------------------------------------
// The agent's endings through Twilio's REST API

const REST_CALL_SID: &str = "CA00000000000000000000000000c0ffee";

/// REST credentials (account SID and auth token) pointing at `twilio`.
fn twilio_vars(twilio: &FakeTwilio) -> Vec<(&'static str, String)> {
    vec![
        ("TWILIO_ACCOUNT_SID", fake_twilio::ACCOUNT_SID.to_string()),
        ("TWILIO_AUTH_TOKEN", fake_twilio::AUTH_TOKEN.to_string()),
        ("TWILIO_VALIDATE_SIGNATURES", "false".to_string()),
        ("TWILIO_API_BASE", twilio.base_url()),
    ]
}

fn as_strs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The caller says goodbye, the model calls `tool`, the TTS speaks `words` (what
/// the agent says before ending) and Twilio plays them; returns when the server
/// closed the stream.
async fn caller_ends_with(
    s: &mut Setup,
    twilio: &mut MediaClient,
    words: &str,
) -> (FakeConn, FakeConn) {
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    greet(&mut tts, twilio).await;
    stt.send_json(json!({"message_type": "committed_transcript", "text": "Era isso, obrigado"}))
        .await;
    assert_eq!(tts_turn_text(&mut tts, "ctx-2").await.trim(), words);
    tts_speak(&mut tts, "ctx-2", &tone(480, 0x31)).await;
    twilio.closed().await;
    assert_eq!(
        twilio.audio[320..800],
        tone(480, 0x31)[..],
        "the last words played"
    );
    (stt, tts)
}

#[tokio::test]
async fn end_call_hangs_up_through_the_twilio_rest_api() {
    let twilio_api = FakeTwilio::start().await;
    twilio_api.add_call(REST_CALL_SID);
    let vars = twilio_vars(&twilio_api);
    let mut s = setup(&as_strs(&vars)).await;
    s.llm.push(Reply::tool(
        "call_1",
        "end_call",
        json!({"reason": "despedida"}),
    ));
    let mut twilio = MediaClient::start(&s.app, REST_CALL_SID).await;
    let (mut stt, mut tts) = caller_ends_with(&mut s, &mut twilio, DEFAULT_GOODBYE_MESSAGE).await;

    let requests = twilio_api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].path,
        format!(
            "/2010-04-01/Accounts/{}/Calls/{REST_CALL_SID}.json",
            fake_twilio::ACCOUNT_SID
        )
    );
    assert_eq!(
        requests[0].auth,
        Some((
            fake_twilio::ACCOUNT_SID.to_string(),
            fake_twilio::AUTH_TOKEN.to_string()
        ))
    );
    assert_eq!(
        requests[0].form,
        vec![("Status".to_string(), "completed".to_string())]
    );
    assert_eq!(s.observed.wait_ended().await.status, "completed");
    assert_eq!(stt.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(tts.until_closed().await.1, Ending::CloseFrame(1000));
}

#[tokio::test]
async fn a_transfer_enqueues_through_the_twilio_rest_api() {
    let twilio_api = FakeTwilio::start().await;
    twilio_api.add_call(REST_CALL_SID);
    let mut vars = twilio_vars(&twilio_api);
    vars.push(("AGENT_TOOLS", "transfer_to_human".to_string()));
    vars.push((
        "TASKROUTER_WORKFLOW_SID",
        "WW0123456789abcdef0123456789abcdef".to_string(),
    ));
    let mut s = setup(&as_strs(&vars)).await;
    s.llm.push(Reply::tool(
        "call_1",
        "transfer_to_human",
        json!({"reason": "quer um atendente", "summary": "2ª via do boleto"}),
    ));
    let mut twilio = MediaClient::start(&s.app, REST_CALL_SID).await;
    caller_ends_with(
        &mut s,
        &mut twilio,
        voxrelay::config::DEFAULT_HANDOFF_MESSAGE,
    )
    .await;

    let requests = twilio_api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].field("Status"), None);
    let twiml = requests[0].field("Twiml").expect("the handoff TwiML");
    // The agent's handoff document is the task, as /twiml/stream/next would send it.
    assert!(
        twiml.contains(r#"<Enqueue workflowSid="WW0123456789abcdef0123456789abcdef"><Task>{"#),
        "{twiml}"
    );
    for field in [
        "&quot;reasonCode&quot;:&quot;live-agent-handoff&quot;",
        "&quot;summary&quot;:&quot;2ª via do boleto&quot;",
        &format!("&quot;callSid&quot;:&quot;{REST_CALL_SID}&quot;"),
    ] {
        assert!(twiml.contains(field), "{field} in {twiml}");
    }
    assert_eq!(s.observed.wait_ended().await.status, "handoff");
}

#[tokio::test]
async fn with_twilio_down_a_transfer_still_happens_through_the_redirect() {
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut s = setup(&[
        ("TWILIO_ACCOUNT_SID", fake_twilio::ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", fake_twilio::AUTH_TOKEN),
        ("TWILIO_VALIDATE_SIGNATURES", "false"),
        ("TWILIO_API_BASE", down.as_str()),
        ("AGENT_TOOLS", "transfer_to_human"),
        ("HANDOFF_NUMBER", "sip:fila@pbx.example.com"),
    ])
    .await;
    s.llm.push(Reply::tool(
        "call_1",
        "transfer_to_human",
        json!({"reason": "pediu"}),
    ));
    let mut twilio = MediaClient::start(&s.app, REST_CALL_SID).await;
    caller_ends_with(
        &mut s,
        &mut twilio,
        voxrelay::config::DEFAULT_HANDOFF_MESSAGE,
    )
    .await;
    assert_eq!(s.observed.wait_ended().await.status, "handoff");
    // The stream closed; Twilio runs the <Redirect>, and the transfer is answered.
    let twiml = reqwest::Client::new()
        .post(s.app.url("/twiml/stream/next"))
        .form(&[("CallSid", REST_CALL_SID), ("CallStatus", "in-progress")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        twiml.contains("<Dial><Sip>sip:fila@pbx.example.com</Sip></Dial>"),
        "{twiml}"
    );
}

// ---------------------------------------------------------------------------------
// Language switches

/// An agent file with two languages: Portuguese in the call's voice, English in
/// its own.
fn bilingual_agent() -> String {
    agent_file(
        "cascade-bilingual",
        r#"
[[languages]]
code = "pt-BR"

[[languages]]
code = "en-US"
tts_provider = "ElevenLabs"
voice = "voz_en-flash_v2_5-1.0_0.8_0.8"
"#,
    )
}

#[tokio::test]
async fn a_language_switch_moves_the_voice_and_the_scribe_transcriber() {
    let agent = bilingual_agent();
    let mut s = setup(&[
        ("AGENT_CONFIG", agent.as_str()),
        ("AGENT_TOOLS", "switch_language"),
    ])
    .await;
    s.llm.push(Reply::tool(
        "call_1",
        "switch_language",
        json!({"language": "en-US"}),
    ));
    s.llm.push(Reply::tokens(&["Sure! ", "How can I help?"]));
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_language").await;
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    assert!(stt.uri.contains("language_code=pt"), "{}", stt.uri);
    assert!(tts.uri.contains("language_code=pt"), "{}", tts.uri);
    greet(&mut tts, &mut twilio).await;
    stt.send_json(json!({"message_type": "committed_transcript", "text": "Can we speak English?"}))
        .await;

    // The switch opens a TTS socket in the English voice and a Scribe socket in
    // English (they connect concurrently).
    let a = s.eleven.next_conn().await;
    let b = s.eleven.next_conn().await;
    let (mut new_stt, mut new_tts) = if a.uri.contains("speech-to-text") {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        new_tts
            .uri
            .starts_with("/v1/text-to-speech/voz_en/multi-stream-input?"),
        "{}",
        new_tts.uri
    );
    assert!(new_tts.uri.contains("language_code=en"), "{}", new_tts.uri);
    assert!(
        new_stt.uri.starts_with("/v1/speech-to-text/realtime?"),
        "{}",
        new_stt.uri
    );
    assert!(new_stt.uri.contains("language_code=en"), "{}", new_stt.uri);
    assert!(
        new_stt.uri.contains("audio_format=ulaw_8000"),
        "{}",
        new_stt.uri
    );
    assert_eq!(new_tts.header("xi-api-key"), Some("xi-test-key"));

    // The reply after the switch is spoken by the new voice, and reaches Twilio.
    assert_eq!(new_tts.recv_json().await, context_init("ctx-1"));
    assert_eq!(
        tts_turn_text(&mut new_tts, "ctx-1").await,
        "Sure! How can I help? "
    );
    let reply = tone(320, 0x44);
    tts_speak(&mut new_tts, "ctx-1", &reply).await;
    let heard = twilio.audio(320 + 320).await;
    assert_eq!(heard[320..640], reply[..]);
    let requests = s.llm.wait_requests(2).await;
    assert!(
        requests[1]
            .raw_messages()
            .iter()
            .any(|m| m["role"] == "tool" && m["content"].as_str().unwrap_or("").contains("en-US")),
        "the switch's result goes back to the model"
    );

    // The old sockets close; the old voice said nothing more.
    let (old_tts_sent, ending) = tts.until_closed().await;
    assert_eq!(ending, Ending::CloseFrame(1000));
    assert!(
        old_tts_sent
            .iter()
            .all(|m| !m["text"].as_str().unwrap_or("").contains("Sure")),
        "{old_tts_sent:?}"
    );
    assert_eq!(stt.until_closed().await.1, Ending::CloseFrame(1000));

    // The caller's audio now goes to the English transcriber, whose transcripts
    // drive the turns.
    let payload = twilio.speak(&tone(160, 5)).await;
    let got = new_stt.recv_json().await;
    assert_eq!(got["message_type"], "input_audio_chunk");
    assert_eq!(got["audio_base_64"], payload.as_str());
    s.llm.push(Reply::tokens(&["Great."]));
    new_stt
        .send_json(json!({"message_type": "committed_transcript", "text": "I need a new invoice"}))
        .await;
    let requests = s.llm.wait_requests(3).await;
    assert_eq!(
        requests[2].messages().last().unwrap(),
        &("user".to_string(), "I need a new invoice".to_string())
    );
    assert_eq!(tts_turn_text(&mut new_tts, "ctx-2").await, "Great. ");

    twilio.stop().await;
    assert_eq!(new_stt.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(new_tts.until_closed().await.1, Ending::CloseFrame(1000));
}

#[tokio::test]
async fn a_language_switch_updates_the_openai_transcriber_in_place() {
    let mut openai = FakeWsServer::start().await;
    let url = format!("{}/v1/realtime", openai.base());
    // A multilingual model takes no language code and no voice is set for English:
    // the TTS socket serves both languages.
    let mut s = setup(&[
        ("CASCADE_STT", "openai"),
        ("OPENAI_REALTIME_URL", url.as_str()),
        ("LANGUAGES", "en-US"),
        ("AGENT_TOOLS", "switch_language"),
        ("ELEVENLABS_TTS_MODEL", "eleven_multilingual_v2"),
    ])
    .await;
    s.llm.push(Reply::tool(
        "call_1",
        "switch_language",
        json!({"language": "en-US"}),
    ));
    s.llm.push(Reply::tokens(&["Sure."]));
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_language_openai").await;
    let mut stt = openai.next_conn().await;
    let update = stt.recv_json().await;
    assert_eq!(
        update["session"]["audio"]["input"]["transcription"]["language"],
        "pt"
    );
    let mut tts = s.eleven.next_conn().await;
    assert!(!tts.uri.contains("language_code"), "{}", tts.uri);
    greet(&mut tts, &mut twilio).await;
    stt.send_json(
        json!({"type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_1", "content_index": 0, "transcript": "English, please"}),
    )
    .await;

    // The same transcription session is told the new language.
    let update = stt.recv_json().await;
    assert_eq!(update["type"], "session.update", "{update}");
    assert_eq!(update["session"]["type"], "transcription");
    assert_eq!(
        update["session"]["audio"]["input"]["transcription"]["language"],
        "en"
    );
    assert_eq!(
        update["session"]["audio"]["input"]["format"]["type"],
        "audio/pcmu"
    );
    // The reply goes on in the same TTS socket.
    assert_eq!(tts_turn_text(&mut tts, "ctx-2").await, "Sure. ");
    let payload = twilio.speak(&tone(160, 6)).await;
    let appended = stt.recv_json().await;
    assert_eq!(appended["audio"], payload.as_str());
    drop(twilio);
    assert_eq!(stt.until_closed().await.1, Ending::CloseFrame(1000));
    assert_eq!(tts.until_closed().await.1, Ending::CloseFrame(1000));
    // No other socket was opened.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), s.eleven.next_conn())
            .await
            .is_err()
    );
}

/// Not a check: measures the cascade's own overhead on loopback (fake upstreams
/// answer at once). Run with
/// `cargo test --release --test it measure_cascade -- --ignored --nocapture`;
/// results and method are in BENCHMARKS.md.
#[tokio::test]
#[ignore]
async fn measure_cascade_latencies() {
    use tokio::time::Instant;
    const ROUNDS: usize = 20;
    let mut s = setup(&[("WELCOME_GREETING", "")]).await;
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_measure").await;
    let (mut stt, mut tts) = upstreams(&mut s.eleven).await;
    assert_eq!(tts.recv_json().await, context_init("ctx-1"));
    let (mut to_text, mut to_audio, mut to_clear) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let context = format!("ctx-{}", round + 1);
        s.llm.push(Reply::tokens(&["Resposta ", "curta."]));
        let asked = Instant::now();
        stt.send_json(
            json!({"message_type": "committed_transcript", "text": format!("pergunta {round}")}),
        )
        .await;
        // Final transcript → first words at the TTS (fake LLM answers at once).
        let first = tts.recv_json().await;
        assert_eq!(first["context_id"], context.as_str(), "{first}");
        to_text.push(asked.elapsed());
        // TTS audio → first frame at Twilio. (Twilio streams caller audio all along,
        // which also acknowledges our last message at once: without it, Nagle's
        // algorithm and a delayed ACK on loopback add ~40 ms after a `clear`.)
        twilio.speak(&tone(160, 5)).await;
        let before = twilio.audio.len();
        let sent = Instant::now();
        tts.send_json(
            json!({"audio": BASE64.encode(tone(16_000, round as u8)), "contextId": context}),
        )
        .await;
        twilio.audio(before + 160).await;
        to_audio.push(sent.elapsed());
        twilio.audio(before + 160 * 10).await;
        // Partial transcript while speaking → `clear` at Twilio.
        let spoke = Instant::now();
        stt.send_json(json!({"message_type": "partial_transcript", "text": "espera"}))
            .await;
        assert_eq!(twilio.read_until(|_| false).await, Some(Got::Clear));
        to_clear.push(spoke.elapsed());
        tts_until(
            &mut tts,
            json!({"context_id": context, "close_context": true}),
        )
        .await;
        tts.recv_json().await; // the next context
    }
    let report = |name: &str, mut v: Vec<Duration>| {
        v.sort();
        eprintln!(
            "{name}: median {:?}, p90 {:?}, max {:?} over {} rounds",
            v[v.len() / 2],
            v[v.len() * 9 / 10],
            v[v.len() - 1],
            v.len()
        );
    };
    report("final transcript -> first TTS text", to_text);
    report("TTS audio -> first Twilio frame", to_audio);
    report("partial transcript -> Twilio clear", to_clear);
}

#[tokio::test]
async fn a_silent_caller_hears_the_question_then_the_goodbye_and_the_call_ends() {
    let mut s = setup(&[
        ("SILENCE_TIMEOUT_SECS", "1"),
        ("STILL_THERE_MESSAGE", "Ainda está aí?"),
    ])
    .await;
    let mut twilio = MediaClient::start(&s.app, "CA_cascade_silent").await;
    let (_stt, mut tts) = upstreams(&mut s.eleven).await;
    greet(&mut tts, &mut twilio).await;
    // A second without a word from the caller: the agent asks, through the TTS.
    assert_eq!(
        tts_turn_text(&mut tts, "ctx-2").await.trim(),
        "Ainda está aí?"
    );
    tts_speak(&mut tts, "ctx-2", &tone(160, 0x33)).await;
    // Another second: the goodbye, then the end.
    assert_eq!(
        tts_turn_text(&mut tts, "ctx-3").await.trim(),
        DEFAULT_GOODBYE_MESSAGE
    );
    tts_speak(&mut tts, "ctx-3", &tone(160, 0x44)).await;
    twilio.closed().await;
    let summary = s.observed.wait_ended().await;
    assert!(
        summary
            .handoff_data
            .as_deref()
            .unwrap_or("")
            .contains("silence"),
        "{summary:?}"
    );
    assert_eq!(s.app.state.metrics.endings("silence"), 1);
    assert!(s.llm.requests().is_empty(), "the LLM is never asked");
}

#[tokio::test]
async fn twilios_voicemail_detection_leaves_the_message_through_the_tts() {
    let mut s = setup(&[("VOICEMAIL_MESSAGE", "Recado para {name}.")]).await;
    let mut twilio = MediaClient::start_with(&s.app, "CA_cascade_vm", json!({"name": "Ana"})).await;
    let (_stt, mut tts) = upstreams(&mut s.eleven).await;
    greet(&mut tts, &mut twilio).await;
    let res = reqwest::Client::new()
        .post(s.app.url("/twilio/amd"))
        .form(&[
            ("CallSid", "CA_cascade_vm"),
            ("AnsweredBy", "machine_end_silence"),
        ])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(
        tts_turn_text(&mut tts, "ctx-2").await.trim(),
        "Recado para Ana."
    );
    tts_speak(&mut tts, "ctx-2", &tone(160, 0x55)).await;
    twilio.closed().await;
    let summary = s.observed.wait_ended().await;
    assert!(
        summary
            .handoff_data
            .as_deref()
            .unwrap_or("")
            .contains("voicemail"),
        "{summary:?}"
    );
}
