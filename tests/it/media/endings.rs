//! How Media Streams calls end when nobody ends them, and who answered: the
//! caller's silence (asked once, then goodbye; the session ends a call whose
//! pipeline does not), Twilio's answering-machine detection reaching the live
//! session, and a voicemail greeting or screening assistant heard in the caller's
//! first words. Over real sockets, with a fake OpenAI Realtime and a fake Twilio.

use std::time::Duration;

use serde_json::{Value, json};
use voxrelay::media::protocol::Outbound;

use super::session::{audio_delta, realtime_app, realtime_call_as, recv_type, twilio_vars};
use crate::support::fake_speech::{FakeConn, FakeWsServer};
use crate::support::fake_twilio::FakeTwilio;
use crate::support::{eventually, eventually_async};

/// Waits for the next `response.create` and returns its instructions.
async fn next_instructions(conn: &mut FakeConn) -> String {
    let create = recv_type(conn, "response.create").await;
    create["response"]["instructions"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The model answers a response request: created, some audio, done.
async fn respond(conn: &mut FakeConn, id: &str, audio: usize) {
    conn.send_json(json!({"type": "response.created", "response": {"id": id}}))
        .await;
    if audio > 0 {
        conn.send_json(audio_delta(id, &vec![0x55; audio])).await;
        conn.send_json(json!({"type": "response.output_audio.done", "item_id": id}))
            .await;
    }
    conn.send_json(
        json!({"type": "response.done", "response": {"id": id, "status": "completed", "output": []}}),
    )
    .await;
}

fn handoff(summary_data: &Option<String>) -> Value {
    serde_json::from_str(summary_data.as_deref().expect("handoff data")).unwrap()
}

#[tokio::test]
async fn a_silent_caller_is_asked_once_then_told_goodbye_and_the_call_ends() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(
        &fake,
        &[
            ("SILENCE_TIMEOUT_SECS", "1"),
            ("STILL_THERE_MESSAGE", "Você ainda está aí?"),
            ("GOODBYE_MESSAGE", "Tchau, até logo!"),
        ],
    )
    .await;
    let (mut twilio, mut conn, _) = realtime_call_as(&app, &mut fake, "CAsilent1", &[]).await;
    respond(&mut conn, "greet", 1600).await;
    twilio.audio(1600).await;
    let asked = tokio::time::Instant::now();
    let instructions = next_instructions(&mut conn).await;
    assert!(
        instructions.contains("Você ainda está aí?"),
        "{instructions}"
    );
    // The clock started after the greeting had played (200 ms of audio).
    assert!(
        asked.elapsed() >= Duration::from_millis(700),
        "{:?}",
        asked.elapsed()
    );
    respond(&mut conn, "ask", 800).await;
    twilio.audio(800).await;
    let instructions = next_instructions(&mut conn).await;
    assert!(instructions.contains("Tchau, até logo!"), "{instructions}");
    respond(&mut conn, "bye", 800).await;
    twilio.until_closed().await;
    let summary = seen.wait_ended().await;
    assert_eq!(handoff(&summary.handoff_data)["reasonCode"], "silence");
    assert_eq!(app.state.metrics.endings("silence"), 1);
}

#[tokio::test]
async fn the_caller_speaking_starts_the_silence_over() {
    let mut fake = FakeWsServer::start().await;
    let (app, _seen) = realtime_app(&fake, &[("SILENCE_TIMEOUT_SECS", "1")]).await;
    let (_twilio, mut conn, _) = realtime_call_as(&app, &mut fake, "CAsilent2", &[]).await;
    // Speech events every 600 ms for 2.4 s: no silence question meanwhile.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        conn.send_json(json!({"type": "input_audio_buffer.speech_started", "item_id": "u", "audio_start_ms": 0}))
            .await;
    }
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        recv_type(&mut conn, "response.create"),
    )
    .await;
    assert!(
        early.is_err(),
        "asked while the caller was talking: {early:?}"
    );
    let instructions = next_instructions(&mut conn).await;
    assert!(instructions.contains("ainda está aí"), "{instructions}");
}

#[tokio::test]
async fn a_pipeline_that_never_answers_is_ended_by_the_session() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &[("SILENCE_TIMEOUT_SECS", "1")]).await;
    let (mut twilio, mut conn, _) = realtime_call_as(&app, &mut fake, "CAsilent3", &[]).await;
    // The model never speaks: still there?, goodbye, then the session hangs up.
    next_instructions(&mut conn).await;
    next_instructions(&mut conn).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), twilio.until_closed()).await;
    assert!(ended.is_ok(), "the call did not end");
    let summary = seen.wait_ended().await;
    assert_eq!(handoff(&summary.handoff_data)["reasonCode"], "silence");
}

#[tokio::test]
async fn twilios_voicemail_detection_stops_the_reply_and_leaves_the_message() {
    let rest = FakeTwilio::start().await;
    let vars = twilio_vars(&rest);
    let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.push((
        "VOICEMAIL_MESSAGE",
        "Oi {name}, aqui é {agent_name}. Retorne, por favor.",
    ));
    vars.push(("AGENT_NAME", "Bia"));
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &vars).await;
    let sid = "CA0123456789abcdef0123456789abcd01";
    rest.add_call(sid);
    let (mut twilio, mut conn, _) =
        realtime_call_as(&app, &mut fake, sid, &[("name", "Ana")]).await;
    // The greeting is being said (2 s of audio) when the detection comes.
    conn.send_json(json!({"type": "response.created", "response": {"id": "greet"}}))
        .await;
    conn.send_json(audio_delta("greet", &vec![0x55; 16000]))
        .await;
    twilio.audio(800).await;
    let res = reqwest::Client::new()
        .post(app.url("/twilio/amd"))
        .form(&[
            ("CallSid", sid),
            ("AnsweredBy", "machine_end_beep"),
            ("MachineDetectionDuration", "4200"),
        ])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    recv_type(&mut conn, "response.cancel").await;
    let instructions = next_instructions(&mut conn).await;
    assert!(
        instructions.contains("Oi Ana, aqui é Bia. Retorne, por favor."),
        "{instructions}"
    );
    // Twilio's buffer is cleared: the rest of the greeting is never heard.
    let mut cleared = false;
    while !cleared {
        cleared = matches!(twilio.recv().await, Outbound::Clear { .. });
    }
    respond(&mut conn, "vm", 800).await;
    twilio.until_closed().await;
    let summary = seen.wait_ended().await;
    assert_eq!(handoff(&summary.handoff_data)["reasonCode"], "voicemail");
    assert_eq!(app.state.metrics.endings("voicemail"), 1);
    let store = app.state.store.clone();
    let stored = eventually_async(|| {
        let store = store.clone();
        async move {
            store
                .get_call(sid)
                .await
                .ok()
                .flatten()
                .filter(|c| c.call.answered_by.is_some())
        }
    })
    .await;
    assert_eq!(stored.call.answered_by.as_deref(), Some("machine_end_beep"));
    assert_eq!(stored.call.answered_by_signal.as_deref(), Some("amd"));
    assert!(stored.call.answered_at.is_some());
}

#[tokio::test]
async fn a_voicemail_or_screening_heard_in_the_first_words_is_handled() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(
        &fake,
        &[
            ("VOICEMAIL_MESSAGE", "Recado para {name}."),
            ("SCREENING_MESSAGE", "Aqui é a clínica, sobre {reason}."),
        ],
    )
    .await;
    // A screening assistant: the agent says who calls and why, and waits.
    let (_twilio, mut conn, _) = realtime_call_as(
        &app,
        &mut fake,
        "CAscreen1",
        &[("name", "Ana"), ("reason", "sua consulta")],
    )
    .await;
    conn.send_json(json!({"type": "conversation.item.input_audio_transcription.completed",
        "item_id": "u1", "transcript": "The person you're calling is using a screening service. Say your name and why you're calling."}))
        .await;
    recv_type(&mut conn, "response.cancel").await;
    let instructions = next_instructions(&mut conn).await;
    assert!(
        instructions.contains("Aqui é a clínica, sobre sua consulta."),
        "{instructions}"
    );
    // The person picks up: an ordinary greeting changes nothing.
    conn.send_json(
        json!({"type": "conversation.item.input_audio_transcription.completed",
        "item_id": "u2", "transcript": "Alô, quem fala?"}),
    )
    .await;
    let more = tokio::time::timeout(
        Duration::from_millis(400),
        recv_type(&mut conn, "response.cancel"),
    )
    .await;
    assert!(more.is_err(), "a person's words were taken for a machine");
    assert_eq!(
        seen.answered.lock().unwrap().clone(),
        vec![("screening".to_string(), "transcript".to_string())]
    );

    // A voicemail greeting: the message, then the end.
    let (mut twilio, mut conn, _) =
        realtime_call_as(&app, &mut fake, "CAvoicemail1", &[("name", "Ana")]).await;
    conn.send_json(
        json!({"type": "conversation.item.input_audio_transcription.completed",
        "item_id": "u1", "transcript": "Você ligou para a Ana. Deixe sua mensagem após o sinal."}),
    )
    .await;
    recv_type(&mut conn, "response.cancel").await;
    let instructions = next_instructions(&mut conn).await;
    assert!(instructions.contains("Recado para Ana."), "{instructions}");
    respond(&mut conn, "vm", 400).await;
    twilio.until_closed().await;
    let ended = eventually("the voicemail call's end", Duration::from_secs(5), || {
        seen.ended_of("CAvoicemail1")
    })
    .await;
    assert_eq!(handoff(&ended.handoff_data)["reasonCode"], "voicemail");
    assert!(
        seen.answered
            .lock()
            .unwrap()
            .contains(&("voicemail".to_string(), "transcript".to_string()))
    );
}

/// An ElevenLabs agent call, connected and initiated.
async fn elevenlabs_call(
    extra: &[(&str, &str)],
    call_sid: &str,
) -> (
    crate::support::TestApp,
    std::sync::Arc<super::session::Seen>,
    super::session::TwilioMedia,
    FakeConn,
) {
    let mut fake = FakeWsServer::start().await;
    let base = fake.base();
    let mut vars = vec![
        ("MEDIA_PIPELINE", "elevenlabs-agent"),
        ("ELEVENLABS_AGENT_ID", "agent_1"),
        ("ELEVENLABS_API_BASE", base.as_str()),
    ];
    vars.extend_from_slice(extra);
    let (app, seen) = super::session::app_with(&vars).await;
    let mut twilio = super::session::TwilioMedia::connect(&app).await;
    twilio.start(call_sid, &[]).await;
    let mut conn = fake.next_conn().await;
    let init = conn.recv_json().await;
    assert_eq!(init["type"], "conversation_initiation_client_data");
    conn.send_json(json!({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
        "conversation_id": "conv1", "agent_output_audio_format": "ulaw_8000", "user_input_audio_format": "ulaw_8000"}}))
        .await;
    (app, seen, twilio, conn)
}

#[tokio::test]
async fn an_elevenlabs_agent_call_ends_at_the_second_silence_and_on_a_voicemail() {
    let (app, seen, mut twilio, _conn) =
        elevenlabs_call(&[("SILENCE_TIMEOUT_SECS", "1")], "CAel_silent").await;
    let started = tokio::time::Instant::now();
    twilio.until_closed().await;
    // The first silence is the agent's own to handle; the second ends the call.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    let summary = seen.wait_ended().await;
    assert_eq!(handoff(&summary.handoff_data)["reasonCode"], "silence");
    drop(app);

    let (_app, seen, mut twilio, mut conn) = elevenlabs_call(&[], "CAel_vm").await;
    conn.send_json(
        json!({"type": "user_transcript", "user_transcription_event": {
        "user_transcript": "Please leave a message after the beep."}}),
    )
    .await;
    twilio.until_closed().await;
    let summary = seen.wait_ended().await;
    assert_eq!(handoff(&summary.handoff_data)["reasonCode"], "voicemail");
    assert_eq!(
        seen.answered.lock().unwrap().clone(),
        vec![("voicemail".to_string(), "transcript".to_string())]
    );
}

#[tokio::test]
async fn a_goodbye_the_model_said_without_end_call_ends_the_call_once_played() {
    let mut fake = FakeWsServer::start().await;
    let (app, seen) = realtime_app(&fake, &[]).await;
    let (mut twilio, mut conn, _) = realtime_call_as(&app, &mut fake, "CAbye1", &[]).await;
    conn.send_json(json!({"type": "response.created", "response": {"id": "r1"}}))
        .await;
    conn.send_json(audio_delta("bye", &vec![0x55; 800])).await;
    conn.send_json(json!({"type": "response.output_audio.done", "item_id": "bye"}))
        .await;
    conn.send_json(
        json!({"type": "response.output_audio_transcript.done", "item_id": "bye",
        "response_id": "r1", "output_index": 0, "content_index": 0,
        "transcript": "Combinado, Ana. Tchau!"}),
    )
    .await;
    conn.send_json(json!({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": []}}))
        .await;
    let (goodbye, _) = twilio.audio(800).await;
    assert_eq!(goodbye, vec![0x55; 800], "the goodbye played in full");
    twilio.until_closed().await;
    let summary = seen.wait_ended().await;
    assert_eq!(handoff(&summary.handoff_data)["reasonCode"], "goodbye");
    assert_eq!(app.state.metrics.endings("goodbye"), 1);
}
