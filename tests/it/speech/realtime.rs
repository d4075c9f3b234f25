//! The OpenAI Realtime client against a fake Realtime server on loopback: handshake
//! and auth, the GA session config, audio passed through unchanged, typed events,
//! tool calls, truncation, and how the socket ends.

use std::future::Future;
use std::time::Duration;

use serde_json::json;
use voxrelay::config::Secret;
use voxrelay::speech::realtime::{
    AssistantAudio, ConversationSettings, FunctionCall, FunctionTool, RealtimeAuth, RealtimeClient,
    RealtimeOptions, ServerEvent, ToolChoice, TranscriptionSettings, TurnDetection,
};
use voxrelay::speech::{Service, SpeechError};

use crate::support::fake_speech::{Ending, FakeConn, FakeWsServer};
use crate::support::{b64, init_logs};

fn options(server: &FakeWsServer) -> RealtimeOptions {
    RealtimeOptions {
        url: format!("{}/v1/realtime", server.base()),
        model: "gpt-realtime".into(),
        auth: RealtimeAuth::Bearer(Secret::new("sk-test-realtime")),
        connect_timeout: Duration::from_secs(2),
    }
}

fn settings() -> ConversationSettings {
    ConversationSettings {
        instructions: "Você atende a clínica. Fale português do Brasil.".into(),
        voice: "marin".into(),
        language: Some("pt".into()),
        transcription_model: Some("gpt-4o-transcribe".into()),
        tools: vec![FunctionTool {
            name: "book_appointment".into(),
            description: "Marca uma consulta".into(),
            parameters: json!({"type": "object", "properties": {"day": {"type": "string"}}}).into(),
        }],
        tool_choice: ToolChoice::Auto,
        turn_detection: TurnDetection::server_vad(),
        noise_reduction: None,
    }
}

/// A conversation client connected to a fresh fake, past its `session.update`.
async fn connected() -> (FakeWsServer, RealtimeClient, FakeConn) {
    let mut server = FakeWsServer::start().await;
    let client = RealtimeClient::connect_conversation(&options(&server), &settings())
        .await
        .unwrap();
    let mut conn = server.next_conn().await;
    conn.recv_json().await; // session.update
    (server, client, conn)
}

/// Awaits with a deadline, so a hang fails the test instead of blocking it.
async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("no hang")
}

#[tokio::test]
async fn conversation_handshake_and_session_use_the_ga_protocol() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let client = RealtimeClient::connect_conversation(&options(&server), &settings())
        .await
        .unwrap();
    let mut conn = server.next_conn().await;
    assert_eq!(conn.uri, "/v1/realtime?model=gpt-realtime");
    assert_eq!(
        conn.header("authorization"),
        Some("Bearer sk-test-realtime")
    );
    assert_eq!(conn.header("openai-beta"), None, "the beta protocol is off");
    assert_eq!(conn.header("api-key"), None);

    let update = conn.recv_json().await;
    assert_eq!(
        update,
        json!({"type": "session.update", "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "output_modalities": ["audio"],
            "instructions": "Você atende a clínica. Fale português do Brasil.",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "pt"},
                    "turn_detection": {"type": "server_vad"}
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}
            },
            "tools": [{"type": "function", "name": "book_appointment",
                       "description": "Marca uma consulta",
                       "parameters": {"type": "object", "properties": {"day": {"type": "string"}}}}],
            "tool_choice": "auto"
        }})
    );

    // The greeting: a response with its own instructions.
    client
        .create_response(Some("Cumprimente o cliente.".into()))
        .await
        .unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "response.create", "response": {"instructions": "Cumprimente o cliente."}})
    );
}

#[tokio::test]
async fn azure_uses_the_api_key_header() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let mut azure = options(&server);
    azure.url = format!("{}/openai/v1/realtime", server.base());
    azure.model = "my-realtime-deployment".into();
    azure.auth = RealtimeAuth::ApiKey(Secret::new("azure-key"));
    let _client = RealtimeClient::connect_conversation(&azure, &settings())
        .await
        .unwrap();
    let mut conn = server.next_conn().await;
    assert_eq!(conn.uri, "/openai/v1/realtime?model=my-realtime-deployment");
    assert_eq!(conn.header("api-key"), Some("azure-key"));
    assert_eq!(conn.header("authorization"), None);
    assert_eq!(conn.recv_json().await["type"], "session.update");
}

#[tokio::test]
async fn audio_passes_through_and_events_are_typed() {
    init_logs();
    let (_server, mut client, mut conn) = connected().await;

    // Twilio's base64 µ-law reaches the model byte for byte.
    let payloads = ["/////w==", "fn5+fn5+fn5+fn5+", "AAECAwQFBgcICQ=="];
    for payload in payloads {
        client.append_audio(b64(payload)).unwrap();
    }
    for payload in payloads {
        assert_eq!(
            conn.recv_json().await,
            json!({"type": "input_audio_buffer.append", "audio": payload})
        );
    }

    conn.send_json(json!({"type": "session.created", "event_id": "e1",
        "session": {"type": "realtime", "id": "sess_1"}}))
        .await;
    conn.send_json(json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": "msg_003"}))
        .await;
    conn.send_json(json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1800, "item_id": "msg_003"}))
        .await;
    conn.send_json(
        json!({"type": "conversation.item.input_audio_transcription.completed",
        "item_id": "msg_003", "content_index": 0, "transcript": "Quero marcar uma consulta"}),
    )
    .await;
    conn.send_json(json!({"type": "rate_limits.updated", "rate_limits": []}))
        .await;
    conn.send_text("this is not json").await;
    conn.send_json(
        json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
    )
    .await;
    conn.send_json(
        json!({"type": "response.output_audio.delta", "response_id": "resp_1",
        "item_id": "msg_008", "output_index": 0, "content_index": 0, "delta": "fn5+fn5+"}),
    )
    .await;
    conn.send_json(json!({"type": "response.output_audio_transcript.delta", "item_id": "msg_008", "delta": "Claro"}))
        .await;
    conn.send_json(json!({"type": "response.output_audio.done", "item_id": "msg_008"}))
        .await;
    conn.send_json(json!({"type": "response.output_audio_transcript.done", "item_id": "msg_008", "transcript": "Claro!"}))
        .await;
    conn.send_json(
        json!({"type": "error", "error": {"type": "invalid_request_error",
        "code": "invalid_value", "message": "bad", "event_id": "c1"}}),
    )
    .await;

    let expected = [
        ServerEvent::SessionCreated {
            session: json!({"type": "realtime", "id": "sess_1"}),
        },
        ServerEvent::SpeechStarted {
            item_id: "msg_003".into(),
            audio_start_ms: Some(1000),
        },
        ServerEvent::SpeechStopped {
            item_id: "msg_003".into(),
            audio_end_ms: Some(1800),
        },
        ServerEvent::InputTranscriptCompleted {
            item_id: "msg_003".into(),
            transcript: "Quero marcar uma consulta".into(),
        },
        ServerEvent::Unknown {
            kind: "rate_limits.updated".into(),
        },
        // (the malformed message is skipped)
        ServerEvent::ResponseCreated {
            response_id: "resp_1".into(),
        },
        ServerEvent::AudioDelta {
            response_id: "resp_1".into(),
            item_id: "msg_008".into(),
            delta: "fn5+fn5+".into(),
        },
        ServerEvent::TranscriptDelta {
            item_id: "msg_008".into(),
            delta: "Claro".into(),
        },
        ServerEvent::AudioDone {
            item_id: "msg_008".into(),
        },
        ServerEvent::TranscriptDone {
            item_id: "msg_008".into(),
            transcript: "Claro!".into(),
        },
        ServerEvent::Error {
            kind: "invalid_request_error".into(),
            code: Some("invalid_value".into()),
            message: "bad".into(),
            event_id: Some("c1".into()),
        },
    ];
    for want in expected {
        assert_eq!(within(client.next_event()).await.unwrap(), want);
    }
}

/// The upstream socket reads 1 KiB at a time (so its buffer stays small between
/// bursts); deltas of every size around and far above that, sent back to back,
/// must still arrive whole and in order.
#[tokio::test]
async fn deltas_larger_than_the_read_size_arrive_whole_and_in_order() {
    init_logs();
    let (_server, mut client, mut conn) = connected().await;

    let sizes = [
        1, 700, 1023, 1024, 1025, 2136, 4096, 9000, 48_000, 3, 64_000, 500,
    ];
    let deltas: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            // Base64 characters, different in every delta so a mix-up shows.
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            (0..n * 4)
                .map(|k| alphabet[(k * 7 + i * 13) % 64] as char)
                .collect()
        })
        .collect();
    for (i, delta) in deltas.iter().enumerate() {
        conn.send_json(
            json!({"type": "response.output_audio.delta", "response_id": "r",
            "item_id": format!("m{i}"), "delta": delta}),
        )
        .await;
    }
    for (i, delta) in deltas.into_iter().enumerate() {
        assert_eq!(
            within(client.next_event()).await.unwrap(),
            ServerEvent::AudioDelta {
                response_id: "r".into(),
                item_id: format!("m{i}"),
                delta,
            },
            "delta {i} of {} bytes",
            sizes[i] * 4
        );
    }
}

#[tokio::test]
async fn tool_calls_are_reported_once_and_answered() {
    init_logs();
    let (_server, mut client, mut conn) = connected().await;

    conn.send_json(
        json!({"type": "response.function_call_arguments.done", "response_id": "resp_2",
        "item_id": "fc_1", "output_index": 0, "call_id": "call_1", "name": "book_appointment",
        "arguments": "{\"day\":\"segunda\"}"}),
    )
    .await;
    // response.done repeats call_1 and carries call_2, which had no .done event.
    conn.send_json(json!({"type": "response.done", "response": {"id": "resp_2", "status": "completed",
        "output": [
            {"type": "function_call", "call_id": "call_1", "name": "book_appointment", "arguments": "{\"day\":\"segunda\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "hang_up", "arguments": "{}"}
        ]}}))
        .await;

    assert_eq!(
        within(client.next_event()).await.unwrap(),
        ServerEvent::FunctionCallDone(FunctionCall {
            call_id: "call_1".into(),
            name: "book_appointment".into(),
            arguments: "{\"day\":\"segunda\"}".into(),
        })
    );
    assert_eq!(
        within(client.next_event()).await.unwrap(),
        ServerEvent::ResponseDone {
            response_id: "resp_2".into(),
            status: "completed".into(),
            reason: None,
            function_calls: vec![FunctionCall {
                call_id: "call_2".into(),
                name: "hang_up".into(),
                arguments: "{}".into(),
            }],
        },
        "call_1 was already reported; only the fallback call is left"
    );

    client
        .send_tool_result("call_1", "{\"ok\":true}")
        .await
        .unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "conversation.item.create",
               "item": {"type": "function_call_output", "call_id": "call_1", "output": "{\"ok\":true}"}})
    );
    assert_eq!(conn.recv_json().await, json!({"type": "response.create"}));

    client.send_user_text("DTMF: 1#").await.unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
               "content": [{"type": "input_text", "text": "DTMF: 1#"}]}})
    );
}

#[tokio::test]
async fn barge_in_truncates_to_the_audio_generated() {
    init_logs();
    let (_server, mut client, mut conn) = connected().await;

    // Two 20 ms frames (160 µ-law bytes each) of item msg_9.
    let frame = format!("{}AA==", "f".repeat(212));
    for _ in 0..2 {
        conn.send_json(
            json!({"type": "response.output_audio.delta", "response_id": "r",
            "item_id": "msg_9", "delta": frame}),
        )
        .await;
    }
    conn.send_json(json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 5000, "item_id": "u1"}))
        .await;

    let mut audio = AssistantAudio::default();
    let truncate = loop {
        match within(client.next_event()).await.unwrap() {
            ServerEvent::AudioDelta { item_id, delta, .. } => {
                audio.on_delta(&item_id, &delta);
            }
            // By the wall clock the caller "heard" 3 s; only 40 ms were generated.
            ServerEvent::SpeechStarted { .. } => break audio.truncate(3_000).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    client.send(&truncate).await.unwrap();
    client.cancel_response().await.unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "conversation.item.truncate", "item_id": "msg_9", "content_index": 0, "audio_end_ms": 40})
    );
    assert_eq!(conn.recv_json().await, json!({"type": "response.cancel"}));

    client.truncate("msg_9", 20).await.unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "conversation.item.truncate", "item_id": "msg_9", "content_index": 0, "audio_end_ms": 20})
    );
}

#[tokio::test]
async fn transcription_mode_emits_transcripts_and_speech_started() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let settings = TranscriptionSettings {
        model: "gpt-4o-transcribe".into(),
        language: Some("pt".into()),
        prompt: None,
        turn_detection: TurnDetection::server_vad(),
        noise_reduction: Some("near_field".into()),
    };
    let mut client = RealtimeClient::connect_transcription(&options(&server), &settings)
        .await
        .unwrap();
    let mut conn = server.next_conn().await;
    assert_eq!(conn.uri, "/v1/realtime?intent=transcription");
    assert_eq!(
        conn.header("authorization"),
        Some("Bearer sk-test-realtime")
    );
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcmu"},
            "transcription": {"model": "gpt-4o-transcribe", "language": "pt"},
            "turn_detection": {"type": "server_vad"},
            "noise_reduction": {"type": "near_field"}}}}})
    );
    client.append_audio(b64("fn5+fn5+")).unwrap();
    assert_eq!(
        conn.recv_json().await,
        json!({"type": "input_audio_buffer.append", "audio": "fn5+fn5+"})
    );

    // Either name of the session events is accepted.
    conn.send_json(json!({"type": "transcription_session.created", "session": {"id": "s"}}))
        .await;
    conn.send_json(json!({"type": "session.updated", "session": {"type": "transcription"}}))
        .await;
    conn.send_json(
        json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "i1"}),
    )
    .await;
    conn.send_json(json!({"type": "conversation.item.input_audio_transcription.delta", "item_id": "i1", "delta": "Bom "}))
        .await;
    conn.send_json(json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "i1", "transcript": "Bom dia"}))
        .await;
    let expected = [
        ServerEvent::SessionCreated {
            session: json!({"id": "s"}),
        },
        ServerEvent::SessionUpdated {
            session: json!({"type": "transcription"}),
        },
        ServerEvent::SpeechStarted {
            item_id: "i1".into(),
            audio_start_ms: Some(10),
        },
        ServerEvent::InputTranscriptDelta {
            item_id: "i1".into(),
            delta: "Bom ".into(),
        },
        ServerEvent::InputTranscriptCompleted {
            item_id: "i1".into(),
            transcript: "Bom dia".into(),
        },
    ];
    for want in expected {
        assert_eq!(within(client.next_event()).await.unwrap(), want);
    }
}

#[tokio::test]
async fn an_upstream_close_mid_stream_is_a_clear_error_not_a_hang() {
    init_logs();
    let (mut server, mut client, mut conn) = connected().await;
    conn.send_json(json!({"type": "response.output_audio.delta", "item_id": "m", "delta": "AAAA"}))
        .await;
    conn.close_with(4000, "beta_api_shape_disabled").await;

    assert!(matches!(
        within(client.next_event()).await.unwrap(),
        ServerEvent::AudioDelta { .. }
    ));
    let err = within(client.next_event()).await.unwrap_err();
    assert_eq!(
        err,
        SpeechError::Closed {
            service: Service::OpenAiRealtime,
            code: Some(4000),
            reason: "beta_api_shape_disabled".into(),
        }
    );
    assert!(err.to_string().contains("4000"), "{err}");
    // And again on every later read, at once.
    assert_eq!(within(client.next_event()).await.unwrap_err(), err);

    // A connection that just vanishes (no close frame) ends the same way.
    let mut client = RealtimeClient::connect_conversation(&options(&server), &settings())
        .await
        .unwrap();
    let conn = server.next_conn().await;
    drop(conn);
    assert!(matches!(
        within(client.next_event()).await.unwrap_err(),
        SpeechError::Closed { code: None, .. }
    ));
    // Sending on a dead socket is an error too, not a hang.
    let mut failed = false;
    for _ in 0..50 {
        if client.append_audio(b64("AAAA")).is_err() {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failed, "appending to a dead socket fails");
}

#[tokio::test]
async fn dropping_or_closing_the_client_closes_the_upstream_socket() {
    init_logs();
    let mut server = FakeWsServer::start().await;
    let client = RealtimeClient::connect_conversation(&options(&server), &settings())
        .await
        .unwrap();
    let mut conn = server.next_conn().await;
    drop(client);
    let (texts, ending) = conn.until_closed().await;
    // A dropped client abandons its queue: at most the session.update went out.
    assert!(texts.len() <= 1, "{texts:?}");
    assert_eq!(ending, Ending::CloseFrame(1000));

    let client = RealtimeClient::connect_conversation(&options(&server), &settings())
        .await
        .unwrap();
    let mut conn = server.next_conn().await;
    client.append_audio(b64("AAAA")).unwrap();
    client.close().await;
    let (texts, ending) = conn.until_closed().await;
    assert_eq!(
        texts.len(),
        2,
        "queued events go out before the close: {texts:?}"
    );
    assert_eq!(texts[1]["audio"], "AAAA");
    assert_eq!(ending, Ending::CloseFrame(1000));
}

#[tokio::test]
async fn refused_and_silent_servers_fail_fast() {
    init_logs();
    let server = FakeWsServer::rejecting(401).await;
    let err = RealtimeClient::connect_conversation(&options(&server), &settings())
        .await
        .err()
        .unwrap();
    match &err {
        SpeechError::Rejected { status, body, .. } => {
            assert_eq!(*status, 401);
            assert!(body.contains("invalid key"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !err.to_string().contains("sk-test-realtime"),
        "no key in errors"
    );

    // A server that accepts TCP and never answers the handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut slow = RealtimeOptions {
        url: format!("ws://{addr}/v1/realtime"),
        ..options(&FakeWsServer::start().await)
    };
    slow.connect_timeout = Duration::from_millis(300);
    let err = within(RealtimeClient::connect_conversation(&slow, &settings()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SpeechError::ConnectTimeout { .. }), "{err:?}");
    holder.abort();

    // Nothing listening at all.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let nowhere = RealtimeOptions {
        url: format!("ws://127.0.0.1:{closed_port}/v1/realtime"),
        ..slow
    };
    let err = within(RealtimeClient::connect_conversation(&nowhere, &settings()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SpeechError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn audio_sent_while_the_upstream_stalls_arrives_in_order_or_is_dropped_whole() {
    // Audio goes out from the caller's task while the socket takes it, through the
    // writer's queue once it does not: nothing may overtake what was queued, and
    // what the full queue refuses is dropped whole (QueueFull), never cut.
    init_logs();
    let (_server, client, mut conn) = connected().await;
    let payload = |i: usize| format!("{i:08}{}", "A".repeat(16 * 1024));
    let mut accepted = Vec::new();
    let mut refused = 0;
    // The fake reads nothing yet: the socket's buffers, then the queue, fill up.
    for i in 0..2000 {
        match client.append_audio(b64(&payload(i))) {
            Ok(()) => accepted.push(i),
            Err(SpeechError::QueueFull { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(refused > 0, "the upstream never pushed back");
    // Then it reads: everything accepted arrives, in the order it was sent.
    for &i in &accepted {
        let message = conn.recv_json().await;
        assert_eq!(
            message["audio"].as_str().map(|a| &a[..8]),
            Some(&*format!("{i:08}"))
        );
    }
    // Drained, the next frames go out at once again, still in order.
    for i in 2000..2010 {
        client.append_audio(b64(&payload(i))).unwrap();
    }
    for i in 2000..2010 {
        let message = within(conn.recv_json()).await;
        assert_eq!(
            message["audio"].as_str().map(|a| &a[..8]),
            Some(&*format!("{i:08}"))
        );
    }
}
