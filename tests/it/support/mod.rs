//! Test helpers: the real server on `127.0.0.1:0`, and a fake Twilio
//! ConversationRelay peer speaking over a real WebSocket.

pub mod agent_app;
pub mod browser;
pub mod db;
pub mod fake_http;
pub mod fake_llm;
pub mod fake_openai;
pub mod fake_speech;
pub mod fake_twilio;
pub mod signed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use voxrelay::sim::peer::{RelayPeer, inbound_setup};
use voxrelay::{AppState, Config};

/// Logs stay quiet unless `TEST_LOG` is set.
pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "debug".into()),
                )
                .with_test_writer()
                .try_init();
        }
    });
}

/// `text` as checked base64 (the speech clients take nothing else).
pub fn b64(text: &str) -> voxrelay::text::base64::Base64Str<'_> {
    voxrelay::text::base64::Base64Str::new(text).expect("base64 text")
}

/// The server under test.
#[allow(dead_code)] // `stop` and `shutdown` serve the drain tests.
pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// A fresh SQLite database URL: a new file under the test's own temp folder.
pub fn temp_sqlite_url() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static CLEAN: Once = Once::new();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("db");
    CLEAN.call_once(|| {
        // Files left by earlier runs of this binary (an hour old or more).
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(3600));
                if old {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let file = dir.join(format!("{}-{n}.db", std::process::id()));
    format!("sqlite://{}", file.display())
}

/// A configuration for tests: offline, fast scripted words, a fresh SQLite file,
/// plus `vars`.
pub fn test_config(vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = HashMap::new();
    map.insert("SCRIPTED_TOKEN_DELAY_MS".into(), "0".into());
    map.insert("DATABASE_URL".into(), temp_sqlite_url());
    map.insert(
        "LOG_DIR".into(),
        std::env::temp_dir()
            .join("voxrelay-test-logs")
            .display()
            .to_string(),
    );
    for (k, v) in vars {
        map.insert(k.to_string(), v.to_string());
    }
    Config::from_vars(map).expect("test configuration is valid")
}

/// Starts the real server on `127.0.0.1:0` with [`test_config`].
pub async fn spawn_app(vars: &[(&str, &str)]) -> TestApp {
    spawn_with_config(test_config(vars)).await
}

pub async fn spawn_with_config(config: Config) -> TestApp {
    init_logs();
    let state = AppState::new(config).await.expect("app state");
    spawn_with_state(state).await
}

pub async fn spawn_with_state(state: AppState) -> TestApp {
    init_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(voxrelay::run(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        state,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A ConversationRelay client connected to `/websocket`.
    pub async fn relay(&self) -> RelayClient {
        RelayClient::connect(&self.ws_url("/websocket")).await
    }

    /// Starts a drain and waits for the server to stop.
    #[allow(dead_code)]
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), server).await;
        }
    }

    /// Waits until the server counts `n` live calls.
    pub async fn wait_active_calls(&self, n: u64) {
        let metrics = &self.state.metrics;
        eventually(
            &format!("{n} active calls"),
            Duration::from_secs(10),
            || (metrics.active_calls() == n).then_some(()),
        )
        .await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

pub type Ws = voxrelay::sim::peer::Ws;

/// Plays Twilio's side of ConversationRelay: the typed peer of `sim::peer`, with
/// the test's assertions around it.
pub struct RelayClient {
    pub peer: RelayPeer,
}

/// What arrived for one talk cycle.
#[derive(Debug, Default)]
pub struct Reply {
    pub text: String,
    pub tokens: Vec<String>,
    pub messages: Vec<Value>,
}

impl RelayClient {
    pub async fn connect(url: &str) -> Self {
        Self {
            peer: RelayPeer::connect(url).await.expect("WebSocket connects"),
        }
    }

    /// The raw socket (closing it without a word, oversized frames).
    pub fn ws(&mut self) -> &mut Ws {
        self.peer.socket_mut()
    }

    /// Any JSON, even what Twilio would never send.
    pub async fn send(&mut self, message: Value) {
        self.send_raw(Message::text(message.to_string())).await;
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.peer.send_frame(message).await.expect("send raw");
    }

    pub async fn setup(&mut self, call_sid: &str) {
        let setup = inbound_setup(
            call_sid,
            "VX0001",
            "+5511999990000",
            "+5511333330000",
            HashMap::new(),
        );
        self.peer.setup(setup).await.expect("send setup");
    }

    pub async fn prompt(&mut self, text: &str) {
        self.peer
            .prompt(text, Some("pt-BR"))
            .await
            .expect("send prompt");
    }

    pub async fn interrupt(&mut self, heard: &str) {
        self.peer
            .interrupt(heard, Duration::from_millis(460))
            .await
            .expect("send interrupt");
    }

    pub async fn dtmf(&mut self, digit: &str) {
        for key in digit.chars() {
            self.peer.dtmf(key).await.expect("send dtmf");
        }
    }

    /// The next JSON message as it came over the wire, or `None` on close or
    /// after `wait` of silence.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        match self.peer.receive_text(wait).await? {
            Ok(text) => Some(serde_json::from_str(&text).expect("server sends JSON")),
            Err(_closed) => None,
        }
    }

    /// The next JSON message; fails the test after 10 s.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("a message from the server")
    }

    /// Collects `text` messages until one with `last: true`.
    pub async fn reply(&mut self) -> Reply {
        let mut reply = Reply::default();
        loop {
            let message = self.recv().await;
            reply.messages.push(message.clone());
            assert_eq!(message["type"], "text", "unexpected message {message}");
            let token = message["token"].as_str().expect("token is a string");
            if message["last"] == true {
                assert_eq!(token, "", "the closing message carries no text");
                return reply;
            }
            reply.text.push_str(token);
            reply.tokens.push(token.to_string());
        }
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(message) = self.recv_within(wait).await {
            panic!("expected silence, got {message}");
        }
    }

    /// Waits for the server to close the socket; returns the close code if any.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.peer.receive_text(Duration::from_secs(10)).await {
                None => panic!("the server did not close the socket"),
                Some(Err(code)) => return code,
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// Asserts `url` is `prefix` followed by one path segment (the per-call token) and
/// returns that token.
#[allow(dead_code)]
pub fn token_after<'a>(url: Option<&'a str>, prefix: &str) -> &'a str {
    let url = url.expect("a WebSocket URL");
    let token = url
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_else(|| panic!("{url} is not {prefix}/<token>"));
    assert!(
        token.len() > 40 && !token.contains('/') && !token.contains('?'),
        "{url}"
    );
    token
}

/// The `url` attribute of the first element named `tag` in a TwiML document.
#[allow(dead_code)]
pub fn twiml_url(xml: &str, tag: &str) -> String {
    let doc = roxmltree::Document::parse(xml).expect("TwiML is XML");
    doc.descendants()
        .find(|n| n.has_tag_name(tag))
        .and_then(|n| n.attribute("url"))
        .unwrap_or_else(|| panic!("no <{tag} url> in {xml}"))
        .to_string()
}

impl TestApp {
    /// Answers `call_sid` like Twilio's voice webhook (unsigned: for servers that do
    /// not check signatures) and connects to the WebSocket path the TwiML names.
    #[allow(dead_code)]
    pub async fn relay_for(&self, call_sid: &str) -> RelayClient {
        let xml = reqwest::Client::new()
            .post(self.url("/incoming-call"))
            .form(&[("CallSid", call_sid)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let url = twiml_url(&xml, "ConversationRelay");
        let path = &url[url.find("/websocket").expect("a /websocket URL")..];
        RelayClient::connect(&self.ws_url(path)).await
    }
}

/// A loopback port free right now (for servers started as child processes).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 10 ms until it gives a value, and fails the test naming
/// `what` after `wait`. For what the server reaches on its own time (a record
/// written, a call counted); nothing about timing is asserted this way.
pub async fn eventually<T>(what: &str, wait: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still waiting after {wait:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the async `check` every 20 ms for up to 10 s until it gives a value.
pub async fn eventually_async<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still waiting after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
