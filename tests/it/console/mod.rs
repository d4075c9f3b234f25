//! The call console: its page and headers, its "Try it" socket (token first,
//! the server's own call SID, the relay session, `mode: "console"` records), and
//! the whole page in a real headless Chromium ([`browser`]).

mod browser;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{TestApp, spawn_app};

pub const TOKEN: &str = "console-token-0123456789abcdef";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn console_socket(app: &TestApp, origin: Option<&str>) -> Result<Ws, u16> {
    let mut request = app.ws_url("/console/call").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the console socket answers")?
            .ok()?;
        match message {
            Message::Text(text) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Message::Close(frame) => {
                return Some(json!({"closed": frame.map(|f| u16::from(f.code))}));
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_page_and_its_files_carry_strict_headers() {
    let app = spawn_app(&[("API_TOKEN", TOKEN)]).await;
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let res = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
    }
    let page = reqwest::get(app.url("/console"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The page itself holds no data: only the login form and the script's tag.
    assert!(page.contains(r#"<script src="/console/app.js" defer></script>"#));
    assert!(!page.contains("console-token"));
}

#[tokio::test]
async fn try_it_needs_the_token_first() {
    let app = spawn_app(&[("API_TOKEN", TOKEN)]).await;
    // A wrong token: an error, then a policy close; no call.
    let mut ws = console_socket(&app, None).await.unwrap();
    ws.send(Message::text(
        json!({"type": "start", "token": "nope"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await.unwrap()["type"], "error");
    assert_eq!(next_json(&mut ws).await.unwrap()["closed"], 1008);
    // Speaking ConversationRelay without a start is no better.
    let mut ws = console_socket(&app, None).await.unwrap();
    ws.send(Message::text(
        json!({"type": "prompt", "voicePrompt": "Oi", "last": true}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await.unwrap()["type"], "error");
    // Another site cannot open it in the operator's browser.
    assert_eq!(
        console_socket(&app, Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(app.state.metrics.total_calls(), 0);
}

#[tokio::test]
async fn a_console_call_runs_the_agent_and_is_recorded_as_console() {
    let app = spawn_app(&[("API_TOKEN", TOKEN)]).await;
    let origin = format!("http://{}", app.addr);
    let mut ws = console_socket(&app, Some(&origin)).await.unwrap();
    ws.send(Message::text(
        json!({"type": "start", "token": TOKEN, "from": "+5511912345678"}).to_string(),
    ))
    .await
    .unwrap();
    let started = next_json(&mut ws).await.unwrap();
    assert_eq!(started["type"], "started");
    let sid = started["callSid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("CON") && sid.len() == 35, "{sid}");
    // A setup from the page cannot pick another call.
    ws.send(Message::text(
        json!({"type": "setup", "callSid": "CAvictim", "sessionId": "VX1", "from": "+1", "to": "+2"})
            .to_string(),
    ))
    .await
    .unwrap();
    let mut greeting = String::new();
    loop {
        let message = next_json(&mut ws).await.unwrap();
        if message["type"] == "text" {
            greeting.push_str(message["token"].as_str().unwrap());
            if message["last"] == true {
                break;
            }
        }
    }
    assert!(!greeting.is_empty());
    ws.send(Message::text(
        json!({"type": "prompt", "voicePrompt": "Quero marcar uma consulta", "lang": "pt-BR", "last": true})
            .to_string(),
    ))
    .await
    .unwrap();
    let mut reply = String::new();
    loop {
        let message = next_json(&mut ws).await.unwrap();
        if message["type"] == "text" {
            reply.push_str(message["token"].as_str().unwrap());
            if message["last"] == true {
                break;
            }
        }
    }
    assert!(!reply.is_empty());
    ws.close(None).await.unwrap();
    let store = app.state.store.clone();
    let detail = crate::support::eventually_async(|| {
        let store = store.clone();
        let sid = sid.clone();
        async move {
            store
                .get_call(&sid)
                .await
                .unwrap()
                .filter(|d| d.call.ended_at.is_some())
        }
    })
    .await;
    assert_eq!(detail.call.mode.as_deref(), Some("console"));
    assert_eq!(detail.call.from.as_deref(), Some("+5511912345678"));
    assert!(store.get_call("CAvictim").await.unwrap().is_none());
    let transcript = store.transcript(&sid).await.unwrap().unwrap();
    assert!(
        transcript
            .turns
            .iter()
            .any(|t| t.text == "Quero marcar uma consulta")
    );
    assert!(
        app.state
            .metrics
            .render(false)
            .contains("mode=\"console\"} 1")
    );
}
