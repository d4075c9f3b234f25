//! The ElevenLabs clients (streaming TTS, Conversational AI agent, Scribe realtime
//! STT) against fake ElevenLabs servers on loopback: what we send (auth, URLs, text
//! chunks, flush and close sequences, audio unchanged, pongs, tool results), what we
//! make of what comes back, barge-in, keep-alives and how sockets end.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use voxrelay::config::Secret;
use voxrelay::speech::elevenlabs_agent::{
    AgentEvent, AgentOptions, ConversationInit, ElevenLabsAgent, formats_fit_twilio,
};
use voxrelay::speech::elevenlabs_stt::{ElevenLabsStt, SttEvent, SttOptions};
use voxrelay::speech::elevenlabs_tts::{
    ElevenLabsTts, TtsEvent, TtsOptions, TurnId, VoiceSettings,
};
use voxrelay::speech::{Service, SpeechError};
use warp::Filter;

use crate::support::fake_speech::{Ending, FakeWsServer};
use crate::support::{b64, init_logs};

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("no hang")
}

// ---------------------------------------------------------------------------------
// TTS

fn tts_options(server: &FakeWsServer) -> TtsOptions {
    TtsOptions {
        api_base: server.base(),
        api_key: Secret::new("xi-test-key"),
        voice_id: "voz123".into(),
        model_id: "eleven_flash_v2_5".into(),
        language_code: Some("pt".into()),
        voice_settings: VoiceSettings::default(),
        chunk_length_schedule: vec![50, 90, 120, 150],
        inactivity_timeout_secs: 180,
        keepalive_every: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(2),
    }
}

fn context_init(context: &str) -> Value {
    json!({"text": " ", "context_id": context,
           "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0},
           "generation_config": {"chunk_length_schedule": [50, 90, 120, 150]}})
}

#[tokio::test]
async fn tts_streams_words_flushes_and_closes_each_turn() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let mut tts = ElevenLabsTts::connect(&tts_options(&server)).await.unwrap();
    let mut conn = server.next_conn().await;
    assert_eq!(
        conn.uri,
        "/v1/text-to-speech/voz123/multi-stream-input?model_id=eleven_flash_v2_5&output_format=ulaw_8000&inactivity_timeout=180&sync_alignment=true&language_code=pt"
    );
    assert_eq!(conn.header("xi-api-key"), Some("xi-test-key"));
    assert_eq!(conn.recv_json().await, context_init("ctx-1"));

    let turn = tts.begin_turn().await.unwrap();
    assert_eq!(tts.current_turn(), Some(turn));
    for token in ["Olá, tu", "do bem? Como", " posso"] {
        tts.push_text(token).await.unwrap();
    }
    assert_eq!(tts.end_turn().await.unwrap(), Some(turn));
    assert_eq!(tts.current_turn(), None);
    let sent = [
        json!({"text": "Olá, ", "context_id": "ctx-1"}),
        json!({"text": "tudo bem? ", "context_id": "ctx-1"}),
        json!({"text": "Como ", "context_id": "ctx-1"}),
        json!({"text": "posso ", "context_id": "ctx-1", "flush": true}),
        json!({"context_id": "ctx-1", "close_context": true}),
        // The next reply's context is ready at once.
        context_init("ctx-2"),
    ];
    for want in sent {
        assert_eq!(conn.recv_json().await, want);
    }

    // Both spellings of the context id and of the final flag.
    conn.send_json(
        json!({"audio": "fn5+fn5+", "isFinal": false, "contextId": "ctx-1",
                          "normalizedAlignment": null, "alignment": null}),
    )
    .await;
    conn.send_json(json!({"audio": "AAECAw==", "context_id": "ctx-1"}))
        .await;
    conn.send_json(json!({"is_final": true, "context_id": "ctx-1", "audio": null}))
        .await;
    assert_eq!(
        within(tts.next_event()).await.unwrap(),
        TtsEvent::Audio {
            turn,
            audio: "fn5+fn5+".into(),
            alignment: None
        }
    );
    assert_eq!(
        within(tts.next_event()).await.unwrap(),
        TtsEvent::Audio {
            turn,
            audio: "AAECAw==".into(),
            alignment: None
        }
    );
    assert_eq!(
        within(tts.next_event()).await.unwrap(),
        TtsEvent::TurnDone { turn }
    );

    // The second turn uses the prepared context; a reply that ends without a trailing
    // word flushes with empty text.
    let second = tts.begin_turn().await.unwrap();
    assert_ne!(second, turn);
    tts.push_text("Até logo. ").await.unwrap();
    tts.end_turn().await.unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"text": "Até logo. ", "context_id": "ctx-2"})
    );
    assert_eq!(
        conn.recv_json().await,
        json!({"text": "", "context_id": "ctx-2", "flush": true})
    );
    assert_eq!(
        conn.recv_json().await,
        json!({"context_id": "ctx-2", "close_context": true})
    );
    assert_eq!(conn.recv_json().await, context_init("ctx-3"));
}

#[tokio::test]
async fn tts_barge_in_closes_the_context_and_drops_late_audio() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let mut tts = ElevenLabsTts::connect(&tts_options(&server)).await.unwrap();
    let mut conn = server.next_conn().await;
    conn.recv_json().await; // ctx-1 init

    let first = tts.begin_turn().await.unwrap();
    tts.push_text("Uma resposta bem longa ").await.unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"text": "Uma resposta bem longa ", "context_id": "ctx-1"})
    );
    conn.send_json(json!({"audio": "AAAA", "contextId": "ctx-1"}))
        .await;
    assert_eq!(
        within(tts.next_event()).await.unwrap(),
        TtsEvent::Audio {
            turn: first,
            audio: "AAAA".into(),
            alignment: None
        }
    );

    // The caller speaks.
    assert_eq!(tts.cancel().await.unwrap(), vec![first]);
    assert_eq!(tts.current_turn(), None);
    assert_eq!(
        conn.recv_json().await,
        json!({"context_id": "ctx-1", "close_context": true})
    );
    assert_eq!(conn.recv_json().await, context_init("ctx-2"));
    // Text for the cancelled turn is not sent any more.
    tts.push_text("resto da frase ").await.unwrap();

    // Audio the server had already generated for ctx-1 arrives late.
    conn.send_json(json!({"audio": "BBBB", "contextId": "ctx-1"}))
        .await;
    conn.send_json(json!({"isFinal": true, "contextId": "ctx-1"}))
        .await;

    let second = tts.begin_turn().await.unwrap();
    tts.push_text("Pois não? ").await.unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"text": "Pois não? ", "context_id": "ctx-2"})
    );
    conn.send_json(json!({"audio": "CCCC", "contextId": "ctx-2"}))
        .await;
    assert_eq!(
        within(tts.next_event()).await.unwrap(),
        TtsEvent::Audio {
            turn: second,
            audio: "CCCC".into(),
            alignment: None
        },
        "nothing of the cancelled turn reaches the caller"
    );

    // A reply already flushed is still stopped by a barge-in.
    tts.end_turn().await.unwrap();
    for _ in 0..3 {
        conn.recv_json().await; // flush, close_context, ctx-3 init
    }
    conn.send_json(json!({"audio": "DDDD", "contextId": "ctx-2"}))
        .await;
    assert_eq!(
        within(tts.next_event()).await.unwrap(),
        TtsEvent::Audio {
            turn: second,
            audio: "DDDD".into(),
            alignment: None
        }
    );
    assert_eq!(tts.cancel().await.unwrap(), vec![second]);
    conn.send_json(json!({"audio": "EEEE", "contextId": "ctx-2"}))
        .await;
    conn.send_json(json!({"audio": "FFFF", "contextId": "ctx-99"}))
        .await;
    let third = tts.begin_turn().await.unwrap();
    assert_eq!(third, TurnId(3));
    conn.send_json(json!({"audio": "GGGG", "contextId": "ctx-3"}))
        .await;
    assert_eq!(
        within(tts.next_event()).await.unwrap(),
        TtsEvent::Audio {
            turn: third,
            audio: "GGGG".into(),
            alignment: None
        }
    );
}

#[tokio::test]
async fn tts_keeps_an_idle_socket_alive() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let options = TtsOptions {
        keepalive_every: Duration::from_millis(100),
        ..tts_options(&server)
    };
    let mut tts = ElevenLabsTts::connect(&options).await.unwrap();
    let mut conn = server.next_conn().await;
    conn.recv_json().await;
    // The caller's loop polls for events; nothing comes, so keep-alives go out.
    let _ = tokio::time::timeout(Duration::from_millis(350), tts.next_event()).await;
    assert_eq!(
        conn.recv_json().await,
        json!({"text": "", "context_id": "ctx-1"})
    );
    assert_eq!(
        conn.recv_json().await,
        json!({"text": "", "context_id": "ctx-1"})
    );
}

#[tokio::test]
async fn tts_server_errors_and_closes_surface() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let mut tts = ElevenLabsTts::connect(&tts_options(&server)).await.unwrap();
    let mut conn = server.next_conn().await;
    conn.recv_json().await;
    conn.send_json(
        json!({"message": "Maximum simultaneous contexts per WebSocket connection exceeded (5).",
                          "error": "max_active_conversations", "code": 1008}),
    )
    .await;
    conn.close_with(1008, "max_active_conversations").await;
    assert_eq!(
        within(tts.next_event()).await.unwrap(),
        TtsEvent::Error {
            message: "Maximum simultaneous contexts per WebSocket connection exceeded (5).".into()
        }
    );
    assert_eq!(
        within(tts.next_event()).await.unwrap_err(),
        SpeechError::Closed {
            service: Service::ElevenLabsTts,
            code: Some(1008),
            reason: "max_active_conversations".into(),
        }
    );
}

#[tokio::test]
async fn tts_close_and_drop_close_the_socket() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let tts = ElevenLabsTts::connect(&tts_options(&server)).await.unwrap();
    let mut conn = server.next_conn().await;
    tts.close().await;
    let (texts, ending) = conn.until_closed().await;
    assert_eq!(
        texts,
        vec![context_init("ctx-1"), json!({"close_socket": true})]
    );
    assert_eq!(ending, Ending::CloseFrame(1000));

    let tts = ElevenLabsTts::connect(&tts_options(&server)).await.unwrap();
    let mut conn = server.next_conn().await;
    drop(tts);
    assert_eq!(conn.until_closed().await.1, Ending::CloseFrame(1000));
}

// ---------------------------------------------------------------------------------
// Conversational AI agent

fn init() -> ConversationInit {
    ConversationInit {
        dynamic_variables: BTreeMap::from([
            ("caller_number".to_string(), "+5511988887777".to_string()),
            ("call_sid".to_string(), "CA0001".to_string()),
        ]),
        conversation_config_override: None,
    }
}

fn agent_options(base: String, key: Option<&str>) -> AgentOptions {
    AgentOptions {
        api_base: base,
        api_key: key.map(Secret::new),
        agent_id: "agent_42".into(),
        connect_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn agent_conversation_round_trip() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let mut agent = ElevenLabsAgent::connect(&agent_options(server.base(), None), &init())
        .await
        .unwrap();
    let mut conn = server.next_conn().await;
    assert_eq!(conn.uri, "/v1/convai/conversation?agent_id=agent_42");
    assert_eq!(
        conn.header("xi-api-key"),
        None,
        "a public agent needs no key"
    );
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "conversation_initiation_client_data",
               "dynamic_variables": {"call_sid": "CA0001", "caller_number": "+5511988887777"}})
    );

    let script = [
        json!({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event":
               {"conversation_id": "conv_1", "agent_output_audio_format": "ulaw_8000", "user_input_audio_format": "ulaw_8000"}}),
        json!({"type": "ping", "ping_event": {"event_id": 7, "ping_ms": 50}}),
        json!({"type": "audio", "audio_event": {"audio_base_64": "fn5+", "event_id": 1}}),
        json!({"type": "client_tool_call", "client_tool_call":
               {"tool_name": "book", "tool_call_id": "tc_1", "parameters": {"day": "segunda"}}}),
        json!({"type": "agent_response", "agent_response_event": {"agent_response": "Claro, para quando?"}}),
        json!({"type": "user_transcript", "user_transcription_event": {"user_transcript": "Segunda"}}),
        json!({"type": "agent_response_correction", "agent_response_correction_event":
               {"original_agent_response": "Claro, para quando?", "corrected_agent_response": "Claro"}}),
        json!({"type": "vad_score", "vad_score_event": {"vad_score": 0.9}}),
        json!({"type": "interruption", "interruption_event": {"event_id": 2}}),
        json!({"type": "audio", "audio_event": {"audio_base_64": "late", "event_id": 2}}),
        json!({"type": "audio", "audio_event": {"audio_base_64": "AAAA", "event_id": 3}}),
    ];
    for message in script {
        conn.send_json(message).await;
    }
    conn.send_text("{broken").await;

    let metadata = within(agent.next_event()).await.unwrap();
    assert!(formats_fit_twilio(&metadata), "{metadata:?}");
    let expected = [
        AgentEvent::Audio {
            audio: "fn5+".into(),
            event_id: Some(1),
        },
        AgentEvent::ClientToolCall {
            tool_call_id: "tc_1".into(),
            tool_name: "book".into(),
            parameters: json!({"day": "segunda"}),
        },
        AgentEvent::AgentResponse {
            text: "Claro, para quando?".into(),
        },
        AgentEvent::UserTranscript {
            text: "Segunda".into(),
        },
        AgentEvent::AgentResponseCorrection {
            original: "Claro, para quando?".into(),
            corrected: "Claro".into(),
        },
        AgentEvent::Unknown {
            kind: "vad_score".into(),
        },
        AgentEvent::Interruption { event_id: Some(2) },
        // event 2's audio came after the interruption: dropped.
        AgentEvent::Audio {
            audio: "AAAA".into(),
            event_id: Some(3),
        },
    ];
    for want in expected {
        assert_eq!(within(agent.next_event()).await.unwrap(), want);
    }
    // The ping was answered with its own id.
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "pong", "event_id": 7})
    );

    agent.send_audio(b64("//79/fz8")).unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"user_audio_chunk": "//79/fz8"})
    );
    agent
        .send_tool_result("tc_1", "marcado para segunda 10h", false)
        .await
        .unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "client_tool_result", "tool_call_id": "tc_1",
               "result": "marcado para segunda 10h", "is_error": false})
    );
    agent.send_contextual_update("DTMF: 1").await.unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "contextual_update", "text": "DTMF: 1"})
    );

    conn.close_with(1000, "conversation ended").await;
    assert!(matches!(
        within(agent.next_event()).await.unwrap_err(),
        SpeechError::Closed {
            code: Some(1000),
            ..
        }
    ));
}

/// A fake `get-signed-url` endpoint: checks the key and answers with `signed`.
async fn signed_url_server(signed: String) -> std::net::SocketAddr {
    let route = warp::path!("v1" / "convai" / "conversation" / "get-signed-url")
        .and(warp::get())
        .and(warp::header::optional::<String>("xi-api-key"))
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .map(
            move |key: Option<String>, query: std::collections::HashMap<String, String>| {
                if key.as_deref() != Some("xi-agent-key") {
                    return warp::reply::with_status(
                        warp::reply::json(&json!({"detail": "invalid api key"})),
                        warp::http::StatusCode::UNAUTHORIZED,
                    );
                }
                assert_eq!(query.get("agent_id").map(String::as_str), Some("agent_42"));
                warp::reply::with_status(
                    warp::reply::json(&json!({"signed_url": signed})),
                    warp::http::StatusCode::OK,
                )
            },
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    addr
}

#[tokio::test]
async fn agent_with_a_key_connects_through_a_signed_url() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let signed = format!(
        "{}/v1/convai/conversation?agent_id=agent_42&conversation_signature=sig_abc",
        server.base()
    );
    let rest = signed_url_server(signed).await;

    let _agent = ElevenLabsAgent::connect(
        &agent_options(format!("http://{rest}"), Some("xi-agent-key")),
        &init(),
    )
    .await
    .unwrap();
    let mut conn = server.next_conn().await;
    assert_eq!(
        conn.uri,
        "/v1/convai/conversation?agent_id=agent_42&conversation_signature=sig_abc"
    );
    assert_eq!(
        conn.header("xi-api-key"),
        None,
        "the key stays off the socket"
    );
    assert_eq!(
        conn.recv_json().await["type"],
        "conversation_initiation_client_data"
    );

    let err = ElevenLabsAgent::connect(
        &agent_options(format!("http://{rest}"), Some("wrong-key")),
        &init(),
    )
    .await
    .err()
    .unwrap();
    match &err {
        SpeechError::SignedUrl { message, .. } => assert!(message.contains("401"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("wrong-key"));
}

#[tokio::test]
async fn agent_reports_wrong_audio_formats_and_closes_on_drop() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let mut agent = ElevenLabsAgent::connect(&agent_options(server.base(), None), &init())
        .await
        .unwrap();
    let mut conn = server.next_conn().await;
    conn.recv_json().await;
    conn.send_json(json!({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event":
        {"conversation_id": "conv_2", "agent_output_audio_format": "pcm_16000", "user_input_audio_format": "pcm_16000"}}))
        .await;
    let metadata = within(agent.next_event()).await.unwrap();
    assert_eq!(
        metadata,
        AgentEvent::Metadata {
            conversation_id: "conv_2".into(),
            agent_output_audio_format: "pcm_16000".into(),
            user_input_audio_format: "pcm_16000".into(),
        }
    );
    assert!(!formats_fit_twilio(&metadata));
    drop(agent);
    assert_eq!(conn.until_closed().await.1, Ending::CloseFrame(1000));
}

// ---------------------------------------------------------------------------------
// Scribe realtime STT

fn stt_options(server: &FakeWsServer) -> SttOptions {
    SttOptions {
        api_base: server.base(),
        api_key: Secret::new("xi-stt-key"),
        model_id: "scribe_v2_realtime".into(),
        language_code: Some("pt".into()),
        vad_silence_threshold_secs: None,
        connect_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn stt_streams_audio_and_returns_transcripts() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let mut stt = ElevenLabsStt::connect(&stt_options(&server)).await.unwrap();
    let mut conn = server.next_conn().await;
    assert_eq!(
        conn.uri,
        "/v1/speech-to-text/realtime?model_id=scribe_v2_realtime&audio_format=ulaw_8000&commit_strategy=vad&language_code=pt&include_timestamps=false"
    );
    assert_eq!(conn.header("xi-api-key"), Some("xi-stt-key"));

    stt.send_audio(b64("fn5+fn5+")).unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"message_type": "input_audio_chunk", "audio_base_64": "fn5+fn5+",
               "commit": false, "sample_rate": 8000})
    );
    stt.commit().await.unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"message_type": "input_audio_chunk", "audio_base_64": "",
               "commit": true, "sample_rate": 8000})
    );

    conn.send_json(json!({"message_type": "session_started", "session_id": "s_1", "config": {}}))
        .await;
    conn.send_json(json!({"message_type": "partial_transcript", "text": "quero"}))
        .await;
    conn.send_json(json!({"message_type": "committed_transcript", "text": "quero marcar"}))
        .await;
    conn.send_json(json!({"message_type": "quota_exceeded", "error": "Quota exceeded"}))
        .await;
    conn.close_with(1008, "quota").await;
    let expected = [
        SttEvent::SessionStarted {
            session_id: Some("s_1".into()),
        },
        SttEvent::Partial {
            text: "quero".into(),
        },
        SttEvent::Committed {
            text: "quero marcar".into(),
        },
        SttEvent::Error {
            kind: "quota_exceeded".into(),
            message: "Quota exceeded".into(),
        },
    ];
    for want in expected {
        assert_eq!(within(stt.next_event()).await.unwrap(), want);
    }
    assert_eq!(
        within(stt.next_event()).await.unwrap_err(),
        SpeechError::Closed {
            service: Service::ElevenLabsStt,
            code: Some(1008),
            reason: "quota".into(),
        }
    );
}

#[tokio::test]
async fn stt_close_and_drop_close_the_socket() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let stt = ElevenLabsStt::connect(&stt_options(&server)).await.unwrap();
    let mut conn = server.next_conn().await;
    stt.send_audio(b64("AAAA")).unwrap();
    stt.close().await;
    let (texts, ending) = conn.until_closed().await;
    assert_eq!(texts.len(), 1);
    assert_eq!(ending, Ending::CloseFrame(1000));

    let stt = ElevenLabsStt::connect(&stt_options(&server)).await.unwrap();
    let mut conn = server.next_conn().await;
    drop(stt);
    assert_eq!(conn.until_closed().await.1, Ending::CloseFrame(1000));

    // A refused key is a clear error.
    let refusing = FakeWsServer::rejecting(403).await;
    let err = ElevenLabsStt::connect(&stt_options(&refusing))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, SpeechError::Rejected { status: 403, .. }),
        "{err:?}"
    );
}

/// The shape the Media Streams session will have: one `select!` over the TTS events
/// and the agent's tokens, sending on the same client from the branch bodies.
#[tokio::test]
async fn tts_fits_a_select_loop() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let mut tts = ElevenLabsTts::connect(&tts_options(&server)).await.unwrap();
    let mut conn = server.next_conn().await;
    conn.recv_json().await;
    let (tokens, mut token_rx) = tokio::sync::mpsc::channel::<Option<&'static str>>(8);
    let fake = tokio::spawn(async move {
        let mut texts = Vec::new();
        loop {
            let message = conn.recv_json().await;
            if message.get("flush") == Some(&json!(true)) {
                texts.push(message["text"].as_str().unwrap().to_string());
                conn.send_json(json!({"audio": "AAAA", "contextId": "ctx-1"}))
                    .await;
                conn.send_json(json!({"isFinal": true, "contextId": "ctx-1"}))
                    .await;
                return texts;
            }
            if let Some(text) = message["text"].as_str() {
                texts.push(text.to_string());
            }
        }
    });
    for token in ["Bom", " dia", "!", " Tudo", " certo?"] {
        tokens.send(Some(token)).await.unwrap();
    }
    tokens.send(None).await.unwrap();

    let mut audio = Vec::new();
    let mut started = false;
    loop {
        tokio::select! {
            event = tts.next_event() => match event.unwrap() {
                TtsEvent::Audio { audio: chunk, .. } => audio.push(chunk),
                TtsEvent::TurnDone { .. } => break,
                TtsEvent::Error { message } => panic!("{message}"),
            },
            Some(token) = token_rx.recv() => match token {
                Some(token) => {
                    if !started {
                        tts.begin_turn().await.unwrap();
                        started = true;
                    }
                    tts.push_text(token).await.unwrap();
                }
                None => {
                    tts.end_turn().await.unwrap();
                }
            },
        }
    }
    assert_eq!(audio, vec!["AAAA".to_string()]);
    let texts = within(fake).await.unwrap();
    assert_eq!(texts, vec!["Bom ", "dia! ", "Tudo ", "certo? "]);
}
