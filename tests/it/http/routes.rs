//! `/health`, `/status`, `/twiml`, `/incoming-call`, `/twiml/action`, errors.

use serde_json::Value;

use crate::support::{spawn_app, token_after};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn health_is_ok() {
    let app = spawn_app(&[]).await;
    let res = client().get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn status_reports_version_uptime_sessions_and_llm() {
    let app = spawn_app(&[]).await;
    let mut call = app.relay().await;
    call.setup("CA_status").await;
    app.wait_active_calls(1).await;
    let body: Value = client()
        .get(app.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["status"], "ok");
    assert!(body["uptime_seconds"].is_u64());
    assert!(body["uptime"].as_str().unwrap().ends_with('s'), "{body}");
    assert!(body["started_at"].as_str().unwrap().contains('T'));
    assert_eq!(body["active_sessions"], 1);
    assert_eq!(body["total_sessions"], 1);
    assert_eq!(body["llm"]["provider"], "scripted");
    assert_eq!(body["llm"]["model"], "scripted");
    drop(call);
    app.wait_active_calls(0).await;
}

type Pairs = Vec<(String, String)>;

/// The `<Connect action>`, the `<ConversationRelay>` attributes and its `<Parameter>`s.
fn relay_element(xml: &str) -> (String, Pairs, Pairs) {
    let doc = roxmltree::Document::parse(xml).expect("TwiML is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "Response");
    let connect = root.first_element_child().expect("a verb");
    assert_eq!(connect.tag_name().name(), "Connect");
    let relay = connect.first_element_child().expect("ConversationRelay");
    assert_eq!(relay.tag_name().name(), "ConversationRelay");
    let attrs = relay
        .attributes()
        .map(|a| (a.name().to_string(), a.value().to_string()))
        .collect();
    let params = relay
        .children()
        .filter(|c| c.tag_name().name() == "Parameter")
        .map(|p| {
            (
                p.attribute("name").unwrap().to_string(),
                p.attribute("value").unwrap().to_string(),
            )
        })
        .collect();
    (
        connect.attribute("action").unwrap_or("").to_string(),
        attrs,
        params,
    )
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn twiml_uses_public_url_and_escapes_every_value() {
    let app = spawn_app(&[
        ("PUBLIC_URL", "https://voz.example.com/"),
        ("WELCOME_GREETING", "Olá & \"bem-vindo\" <à> Acme"),
        ("TTS_VOICE", "voice-1"),
        ("HINTS", "Acme, voxrelay"),
        ("RELAY_DEBUG", "speaker-events tokens-played"),
    ])
    .await;
    for request in [
        client().get(app.url("/twiml")),
        client()
            .post(app.url("/twiml"))
            .form(&[("CallSid", "CA1"), ("From", "+5511")]),
        client()
            .post(app.url("/incoming-call"))
            .form(&[("CallSid", "CA1")]),
    ] {
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/xml")
        );
        let xml = res.text().await.unwrap();
        let (action, attrs, _) = relay_element(&xml);
        assert_eq!(action, "https://voz.example.com/twiml/action");
        token_after(attr(&attrs, "url"), "wss://voz.example.com/websocket");
        assert_eq!(
            attr(&attrs, "welcomeGreeting"),
            Some("Olá & \"bem-vindo\" <à> Acme")
        );
        assert_eq!(attr(&attrs, "language"), Some("pt-BR"));
        assert_eq!(attr(&attrs, "ttsProvider"), Some("ElevenLabs"));
        assert_eq!(attr(&attrs, "voice"), Some("voice-1"));
        assert_eq!(attr(&attrs, "transcriptionProvider"), Some("Deepgram"));
        assert_eq!(attr(&attrs, "interruptible"), Some("any"));
        assert_eq!(attr(&attrs, "dtmfDetection"), Some("true"));
        assert_eq!(attr(&attrs, "reportInputDuringAgentSpeech"), Some("any"));
        assert_eq!(attr(&attrs, "hints"), Some("Acme, voxrelay"));
        assert_eq!(attr(&attrs, "debug"), Some("speaker-events tokens-played"));
    }
}

#[tokio::test]
async fn twiml_host_comes_from_proxy_headers_without_public_url() {
    let app = spawn_app(&[]).await;
    let xml = client()
        .post(app.url("/twiml"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "abc.up.railway.app, internal:8080")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (action, attrs, _) = relay_element(&xml);
    assert_eq!(action, "https://abc.up.railway.app/twiml/action");
    token_after(attr(&attrs, "url"), "wss://abc.up.railway.app/websocket");

    // Only Host: plain http/ws, as for a local test.
    let xml = client()
        .get(app.url("/twiml"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, attrs, _) = relay_element(&xml);
    token_after(attr(&attrs, "url"), &format!("ws://{}/websocket", app.addr));
}

#[tokio::test]
async fn action_callback_hangs_up() {
    let app = spawn_app(&[]).await;
    let res = client()
        .post(app.url("/twiml/action"))
        .form(&[
            ("CallSid", "CA1"),
            ("SessionStatus", "ended"),
            ("SessionDuration", "25"),
            ("CallStatus", "in-progress"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let xml = res.text().await.unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let verbs: Vec<_> = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name().to_string())
        .collect();
    assert_eq!(verbs, vec!["Hangup"]);
}

#[tokio::test]
async fn unknown_routes_and_oversized_bodies_get_clear_json_errors() {
    let app = spawn_app(&[]).await;
    let res = client().get(app.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "not found");

    let res = client()
        .post(app.url("/twiml"))
        .body(vec![b'a'; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "request body too large");

    // A plain GET on the WebSocket route is not an upgrade.
    let res = client().get(app.url("/websocket")).send().await.unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
}
