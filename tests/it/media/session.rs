//! Media Streams mode end to end: the real server, a fake Twilio Media Streams
//! client over a real WebSocket, and fake OpenAI Realtime / ElevenLabs servers on
//! loopback that check what we send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use voxrelay::AppState;
use voxrelay::agent::{
    AppointmentRecord, CallInfo, CallObserver, CallSummary, Speaker, ToolCallRecord, TurnRecord,
};
use voxrelay::media::protocol::{Dtmf, DtmfEvent, Inbound, Outbound};
use voxrelay::sim::peer::{MediaPeer, Received};

use crate::support::fake_speech::{Ending, FakeConn, FakeWsServer};
use crate::support::fake_twilio::{self, FakeTwilio};
use crate::support::{TestApp, eventually, spawn_with_state, test_config};

const WAIT: Duration = Duration::from_secs(5);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// Everything the server reported about calls.
#[derive(Default)]
pub struct Seen {
    started: Mutex<Vec<CallInfo>>,
    turns: Mutex<Vec<TurnRecord>>,
    interrupted: Mutex<Vec<(u32, String)>>,
    tools: Mutex<Vec<ToolCallRecord>>,
    appointments: Mutex<Vec<AppointmentRecord>>,
    ended: Mutex<Vec<(String, CallSummary)>>,
    recordings: Mutex<Vec<(String, String)>>,
    pub(crate) answered: Mutex<Vec<(String, String)>>,
}

impl CallObserver for Seen {
    fn call_started(&self, call: &CallInfo) {
        self.started.lock().unwrap().push(call.clone());
    }
    fn turn(&self, _: &str, turn: &TurnRecord) {
        self.turns.lock().unwrap().push(turn.clone());
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
    fn appointment(&self, _: &str, a: &AppointmentRecord) {
        self.appointments.lock().unwrap().push(a.clone());
    }
    fn call_ended(&self, sid: &str, summary: &CallSummary) {
        self.ended
            .lock()
            .unwrap()
            .push((sid.to_string(), summary.clone()));
    }
    fn answered_by(&self, _: &str, what: &str, signal: &str) {
        self.answered
            .lock()
            .unwrap()
            .push((what.to_string(), signal.to_string()));
    }
    fn recording(&self, sid: &str, path: &str) {
        self.recordings
            .lock()
            .unwrap()
            .push((sid.to_string(), path.to_string()));
    }
}

impl Seen {
    /// The end of the call `sid`, if reported.
    pub(crate) fn ended_of(&self, sid: &str) -> Option<CallSummary> {
        self.ended
            .lock()
            .unwrap()
            .iter()
            .find(|(s, _)| s == sid)
            .map(|(_, summary)| summary.clone())
    }

    pub(crate) async fn wait_ended(&self) -> CallSummary {
        eventually("the call's end", WAIT, || {
            self.ended.lock().unwrap().first().map(|(_, s)| s.clone())
        })
        .await
    }

    async fn wait_turns(&self, n: usize) -> Vec<TurnRecord> {
        eventually(&format!("{n} turns recorded"), WAIT, || {
            let turns = self.turns.lock().unwrap().clone();
            (turns.len() >= n).then_some(turns)
        })
        .await
    }
}

/// The server with a fake Realtime upstream (and `extra` settings).
pub(crate) async fn app_with(vars: &[(&str, &str)]) -> (TestApp, Arc<Seen>) {
    let config = test_config(vars);
    let mut state = AppState::new(config).await.unwrap();
    let seen = Arc::new(Seen::default());
    state.observer = seen.clone();
    (spawn_with_state(state).await, seen)
}

pub(crate) async fn realtime_app(
    fake: &FakeWsServer,
    extra: &[(&str, &str)],
) -> (TestApp, Arc<Seen>) {
    let url = format!("{}/v1/realtime", fake.base());
    let mut vars = vec![
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_REALTIME_URL", url.as_str()),
        ("WELCOME_GREETING", "Olá, aqui é a clínica."),
        (
            "AGENT_TOOLS",
            "end_call,transfer_to_human,schedule_appointment,send_dtmf",
        ),
        ("HANDOFF_NUMBER", "+5511999990000"),
    ];
    vars.extend_from_slice(extra);
    app_with(&vars).await
}

/// Plays Twilio's side of a bidirectional Media Stream.
pub struct TwilioMedia {
    peer: MediaPeer,
}

impl TwilioMedia {
    pub async fn connect(app: &TestApp) -> Self {
        let peer = MediaPeer::connect(app.ws_url("/media-stream"), "MZ1")
            .await
            .expect("media-stream upgrade");
        Self { peer }
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.peer.send_frame(message).await.unwrap();
    }

    pub async fn start(&mut self, call_sid: &str, params: &[(&str, &str)]) {
        let parameters: HashMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.peer.start(call_sid, parameters).await.unwrap();
    }

    pub async fn media(&mut self, mulaw: &[u8]) {
        self.peer.media(mulaw).await.unwrap();
    }

    /// A `dtmf` message carrying `digit` as given (even a malformed one).
    pub async fn dtmf(&mut self, digit: &str) {
        let message = Inbound::Dtmf(DtmfEvent {
            sequence_number: None,
            stream_sid: self.peer.stream_sid().to_string(),
            dtmf: Dtmf {
                track: Some("inbound_track".into()),
                digit: digit.into(),
            },
        });
        self.peer.send(&message).await.unwrap();
    }

    pub async fn mark(&mut self, name: &str) {
        self.peer.mark(name).await.unwrap();
    }

    pub async fn stop(&mut self) {
        self.peer.stop().await.unwrap();
    }

    /// The next message from the server, or `None` when the socket closed.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Outbound> {
        match self.peer.receive(wait).await? {
            Received::Message(message) => Some(message),
            Received::Unreadable(text) => panic!("not a Media Streams message: {text}"),
            Received::Closed(_) => None,
        }
    }

    pub async fn recv(&mut self) -> Outbound {
        self.recv_within(WAIT)
            .await
            .expect("a message from the server")
    }

    /// Collects agent audio until `bytes` arrived (marks are recorded too).
    pub async fn audio(&mut self, bytes: usize) -> (Vec<u8>, Vec<String>) {
        let mut audio = Vec::new();
        let mut marks = Vec::new();
        while audio.len() < bytes {
            match self.recv().await {
                Outbound::Media { stream_sid, media } => {
                    assert_eq!(stream_sid, self.peer.stream_sid());
                    let frame = unb64(media.payload.as_str());
                    assert_eq!(frame.len(), 160, "one 20 ms frame per message");
                    audio.extend(frame);
                }
                Outbound::Mark { mark, .. } => marks.push(mark.name),
                Outbound::Clear { .. } => panic!("unexpected clear"),
            }
        }
        (audio, marks)
    }

    /// Reads until the server closes the socket; returns what came before.
    pub async fn until_closed(&mut self) -> Vec<Outbound> {
        let mut seen = Vec::new();
        while let Some(m) = self.recv_within(WAIT).await {
            seen.push(m);
        }
        seen
    }
}

/// Reads the fake upstream until a message of `kind` arrives (skipping audio
/// appends), returning it and what was skipped.
pub(crate) async fn recv_type(conn: &mut FakeConn, kind: &str) -> Value {
    loop {
        let v = conn.recv_json().await;
        if v["type"] == kind {
            return v;
        }
        assert!(
            v["type"] == "input_audio_buffer.append"
                || v["type"] == "pong"
                || v.get("user_audio_chunk").is_some(),
            "unexpected upstream message while waiting for {kind}: {v}"
        );
    }
}

/// Connects a call and returns the upstream connection after the session update
/// and the greeting request.
pub(crate) async fn realtime_call(
    app: &TestApp,
    fake: &mut FakeWsServer,
    params: &[(&str, &str)],
) -> (TwilioMedia, FakeConn, Value) {
    realtime_call_as(app, fake, "CA100", params).await
}

/// [`realtime_call`] for the call `call_sid`.
pub(crate) async fn realtime_call_as(
    app: &TestApp,
    fake: &mut FakeWsServer,
    call_sid: &str,
    params: &[(&str, &str)],
) -> (TwilioMedia, FakeConn, Value) {
    let mut twilio = TwilioMedia::connect(app).await;
    twilio.start(call_sid, params).await;
    let mut conn = fake.next_conn().await;
    let update = conn.recv_json().await;
    assert_eq!(update["type"], "session.update");
    let greeting = recv_type(&mut conn, "response.create").await;
    (
        twilio,
        conn,
        json!({"update": update, "greeting": greeting}),
    )
}

pub(crate) fn audio_delta(item: &str, bytes: &[u8]) -> Value {
    json!({"type": "response.output_audio.delta", "response_id": "resp1", "item_id": item,
           "output_index": 0, "content_index": 0, "delta": b64(bytes)})
}

#[tokio::test]
async fn realtime_session_comes_from_the_agent_and_audio_passes_unchanged() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &[]).await;
    let (mut twilio, mut conn, first) = realtime_call(
        &app,
        &mut fake,
        &[("lead", "Ana"), ("from", "+5511988887777")],
    )
    .await;
    assert_eq!(conn.uri, "/v1/realtime?model=gpt-realtime");
    assert_eq!(conn.header("authorization"), Some("Bearer sk-test"));

    // The session: instructions with the call's parameters, µ-law both ways, the
    // registry's tools minus the ConversationRelay-only ones, pt transcription.
    let session = &first["update"]["session"];
    let instructions = session["instructions"].as_str().unwrap();
    assert!(
        instructions.ends_with("Dados desta ligação: lead: Ana"),
        "{instructions}"
    );
    assert_eq!(session["audio"]["input"]["format"]["type"], "audio/pcmu");
    assert_eq!(session["audio"]["output"]["format"]["type"], "audio/pcmu");
    assert_eq!(session["audio"]["input"]["transcription"]["language"], "pt");
    let tools = tool_names(session);
    assert_eq!(
        tools,
        ["end_call", "transfer_to_human", "schedule_appointment"]
    );
    // The greeting is asked for.
    let greeting = first["greeting"]["response"]["instructions"]
        .as_str()
        .unwrap();
    assert!(greeting.contains("Olá, aqui é a clínica."), "{greeting}");
    let started = seen.started.lock().unwrap()[0].clone();
    assert_eq!(
        (started.mode.as_str(), started.from.as_str()),
        ("stream", "+5511988887777")
    );
    assert_eq!(
        started.parameters.get("lead").map(String::as_str),
        Some("Ana")
    );

    // Caller audio reaches Realtime byte for byte.
    let caller: Vec<u8> = (0..160u32).map(|i| (i * 7 % 256) as u8).collect();
    twilio.media(&caller).await;
    let append = recv_type(&mut conn, "input_audio_buffer.append").await;
    assert_eq!(unb64(append["audio"].as_str().unwrap()), caller);

    // Agent audio reaches Twilio byte for byte, in 160-byte frames, padded with
    // silence at the end of the item, with marks.
    let agent: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    conn.send_json(audio_delta("item1", &agent[..333])).await;
    conn.send_json(audio_delta("item1", &agent[333..])).await;
    conn.send_json(json!({"type": "response.output_audio.done", "item_id": "item1"}))
        .await;
    conn.send_json(json!({"type": "response.output_audio_transcript.done", "item_id": "item1", "transcript": "Olá, aqui é a clínica."}))
        .await;
    let (played, marks) = twilio.audio(1120).await;
    assert_eq!(&played[..1000], &agent[..]);
    assert!(played[1000..].iter().all(|&b| b == 0xFF), "silence padding");
    assert!(marks.is_empty(), "7 frames: no periodic mark yet");
    // A mark follows the turn's last frame; echoing it is harmless.
    match twilio.recv().await {
        Outbound::Mark { mark, .. } => twilio.mark(&mark.name).await,
        other => panic!("expected the turn's last mark, got {other:?}"),
    }
    // Transcripts of both sides.
    conn.send_json(json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "content_index": 0, "transcript": "Quero marcar uma consulta"}))
        .await;
    let turns = seen.wait_turns(2).await;
    assert_eq!(
        (turns[0].speaker, turns[0].text.as_str()),
        (Speaker::Agent, "Olá, aqui é a clínica.")
    );
    assert_eq!(
        (turns[1].speaker, turns[1].text.as_str()),
        (Speaker::Caller, "Quero marcar uma consulta")
    );

    // The caller hangs up: the upstream closes with a close frame.
    twilio.stop().await;
    let (_, ending) = conn.until_closed().await;
    assert_eq!(ending, Ending::CloseFrame(1000));
    let summary = seen.wait_ended().await;
    assert_eq!(summary.status, "completed");
    assert_eq!(summary.turns, 1);
}

#[tokio::test]
async fn realtime_barge_in_clears_twilio_and_truncates_to_what_was_played() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &[]).await;
    let (mut twilio, mut conn, _) = realtime_call(&app, &mut fake, &[]).await;

    // 3 s of agent audio for item A, with its transcript so far.
    conn.send_json(json!({"type": "response.output_audio_transcript.delta", "item_id": "A", "delta": "Um dois três quatro cinco seis"}))
        .await;
    for _ in 0..6 {
        conn.send_json(audio_delta("A", &[0x11; 4000])).await;
    }
    // Twilio plays about half a second.
    twilio.audio(160 * 20).await;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.send_json(json!({"type": "input_audio_buffer.speech_started", "item_id": "u2", "audio_start_ms": 900}))
        .await;
    // Twilio is told to drop its buffer.
    let mut cleared = false;
    for _ in 0..100 {
        match twilio.recv().await {
            Outbound::Clear { stream_sid } => {
                assert_eq!(stream_sid, "MZ1");
                cleared = true;
                break;
            }
            Outbound::Media { .. } | Outbound::Mark { .. } => {}
        }
    }
    assert!(cleared, "clear sent");
    let elapsed = started.elapsed().as_millis() as u64;
    // Realtime is told what was heard: about what was paced out, never more than
    // generated (3000 ms).
    let truncate = recv_type(&mut conn, "conversation.item.truncate").await;
    assert_eq!(truncate["item_id"], "A");
    assert_eq!(truncate["content_index"], 0);
    let end_ms = truncate["audio_end_ms"].as_u64().unwrap();
    assert!(
        (300..=400 + elapsed + 100).contains(&end_ms) && end_ms < 3000,
        "audio_end_ms {end_ms} (elapsed {elapsed} ms after 400 ms of audio)"
    );
    // Late deltas of the truncated item never reach Twilio.
    conn.send_json(audio_delta("A", &[0x22; 1600])).await;
    assert!(
        twilio
            .recv_within(Duration::from_millis(300))
            .await
            .is_none_or(|m| !matches!(m, Outbound::Media { .. }))
    );
    // The agent turn was recorded from its first words (partial), completed when
    // it was cut, and marked interrupted with a prefix of its words.
    let turns = seen.wait_turns(2).await;
    assert!(turns[0].partial, "{turns:?}");
    assert_eq!((turns[1].seq, turns[1].partial), (turns[0].seq, false));
    assert_eq!(turns[1].text, "Um dois três quatro cinco seis");
    let (seq, heard) = seen.interrupted.lock().unwrap()[0].clone();
    assert_eq!(seq, turns[0].seq);
    assert!(
        "Um dois três quatro cinco seis".starts_with(&heard) && heard.len() < 30,
        "{heard:?}"
    );

    // A short item: 100 ms generated, the caller interrupts later: clamped to 100.
    conn.send_json(audio_delta("B", &[0x33; 800])).await;
    let _ = twilio.audio(800).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    conn.send_json(json!({"type": "input_audio_buffer.speech_started", "item_id": "u3"}))
        .await;
    loop {
        if let Outbound::Clear { .. } = twilio.recv().await {
            break;
        }
    }
    let truncate = recv_type(&mut conn, "conversation.item.truncate").await;
    assert_eq!(truncate["item_id"], "B");
    assert_eq!(
        truncate["audio_end_ms"], 100,
        "clamped to the generated audio"
    );
    twilio.stop().await;
    assert_eq!(seen.wait_ended().await.interrupts, 2);
}

#[tokio::test]
async fn realtime_tool_calls_run_through_the_registry_and_end_the_call() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &[]).await;
    let (mut twilio, mut conn, _) =
        realtime_call(&app, &mut fake, &[("from", "+5511988887777")]).await;

    // A booking: the result goes back, then one response.create.
    conn.send_json(json!({"type": "response.created", "response": {"id": "r1"}}))
        .await;
    conn.send_json(json!({"type": "response.function_call_arguments.done", "call_id": "call_1", "name": "schedule_appointment",
        "arguments": "{\"name\":\"Ana\",\"preferred_day\":\"2030-11-25\",\"preferred_time\":\"14:00\"}"}))
        .await;
    conn.send_json(json!({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": []}}))
        .await;
    let item = recv_type(&mut conn, "conversation.item.create").await;
    assert_eq!(item["item"]["type"], "function_call_output");
    assert_eq!(item["item"]["call_id"], "call_1");
    let output: Value = serde_json::from_str(item["item"]["output"].as_str().unwrap()).unwrap();
    assert!(output.get("error").is_none(), "{output}");
    let next = recv_type(&mut conn, "response.create").await;
    assert!(next.get("response").is_none_or(|r| r.is_null()), "{next}");
    let appointment = seen.appointments.lock().unwrap()[0].clone();
    assert_eq!(appointment.name, "Ana");
    assert_eq!(appointment.phone.as_deref(), Some("+5511988887777"));

    // An unknown tool gets an error result.
    conn.send_json(json!({"type": "response.function_call_arguments.done", "call_id": "call_2", "name": "launch_rocket", "arguments": "{}"}))
        .await;
    let item = recv_type(&mut conn, "conversation.item.create").await;
    assert_eq!(item["item"]["call_id"], "call_2");
    assert!(item["item"]["output"].as_str().unwrap().contains("error"));
    recv_type(&mut conn, "response.create").await;

    // transfer_to_human without words of its own: the handoff message is asked
    // for, played, then the socket closes and /twiml/stream/next dials the person.
    conn.send_json(json!({"type": "response.created", "response": {"id": "r3"}}))
        .await;
    conn.send_json(json!({"type": "response.function_call_arguments.done", "call_id": "call_3", "name": "transfer_to_human",
        "arguments": "{\"reason\":\"quer falar com alguém\"}"}))
        .await;
    conn.send_json(json!({"type": "response.done", "response": {"id": "r3", "status": "completed", "output": []}}))
        .await;
    recv_type(&mut conn, "conversation.item.create").await;
    let goodbye = recv_type(&mut conn, "response.create").await;
    assert!(
        goodbye["response"]["instructions"]
            .as_str()
            .unwrap()
            .contains("Say exactly")
    );
    conn.send_json(json!({"type": "response.created", "response": {"id": "r4"}}))
        .await;
    conn.send_json(audio_delta("bye", &[0x44; 1600])).await;
    conn.send_json(json!({"type": "response.output_audio.done", "item_id": "bye"}))
        .await;
    conn.send_json(json!({"type": "response.done", "response": {"id": "r4", "status": "completed", "output": []}}))
        .await;
    let rest = twilio.until_closed().await;
    let frames = rest
        .iter()
        .filter(|m| matches!(m, Outbound::Media { .. }))
        .count();
    assert_eq!(frames, 10, "the goodbye plays before the hang-up");
    let summary = seen.wait_ended().await;
    assert_eq!(summary.status, "handoff");
    assert!(summary.handoff_data.unwrap().contains("live-agent-handoff"));
    let (_, ending) = conn.until_closed().await;
    assert_eq!(ending, Ending::CloseFrame(1000));
    let names: Vec<String> = seen
        .tools
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(
        names,
        ["schedule_appointment", "launch_rocket", "transfer_to_human"]
    );

    // Twilio runs the TwiML after </Connect>: the transfer.
    let client = reqwest::Client::new();
    let twiml = client
        .post(app.url("/twiml/stream/next"))
        .form(&[("CallSid", "CA100"), ("CallStatus", "in-progress")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        twiml.contains("<Dial><Number>+5511999990000</Number></Dial>"),
        "{twiml}"
    );
    // Only once; any other call just hangs up.
    let again = client
        .post(app.url("/twiml/stream/next"))
        .form(&[("CallSid", "CA100")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains("<Hangup/>"), "{again}");
}

/// The names of the tools a `session.update`'s session offers.
fn tool_names(session: &Value) -> Vec<&str> {
    session["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("tool name"))
        .collect()
}

/// The fake Realtime model calls `switch_language` with `language`.
async fn model_switches_language(conn: &mut FakeConn, call_id: &str, language: &str) {
    let arguments = json!({ "language": language }).to_string();
    conn.send_json(
        json!({"type": "response.function_call_arguments.done", "call_id": call_id,
        "name": "switch_language", "arguments": arguments}),
    )
    .await;
}

#[tokio::test]
async fn realtime_switch_language_updates_instructions_and_transcription_not_the_voice() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(
        &fake,
        &[
            ("LANGUAGES", "pt-BR, en-US"),
            (
                "AGENT_TOOLS",
                "end_call,schedule_appointment,send_dtmf,switch_language",
            ),
        ],
    )
    .await;
    let (mut twilio, mut conn, first) = realtime_call(&app, &mut fake, &[]).await;

    // switch_language is offered (with the configured codes), send_dtmf is not.
    let session = &first["update"]["session"];
    let tools = tool_names(session);
    assert_eq!(
        tools,
        ["end_call", "schedule_appointment", "switch_language"]
    );
    assert_eq!(
        session["tools"][2]["parameters"]["properties"]["language"]["enum"],
        json!(["pt-BR", "en-US"])
    );
    let base = session["instructions"].as_str().unwrap().to_string();
    let transcription = session["audio"]["input"]["transcription"].clone();
    assert_eq!(transcription["language"], "pt");
    let model = transcription["model"].as_str().unwrap().to_string();
    assert!(!model.is_empty());

    // The model switches to English.
    conn.send_json(json!({"type": "response.created", "response": {"id": "r1"}}))
        .await;
    model_switches_language(&mut conn, "call_1", "en-US").await;
    conn.send_json(json!({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": []}}))
        .await;
    // One partial session.update: the instructions plus a line, English
    // transcription with the same model; no voice, model, tools or turn detection.
    let update = recv_type(&mut conn, "session.update").await;
    let expected_instructions = format!(
        "{base}\n\nThe caller prefers another language: from now on, speak en-US to the caller."
    );
    assert_eq!(
        update,
        json!({"type": "session.update", "session": {
            "type": "realtime",
            "instructions": expected_instructions,
            "audio": {"input": {"transcription": {"model": model, "language": "en"}}}
        }})
    );
    assert!(!update.to_string().contains("voice"), "{update}");
    // Then the result and one response.create, as for any tool.
    let item = recv_type(&mut conn, "conversation.item.create").await;
    assert_eq!(item["item"]["type"], "function_call_output");
    assert_eq!(item["item"]["call_id"], "call_1");
    let output: Value = serde_json::from_str(item["item"]["output"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&output["ok"], &output["language"]),
        (&json!(true), &json!("en-US"))
    );
    let next = recv_type(&mut conn, "response.create").await;
    assert!(next.get("response").is_none_or(|r| r.is_null()), "{next}");

    // Switching to the language in use sends no session.update (recv_type would
    // fail on it): only the result and response.create.
    model_switches_language(&mut conn, "call_2", "en-us").await;
    let item = recv_type(&mut conn, "conversation.item.create").await;
    assert_eq!(item["item"]["call_id"], "call_2");
    recv_type(&mut conn, "response.create").await;

    // Back to Portuguese: the base instructions with the new line, pt transcription.
    model_switches_language(&mut conn, "call_3", "pt-BR").await;
    let update = recv_type(&mut conn, "session.update").await;
    assert_eq!(
        update["session"]["instructions"],
        format!(
            "{base}\n\nThe caller prefers another language: from now on, speak pt-BR to the caller."
        )
    );
    assert_eq!(
        update["session"]["audio"]["input"]["transcription"]["language"],
        "pt"
    );
    let item = recv_type(&mut conn, "conversation.item.create").await;
    assert_eq!(item["item"]["call_id"], "call_3");
    recv_type(&mut conn, "response.create").await;

    // An unconfigured language is an error for the model and changes nothing.
    model_switches_language(&mut conn, "call_4", "fr-FR").await;
    let item = recv_type(&mut conn, "conversation.item.create").await;
    assert_eq!(item["item"]["call_id"], "call_4");
    assert!(item["item"]["output"].as_str().unwrap().contains("error"));
    recv_type(&mut conn, "response.create").await;

    // Every call is recorded.
    let tools: Vec<(String, bool)> = seen
        .tools
        .lock()
        .unwrap()
        .iter()
        .map(|t| (t.name.clone(), t.ok))
        .collect();
    let switch = |ok| ("switch_language".to_string(), ok);
    assert_eq!(
        tools,
        [switch(true), switch(true), switch(true), switch(false)]
    );
    twilio.stop().await;
    let summary = seen.wait_ended().await;
    assert_eq!(summary.status, "completed");
}

#[tokio::test]
async fn realtime_keypad_digits_become_a_user_message() {
    let mut fake = FakeWsServer::start().await;
    let (app, _seen) = realtime_app(&fake, &[]).await;
    let (mut twilio, mut conn, _) = realtime_call(&app, &mut fake, &[]).await;
    for d in ["4", "2", "#"] {
        twilio.dtmf(d).await;
    }
    let item = recv_type(&mut conn, "conversation.item.create").await;
    assert_eq!(item["item"]["role"], "user");
    assert_eq!(item["item"]["content"][0]["text"], "[keypad] 42#");
    recv_type(&mut conn, "response.create").await;
    // A dtmf message without a single digit is ignored, the call goes on.
    twilio.dtmf("12").await;
    twilio.dtmf("7").await;
    let item = recv_type(&mut conn, "conversation.item.create").await;
    assert_eq!(item["item"]["content"][0]["text"], "[keypad] 7");
}

#[tokio::test]
async fn malformed_twilio_frames_and_bad_base64_are_skipped() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &[]).await;
    let (mut twilio, mut conn, _) = realtime_call(&app, &mut fake, &[]).await;
    twilio.send_raw(Message::text("{not json")).await;
    twilio
        .send_raw(Message::text(r#"{"event":"media","media":{"payload":42}}"#))
        .await;
    twilio
        .send_raw(Message::text(
            r#"{"event":"media","media":{"payload":"@@@not base64@@@"}}"#,
        ))
        .await;
    twilio
        .send_raw(Message::text(r#"{"event":"somethingNew","x":1}"#))
        .await;
    twilio.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    twilio.mark("not-ours").await;
    let good = [0x5Au8; 160];
    twilio.media(&good).await;
    // Only the good frame reaches Realtime.
    let append = recv_type(&mut conn, "input_audio_buffer.append").await;
    assert_eq!(unb64(append["audio"].as_str().unwrap()), good);
    twilio.stop().await;
    conn.until_closed().await;
    assert_eq!(seen.wait_ended().await.status, "completed");
}

#[tokio::test]
async fn realtime_closing_mid_call_hangs_up_cleanly() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &[]).await;
    let (mut twilio, mut conn, _) = realtime_call(&app, &mut fake, &[]).await;
    conn.send_json(audio_delta("A", &[0x10; 800])).await;
    twilio.audio(800).await;
    conn.close_with(1011, "server error").await;
    drop(conn);
    // No TTS is configured, so no apology: the socket closes at once.
    let rest = twilio.until_closed().await;
    assert!(rest.iter().all(|m| !matches!(m, Outbound::Clear { .. })));
    let summary = seen.wait_ended().await;
    assert_eq!(summary.status, "failed");
    assert_eq!(app.state.metrics.active_calls(), 0);
    // Refused upstream: the call still ends, never hangs.
    let refusing = FakeWsServer::rejecting(401).await;
    let (app, seen) = realtime_app(&refusing, &[]).await;
    let mut twilio = TwilioMedia::connect(&app).await;
    twilio.start("CA200", &[]).await;
    twilio.until_closed().await;
    assert_eq!(seen.wait_ended().await.status, "failed");
}

#[tokio::test]
async fn upstream_failure_speaks_an_apology_through_elevenlabs_when_configured() {
    let mut fake = FakeWsServer::start().await;
    let mut tts = FakeWsServer::start().await;
    let base = tts.base();
    let (app, seen) = realtime_app(
        &fake,
        &[
            ("ELEVENLABS_API_KEY", "xi-test"),
            ("ELEVENLABS_API_BASE", base.as_str()),
            ("ELEVENLABS_VOICE_ID", "voice1"),
            ("FALLBACK_MESSAGE", "Desculpe, tivemos um problema."),
        ],
    )
    .await;
    let (mut twilio, mut conn, _) = realtime_call(&app, &mut fake, &[]).await;
    conn.close_with(1011, "boom").await;
    drop(conn);
    // The apology is synthesised...
    let mut tts_conn = tts.next_conn().await;
    let mut texts = String::new();
    let context = loop {
        let v = tts_conn.recv_json().await;
        if let Some(t) = v["text"].as_str() {
            texts.push_str(t);
        }
        if v["close_context"] == true {
            break v["context_id"].clone();
        }
    };
    assert!(texts.contains("Desculpe, tivemos um problema."), "{texts}");
    tts_conn
        .send_json(json!({"audio": b64(&[0x66; 800]), "contextId": context}))
        .await;
    tts_conn
        .send_json(json!({"isFinal": true, "contextId": context}))
        .await;
    // ...played, then the call ends.
    let rest = twilio.until_closed().await;
    let audio: Vec<u8> = rest
        .iter()
        .filter_map(|m| match m {
            Outbound::Media { media, .. } => Some(unb64(media.payload.as_str())),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(&audio[..800], &[0x66; 800]);
    assert_eq!(seen.wait_ended().await.status, "failed");
}

#[tokio::test]
async fn a_flooding_stream_records_no_more_than_its_real_time_share() {
    let dir = std::env::temp_dir().join(format!("voxrelay-flood-{}", std::process::id()));
    let dir_s = dir.display().to_string();
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(
        &fake,
        &[("RECORD_CALLS", "true"), ("RECORDINGS_DIR", dir_s.as_str())],
    )
    .await;
    let (mut twilio, _conn, _) = realtime_call(&app, &mut fake, &[]).await;
    let started = std::time::Instant::now();
    // 60 s of caller audio, sent as fast as the socket takes it.
    for _ in 0..3000 {
        twilio.media(&[0xA0; 160]).await;
    }
    twilio.stop().await;
    seen.wait_ended().await;
    let elapsed = started.elapsed();
    let (_, path) = seen.recordings.lock().unwrap()[0].clone();
    let wav = voxrelay::audio::wav::read_file(&path, 64 << 20).unwrap();
    let recorded = wav.channel(0).unwrap().len() as f64 / 8000.0;
    let share = elapsed.as_secs_f64() + 2.0;
    assert!(
        recorded <= share,
        "{recorded:.1} s recorded in {:.1} s",
        elapsed.as_secs_f64()
    );
    assert!(recorded < 30.0, "{recorded:.1} s of 60 s sent");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn recording_is_a_stereo_wav_with_caller_left_and_agent_right() {
    let dir = std::env::temp_dir().join(format!("voxrelay-rec-{}", std::process::id()));
    let dir_s = dir.display().to_string();
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(
        &fake,
        &[("RECORD_CALLS", "true"), ("RECORDINGS_DIR", dir_s.as_str())],
    )
    .await;
    let (mut twilio, mut conn, _) = realtime_call(&app, &mut fake, &[]).await;
    // Agent audio first (queued against the caller's clock), then 10 caller frames.
    conn.send_json(audio_delta("A", &[0x20; 320])).await;
    conn.send_json(json!({"type": "response.output_audio.done", "item_id": "A"}))
        .await;
    twilio.audio(320).await;
    for _ in 0..10 {
        twilio.media(&[0xA0; 160]).await;
    }
    // Let the frames arrive before the stop.
    for _ in 0..10 {
        recv_type(&mut conn, "input_audio_buffer.append").await;
    }
    twilio.stop().await;
    seen.wait_ended().await;
    let (sid, path) = seen.recordings.lock().unwrap()[0].clone();
    assert_eq!(sid, "CA100");
    let name = std::path::Path::new(&path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        name.starts_with("CA100-") && name.ends_with(".wav"),
        "{path}"
    );
    let wav = voxrelay::audio::wav::read_file(&path, 10 << 20).unwrap();
    assert_eq!(wav.spec.channels, 2);
    assert_eq!(wav.spec.sample_rate, 8000);
    let left = wav.channel(0).unwrap();
    let right = wav.channel(1).unwrap();
    assert_eq!(left.len(), 1600);
    let caller = voxrelay::audio::mulaw::decode_sample(0xA0);
    let agent = voxrelay::audio::mulaw::decode_sample(0x20);
    assert!(left.iter().all(|&s| s == caller));
    assert!(right[..320].iter().all(|&s| s == agent));
    assert!(right[320..].iter().all(|&s| s == 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn media_calls_land_in_the_store_with_transcript_and_recording() {
    let dir = std::env::temp_dir().join(format!("voxrelay-rec-store-{}", std::process::id()));
    let dir_s = dir.display().to_string();
    let mut fake = FakeWsServer::start().await;
    let url = format!("{}/v1/realtime", fake.base());
    let token = "media-test-token-0123456789";
    let app = crate::support::spawn_app(&[
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_REALTIME_URL", url.as_str()),
        ("API_TOKEN", token),
        ("RECORD_CALLS", "true"),
        ("RECORDINGS_DIR", dir_s.as_str()),
    ])
    .await;
    let (mut twilio, mut conn, _) =
        realtime_call(&app, &mut fake, &[("from", "+5511988887777")]).await;
    twilio.media(&[0xA0; 160]).await;
    recv_type(&mut conn, "input_audio_buffer.append").await;
    conn.send_json(json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "content_index": 0, "transcript": "Bom dia"}))
        .await;
    conn.send_json(audio_delta("A", &[0x20; 160])).await;
    conn.send_json(json!({"type": "response.output_audio_transcript.done", "item_id": "A", "transcript": "Bom dia! Como posso ajudar?"}))
        .await;
    twilio.audio(160).await;
    twilio.stop().await;
    conn.until_closed().await;
    let client = reqwest::Client::new();
    let call = tokio::time::timeout(WAIT, async {
        loop {
            let call: Value = client
                .get(app.url("/api/calls/CA100"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if call["ended_at"].is_string() && !call["recording"].is_null() {
                return call;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the call is stored");
    assert_eq!(call["mode"], "stream");
    assert_eq!(call["from"], "+5511988887777");
    assert_eq!(call["status"], "completed");
    let path = call["recording"]["path"].as_str().expect("recording path");
    assert!(path.contains("CA100-") && path.ends_with(".wav"), "{call}");
    assert_eq!(
        voxrelay::audio::wav::read_file(path, 1 << 20)
            .unwrap()
            .spec
            .channels,
        2
    );
    let transcript: Value = client
        .get(app.url("/api/calls/CA100/transcript"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: Vec<(&str, &str)> = transcript["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["role"].as_str().unwrap(), t["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        texts,
        [
            ("caller", "Bom dia"),
            ("agent", "Bom dia! Como posso ajudar?")
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn twiml_stream_connects_with_parameters_and_a_follow_up() {
    let (app, _) = app_with(&[("PUBLIC_URL", "https://voz.example.com")]).await;
    let client = reqwest::Client::new();
    let post = client
        .post(app.url("/twiml/stream"))
        .form(&[
            ("CallSid", "CA9"),
            ("From", "+5511988887777"),
            ("To", "+5511333334444"),
            ("Direction", "inbound"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        post.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    let xml = post.text().await.unwrap();
    let url = crate::support::twiml_url(&xml, "Stream");
    crate::support::token_after(Some(&url), "wss://voz.example.com/media-stream");
    assert!(xml.contains(&format!(r#"<Connect><Stream url="{url}"><Parameter name="from" value="+5511988887777"/><Parameter name="to" value="+5511333334444"/><Parameter name="direction" value="inbound"/></Stream></Connect><Redirect method="POST">https://voz.example.com/twiml/stream/next</Redirect>"#)), "{xml}");
    assert!(
        !xml.contains("media-stream?"),
        "no query strings on <Stream>: {xml}"
    );
    let get = client
        .get(app.url("/twiml/stream?pipeline=cascade"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        get.contains(r#"<Parameter name="pipeline" value="cascade"/>"#),
        "{get}"
    );
}

#[tokio::test]
async fn the_media_stream_handshake_and_webhooks_are_signed() {
    use crate::support::signed::{PUBLIC, TOKEN, sign, signed_socket_path, ws_connect};
    let (app, _) = app_with(&[("TWILIO_AUTH_TOKEN", TOKEN), ("PUBLIC_URL", PUBLIC)]).await;
    assert_eq!(
        ws_connect(&app, "/media-stream", None, &[]).await.err(),
        Some(403)
    );
    let (path, url) = signed_socket_path(&app, "/twiml/stream", "Stream", "CA1").await;
    let other = sign("another-token", &url, &[]);
    assert_eq!(
        ws_connect(&app, &path, Some(&other), &[]).await.err(),
        Some(403)
    );
    let static_url = sign(TOKEN, "wss://voz.example.com/media-stream", &[]);
    assert_eq!(
        ws_connect(&app, "/media-stream", Some(&static_url), &[])
            .await
            .err(),
        Some(403),
        "a signed URL without a per-call token is refused"
    );
    let good = sign(TOKEN, &url, &[]);
    let relay = ws_connect(&app, &path, Some(&good), &[]).await.unwrap();
    assert_eq!(
        ws_connect(&app, &path, Some(&good), &[]).await.err(),
        Some(403),
        "a token opens one socket"
    );
    // The stream names another call: the session ends before anything happens
    // (no REST hang-up or transfer could ever touch that call).
    let mut twilio = TwilioMedia {
        peer: MediaPeer::from_socket(relay.peer.into_socket(), "MZ1"),
    };
    twilio.start("CAvictim", &[]).await;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(message)) = twilio.peer.socket_mut().next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the session did not end");
    assert!(
        app.state
            .store
            .get_call("CAvictim")
            .await
            .unwrap()
            .is_none()
    );
    let client = reqwest::Client::new();
    for path in ["/twiml/stream", "/twiml/stream/next"] {
        let res = client
            .post(app.url(path))
            .form(&[("CallSid", "CA1")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path} without a signature");
        let signature = sign(TOKEN, &format!("{PUBLIC}{path}"), &[("CallSid", "CA1")]);
        let res = client
            .post(app.url(path))
            .header("x-twilio-signature", signature)
            .form(&[("CallSid", "CA1")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path} signed");
    }
}

#[tokio::test]
async fn a_media_call_without_a_pipeline_ends_at_once() {
    let (app, seen) = app_with(&[]).await;
    let mut twilio = TwilioMedia::connect(&app).await;
    twilio.start("CA300", &[]).await;
    assert!(twilio.until_closed().await.is_empty());
    assert_eq!(seen.wait_ended().await.status, "failed");
}

// ---------------------------------------------------------------------------------
// ElevenLabs agent

#[tokio::test]
async fn elevenlabs_agent_bridge() {
    let mut fake = FakeWsServer::start().await;
    let base = fake.base();
    let (app, seen) = app_with(&[
        ("MEDIA_PIPELINE", "elevenlabs-agent"),
        ("ELEVENLABS_AGENT_ID", "agent_1"),
        ("ELEVENLABS_API_BASE", base.as_str()),
        ("AGENT_TOOLS", "end_call,schedule_appointment"),
    ])
    .await;
    let mut twilio = TwilioMedia::connect(&app).await;
    twilio
        .start("CA400", &[("lead", "Ana"), ("from", "+5511988887777")])
        .await;
    let mut conn = fake.next_conn().await;
    assert_eq!(conn.uri, "/v1/convai/conversation?agent_id=agent_1");
    let init = conn.recv_json().await;
    assert_eq!(init["type"], "conversation_initiation_client_data");
    assert_eq!(init["dynamic_variables"]["lead"], "Ana");
    assert_eq!(init["dynamic_variables"]["call_sid"], "CA400");
    assert_eq!(init["dynamic_variables"]["caller_number"], "+5511988887777");
    conn.send_json(json!({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
        "conversation_id": "conv1", "agent_output_audio_format": "ulaw_8000", "user_input_audio_format": "ulaw_8000"}}))
        .await;

    // Caller audio goes through unchanged.
    let caller = [0x3Cu8; 160];
    twilio.media(&caller).await;
    let chunk = conn.recv_json().await;
    assert_eq!(unb64(chunk["user_audio_chunk"].as_str().unwrap()), caller);

    // Pings are answered.
    conn.send_json(json!({"type": "ping", "ping_event": {"event_id": 7, "ping_ms": 10}}))
        .await;
    let pong = conn.recv_json().await;
    assert_eq!(pong, json!({"type": "pong", "event_id": 7}));

    // The agent speaks; Twilio gets the bytes unchanged.
    conn.send_json(json!({"type": "agent_response", "agent_response_event": {"agent_response": "Olá Ana, tudo bem?"}}))
        .await;
    conn.send_json(json!({"type": "audio", "audio_event": {"audio_base_64": b64(&[0x77; 1600]), "event_id": 1}}))
        .await;
    let (audio, _) = twilio.audio(1600).await;
    assert_eq!(audio, vec![0x77; 1600]);
    conn.send_json(json!({"type": "audio", "audio_event": {"audio_base_64": b64(&[0x78; 8000]), "event_id": 2}}))
        .await;
    twilio.audio(320).await;
    // Interruption → clear.
    conn.send_json(json!({"type": "interruption", "interruption_event": {"event_id": 2}}))
        .await;
    loop {
        if let Outbound::Clear { .. } = twilio.recv().await {
            break;
        }
    }
    conn.send_json(json!({"type": "user_transcript", "user_transcription_event": {"user_transcript": "Quero marcar"}}))
        .await;
    let turns = seen.wait_turns(2).await;
    assert_eq!(
        (turns[0].speaker, turns[0].text.as_str()),
        (Speaker::Agent, "Olá Ana, tudo bem?")
    );
    assert_eq!(
        (turns[1].speaker, turns[1].text.as_str()),
        (Speaker::Caller, "Quero marcar")
    );
    assert_eq!(seen.interrupted.lock().unwrap().len(), 1);

    // DTMF as a contextual update.
    twilio.dtmf("9").await;
    twilio.dtmf("#").await;
    let update = loop {
        let v = conn.recv_json().await;
        if v["type"] == "contextual_update" {
            break v;
        }
    };
    assert!(update["text"].as_str().unwrap().ends_with("9#"));

    // Client tools: a known one runs through the registry, an unknown one fails.
    conn.send_json(json!({"type": "client_tool_call", "client_tool_call": {"tool_name": "nope", "tool_call_id": "t1", "parameters": {}}}))
        .await;
    let result = conn.recv_json().await;
    assert_eq!(
        (
            result["type"].as_str(),
            result["tool_call_id"].as_str(),
            result["is_error"].as_bool()
        ),
        (Some("client_tool_result"), Some("t1"), Some(true))
    );
    conn.send_json(json!({"type": "client_tool_call", "client_tool_call": {"tool_name": "end_call", "tool_call_id": "t2", "parameters": {"reason": "done"}}}))
        .await;
    let result = conn.recv_json().await;
    assert_eq!(
        (
            result["tool_call_id"].as_str(),
            result["is_error"].as_bool()
        ),
        (Some("t2"), Some(false))
    );
    // end_call: once the agent is quiet the call ends and the upstream closes.
    twilio.until_closed().await;
    let (_, ending) = conn.until_closed().await;
    assert_eq!(ending, Ending::CloseFrame(1000));
    let summary = seen.wait_ended().await;
    assert_eq!(summary.status, "completed");
    assert!(summary.handoff_data.unwrap().contains("end-call"));
    assert_eq!(seen.tools.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------
// The agent's endings through Twilio's REST API

/// A real-looking call SID (the REST path only takes those).
const REST_CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";

/// Settings for Twilio REST credentials (account SID and auth token) at `twilio`;
/// signature checks off, as the fake Twilio peers do not sign.
pub(crate) fn twilio_vars(twilio: &FakeTwilio) -> Vec<(&'static str, String)> {
    vec![
        ("TWILIO_ACCOUNT_SID", fake_twilio::ACCOUNT_SID.to_string()),
        ("TWILIO_AUTH_TOKEN", fake_twilio::AUTH_TOKEN.to_string()),
        ("TWILIO_VALIDATE_SIGNATURES", "false".to_string()),
        ("TWILIO_API_BASE", twilio.base_url()),
    ]
}

/// The model says goodbye (`bytes` of audio) and calls `tool` in the same response.
async fn realtime_speaks_then_calls(
    conn: &mut FakeConn,
    tool: &str,
    arguments: Value,
    bytes: usize,
) {
    conn.send_json(json!({"type": "response.created", "response": {"id": "r1"}}))
        .await;
    conn.send_json(audio_delta("bye", &vec![0x55; bytes])).await;
    conn.send_json(json!({"type": "response.output_audio.done", "item_id": "bye"}))
        .await;
    conn.send_json(
        json!({"type": "response.function_call_arguments.done", "call_id": "call_1",
        "name": tool, "arguments": arguments.to_string()}),
    )
    .await;
    conn.send_json(json!({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": []}}))
        .await;
}

/// Counts the media frames of what Twilio received.
fn media_frames(received: &[Outbound]) -> usize {
    received
        .iter()
        .filter(|m| matches!(m, Outbound::Media { .. }))
        .count()
}

/// What `/twiml/stream/next` answers for `call_sid`.
async fn stream_next(app: &TestApp, call_sid: &str) -> String {
    reqwest::Client::new()
        .post(app.url("/twiml/stream/next"))
        .form(&[("CallSid", call_sid), ("CallStatus", "in-progress")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn realtime_end_call_hangs_up_through_the_rest_api_after_the_goodbye() {
    let twilio_api = FakeTwilio::start().await;
    twilio_api.add_call(REST_CALL_SID);
    let vars = twilio_vars(&twilio_api);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &vars).await;
    let (mut twilio, mut conn, _) = realtime_call_as(&app, &mut fake, REST_CALL_SID, &[]).await;

    realtime_speaks_then_calls(&mut conn, "end_call", json!({"reason": "tchau"}), 800).await;
    let (goodbye, _) = twilio.audio(800).await;
    assert_eq!(goodbye, vec![0x55; 800]);
    // The goodbye is out but not yet heard: Twilio is not asked yet.
    assert!(twilio_api.requests().is_empty());
    let rest = twilio.until_closed().await;
    assert_eq!(media_frames(&rest), 0, "nothing after the goodbye");

    let requests = twilio_api.requests();
    assert_eq!(requests.len(), 1, "exactly one request: {requests:?}");
    let update = &requests[0];
    assert_eq!(update.method, "POST");
    assert_eq!(
        update.path,
        format!(
            "/2010-04-01/Accounts/{}/Calls/{REST_CALL_SID}.json",
            fake_twilio::ACCOUNT_SID
        )
    );
    assert_eq!(
        update.auth,
        Some((
            fake_twilio::ACCOUNT_SID.to_string(),
            fake_twilio::AUTH_TOKEN.to_string()
        ))
    );
    assert_eq!(
        update.form,
        vec![("Status".to_string(), "completed".to_string())]
    );
    let summary = seen.wait_ended().await;
    assert_eq!(summary.status, "completed");
    assert_eq!(conn.until_closed().await.1, Ending::CloseFrame(1000));
    // Were the stream's <Redirect> still to run, it would hang up too.
    assert!(stream_next(&app, REST_CALL_SID).await.contains("<Hangup/>"));
}

#[tokio::test]
async fn realtime_transfer_redirects_the_call_to_the_dial_through_the_rest_api() {
    // An API key this time (no auth token: no signature checks either).
    let twilio_api =
        FakeTwilio::start_with("SK0123456789abcdef0123456789abcdef", "key-secret", &[]).await;
    twilio_api.add_call(REST_CALL_SID);
    let base = twilio_api.base_url();
    let mut fake = FakeWsServer::start().await;
    let (app, _seen) = realtime_app(
        &fake,
        &[
            ("TWILIO_ACCOUNT_SID", fake_twilio::ACCOUNT_SID),
            ("TWILIO_API_KEY_SID", "SK0123456789abcdef0123456789abcdef"),
            ("TWILIO_API_KEY_SECRET", "key-secret"),
            ("TWILIO_API_BASE", base.as_str()),
        ],
    )
    .await;
    let (mut twilio, mut conn, _) = realtime_call_as(&app, &mut fake, REST_CALL_SID, &[]).await;

    realtime_speaks_then_calls(
        &mut conn,
        "transfer_to_human",
        json!({"reason": "quer falar com alguém", "summary": "segunda via & boleto"}),
        480,
    )
    .await;
    let received = twilio.until_closed().await;
    assert_eq!(media_frames(&received), 3, "the handoff words play first");

    let requests = twilio_api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].auth,
        Some((
            "SK0123456789abcdef0123456789abcdef".to_string(),
            "key-secret".to_string()
        ))
    );
    assert!(
        requests[0]
            .path
            .ends_with(&format!("/Calls/{REST_CALL_SID}.json"))
    );
    assert_eq!(requests[0].field("Status"), None);
    let twiml = requests[0].field("Twiml").expect("the handoff TwiML");
    assert_eq!(
        twiml,
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number>+5511999990000</Number></Dial><Hangup/></Response>"#
    );
    // The same document /twiml/stream/next answers (the fallback).
    assert_eq!(stream_next(&app, REST_CALL_SID).await, twiml);
}

#[tokio::test]
async fn realtime_rest_failure_still_closes_the_stream_and_the_redirect_transfers() {
    let twilio_api = FakeTwilio::start().await;
    twilio_api.add_call(REST_CALL_SID);
    twilio_api.fail_with(500);
    let vars = twilio_vars(&twilio_api);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &vars).await;
    let (mut twilio, mut conn, _) = realtime_call_as(&app, &mut fake, REST_CALL_SID, &[]).await;

    realtime_speaks_then_calls(
        &mut conn,
        "transfer_to_human",
        json!({"reason": "pediu"}),
        320,
    )
    .await;
    let received = twilio.until_closed().await;
    assert_eq!(media_frames(&received), 2);
    assert_eq!(twilio_api.requests().len(), 1, "one attempt");
    assert!(twilio_api.requests()[0].field("Twiml").is_some());
    assert_eq!(seen.wait_ended().await.status, "handoff");
    // Twilio goes on with the TwiML after </Connect>: the transfer still happens.
    let twiml = stream_next(&app, REST_CALL_SID).await;
    assert!(
        twiml.contains("<Dial><Number>+5511999990000</Number></Dial>"),
        "{twiml}"
    );
}

#[tokio::test]
async fn without_twilio_credentials_the_ending_goes_through_the_redirect() {
    // Credentials for a fake that records requests, minus the auth: the account SID
    // alone is not enough to call the REST API.
    let twilio_api = FakeTwilio::start().await;
    let base = twilio_api.base_url();
    let mut fake = FakeWsServer::start().await;
    let (app, _seen) = realtime_app(
        &fake,
        &[
            ("TWILIO_ACCOUNT_SID", fake_twilio::ACCOUNT_SID),
            ("TWILIO_API_BASE", base.as_str()),
        ],
    )
    .await;
    let (mut twilio, mut conn, _) = realtime_call_as(&app, &mut fake, REST_CALL_SID, &[]).await;
    realtime_speaks_then_calls(&mut conn, "end_call", json!({}), 160).await;
    assert_eq!(media_frames(&twilio.until_closed().await), 1);
    assert!(twilio_api.requests().is_empty());
    assert!(stream_next(&app, REST_CALL_SID).await.contains("<Hangup/>"));
}

#[tokio::test]
async fn elevenlabs_agent_end_call_hangs_up_through_the_rest_api() {
    let twilio_api = FakeTwilio::start().await;
    twilio_api.add_call(REST_CALL_SID);
    let mut vars = twilio_vars(&twilio_api);
    let mut fake = FakeWsServer::start().await;
    vars.extend([
        ("MEDIA_PIPELINE", "elevenlabs-agent".to_string()),
        ("ELEVENLABS_AGENT_ID", "agent_1".to_string()),
        ("ELEVENLABS_API_BASE", fake.base()),
        ("AGENT_TOOLS", "end_call".to_string()),
    ]);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (app, seen) = app_with(&vars).await;
    let mut twilio = TwilioMedia::connect(&app).await;
    twilio.start(REST_CALL_SID, &[]).await;
    let mut conn = fake.next_conn().await;
    assert_eq!(
        conn.recv_json().await["type"],
        "conversation_initiation_client_data"
    );
    conn.send_json(json!({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
        "conversation_id": "conv1", "agent_output_audio_format": "ulaw_8000", "user_input_audio_format": "ulaw_8000"}}))
        .await;
    conn.send_json(json!({"type": "audio", "audio_event": {"audio_base_64": b64(&[0x66; 480]), "event_id": 1}}))
        .await;
    conn.send_json(json!({"type": "client_tool_call", "client_tool_call": {"tool_name": "end_call", "tool_call_id": "t1", "parameters": {}}}))
        .await;
    let received = twilio.until_closed().await;
    assert_eq!(media_frames(&received), 3, "the goodbye plays first");
    let requests = twilio_api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0]
            .path
            .ends_with(&format!("/Calls/{REST_CALL_SID}.json"))
    );
    assert_eq!(
        requests[0].form,
        vec![("Status".to_string(), "completed".to_string())]
    );
    assert_eq!(seen.wait_ended().await.status, "completed");
    assert_eq!(conn.until_closed().await.1, Ending::CloseFrame(1000));
}
