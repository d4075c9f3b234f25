//! Unit tests of the OpenAI Realtime client: options, truncation, audio bookkeeping and the wire events.

use super::*;
use serde_json::json;

fn settings() -> ConversationSettings {
    ConversationSettings {
        instructions: "Você é um assistente… Fale português do Brasil.".into(),
        voice: "marin".into(),
        language: Some("pt".into()),
        transcription_model: Some("gpt-4o-transcribe".into()),
        tools: vec![FunctionTool {
            name: "lookup_order".into(),
            description: "Busca um pedido pelo número".into(),
            parameters: json!({"type": "object",
                "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]})
            .into(),
        }],
        tool_choice: ToolChoice::Auto,
        turn_detection: TurnDetection::server_vad(),
        noise_reduction: Some("near_field".into()),
    }
}

#[test]
fn conversation_session_update_has_the_ga_shape() {
    let event = ClientEvent::SessionUpdate {
        session: Box::new(Session::conversation("gpt-realtime", &settings())),
    };
    let value = serde_json::to_value(&event).unwrap();
    // The reference's GA example, minus the fields we leave at their defaults.
    assert_eq!(
        value,
        json!({
          "type": "session.update",
          "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "output_modalities": ["audio"],
            "instructions": "Você é um assistente… Fale português do Brasil.",
            "audio": {
              "input": {
                "format": { "type": "audio/pcmu" },
                "turn_detection": { "type": "server_vad" },
                "transcription": { "model": "gpt-4o-transcribe", "language": "pt" },
                "noise_reduction": { "type": "near_field" }
              },
              "output": { "format": { "type": "audio/pcmu" }, "voice": "marin" }
            },
            "tools": [
              { "type": "function", "name": "lookup_order",
                "description": "Busca um pedido pelo número",
                "parameters": { "type": "object",
                  "properties": { "order_id": { "type": "string" } }, "required": ["order_id"] } }
            ],
            "tool_choice": "auto"
          }
        })
    );
}

#[test]
fn a_language_switch_updates_only_instructions_and_transcription() {
    let mut switched = settings();
    switched.instructions = "Você é um assistente…\n\nFrom now on: en-US.".into();
    switched.language = Some("en".into());
    let event = ClientEvent::SessionUpdate {
        session: Box::new(Session::language_switch(&switched)),
    };
    // No voice, model, formats, turn detection, noise reduction or tools: OpenAI
    // updates only the fields present.
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({
          "type": "session.update",
          "session": {
            "type": "realtime",
            "instructions": "Você é um assistente…\n\nFrom now on: en-US.",
            "audio": { "input": {
              "transcription": { "model": "gpt-4o-transcribe", "language": "en" }
            } }
          }
        })
    );
    // Without caller transcription, only the instructions change.
    switched.transcription_model = None;
    assert_eq!(
        serde_json::to_value(Session::language_switch(&switched)).unwrap(),
        json!({"type": "realtime", "instructions": "Você é um assistente…\n\nFrom now on: en-US."})
    );
}

#[test]
fn transcription_session_update_has_no_output() {
    let session = Session::transcription(&TranscriptionSettings {
        model: "gpt-4o-transcribe".into(),
        language: Some("pt".into()),
        prompt: None,
        turn_detection: TurnDetection::server_vad(),
        noise_reduction: None,
    });
    assert_eq!(
        serde_json::to_value(ClientEvent::SessionUpdate {
            session: Box::new(session)
        })
        .unwrap(),
        json!({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcmu"},
            "transcription": {"model": "gpt-4o-transcribe", "language": "pt"},
            "turn_detection": {"type": "server_vad"}}}}})
    );
}

#[test]
fn client_events_serialize_like_the_reference() {
    let cases = [
        (
            ClientEvent::AppendAudio {
                audio: "//7+/w==".into(),
            },
            json!({"type":"input_audio_buffer.append","audio":"//7+/w=="}),
        ),
        (
            ClientEvent::CommitAudio,
            json!({"type":"input_audio_buffer.commit"}),
        ),
        (
            ClientEvent::ClearAudio,
            json!({"type":"input_audio_buffer.clear"}),
        ),
        (
            ClientEvent::CreateItem {
                item: Item::user_text("Olá"),
            },
            json!({"type":"conversation.item.create",
                   "item":{"type":"message","role":"user","content":[{"type":"input_text","text":"Olá"}]}}),
        ),
        (
            ClientEvent::CreateItem {
                item: Item::FunctionCallOutput {
                    call_id: "call_001".into(),
                    output: "{\"status\":\"shipped\"}".into(),
                },
            },
            json!({"type":"conversation.item.create",
                   "item":{"type":"function_call_output","call_id":"call_001","output":"{\"status\":\"shipped\"}"}}),
        ),
        (
            ClientEvent::TruncateItem {
                item_id: "item_002".into(),
                content_index: 0,
                audio_end_ms: 1500,
            },
            json!({"type":"conversation.item.truncate","item_id":"item_002","content_index":0,"audio_end_ms":1500}),
        ),
        (
            ClientEvent::CreateResponse { response: None },
            json!({"type":"response.create"}),
        ),
        (
            ClientEvent::CreateResponse {
                response: Some(ResponseParams {
                    instructions: Some("Cumprimente o cliente.".into()),
                }),
            },
            json!({"type":"response.create","response":{"instructions":"Cumprimente o cliente."}}),
        ),
        (
            ClientEvent::CancelResponse { response_id: None },
            json!({"type":"response.cancel"}),
        ),
    ];
    for (event, expected) in cases {
        assert_eq!(serde_json::to_value(&event).unwrap(), expected);
    }
    assert_eq!(
        serde_json::to_value(ToolChoice::Function("f".into())).unwrap(),
        json!({"type":"function","name":"f"})
    );
    assert_eq!(
        serde_json::to_value(ToolChoice::Required).unwrap(),
        json!("required")
    );
}

#[test]
fn parses_the_reference_fixtures() {
    let created = r#"{"type":"session.created","event_id":"event_C9G5RJeJ2gF77mV7f2B1j",
       "session":{"type":"realtime","object":"realtime.session","id":"sess_C9G5QPteg4UIbotdKLoYQ",
         "model":"gpt-realtime-2025-08-28","output_modalities":["audio"],"instructions":"…",
         "tools":[],"tool_choice":"auto","max_output_tokens":"inf","tracing":null,"prompt":null,"expires_at":1756324625,
         "audio":{"input":{"format":{"type":"audio/pcm","rate":24000},"transcription":null,"noise_reduction":null,
            "turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":200,
                              "idle_timeout_ms":null,"create_response":true,"interrupt_response":true}},
           "output":{"format":{"type":"audio/pcm","rate":24000},"voice":"marin","speed":1}},"include":null}}"#;
    match ServerEvent::parse(created).unwrap() {
        ServerEvent::SessionCreated { session } => {
            assert_eq!(session["id"], "sess_C9G5QPteg4UIbotdKLoYQ")
        }
        other => panic!("{other:?}"),
    }
    let cases = [
        (
            r#"{"event_id":"event_1516","type":"input_audio_buffer.speech_started","audio_start_ms":1000,"item_id":"msg_003"}"#,
            ServerEvent::SpeechStarted {
                item_id: "msg_003".into(),
                audio_start_ms: Some(1000),
            },
        ),
        (
            r#"{"event_id":"event_4950","type":"response.output_audio.delta","response_id":"resp_001",
               "item_id":"msg_008","output_index":0,"content_index":0,"delta":"AAEC"}"#,
            ServerEvent::AudioDelta {
                response_id: "resp_001".into(),
                item_id: "msg_008".into(),
                delta: "AAEC".into(),
            },
        ),
        (
            r#"{"type":"response.output_audio.done","response_id":"resp_001","item_id":"msg_008","output_index":0,"content_index":0}"#,
            ServerEvent::AudioDone {
                item_id: "msg_008".into(),
            },
        ),
        (
            r#"{"type":"response.output_audio_transcript.delta","item_id":"msg_008","delta":"Hello, how can I a"}"#,
            ServerEvent::TranscriptDelta {
                item_id: "msg_008".into(),
                delta: "Hello, how can I a".into(),
            },
        ),
        (
            r#"{"type":"response.output_audio_transcript.done","item_id":"msg_008","transcript":"Hello, how can I assist you today?"}"#,
            ServerEvent::TranscriptDone {
                item_id: "msg_008".into(),
                transcript: "Hello, how can I assist you today?".into(),
            },
        ),
        (
            r#"{"type":"conversation.item.input_audio_transcription.completed","event_id":"event_CCXGRvtUVrax5SJAnNOWZ",
               "item_id":"item_CCXGQ4e1ht4cOraEYcuR2","content_index":0,"transcript":"Hey, can you hear me?",
               "usage":{"type":"tokens","total_tokens":22,"input_tokens":13,"input_token_details":{"text_tokens":0,"audio_tokens":13},"output_tokens":9}}"#,
            ServerEvent::InputTranscriptCompleted {
                item_id: "item_CCXGQ4e1ht4cOraEYcuR2".into(),
                transcript: "Hey, can you hear me?".into(),
            },
        ),
        (
            r#"{"event_id":"event_5556","type":"response.function_call_arguments.done","response_id":"resp_002",
               "item_id":"fc_001","output_index":0,"call_id":"call_001","name":"get_weather",
               "arguments":"{\"location\": \"San Francisco\"}"}"#,
            ServerEvent::FunctionCallDone(FunctionCall {
                call_id: "call_001".into(),
                name: "get_weather".into(),
                arguments: "{\"location\": \"San Francisco\"}".into(),
            }),
        ),
        (
            r#"{"event_id":"event_890","type":"error","error":{"type":"invalid_request_error","code":"invalid_event",
               "message":"The 'type' field is missing.","param":null,"event_id":"event_567"}}"#,
            ServerEvent::Error {
                kind: "invalid_request_error".into(),
                code: Some("invalid_event".into()),
                message: "The 'type' field is missing.".into(),
                event_id: Some("event_567".into()),
            },
        ),
        (
            r#"{"event_id":"event_5758","type":"rate_limits.updated","rate_limits":[]}"#,
            ServerEvent::Unknown {
                kind: "rate_limits.updated".into(),
            },
        ),
        (
            r#"{"no_type":true}"#,
            ServerEvent::Unknown {
                kind: String::new(),
            },
        ),
        (
            r#"{"type":"response.created","response":{"object":"realtime.response","id":"resp_9","status":"in_progress","output":[]}}"#,
            ServerEvent::ResponseCreated {
                response_id: "resp_9".into(),
            },
        ),
        (
            r#"{"type":"conversation.item.input_audio_transcription.delta","item_id":"i1","content_index":0,"delta":"Olá"}"#,
            ServerEvent::InputTranscriptDelta {
                item_id: "i1".into(),
                delta: "Olá".into(),
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(ServerEvent::parse(text).unwrap(), expected, "{text}");
    }
    assert!(ServerEvent::parse("not json").is_err());
}

#[test]
fn response_done_yields_its_function_calls() {
    let text = r#"{"type":"response.done","response":{"id":"resp_2","status":"completed",
        "status_details":null,"output":[
          {"type":"message","role":"assistant","content":[]},
          {"type":"function_call","call_id":"call_7","name":"transfer","arguments":"{}"}],
        "usage":{"total_tokens":10}}}"#;
    assert_eq!(
        ServerEvent::parse(text).unwrap(),
        ServerEvent::ResponseDone {
            response_id: "resp_2".into(),
            status: "completed".into(),
            reason: None,
            function_calls: vec![FunctionCall {
                call_id: "call_7".into(),
                name: "transfer".into(),
                arguments: "{}".into()
            }],
        }
    );
    let cancelled = r#"{"type":"response.done","response":{"id":"r","status":"cancelled","status_details":{"type":"cancelled","reason":"turn_detected"},"output":[]}}"#;
    match ServerEvent::parse(cancelled).unwrap() {
        ServerEvent::ResponseDone { status, reason, .. } => {
            assert_eq!(status, "cancelled");
            assert_eq!(reason.as_deref(), Some("turn_detected"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncation_is_clamped_to_generated_audio() {
    // Played longer than generated (the known sample bug): clamp.
    assert_eq!(truncate_audio_end_ms(55_960, 13_600 * 8), 13_600);
    // Played less than generated: what was heard.
    assert_eq!(truncate_audio_end_ms(1_500, 16_000 * 8), 1_500);
    assert_eq!(truncate_audio_end_ms(0, 0), 0);

    let mut audio = AssistantAudio::default();
    assert!(audio.truncate(100).is_none(), "nothing playing");
    // One Twilio-sized frame: 160 bytes of µ-law = 20 ms (216 base64 chars).
    let frame = format!("{}AA==", "A".repeat(212));
    assert_eq!(base64_decoded_len(&frame), 160);
    assert!(audio.on_delta("item_1", &frame));
    assert!(!audio.on_delta("item_1", &frame));
    assert_eq!(audio.generated_ms(), 40);
    // The caller heard 10 s by the wall clock, but only 40 ms exist.
    assert_eq!(
        audio.truncate(10_000),
        Some(ClientEvent::TruncateItem {
            item_id: "item_1".into(),
            content_index: 0,
            audio_end_ms: 40,
        })
    );
    assert!(audio.truncate(10).is_none(), "forgotten after truncation");
    // A new item starts counting from zero.
    assert!(audio.on_delta("item_2", "AAAA"));
    assert_eq!(audio.item_id(), Some("item_2"));
    assert_eq!(audio.generated_ms(), 0);
    match audio.truncate(1) {
        Some(ClientEvent::TruncateItem { audio_end_ms, .. }) => assert_eq!(audio_end_ms, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn azure_hosts_are_detected() {
    assert!(is_azure("wss://my-res.openai.azure.com/openai/v1/realtime"));
    assert!(is_azure(
        "wss://my-res.cognitiveservices.azure.com:443/openai/v1/realtime"
    ));
    assert!(!is_azure("wss://api.openai.com/v1/realtime"));
    assert!(!is_azure("ws://127.0.0.1:9/v1/realtime"));
}

#[test]
fn options_come_from_config() {
    let config = |pairs: &[(&str, &str)]| Config::from_pairs(pairs).unwrap();
    assert!(matches!(
        RealtimeOptions::from_config(&config(&[])),
        Err(SpeechError::NotConfigured {
            missing: "OPENAI_API_KEY",
            ..
        })
    ));
    let o = RealtimeOptions::from_config(&config(&[("OPENAI_API_KEY", "sk-1")])).unwrap();
    assert!(matches!(&o.auth, RealtimeAuth::Bearer(k) if k.expose() == "sk-1"));
    assert_eq!(o.model, "gpt-realtime");
    let o = RealtimeOptions::from_config(&config(&[
        ("OPENAI_API_KEY", "sk-1"),
        ("AZURE_OPENAI_API_KEY", "az-1"),
        (
            "OPENAI_REALTIME_URL",
            "wss://r.openai.azure.com/openai/v1/realtime",
        ),
        ("OPENAI_REALTIME_MODEL", "my-deployment"),
    ]))
    .unwrap();
    assert!(matches!(&o.auth, RealtimeAuth::ApiKey(k) if k.expose() == "az-1"));
    assert_eq!(o.model, "my-deployment");
    let s = ConversationSettings::from_config(&config(&[]), "x".into(), vec![]);
    assert_eq!(s.voice, "marin");
    assert_eq!(s.language.as_deref(), Some("pt"));
}

#[test]
fn the_written_append_is_the_serialized_one() {
    for audio in ["//7+/w==", "", "QUJD+/09"] {
        let serde = ClientEvent::AppendAudio {
            audio: audio.into(),
        }
        .to_json();
        let audio = Base64Str::new(audio).unwrap();
        assert_eq!(ClientEvent::append_audio_json(audio), serde);
    }
}

#[test]
fn deltas_read_directly_match_the_json_tree_reading() {
    // The fast path (typed fields) and the lenient one (a JSON tree) must agree on
    // every shape a delta can take: escapes, fields in any order, fields missing or
    // of another type, unknown fields around them.
    let messages = [
        r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"AAEC"}"#,
        r#"{"delta":"AA\/EC","item_id":"i","extra":{"a":[1,2]},"type":"response.output_audio.delta"}"#,
        r#"{"type":"response.output_audio.delta","item_id":"i"}"#,
        r#"{"type":"response.output_audio.delta","item_id":7,"delta":"AAEC"}"#,
        r#"{"type":"response.output_audio.delta","item_id":"i","delta":null}"#,
        r#"{"type":"response.output_audio_transcript.delta","item_id":"i","delta":"ol\u00e1 \"x\""}"#,
        r#"{"type":"conversation.item.input_audio_transcription.delta","item_id":"i","delta":"oi"}"#,
        r#"{"type":"response.output_audio_transcript.done","item_id":"i","transcript":"t","delta":"x"}"#,
        r#"{"type":"rate_limits.updated","delta":"x"}"#,
    ];
    for text in messages {
        let tree = ServerEvent::from_value(&serde_json::from_str(text).unwrap());
        assert_eq!(ServerEvent::parse(text).unwrap(), tree, "{text}");
    }
    assert!(ServerEvent::parse(r#"{"type":"response.output_audio.delta","delta":"#).is_err());
}
