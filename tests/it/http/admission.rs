//! A full server turns calls away before they are answered: inbound TwiML says
//! busy (`<Reject reason="busy"/>`, or `BUSY_MESSAGE` and `<Hangup/>`), an
//! outbound call gets 429 and Twilio is never asked; each one is counted.

use serde_json::json;

use crate::support::fake_twilio::{ACCOUNT_SID, AUTH_TOKEN, FakeTwilio};
use crate::support::{TestApp, spawn_app};

const API_TOKEN: &str = "admission-api-token-0123456789";

async fn full_app(
    fake: &FakeTwilio,
    extra: &[(&str, &str)],
) -> (TestApp, crate::support::RelayClient) {
    let base = fake.base_url();
    let mut vars = vec![
        ("API_TOKEN", API_TOKEN),
        ("PUBLIC_URL", "https://voz.example.com"),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_API_BASE", base.as_str()),
        ("TWILIO_PHONE_NUMBER", "+5511222220000"),
        ("TWILIO_VALIDATE_SIGNATURES", "false"),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("MAX_CALLS", "1"),
    ];
    vars.extend_from_slice(extra);
    let app = spawn_app(&vars).await;
    let mut call = app.relay().await;
    call.setup("CAfirst").await;
    app.wait_active_calls(1).await;
    (app, call)
}

async fn twiml(app: &TestApp, path: &str) -> String {
    reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("CallSid=CAsecond&From=%2B5511999990000&To=%2B5511333330000")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_full_server_says_busy_before_answering() {
    let fake = FakeTwilio::start().await;
    let (app, _call) = full_app(&fake, &[]).await;
    for path in ["/twiml", "/incoming-call", "/twiml/stream"] {
        let xml = twiml(&app, path).await;
        assert!(xml.contains(r#"<Reject reason="busy"/>"#), "{path}: {xml}");
        assert!(!xml.contains("Connect"), "{xml}");
    }
    let res = reqwest::Client::new()
        .post(app.url("/api/calls"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"to": "+5511999990000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("MAX_CALLS"),
        "{body}"
    );
    assert!(
        fake.requests().is_empty(),
        "Twilio was asked to place a call"
    );
    assert_eq!(app.state.metrics.refused_calls(), 4);
    assert!(
        app.state
            .metrics
            .render(false)
            .contains("voxrelay_calls_refused_total 4")
    );
}

#[tokio::test]
async fn a_busy_message_is_said_then_the_call_hangs_up() {
    let fake = FakeTwilio::start().await;
    let (app, _call) = full_app(
        &fake,
        &[("BUSY_MESSAGE", "Todas as linhas estão ocupadas.")],
    )
    .await;
    let xml = twiml(&app, "/twiml").await;
    assert!(
        xml.contains(r#"<Say language="pt-BR">Todas as linhas estão ocupadas.</Say><Hangup/>"#),
        "{xml}"
    );
}
