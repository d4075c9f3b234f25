//! Graceful shutdown of the real `voxrelay` process: SIGTERM during a streaming
//! reply lets the reply (and the call) go on, refuses new calls with 503, keeps
//! `/health` answering, flushes the logs and exits 0 within the drain timeout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use voxrelay::llm::scripted::reply_to;

use crate::support::{RelayClient, free_port};

const TOKEN: &str = "drain-test-token-0123456789";

/// The server binary, listening on loopback with the scripted agent.
struct Process {
    child: Child,
    port: u16,
    log_dir: PathBuf,
}

impl Process {
    async fn start(name: &str, vars: &[(&str, &str)]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("voxrelay-drain-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log_dir = dir.join("logs");
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_voxrelay"));
        command
            .arg("serve")
            // No developer .env or keys leak in: a clean environment in an empty folder.
            .env_clear()
            .current_dir(&dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("LOG_DIR", &log_dir)
            .env("API_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in vars {
            command.env(k, v);
        }
        let child = command.spawn().expect("the voxrelay binary starts");
        let process = Self {
            child,
            port,
            log_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while process.get("/health").await.map(|(s, _)| s) != Some(200) {
            assert!(Instant::now() < deadline, "the server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/websocket", self.port)
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    fn sigterm(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its status and how long it took.
    async fn exit(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the server exits within the drain timeout")
            .unwrap();
        (status, started.elapsed())
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.log_dir).unwrap() {
            all.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        all
    }
}

/// A new call attempt; returns the HTTP status of a refused upgrade.
async fn refused_status(url: &str) -> Option<u16> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn sigterm_lets_the_reply_finish_refuses_new_calls_and_exits_zero() {
    // ~14 words at 120 ms: the reply streams for about 1.7 s.
    let mut server = Process::start(
        "reply",
        &[
            ("SCRIPTED_TOKEN_DELAY_MS", "120"),
            ("DRAIN_TIMEOUT_SECS", "15"),
        ],
    )
    .await;
    let mut call = RelayClient::connect(&server.ws_url()).await;
    call.setup("CA_drain").await;
    call.prompt("Olá, bom dia").await;
    let first = call.recv().await;
    assert_eq!(first["type"], "text");
    let mut text = first["token"].as_str().unwrap().to_string();

    let (ready, body) = server.get("/ready").await.unwrap();
    assert_eq!(
        (ready, body.as_str()),
        (200, r#"{"ready":true,"reason":null}"#)
    );
    server.sigterm();
    let term_at = Instant::now();

    // The reply in flight completes, token by token, up to `last: true`.
    let rest = call.reply().await;
    text.push_str(&rest.text);
    assert_eq!(text, reply_to("Olá, bom dia"));

    // Meanwhile: new calls are refused, health answers, status says draining.
    assert_eq!(refused_status(&server.ws_url()).await, Some(503));
    assert_eq!(server.get("/health").await.map(|(s, _)| s), Some(200));
    let (ready, body) = server.get("/ready").await.unwrap();
    assert_eq!(ready, 503, "a balancer stops sending calls: {body}");
    assert!(body.contains("draining"), "{body}");
    let (status, body) = server.get("/status").await.unwrap();
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "draining");
    assert_eq!(body["active_sessions"], 1);
    let (_, metrics) = server.get("/metrics").await.unwrap();
    assert!(metrics.contains("voxrelay_draining 1\n"), "{metrics}");

    // The live call goes on: another turn is answered during the drain.
    call.prompt("Qual o horário?").await;
    assert_eq!(call.reply().await.text, reply_to("Qual o horário?"));

    // The caller hangs up; the process exits 0, well within the drain timeout.
    call.ws().close(None).await.unwrap();
    let (status, _) = server.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(term_at.elapsed() < Duration::from_secs(15));

    // Logs were flushed to the file before exit.
    let logs = server.logs();
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("call ended"), "{logs}");
    assert!(logs.contains("server stopped"), "{logs}");
}

#[tokio::test]
async fn calls_still_live_at_the_drain_timeout_are_ended_cleanly() {
    let mut server = Process::start(
        "timeout",
        &[
            ("SCRIPTED_TOKEN_DELAY_MS", "0"),
            ("DRAIN_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let mut call = RelayClient::connect(&server.ws_url()).await;
    call.setup("CA_lingers").await;
    call.prompt("Oi").await;
    call.reply().await;

    server.sigterm();
    let term_at = Instant::now();
    // The caller stays on the line: after the drain timeout the server says `end`.
    let end = call.recv().await;
    assert_eq!(end["type"], "end", "{end}");
    let handoff: serde_json::Value =
        serde_json::from_str(end["handoffData"].as_str().unwrap()).unwrap();
    assert_eq!(handoff["reasonCode"], "server-shutdown");
    // Then a close frame: Twilio sees a clean close, not a dropped socket (1006).
    let next = tokio::time::timeout(Duration::from_secs(5), call.ws().next())
        .await
        .expect("the server closes the socket");
    assert!(
        matches!(next, Some(Ok(Message::Close(_)))),
        "expected a close frame, got {next:?}"
    );
    let waited = term_at.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    let (status, _) = server.exit(Duration::from_secs(8)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        term_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        term_at.elapsed()
    );
    assert!(server.logs().contains("drain timeout"));
}

#[tokio::test]
async fn sigterm_with_no_calls_exits_at_once() {
    let mut server = Process::start("idle", &[]).await;
    server.sigterm();
    let (status, took) = server.exit(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
