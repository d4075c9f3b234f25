//! The ConversationRelay WebSocket: streaming, history, interruptions, DTMF,
//! malformed input and LLM failures, against the real server.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::fake_llm::{FakeLlm, Reply};
use crate::support::{TestApp, spawn_app};

const FALLBACK: &str = "Desculpe, tive um problema para responder agora. Pode repetir, por favor?";

/// The server wired to a fake OpenAI-compatible LLM.
async fn app_with_llm(extra: &[(&str, &str)]) -> (TestApp, FakeLlm) {
    let llm = FakeLlm::start().await;
    let base = llm.base_url();
    let mut vars = vec![
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-test-key"),
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_MODEL", "fake-model"),
        ("SYSTEM_PROMPT", "Você é um assistente de testes."),
        ("WELCOME_GREETING", "Olá! Como posso ajudar?"),
        ("LLM_TIMEOUT_MS", "400"),
    ];
    vars.extend_from_slice(extra);
    (spawn_app(&vars).await, llm)
}

fn roles_and_contents(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect()
}

#[tokio::test]
async fn scripted_default_streams_word_by_word_then_last() {
    // Words 15 ms apart, as a real model streams them (with no delay at all, words
    // that are ready together go out as one message).
    let app = spawn_app(&[("SCRIPTED_TOKEN_DELAY_MS", "15")]).await;
    let mut call = app.relay().await;
    call.setup("CA_scripted").await;
    call.prompt("Oi, bom dia!").await;
    let reply = call.reply().await;
    assert!(
        reply.tokens.len() > 3,
        "streamed in words: {:?}",
        reply.tokens
    );
    assert_eq!(
        reply.text,
        voxrelay::llm::scripted::reply_to("Oi, bom dia!")
    );
    for m in &reply.messages[..reply.messages.len() - 1] {
        assert_eq!(m["last"], false);
    }
    assert_eq!(
        reply.messages.last().unwrap(),
        &json!({"type": "text", "token": "", "last": true})
    );
}

#[tokio::test]
async fn tokens_stream_as_they_arrive_and_history_is_exact() {
    let (app, llm) = app_with_llm(&[]).await;
    // Tokens 30 ms apart each go out as they come.
    llm.push(Reply::slow_tokens(&["Bom ", "dia", ", ", "Ana", "!"], 30));
    // Tokens that arrive together may share a message; the words are the same.
    llm.push(Reply::tokens(&["Claro", ",", " Ana", "."]));
    let mut call = app.relay().await;
    call.setup("CA_history").await;
    call.prompt("Olá, sou a Ana").await;
    let reply = call.reply().await;
    assert_eq!(reply.tokens, vec!["Bom ", "dia", ", ", "Ana", "!"]);

    call.prompt("Pode me ajudar?").await;
    let reply = call.reply().await;
    assert_eq!(reply.text, "Claro, Ana.");
    assert!(!reply.tokens.is_empty() && reply.tokens.len() <= 4);

    let requests = llm.wait_requests(2).await;
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.headers["authorization"], "Bearer sk-test-key");
    assert_eq!(first.body["model"], "fake-model");
    assert_eq!(first.body["stream"], true);
    assert_eq!(
        requests[1].messages(),
        roles_and_contents(&[
            ("system", "Você é um assistente de testes."),
            ("assistant", "Olá! Como posso ajudar?"),
            ("user", "Olá, sou a Ana"),
            ("assistant", "Bom dia, Ana!"),
            ("user", "Pode me ajudar?"),
        ])
    );
}

#[tokio::test]
async fn interrupt_stops_tokens_drops_the_stream_and_truncates_history() {
    let (app, llm) = app_with_llm(&[("LLM_TIMEOUT_MS", "5000")]).await;
    let words: Vec<String> = (1..=40).map(|i| format!("palavra{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    llm.push(Reply::slow_tokens(&words, 40));
    llm.push(Reply::tokens(&["Ok", "."]));
    let mut call = app.relay().await;
    call.setup("CA_interrupt").await;
    call.prompt("Conte uma história longa").await;
    for expected in ["palavra1 ", "palavra2 ", "palavra3 "] {
        let m = call.recv().await;
        assert_eq!(m["token"], expected);
    }
    call.interrupt("palavra1 palavra2").await;
    // Tokens already in flight may arrive; nothing may follow once the interrupt is in.
    let mut after = Vec::new();
    while let Some(m) = call.recv_within(Duration::from_millis(300)).await {
        after.push(m);
    }
    assert!(
        after.len() <= 1,
        "tokens kept coming after the interrupt: {after:?}"
    );
    assert!(
        after.iter().all(|m| m["last"] == false),
        "no closing message after an interrupt: {after:?}"
    );
    llm.wait_disconnects(1).await;

    call.prompt("Pare").await;
    assert_eq!(call.reply().await.text, "Ok.");
    let requests = llm.wait_requests(2).await;
    assert_eq!(
        requests[1].messages(),
        roles_and_contents(&[
            ("system", "Você é um assistente de testes."),
            ("assistant", "Olá! Como posso ajudar?"),
            ("user", "Conte uma história longa"),
            ("assistant", "palavra1 palavra2"),
            ("user", "Pare"),
        ])
    );
}

#[tokio::test]
async fn interrupt_after_the_reply_finished_still_truncates_history() {
    let (app, llm) = app_with_llm(&[]).await;
    llm.push(Reply::tokens(&[
        "Nosso horário é ",
        "das nove às dezoito, ",
        "de segunda a sexta.",
    ]));
    llm.push(Reply::tokens(&["Certo."]));
    let mut call = app.relay().await;
    call.setup("CA_interrupt_late").await;
    call.prompt("Qual o horário?").await;
    call.reply().await;
    // Twilio is still speaking the finished reply when the caller barges in.
    call.interrupt("Nosso horário é das nove").await;
    call.expect_silence(Duration::from_millis(150)).await;
    call.prompt("E sábado?").await;
    call.reply().await;
    let requests = llm.wait_requests(2).await;
    assert_eq!(
        requests[1].messages()[3],
        (
            "assistant".to_string(),
            "Nosso horário é das nove".to_string()
        )
    );
}

#[tokio::test]
async fn a_new_prompt_cancels_the_reply_in_flight() {
    let (app, llm) = app_with_llm(&[("LLM_TIMEOUT_MS", "5000")]).await;
    let words: Vec<String> = (1..=40).map(|i| format!("w{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    llm.push(Reply::slow_tokens(&words, 40));
    llm.push(Reply::tokens(&["Segunda ", "resposta."]));
    let mut call = app.relay().await;
    call.setup("CA_prompt_during_reply").await;
    call.prompt("Primeira pergunta").await;
    assert_eq!(call.recv().await["token"], "w1 ");
    assert_eq!(call.recv().await["token"], "w2 ");
    call.prompt("Na verdade, outra coisa").await;
    // The old talk cycle is closed, then the new reply streams.
    let mut old_tail = Vec::new();
    loop {
        let m = call.recv().await;
        if m["last"] == true {
            break;
        }
        old_tail.push(m["token"].as_str().unwrap().to_string());
    }
    assert!(
        old_tail.len() <= 2,
        "old reply kept streaming: {old_tail:?}"
    );
    assert_eq!(call.reply().await.text, "Segunda resposta.");
    llm.wait_disconnects(1).await;

    let requests = llm.wait_requests(2).await;
    let messages = requests[1].messages();
    assert_eq!(messages[2], ("user".into(), "Primeira pergunta".into()));
    assert_eq!(messages[3].0, "assistant");
    assert!(messages[3].1.starts_with("w1 w2 "), "{:?}", messages[3]);
    assert_eq!(
        messages[4],
        ("user".into(), "Na verdade, outra coisa".into())
    );
    assert_eq!(messages.len(), 5);
}

#[tokio::test]
async fn dtmf_digits_are_collected_until_hash() {
    let (app, llm) = app_with_llm(&[]).await;
    llm.push(Reply::tokens(&["Recebi."]));
    let mut call = app.relay().await;
    call.setup("CA_dtmf").await;
    for d in ["1", "2", "3", "#"] {
        call.dtmf(d).await;
    }
    assert_eq!(call.reply().await.text, "Recebi.");
    let requests = llm.wait_requests(1).await;
    assert_eq!(requests.len(), 1, "one turn for all digits");
    assert_eq!(
        requests[0].messages().last().unwrap(),
        &("user".to_string(), "DTMF: 123#".to_string())
    );
}

#[tokio::test]
async fn dtmf_digits_are_flushed_after_a_pause() {
    let (app, llm) = app_with_llm(&[("DTMF_TIMEOUT_MS", "200")]).await;
    llm.push(Reply::tokens(&["Ok."]));
    let mut call = app.relay().await;
    call.setup("CA_dtmf_pause").await;
    call.dtmf("4").await;
    call.dtmf("2").await;
    // Invalid digits are ignored, not fatal.
    call.dtmf("xy").await;
    call.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(call.reply().await.text, "Ok.");
    let requests = llm.wait_requests(1).await;
    assert_eq!(
        requests[0].messages().last().unwrap().1,
        "DTMF: 42".to_string()
    );
}

#[tokio::test]
async fn malformed_input_is_ignored_and_the_call_goes_on() {
    let app = spawn_app(&[]).await;
    let mut call = app.relay().await;
    call.setup("CA_malformed").await;
    call.send_raw(Message::text("{not json")).await;
    call.send_raw(Message::text("[1, 2, 3]")).await;
    call.send(json!({"type": "somethingNew", "x": 1})).await;
    call.send(json!({"voicePrompt": "sem tipo"})).await;
    call.send(json!({"type": "prompt", "voicePrompt": 42, "last": true}))
        .await;
    call.send(json!({"type": "prompt", "voicePrompt": null, "last": true}))
        .await;
    call.send(json!({"type": "prompt", "voicePrompt": "parcial", "last": false}))
        .await;
    call.send(json!({"type": "interrupt"})).await;
    call.send(json!({"type": "error", "description": "Invalid message received"}))
        .await;
    call.send(json!({"type": "info", "name": "agentSpeaking", "value": "on"}))
        .await;
    call.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    // None of that produced a reply, and never error JSON back to Twilio.
    call.expect_silence(Duration::from_millis(200)).await;
    call.prompt("Oi").await;
    let reply = call.reply().await;
    assert_eq!(reply.text, voxrelay::llm::scripted::reply_to("Oi"));
}

#[tokio::test]
async fn oversized_frame_closes_only_that_socket() {
    let app = spawn_app(&[("MAX_WS_MESSAGE_BYTES", "4096")]).await;
    let mut healthy = app.relay().await;
    healthy.setup("CA_healthy").await;
    let mut big = app.relay().await;
    big.setup("CA_big").await;
    app.wait_active_calls(2).await;
    let huge = format!(
        r#"{{"type":"prompt","voicePrompt":"{}","last":true}}"#,
        "a".repeat(10_000)
    );
    let _ = big.ws().send_huge(huge).await;
    big.closed().await;
    app.wait_active_calls(1).await;
    healthy.prompt("Oi").await;
    assert_eq!(
        healthy.reply().await.text,
        voxrelay::llm::scripted::reply_to("Oi")
    );
}

#[tokio::test]
async fn caller_hanging_up_mid_reply_drops_the_llm_stream() {
    let (app, llm) = app_with_llm(&[("LLM_TIMEOUT_MS", "5000")]).await;
    let words: Vec<String> = (1..=50).map(|i| format!("w{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    llm.push(Reply::slow_tokens(&words, 40));
    let mut call = app.relay().await;
    call.setup("CA_hangup").await;
    call.prompt("Fale bastante").await;
    call.recv().await;
    drop(call);
    llm.wait_disconnects(1).await;
    app.wait_active_calls(0).await;
    assert_eq!(app.state.metrics.total_calls(), 1);
}

#[tokio::test]
async fn llm_http_error_speaks_the_fallback_and_the_call_goes_on() {
    let (app, llm) = app_with_llm(&[]).await;
    llm.push(Reply::Status(
        400,
        r#"{"error":{"message":"bad request","type":"invalid_request_error"}}"#.into(),
    ));
    llm.push(Reply::tokens(&["De volta."]));
    let mut call = app.relay().await;
    call.setup("CA_400").await;
    call.prompt("Oi").await;
    assert_eq!(call.reply().await.text, FALLBACK);
    call.prompt("E agora?").await;
    assert_eq!(call.reply().await.text, "De volta.");
    assert_eq!(llm.requests().len(), 2, "a 400 is not retried");
}

#[tokio::test]
async fn llm_server_errors_are_retried_then_the_fallback_is_spoken() {
    let (app, llm) = app_with_llm(&[("LLM_TIMEOUT_MS", "5000")]).await;
    // One 500 is retried transparently: the caller hears the real answer.
    llm.push(Reply::Status(500, "upstream down".into()));
    llm.push(Reply::tokens(&["Resposta ", "real."]));
    // A 500 that persists through the retries ends in the fallback.
    for _ in 0..4 {
        llm.push(Reply::Status(500, "upstream down".into()));
    }
    let mut call = app.relay().await;
    call.setup("CA_500").await;
    call.prompt("Oi").await;
    assert_eq!(call.reply().await.text, "Resposta real.");
    call.prompt("De novo").await;
    assert_eq!(call.reply().await.text, FALLBACK);
    assert_eq!(llm.requests().len(), 6);
}

#[tokio::test]
async fn llm_that_hangs_times_out_into_the_fallback() {
    let (app, llm) = app_with_llm(&[("LLM_TIMEOUT_MS", "300")]).await;
    llm.push(Reply::Hang);
    llm.push(Reply::tokens(&["Voltei."]));
    let mut call = app.relay().await;
    call.setup("CA_hang").await;
    call.prompt("Oi").await;
    let started = std::time::Instant::now();
    assert_eq!(call.reply().await.text, FALLBACK);
    assert!(started.elapsed() >= Duration::from_millis(250));
    llm.wait_disconnects(1).await;
    call.prompt("Oi de novo").await;
    assert_eq!(call.reply().await.text, "Voltei.");
}

#[tokio::test]
async fn garbage_stream_speaks_the_fallback() {
    let (app, llm) = app_with_llm(&[]).await;
    llm.push(Reply::Garbage);
    llm.push(Reply::tokens(&["Tudo certo."]));
    let mut call = app.relay().await;
    call.setup("CA_garbage").await;
    call.prompt("Oi").await;
    assert_eq!(call.reply().await.text, FALLBACK);
    call.prompt("Oi?").await;
    assert_eq!(call.reply().await.text, "Tudo certo.");
}

#[tokio::test]
async fn unreachable_llm_speaks_the_fallback() {
    // A port with nothing listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let app = spawn_app(&[
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", dead.as_str()),
        ("LLM_TIMEOUT_MS", "2000"),
    ])
    .await;
    let mut call = app.relay().await;
    call.setup("CA_dead").await;
    call.prompt("Oi").await;
    assert_eq!(call.reply().await.text, FALLBACK);
}

#[tokio::test]
async fn azure_requests_use_the_deployment_path_and_api_key() {
    let llm = FakeLlm::start().await;
    let endpoint = format!("http://{}", llm.addr);
    let app = spawn_app(&[
        ("LLM_PROVIDER", "azure"),
        ("AZURE_OPENAI_ENDPOINT", endpoint.as_str()),
        ("AZURE_OPENAI_API_KEY", "azure-key"),
        ("AZURE_OPENAI_DEPLOYMENT", "my-gpt"),
        ("AZURE_OPENAI_API_VERSION", "2024-10-21"),
    ])
    .await;
    llm.push(Reply::tokens(&["Oi ", "do Azure."]));
    let mut call = app.relay().await;
    call.setup("CA_azure").await;
    call.prompt("Oi").await;
    assert_eq!(call.reply().await.text, "Oi do Azure.");
    let request = &llm.wait_requests(1).await[0];
    assert_eq!(
        request.path,
        "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(request.headers["api-key"], "azure-key");
}

#[tokio::test]
async fn many_calls_run_side_by_side() {
    let (app, llm) = app_with_llm(&[]).await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let mut call = app.relay().await;
        call.setup(&format!("CA_many_{i}")).await;
        calls.push(call);
    }
    app.wait_active_calls(20).await;
    for call in calls.iter_mut() {
        call.prompt("Oi").await;
    }
    for call in calls.iter_mut() {
        assert_eq!(call.reply().await.text, "Olá!");
    }
    assert_eq!(llm.requests().len(), 20);
}

/// Sending a frame larger than the server accepts.
trait SendHuge {
    async fn send_huge(&mut self, text: String) -> Result<(), ()>;
}

impl SendHuge for crate::support::Ws {
    async fn send_huge(&mut self, text: String) -> Result<(), ()> {
        use futures::SinkExt;
        self.send(Message::text(text)).await.map_err(|_| ())
    }
}
