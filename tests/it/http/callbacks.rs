//! Twilio's status and recording callbacks, signed as Twilio signs them, landing in
//! the calls table.

use crate::support::signed::sign;
use crate::support::{TestApp, spawn_app};

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

/// A user places a call through the API, Twilio reports on it, and the API shows
/// the call's lifecycle and recording.
#[tokio::test]
async fn an_api_call_is_watched_through_the_api() {
    use crate::support::fake_twilio::{ACCOUNT_SID, FakeTwilio};
    use serde_json::{Value, json};

    let fake = FakeTwilio::start().await;
    let base = fake.base_url();
    let api_token = "test-api-token-0123456789";
    let app = spawn_app(&[
        ("API_TOKEN", api_token),
        ("PUBLIC_URL", PUBLIC),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("TWILIO_API_BASE", base.as_str()),
        ("TWILIO_PHONE_NUMBER", "+5511222220000"),
    ])
    .await;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(app.url("/api/calls"))
        .bearer_auth(api_token)
        .json(&json!({"to": "+5511999990000", "record": true, "machine_detection": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = created["callSid"].as_str().unwrap().to_string();
    let request = &fake.requests()[0];
    let status_url = request.field("StatusCallback").unwrap();
    let recording_url = request.field("RecordingStatusCallback").unwrap();
    let status_path = status_url.strip_prefix(PUBLIC).unwrap().to_string();
    let recording_path = recording_url.strip_prefix(PUBLIC).unwrap().to_string();

    let with_sid = |extra: &[(&'static str, &'static str)]| {
        let mut params: Vec<(&str, &str)> = vec![("CallSid", sid.as_str())];
        params.extend_from_slice(extra);
        params
    };
    for step in [
        with_sid(&[("CallStatus", "initiated")]),
        with_sid(&[("CallStatus", "ringing")]),
        with_sid(&[("CallStatus", "in-progress")]),
        with_sid(&[("AnsweredBy", "machine_start")]),
        with_sid(&[("CallStatus", "completed"), ("CallDuration", "61")]),
    ] {
        assert_eq!(callback(&app, &status_path, &step).await, 204);
    }
    let recording = with_sid(&[
        ("RecordingSid", "RE00000000000000000000000000000007"),
        (
            "RecordingUrl",
            "https://api.twilio.com/Recordings/RE00000000000000000000000000000007",
        ),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "60"),
    ]);
    assert_eq!(callback(&app, &recording_path, &recording).await, 204);

    let call: Value = client
        .get(app.url(&format!("/api/calls/{sid}")))
        .bearer_auth(api_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(call["status"], "completed", "{call}");
    assert_eq!(call["twilio_duration_secs"], 61);
    assert_eq!(call["answered_by"], "machine_start");
    assert_eq!(
        call["recording"]["sid"],
        "RE00000000000000000000000000000007"
    );
    assert_eq!(
        call["recording"]["url"],
        "https://api.twilio.com/Recordings/RE00000000000000000000000000000007"
    );
    assert_eq!(call["recording"]["duration_secs"], 60);
}
