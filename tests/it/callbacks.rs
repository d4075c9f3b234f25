//! Twilio's status and recording callbacks, signed as Twilio signs them, landing in
//! the calls table.

use crate::common::{TestApp, spawn_app};
use crate::twilio_signature::sign;

const TOKEN: &str = "twilio-test-auth-token";
const PUBLIC: &str = "https://voz.example.com";
const SID: &str = "CA00000000000000000000000000000042";

async fn app() -> TestApp {
    spawn_app(&[("TWILIO_AUTH_TOKEN", TOKEN), ("PUBLIC_URL", PUBLIC)]).await
}

/// Posts a callback with Twilio's signature for our public URL.
async fn callback(app: &TestApp, path: &str, params: &[(&str, &str)]) -> u16 {
    let signature = sign(TOKEN, &format!("{PUBLIC}{path}"), params);
    reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(serde_urlencoded::to_string(params).unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn status_params<'a>(status: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallSid", SID),
        ("CallStatus", status),
        ("From", "+5511222220000"),
        ("To", "+5511999990000"),
        ("Direction", "outbound-api"),
        ("ApiVersion", "2010-04-01"),
    ];
    params.extend_from_slice(extra);
    params
}

#[tokio::test]
async fn the_call_lifecycle_is_stored() {
    let app = app().await;
    for (status, extra) in [
        ("initiated", vec![("SequenceNumber", "0")]),
        ("ringing", vec![("SequenceNumber", "1")]),
        ("in-progress", vec![("SequenceNumber", "2")]),
    ] {
        assert_eq!(
            callback(&app, "/twilio/status", &status_params(status, &extra)).await,
            204
        );
        let call = app
            .state
            .store
            .get_call(SID)
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(call.call.status, status);
    }
    // Asynchronous answering-machine detection: no CallStatus, just AnsweredBy.
    let amd = [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallSid", SID),
        ("AnsweredBy", "human"),
        ("MachineDetectionDuration", "2310"),
    ];
    assert_eq!(callback(&app, "/twilio/status", &amd).await, 204);
    let call = app.state.store.get_call(SID).await.unwrap().unwrap().call;
    assert_eq!(call.answered_by.as_deref(), Some("human"));
    assert_eq!(call.status, "in-progress");

    let done = status_params(
        "completed",
        &[("CallDuration", "42"), ("SequenceNumber", "3")],
    );
    assert_eq!(callback(&app, "/twilio/status", &done).await, 204);
    let call = app.state.store.get_call(SID).await.unwrap().unwrap().call;
    assert_eq!(call.status, "completed");
    assert_eq!(call.twilio_duration_secs, Some(42));
    assert_eq!(call.answered_by.as_deref(), Some("human"));
    assert_eq!(call.direction.as_deref(), Some("outbound-api"));
    assert_eq!(call.to.as_deref(), Some("+5511999990000"));

    // A late, out-of-order "ringing" does not reopen a finished call.
    assert_eq!(
        callback(&app, "/twilio/status", &status_params("ringing", &[])).await,
        204
    );
    let call = app.state.store.get_call(SID).await.unwrap().unwrap().call;
    assert_eq!(call.status, "completed");
}

#[tokio::test]
async fn the_recording_is_stored_with_the_call() {
    let app = app().await;
    assert_eq!(
        callback(
            &app,
            "/twilio/status",
            &status_params("completed", &[("CallDuration", "30")])
        )
        .await,
        204
    );
    let url = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE0123456789abcdef0123456789abcdef";
    let params = [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallSid", SID),
        ("RecordingSid", "RE0123456789abcdef0123456789abcdef"),
        ("RecordingUrl", url),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "28"),
        ("RecordingChannels", "1"),
        ("RecordingSource", "OutboundAPI"),
    ];
    assert_eq!(callback(&app, "/twilio/recording", &params).await, 204);
    let call = app.state.store.get_call(SID).await.unwrap().unwrap().call;
    let recording = call.recording.expect("recording stored");
    assert_eq!(
        recording.sid.as_deref(),
        Some("RE0123456789abcdef0123456789abcdef")
    );
    assert_eq!(recording.url.as_deref(), Some(url));
    assert_eq!(recording.duration_secs, Some(28));
    assert_eq!(call.status, "completed");

    // An `absent` recording (no audio) stores nothing.
    let absent = [
        ("CallSid", "CA00000000000000000000000000000043"),
        ("RecordingStatus", "absent"),
    ];
    assert_eq!(callback(&app, "/twilio/recording", &absent).await, 204);
    assert!(
        app.state
            .store
            .get_call("CA00000000000000000000000000000043")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn callbacks_without_a_call_sid_are_refused() {
    let app = app().await;
    for path in ["/twilio/status", "/twilio/recording"] {
        assert_eq!(
            callback(&app, path, &[("CallStatus", "ringing")]).await,
            400,
            "{path}"
        );
    }
}
