//! The API additions the console uses: call filters (status, mode, number, day)
//! with paging, the overview, a call's appointments, the local recording (and
//! nothing outside `RECORDINGS_DIR`), on SQLite and PostgreSQL.

use reqwest::StatusCode;
use serde_json::Value;
use voxrelay::store::{Appointment, CallEnd, NewCall, Turn, now_millis};

use crate::support::db::TestDb;
use crate::support::{TestApp, spawn_app};

const TOKEN: &str = "console-api-token-0123456789";

async fn app_on(db: &str, recordings: &str) -> TestApp {
    spawn_app(&[
        ("DATABASE_URL", db),
        ("API_TOKEN", TOKEN),
        ("RECORDINGS_DIR", recordings),
    ])
    .await
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .get(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store", "{path}");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn sids(body: &Value) -> Vec<String> {
    body["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_sid"].as_str().unwrap().to_string())
        .collect()
}

/// Five calls: two relay (one live), one stream, one sip, one console; a day
/// apart from `base`.
async fn seed(app: &TestApp, base: i64) {
    let calls = [
        ("CA_f1", "relay", "+5511900000001", Some("completed")),
        ("CA_f2", "stream", "+5511900000002", Some("failed")),
        ("CA_f3", "relay", "+5511900000001", None),
        ("rtc_f4", "sip", "+5511900000004", Some("completed")),
        ("CON_f5", "console", "console", Some("completed")),
    ];
    for (i, (sid, mode, from, status)) in calls.iter().enumerate() {
        let started_at = base + i as i64 * 86_400_000;
        let call = NewCall {
            call_sid: sid.to_string(),
            from: Some(from.to_string()),
            to: Some("+5511333330000".into()),
            mode: Some(mode.to_string()),
            started_at,
            ..NewCall::default()
        };
        app.state.store.call_started(&call).await.unwrap();
        let turn = Turn {
            seq: 0,
            role: "agent".into(),
            text: "Olá!".into(),
            started_at,
            ended_at: started_at + 500,
            time_to_first_token_ms: Some(150 + 100 * i as i64),
            ..Turn::default()
        };
        app.state.store.add_turn(sid, &turn).await.unwrap();
        if let Some(status) = status {
            let end = CallEnd {
                status: status.to_string(),
                ended_at: started_at + 60_000,
                turns: 1,
                ..CallEnd::default()
            };
            app.state.store.call_ended(sid, &end).await.unwrap();
        }
    }
}

async fn filters_and_overview(db: TestDb) {
    let dir = tempdir("filters");
    let app = app_on(&db.url, dir.to_str().unwrap()).await;
    // 2023-11-14T00:00:00Z, then a day apart.
    let base = 1_699_920_000_000;
    seed(&app, base).await;
    let (code, all) = get(&app, "/api/calls").await;
    assert_eq!(code, StatusCode::OK, "{all}");
    assert_eq!(sids(&all), ["CON_f5", "rtc_f4", "CA_f3", "CA_f2", "CA_f1"]);
    let (_, live) = get(&app, "/api/calls?status=in-progress").await;
    assert_eq!(sids(&live), ["CA_f3"]);
    let (_, relay) = get(&app, "/api/calls?mode=relay").await;
    assert_eq!(sids(&relay), ["CA_f3", "CA_f1"]);
    let (_, number) = get(&app, "/api/calls?number=%2B5511900000001").await;
    assert_eq!(sids(&number), ["CA_f3", "CA_f1"]);
    let (_, to) = get(&app, "/api/calls?number=%2B5511333330000&limit=2").await;
    assert_eq!(sids(&to), ["CON_f5", "rtc_f4"]);
    // Paging keeps the filter.
    let next = to["next_before"].as_str().unwrap();
    let (_, rest) = get(
        &app,
        &format!("/api/calls?number=%2B5511333330000&limit=2&before={next}"),
    )
    .await;
    assert_eq!(sids(&rest), ["CA_f3", "CA_f2"]);
    let (_, day) = get(&app, "/api/calls?day=2023-11-15").await;
    assert_eq!(sids(&day), ["CA_f2"]);
    // A local day (UTC-3) from a browser.
    let (_, local) = get(
        &app,
        "/api/calls?since=2023-11-15T00:00:00-03:00&until=2023-11-16T00:00:00-03:00",
    )
    .await;
    assert_eq!(sids(&local), ["CA_f3"]);
    let (_, none) = get(&app, "/api/calls?mode=relay&status=failed").await;
    assert!(sids(&none).is_empty());
    for bad in [
        "/api/calls?day=today",
        "/api/calls?since=x",
        "/api/overview?hours=0",
    ] {
        let (code, body) = get(&app, bad).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let long = "9".repeat(100);
    let (code, _) = get(&app, &format!("/api/calls?number={long}")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    // The overview covers the last `hours`; these calls are years old.
    let (code, overview) = get(&app, "/api/overview?hours=744").await;
    assert_eq!(code, StatusCode::OK, "{overview}");
    assert_eq!(overview["first_token"]["replies"], 0);
    let now = now_millis();
    seed_recent(&app, now).await;
    let (_, overview) = get(&app, "/api/overview").await;
    assert_eq!(overview["hours"], 24);
    let calls: i64 = overview["calls_per_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["count"].as_i64().unwrap())
        .sum();
    assert_eq!(calls, 2);
    let replies: i64 = overview["replies_per_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["count"].as_i64().unwrap())
        .sum();
    assert_eq!(replies, 2);
    assert_eq!(overview["first_token"]["replies"], 2);
    assert_eq!(overview["first_token"]["p50_ms"], 120);
    let buckets = overview["first_token"]["buckets"].as_array().unwrap();
    assert_eq!(buckets[1], serde_json::json!({"le_ms": 200, "count": 1}));
    assert_eq!(buckets[9], serde_json::json!({"le_ms": null, "count": 1}));
    let statuses = overview["calls_by_status"].as_array().unwrap();
    assert!(
        statuses
            .iter()
            .any(|s| s["status"] == "handoff" && s["count"] == 1),
        "{overview}"
    );
    assert!(overview["live_calls"]["console"].is_u64());
    assert!(overview["llm_errors"]["timeout"].is_u64());
    db.cleanup().await;
}

async fn seed_recent(app: &TestApp, now: i64) {
    for (sid, ttft, status) in [("CA_r1", 120, "handoff"), ("CA_r2", 9000, "completed")] {
        let call = NewCall {
            call_sid: sid.into(),
            mode: Some("relay".into()),
            started_at: now - 60_000,
            ..NewCall::default()
        };
        app.state.store.call_started(&call).await.unwrap();
        let turn = Turn {
            role: "agent".into(),
            text: "Oi".into(),
            started_at: now - 50_000,
            ended_at: now - 49_000,
            time_to_first_token_ms: Some(ttft),
            ..Turn::default()
        };
        app.state.store.add_turn(sid, &turn).await.unwrap();
        let end = CallEnd {
            status: status.into(),
            ended_at: now,
            ..CallEnd::default()
        };
        app.state.store.call_ended(sid, &end).await.unwrap();
    }
}

#[tokio::test]
async fn sqlite_calls_filter_and_overview() {
    filters_and_overview(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_calls_filter_and_overview() {
    if let Some(db) = TestDb::postgres("postgres_calls_filter_and_overview").await {
        filters_and_overview(db).await;
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("console-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_call_shows_its_appointments_and_serves_only_its_own_recording() {
    let dir = tempdir("recording");
    let app = app_on(&TestDb::sqlite().url, dir.to_str().unwrap()).await;
    let call = NewCall {
        call_sid: "CA_rec".into(),
        started_at: now_millis(),
        ..NewCall::default()
    };
    app.state.store.call_started(&call).await.unwrap();
    let appointment = Appointment {
        call_sid: "CA_rec".into(),
        name: "Ana".into(),
        preferred_day: "2026-12-07".into(),
        created_at: now_millis(),
        ..Appointment::default()
    };
    app.state.store.add_appointment(&appointment).await.unwrap();
    let (_, detail) = get(&app, "/api/calls/CA_rec").await;
    assert_eq!(detail["appointments"][0]["name"], "Ana");
    let (code, _) = get(&app, "/api/calls/CA_rec/recording").await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let wav = dir.join("CA_rec.wav");
    let bytes: Vec<u8> = b"RIFF\x24\x00\x00\x00WAVE"
        .iter()
        .copied()
        .chain([7u8; 20])
        .collect();
    std::fs::write(&wav, &bytes).unwrap();
    app.state
        .store
        .set_recording_path("CA_rec", wav.to_str().unwrap())
        .await
        .unwrap();
    let res = reqwest::Client::new()
        .get(app.url("/api/calls/CA_rec/recording"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "audio/wav");
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.bytes().await.unwrap().as_ref(), bytes.as_slice());
    // Without the token: nothing.
    let res = reqwest::get(app.url("/api/calls/CA_rec/recording"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A record pointing outside RECORDINGS_DIR is not served.
    let outside = tempdir("outside").join("secret.wav");
    std::fs::write(&outside, b"secret").unwrap();
    app.state
        .store
        .set_recording_path("CA_rec", outside.to_str().unwrap())
        .await
        .unwrap();
    let (code, body) = get(&app, "/api/calls/CA_rec/recording").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
}
