//! The public edges under attack, over real sockets: replayed and misused
//! handshakes, sessions claiming another call, idle and slow connections, oversized
//! input, spoofed proxy headers and forged log lines.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::fake_llm::{FakeLlm, Reply};
use crate::support::signed::{
    PUBLIC, TOKEN, sign, signed_relay, signed_socket_path, signed_socket_path_with, ws_connect,
};
use crate::support::spawn_app;

/// The server talking to a fake OpenAI-compatible LLM, with signature checks
/// (behind `PUBLIC_URL`) when `protected`, plus `extra`.
async fn with_fake_llm(
    protected: bool,
    extra: &[(&str, &str)],
) -> (crate::support::TestApp, FakeLlm) {
    let llm = FakeLlm::start().await;
    let base = llm.base_url();
    let mut vars = vec![
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_BASE_URL", base.as_str()),
    ];
    if protected {
        vars.extend([("TWILIO_AUTH_TOKEN", TOKEN), ("PUBLIC_URL", PUBLIC)]);
    }
    vars.extend_from_slice(extra);
    (spawn_app(&vars).await, llm)
}

async fn protected(extra: &[(&str, &str)]) -> crate::support::TestApp {
    let mut vars = vec![("TWILIO_AUTH_TOKEN", TOKEN), ("PUBLIC_URL", PUBLIC)];
    vars.extend_from_slice(extra);
    spawn_app(&vars).await
}

#[tokio::test]
async fn a_replayed_handshake_is_refused() {
    let app = protected(&[]).await;
    let (path, url) =
        signed_socket_path(&app, "/incoming-call", "ConversationRelay", "CAreplay").await;
    let signature = sign(TOKEN, &url, &[]);
    let mut call = ws_connect(&app, &path, Some(&signature), &[])
        .await
        .expect("Twilio's handshake");
    call.setup("CAreplay").await;
    // The same URL and signature, seen in a proxy log: refused, live call or not.
    assert_eq!(
        ws_connect(&app, &path, Some(&signature), &[]).await.err(),
        Some(403)
    );
    drop(call);
    app.wait_active_calls(0).await;
    assert_eq!(
        ws_connect(&app, &path, Some(&signature), &[]).await.err(),
        Some(403)
    );
    // The old fixed URL, signed: refused too (no per-call token).
    let fixed = sign(TOKEN, "wss://voz.example.com/websocket", &[]);
    assert_eq!(
        ws_connect(&app, "/websocket", Some(&fixed), &[])
            .await
            .err(),
        Some(403)
    );
    // A token for Media Streams does not open ConversationRelay.
    let (media_path, media_url) =
        signed_socket_path(&app, "/twiml/stream", "Stream", "CAreplay2").await;
    let as_relay = media_path.replace("/media-stream/", "/websocket/");
    let as_relay_url = media_url.replace("/media-stream/", "/websocket/");
    assert_eq!(
        ws_connect(&app, &as_relay, Some(&sign(TOKEN, &as_relay_url, &[])), &[])
            .await
            .err(),
        Some(403)
    );
}

#[tokio::test]
async fn a_token_used_for_another_call_ends_the_session() {
    let app = protected(&[]).await;
    let mut call = signed_relay(&app, "CAmine").await;
    call.setup("CAsomeone-else").await;
    call.closed().await;
    app.wait_active_calls(0).await;
    // Nothing was recorded for the other call.
    let stored = app.state.store.get_call("CAsomeone-else").await.unwrap();
    assert!(stored.is_none(), "{stored:?}");
}

#[tokio::test]
async fn a_session_claiming_an_earlier_call_neither_resumes_nor_overwrites_it() {
    let (app, llm) = with_fake_llm(
        false,
        &[("SYSTEM_PROMPT", "sys"), ("WELCOME_GREETING", "Olá!")],
    )
    .await;
    llm.push(Reply::tokens(&["Seu CPF é ", "123."]));
    let mut victim = app.relay_for("CAvictim").await;
    victim
        .send(json!({
            "type": "setup", "sessionId": "VX1", "callSid": "CAvictim",
            "from": "+5511999990000", "to": "+5511333330000",
            "customParameters": {"cpf": "123"}
        }))
        .await;
    victim.prompt("Qual é meu CPF?").await;
    assert_eq!(victim.reply().await.text, "Seu CPF é 123.");
    drop(victim);
    app.wait_active_calls(0).await;
    assert!(app.state.recorder.flush(Duration::from_secs(5)).await);

    // Another session names the same SID without a reconnect we answered.
    llm.push(Reply::tokens(&["Não sei."]));
    let mut intruder = app.relay().await;
    intruder
        .send(json!({
            "type": "setup", "sessionId": "VX2", "callSid": "CAvictim",
            "from": "+5511000000000", "to": "+5511333330000", "customParameters": {}
        }))
        .await;
    intruder.prompt("Qual é meu CPF?").await;
    assert_eq!(intruder.reply().await.text, "Não sei.");
    let requests = llm.wait_requests(2).await;
    let seen = format!("{:?}", requests[1].messages());
    assert!(
        !seen.contains("123"),
        "the earlier conversation leaked: {seen}"
    );
    drop(intruder);
    app.wait_active_calls(0).await;
    assert!(app.state.recorder.flush(Duration::from_secs(5)).await);

    let detail = app.state.store.get_call("CAvictim").await.unwrap().unwrap();
    assert_eq!(detail.call.from.as_deref(), Some("+5511999990000"));
    let transcript = app
        .state
        .store
        .transcript("CAvictim")
        .await
        .unwrap()
        .unwrap();
    let texts: Vec<&str> = transcript.turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Qual é meu CPF?",
            "Seu CPF é 123.",
            "Qual é meu CPF?",
            "Não sei."
        ],
        "the later session appended; the earlier turns are intact"
    );
}

#[tokio::test]
async fn a_socket_without_setup_is_closed_and_its_slot_freed() {
    let app = spawn_app(&[("SETUP_TIMEOUT_SECS", "1"), ("MAX_CALLS", "1")]).await;
    let mut idle = app.relay().await;
    app.wait_active_calls(1).await;
    let started = std::time::Instant::now();
    idle.closed().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    app.wait_active_calls(0).await;
    let mut call = app.relay().await;
    call.setup("CAafter").await;
    call.prompt("Oi").await;
    assert!(!call.reply().await.text.is_empty());
}

#[tokio::test]
async fn a_call_past_its_maximum_duration_hears_goodbye_and_ends() {
    let app = spawn_app(&[
        ("MAX_CALL_SECS", "1"),
        ("GOODBYE_MESSAGE", "Tempo esgotado."),
    ])
    .await;
    let mut call = app.relay().await;
    call.setup("CAlong").await;
    let goodbye = call.reply().await;
    assert_eq!(goodbye.text, "Tempo esgotado.");
    let end = call.recv().await;
    assert_eq!(end["type"], "end", "{end}");
    let handoff: serde_json::Value =
        serde_json::from_str(end["handoffData"].as_str().unwrap()).unwrap();
    assert_eq!(handoff["reasonCode"], "max-duration");
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the
/// connection; returns how many it took.
async fn trickle(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> usize {
    for (i, byte) in bytes.iter().enumerate() {
        if stream.write_all(&[*byte]).await.is_err() {
            return i;
        }
        tokio::time::sleep(gap).await;
    }
    bytes.len()
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_and_capped() {
    let app = spawn_app(&[("HTTP_HEADER_TIMEOUT_SECS", "1"), ("MAX_CONNECTIONS", "4")]).await;
    // Headers sent byte by byte: closed after the header timeout.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let started = std::time::Instant::now();
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let writer = tokio::spawn(async move {
        trickle(&mut slow, request, Duration::from_millis(200)).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        buf
    });
    let answer = writer.await.unwrap();
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "the slow request was served"
    );
    assert!(started.elapsed() < Duration::from_secs(8));

    // A keep-alive connection left idle after a request is closed too.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = kept.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let idle_closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match kept.read(&mut answer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        idle_closed.is_ok(),
        "an idle keep-alive connection stayed open"
    );

    // Idle connections beyond the cap are closed at once; /health still answers
    // once the idle ones time out.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection over the cap is closed: {read:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = reqwest::get(app.url("/health")).await.unwrap();
    assert_eq!(res.status(), 200);
    // The idle ones were closed by the server.
    for mut stream in idle {
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
}

#[tokio::test]
async fn a_megabyte_prompt_is_cut_and_the_call_goes_on() {
    let (app, llm) = with_fake_llm(
        false,
        &[
            ("MAX_WS_MESSAGE_BYTES", "2000000"),
            ("MAX_PROMPT_BYTES", "4096"),
        ],
    )
    .await;
    let mut call = app.relay().await;
    call.setup("CAbig").await;
    call.prompt(&"ã".repeat(500_000)).await;
    assert!(!call.reply().await.text.is_empty());
    call.prompt("E agora?").await;
    assert!(!call.reply().await.text.is_empty(), "the call goes on");
    let requests = llm.wait_requests(2).await;
    let user = requests[0]
        .messages()
        .into_iter()
        .rfind(|(role, _)| role == "user")
        .unwrap()
        .1;
    assert_eq!(
        user.len(),
        4096,
        "cut to MAX_PROMPT_BYTES on a character boundary"
    );
}

#[tokio::test]
async fn history_bytes_stay_under_the_cap_across_many_long_turns() {
    let (app, llm) = with_fake_llm(
        false,
        &[("SYSTEM_PROMPT", "sys"), ("MAX_HISTORY_BYTES", "8192")],
    )
    .await;
    let mut call = app.relay().await;
    call.setup("CAlong-history").await;
    let turns = 500;
    for i in 0..turns {
        call.prompt(&format!("{i} {}", "p".repeat(2000))).await;
        call.reply().await;
    }
    let requests = llm.wait_requests(turns).await;
    for (i, request) in requests.iter().enumerate() {
        let bytes: usize = request
            .messages()
            .iter()
            .skip(1)
            .map(|(_, text)| text.len())
            .sum();
        assert!(bytes <= 8192, "request {i}: {bytes} bytes of history");
        assert_eq!(request.messages()[0], ("system".into(), "sys".into()));
    }
}

#[tokio::test]
async fn oversized_custom_parameters_are_trimmed() {
    let (app, llm) = with_fake_llm(false, &[("SYSTEM_PROMPT", "sys")]).await;
    // 60 KB of parameters: within the WebSocket message limit, far over theirs.
    let params: serde_json::Map<String, serde_json::Value> = (0..60)
        .map(|i| (format!("p{i:03}"), json!("v".repeat(1000))))
        .collect();
    let mut call = app.relay().await;
    call.send(json!({
        "type": "setup", "sessionId": "VX1", "callSid": "CAparams",
        "from": "+5511999990000", "to": "+5511333330000", "customParameters": params
    }))
    .await;
    call.prompt("Oi").await;
    call.reply().await;
    let requests = llm.wait_requests(1).await;
    let system = &requests[0].messages()[0].1;
    assert!(
        system.len() < 10 * 1024,
        "{} bytes of system prompt",
        system.len()
    );
}

#[tokio::test]
async fn twiml_is_signed_for_the_new_urls_the_way_twilio_checks_them() {
    // The URL in our TwiML is the URL Twilio signs; its signature (computed here,
    // independently) opens the socket.
    let app = protected(&[]).await;
    let mut call = signed_relay(&app, "CAtwiml").await;
    call.setup("CAtwiml").await;
    call.prompt("Oi").await;
    assert!(!call.reply().await.text.is_empty());
}

#[tokio::test]
async fn forged_newlines_and_escapes_come_out_escaped_in_the_log_file() {
    use tracing_subscriber::layer::SubscriberExt;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("log-injection-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = tracing_appender::rolling::never(&dir, "voxrelay.log");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(voxrelay::telemetry::file_layer(file));
    // This test's runtime is single-threaded: the server's tasks log here too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let forged = "\n2026-12-05T00:00:00.000000Z  INFO voxrelay: FORGED admin logged in\x1b[2J\r";
    let app = spawn_app(&[]).await;
    let mut call = app.relay().await;
    call.send(json!({
        "type": "setup", "sessionId": format!("VX{forged}"), "callSid": "CAlog",
        "from": format!("+55{forged}"), "to": format!("+55{forged}"),
        "direction": format!("inbound{forged}"), "customParameters": {}
    }))
    .await;
    call.send(json!({"type": "dtmf", "digit": format!("1{forged}")}))
        .await;
    call.send(json!({"type": "error", "description": format!("boom{forged}")}))
        .await;
    call.send(json!({"type": "info", "name": format!("x{forged}")}))
        .await;
    call.send(json!({"type": format!("new{forged}")})).await;
    // A second setup for another call changes no span field.
    call.setup("CArenamed").await;
    call.prompt("Oi").await;
    call.reply().await;
    drop(call);
    app.wait_active_calls(0).await;
    drop(app);

    let log = std::fs::read_to_string(dir.join("voxrelay.log")).unwrap();
    for line in log.lines() {
        assert!(
            !line.contains("FORGED") || line.contains("\\n2026"),
            "{line}"
        );
        assert!(
            !line.starts_with("2026-12-05T00:00:00"),
            "a forged line: {line}"
        );
    }
    assert!(
        !log.contains('\x1b'),
        "a raw terminal escape reached the log"
    );
    assert!(!log.contains('\r'), "a raw carriage return reached the log");
    assert!(
        log.matches("FORGED").count() >= 4,
        "from, to, the digit and the error were logged (escaped): {log}"
    );
    assert!(
        log.contains("call_sid=\"CAlog\"") || log.contains("call_sid=CAlog"),
        "{log}"
    );
    assert!(
        !log.contains("CArenamed"),
        "a second setup renamed the call: {log}"
    );
}

#[tokio::test]
async fn a_generated_api_token_is_never_printed() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("token-print-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .env_clear()
        .current_dir(&dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&out).contains("voxrelay listening") {
                break;
            }
        }
    })
    .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let mut err = Vec::new();
    let _ = stderr.read_to_end(&mut err).await;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    );
    assert!(printed.contains("voxrelay listening"), "{printed}");
    let token = std::fs::read_to_string(dir.join("data/api-token")).unwrap();
    let token = token.trim();
    assert!(token.len() >= 32);
    assert!(!printed.contains(token), "the token was printed: {printed}");
    assert!(
        printed.contains("api-token"),
        "the file is named: {printed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn only_the_reconnect_token_we_answered_resumes_a_signed_call() {
    let (app, llm) = with_fake_llm(
        true,
        &[("SYSTEM_PROMPT", "sys"), ("WELCOME_GREETING", "Olá!")],
    )
    .await;
    llm.push(Reply::tokens(&["Anotado, Ana."]));
    let mut call = signed_relay(&app, "CAdrop").await;
    call.setup("CAdrop").await;
    call.prompt("Sou a Ana").await;
    call.reply().await;
    drop(call);
    app.wait_active_calls(0).await;

    // Twilio reports the drop; our signed answer carries a resume token.
    let params = [
        ("CallSid", "CAdrop"),
        ("CallStatus", "in-progress"),
        ("ErrorCode", "64105"),
    ];
    let (path, url) =
        signed_socket_path_with(&app, "/twiml/action", "ConversationRelay", &params).await;
    let mut call = ws_connect(&app, &path, Some(&sign(TOKEN, &url, &[])), &[])
        .await
        .unwrap();
    call.setup("CAdrop").await;
    llm.push(Reply::tokens(&["Sim, Ana."]));
    call.prompt("Lembra de mim?").await;
    call.reply().await;
    let requests = llm.wait_requests(2).await;
    let seen = format!("{:?}", requests[1].messages());
    assert!(
        seen.contains("Sou a Ana"),
        "the conversation resumed: {seen}"
    );
}
