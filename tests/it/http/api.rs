//! Calls over the real WebSocket end up in the store and in the REST API: turns as
//! they complete (interruptions with what was heard), records that survive a
//! restart on SQLite and PostgreSQL, the bearer token, paging, the text transcript,
//! 404s and 400s, and a broken database that never breaks a call.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use voxrelay::store::{Appointment, NewCall};

use crate::support::db::TestDb;
use crate::support::fake_llm::{FakeLlm, Reply};
use crate::support::{RelayClient, TestApp, spawn_app};

const TOKEN: &str = "test-api-token-0123456789";

/// The server on `db`, with a fixed API token and (optionally) the fake LLM.
async fn app_on(db_url: &str, llm: Option<&FakeLlm>) -> TestApp {
    let base = llm.map(FakeLlm::base_url);
    let mut vars = vec![("DATABASE_URL", db_url), ("API_TOKEN", TOKEN)];
    if let Some(base) = &base {
        vars.extend_from_slice(&[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "sk-test-key"),
            ("OPENAI_BASE_URL", base.as_str()),
            ("OPENAI_MODEL", "fake-model"),
            ("LLM_TIMEOUT_MS", "5000"),
        ]);
    }
    spawn_app(&vars).await
}

async fn get_with(app: &TestApp, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    req.send().await.expect("the API answers")
}

/// An authorised GET: status and JSON body.
async fn get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let res = get_with(app, path, Some(&format!("Bearer {TOKEN}"))).await;
    let status = res.status();
    (status, res.json().await.expect("JSON body"))
}

/// An authorised GET of a text body.
async fn get_text(app: &TestApp, path: &str) -> (StatusCode, String, String) {
    let res = get_with(app, path, Some(&format!("Bearer {TOKEN}"))).await;
    let status = res.status();
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    (status, content_type, res.text().await.unwrap())
}

/// Waits until the API shows `sid` with `status` (records are written in the
/// background, a moment after the call).
async fn wait_status(app: &TestApp, sid: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(app, &format!("/api/calls/{sid}")).await;
        if code == StatusCode::OK && body["status"] == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "call {sid} never reached {status}: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn hang_up(mut call: RelayClient) {
    let _ = call.ws().close(None).await;
}

#[tokio::test]
async fn a_call_over_the_websocket_is_stored_and_served() {
    let db = TestDb::sqlite();
    let llm = FakeLlm::start().await;
    let words: Vec<String> = (1..=40).map(|i| format!("palavra{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    llm.push(Reply::tokens(&["Bom ", "dia", "!"]));
    llm.push(Reply::slow_tokens(&words, 40));
    llm.push(Reply::tokens(&["Ok", "."]));
    let app = app_on(&db.url, Some(&llm)).await;

    let mut call = app.relay().await;
    call.setup("CA_stored").await;
    call.prompt("Olá").await;
    assert_eq!(call.reply().await.text, "Bom dia!");

    // Each turn is in the store as soon as it completes, while the call goes on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(&app, "/api/calls/CA_stored/transcript").await;
        if code == StatusCode::OK && body["turns"].as_array().unwrap().len() == 2 {
            assert_eq!(body["turns"][1]["text"], "Bom dia!");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "turns not stored mid-call: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = wait_status(&app, "CA_stored", "in-progress").await;
    assert_eq!(live["ended_at"], Value::Null);

    call.prompt("Conte uma história longa").await;
    for expected in ["palavra1 ", "palavra2 ", "palavra3 "] {
        assert_eq!(call.recv().await["token"], expected);
    }
    call.interrupt("palavra1 palavra2").await;
    while call.recv_within(Duration::from_millis(300)).await.is_some() {}
    call.prompt("Pare").await;
    assert_eq!(call.reply().await.text, "Ok.");
    hang_up(call).await;

    let detail = wait_status(&app, "CA_stored", "completed").await;
    assert_eq!(detail["call_sid"], "CA_stored");
    assert_eq!(detail["session_id"], "VX0001");
    assert_eq!(detail["from"], "+5511999990000");
    assert_eq!(detail["to"], "+5511333330000");
    assert_eq!(detail["direction"], "inbound");
    assert_eq!(detail["mode"], "relay");
    assert_eq!(detail["turns"], 3);
    assert_eq!(detail["interrupts"], 1);
    assert_eq!(detail["llm_errors"], 0);
    assert!(detail["duration_ms"].as_i64().unwrap() >= 0);
    assert!(detail["ended_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(detail["recording"], Value::Null);
    assert_eq!(
        detail["records"],
        json!({"transcript_turns": 6, "tool_calls": 0, "appointments": 0})
    );
    assert_eq!(detail["transcript"], "/api/calls/CA_stored/transcript");

    let (code, transcript) = get(&app, "/api/calls/CA_stored/transcript").await;
    assert_eq!(code, StatusCode::OK);
    let turns = transcript["turns"].as_array().unwrap();
    let said: Vec<(&str, bool)> = turns
        .iter()
        .map(|t| (t["role"].as_str().unwrap(), t["interrupted"] == true))
        .collect();
    assert_eq!(
        said,
        [
            ("caller", false),
            ("agent", false),
            ("caller", false),
            ("agent", true),
            ("caller", false),
            ("agent", false)
        ]
    );
    for (i, turn) in turns.iter().enumerate() {
        assert_eq!(turn["seq"], i);
    }
    let interrupted = &turns[3];
    assert_eq!(interrupted["heard"], "palavra1 palavra2");
    assert!(
        interrupted["text"]
            .as_str()
            .unwrap()
            .starts_with("palavra1 palavra2 palavra3"),
        "{interrupted}"
    );
    // Both first-token times of a reply; the first token out comes after the LLM's.
    let (out, llm) = (
        turns[1]["time_to_first_token_ms"]
            .as_u64()
            .expect("time to first token"),
        turns[1]["llm_first_token_ms"]
            .as_u64()
            .expect("LLM first token"),
    );
    assert!(out >= llm, "{out} < {llm}");
    assert_eq!(turns[0]["time_to_first_token_ms"], Value::Null);
    assert_eq!(turns[0]["llm_first_token_ms"], Value::Null);
    assert_eq!(transcript["tool_calls"], json!([]));

    let expected = "Caller: Olá\nAgent: Bom dia!\nCaller: Conte uma história longa\n\
                    Agent: palavra1 palavra2 [interrupted]\nCaller: Pare\nAgent: Ok.\n";
    for path in [
        "/api/calls/CA_stored/transcript?format=text",
        "/api/transcript/CA_stored?format=text",
    ] {
        let (code, content_type, text) = get_text(&app, path).await;
        assert_eq!(code, StatusCode::OK, "{path}");
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert_eq!(text, expected, "{path}");
    }
    // The older path gives the same JSON too.
    assert_eq!(get(&app, "/api/transcript/CA_stored").await.1, transcript);
    assert_eq!(transcript["next_after"], Value::Null);
    // Paged: two turns at a time, each page naming where the next starts.
    let mut paged = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let path = match after {
            None => "/api/calls/CA_stored/transcript?limit=2".to_string(),
            Some(a) => format!("/api/calls/CA_stored/transcript?limit=2&after={a}"),
        };
        let (code, page) = get(&app, &path).await;
        assert_eq!(code, StatusCode::OK, "{path}");
        let turns = page["turns"].as_array().unwrap();
        assert!(turns.len() <= 2);
        paged.extend(turns.iter().map(|t| t["seq"].as_i64().unwrap()));
        match page["next_after"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, [0, 1, 2, 3, 4, 5]);
    let (code, _) = get(&app, "/api/calls/CA_stored/transcript?after=-5").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    let (code, list) = get(&app, "/api/calls").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["calls"][0]["call_sid"], "CA_stored");
    assert_eq!(list["next_before"], Value::Null);
    db.cleanup().await;
}

/// One call on the scripted agent, then a stop and a new server on the same
/// database: the transcript is still there.
async fn transcript_survives_a_restart(db: TestDb) {
    let app = app_on(&db.url, None).await;
    let mut call = app.relay().await;
    call.setup("CA_restart").await;
    call.prompt("Oi, bom dia!").await;
    let reply = call.reply().await.text;
    hang_up(call).await;
    // No waiting for the write: the drain must flush it before the server stops.
    app.stop().await;

    let app = app_on(&db.url, None).await;
    let detail = wait_status(&app, "CA_restart", "completed").await;
    assert_eq!(detail["records"]["transcript_turns"], 2);
    let (code, text, body) = get_text(&app, "/api/transcript/CA_restart?format=text").await;
    assert_eq!(code, StatusCode::OK);
    assert!(text.starts_with("text/plain"));
    assert_eq!(body, format!("Caller: Oi, bom dia!\nAgent: {reply}\n"));
    app.stop().await;
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_transcripts_survive_a_restart() {
    transcript_survives_a_restart(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_transcripts_survive_a_restart() {
    let Some(db) = TestDb::postgres("postgres_transcripts_survive_a_restart").await else {
        return;
    };
    transcript_survives_a_restart(db).await;
}

#[tokio::test]
async fn postgres_call_is_stored_and_status_reports_the_backend() {
    let Some(db) = TestDb::postgres("postgres_call_is_stored_and_status_reports_the_backend").await
    else {
        return;
    };
    let app = app_on(&db.url, None).await;
    let mut call = app.relay().await;
    call.setup("CA_pg").await;
    call.prompt("Olá").await;
    call.reply().await;
    hang_up(call).await;
    let detail = wait_status(&app, "CA_pg", "completed").await;
    assert_eq!(detail["records"]["transcript_turns"], 2);
    let status: Value = reqwest::get(app.url("/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["store"]["backend"], "postgres");
    assert_eq!(status["store"]["ok"], true);
    app.stop().await;
    db.cleanup().await;
}

#[tokio::test]
async fn the_api_needs_the_bearer_token() {
    let app = app_on(&TestDb::sqlite().url, None).await;
    for path in [
        "/api/calls",
        "/api/calls/CA1",
        "/api/calls/CA1/transcript",
        "/api/transcript/CA1?format=text",
        "/api/appointments",
    ] {
        for auth in [
            None,
            Some("Bearer wrong-token-0123456789"),
            Some("Bearer "),
            Some(&format!("Basic {TOKEN}") as &str),
            Some(&format!("Bearer {TOKEN}x") as &str),
        ] {
            let res = get_with(&app, path, auth).await;
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{path} with {auth:?}"
            );
            assert_eq!(res.headers()["www-authenticate"], "Bearer");
            let body: Value = res.json().await.unwrap();
            assert!(body["error"].is_string(), "{body}");
        }
    }
    let (code, _) = get(&app, "/api/calls").await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) = get(&app, "/api/nothing-here").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    // The rest of the server needs no token.
    let res = get_with(&app, "/health", None).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn calls_are_paged_newest_first() {
    let app = app_on(&TestDb::sqlite().url, None).await;
    for (i, sid) in ["CA_p1", "CA_p2", "CA_p3", "CA_p4", "CA_p5"]
        .iter()
        .enumerate()
    {
        let call = NewCall {
            call_sid: sid.to_string(),
            started_at: 1_700_000_000_000 + i as i64 * 1000,
            ..NewCall::default()
        };
        app.state.store.call_started(&call).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut path = "/api/calls?limit=2".to_string();
    for page in 0.. {
        let (code, body) = get(&app, &path).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let calls = body["calls"].as_array().unwrap();
        assert!(calls.len() <= 2);
        seen.extend(
            calls
                .iter()
                .map(|c| c["call_sid"].as_str().unwrap().to_string()),
        );
        match body["next_before"].as_str() {
            Some(next) => path = format!("/api/calls?limit=2&before={next}"),
            None => {
                assert_eq!(page, 2, "three pages");
                break;
            }
        }
    }
    assert_eq!(seen, ["CA_p5", "CA_p4", "CA_p3", "CA_p2", "CA_p1"]);
    let (_, first) = get(&app, "/api/calls?limit=1").await;
    assert_eq!(first["calls"][0]["started_at"], "2023-11-14T22:13:24.000Z");
    assert_eq!(first["calls"][0]["status"], "in-progress");

    for bad in [
        "/api/calls?limit=0",
        "/api/calls?limit=1000",
        "/api/calls?limit=many",
        "/api/calls?before=yesterday",
        "/api/appointments?before=CA1",
        "/api/appointments?limit=-3",
    ] {
        let (code, body) = get(&app, bad).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn appointments_are_listed_newest_first() {
    let app = app_on(&TestDb::sqlite().url, None).await;
    for (seq, name) in ["Ana", "Bruno", "Carla"].iter().enumerate() {
        let appointment = Appointment {
            call_sid: "CA_appt".into(),
            seq: seq as i64,
            caller_number: Some("+5511999990000".into()),
            name: name.to_string(),
            preferred_day: "2026-11-24".into(),
            preferred_time: Some("14:00".into()),
            created_at: 1_700_000_000_000,
            ..Appointment::default()
        };
        app.state.store.add_appointment(&appointment).await.unwrap();
    }
    let (code, body) = get(&app, "/api/appointments?limit=2").await;
    assert_eq!(code, StatusCode::OK);
    let names: Vec<&str> = body["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Carla", "Bruno"]);
    let first = &body["appointments"][0];
    assert_eq!(first["call_sid"], "CA_appt");
    assert_eq!(first["caller_number"], "+5511999990000");
    assert_eq!(first["preferred_day"], "2026-11-24");
    assert_eq!(first["preferred_time"], "14:00");
    assert_eq!(first["email"], Value::Null);
    assert_eq!(first["created_at"], "2023-11-14T22:13:20.000Z");
    let next = body["next_before"].as_i64().expect("another page");
    let (_, rest) = get(&app, &format!("/api/appointments?before={next}")).await;
    assert_eq!(rest["appointments"][0]["name"], "Ana");
    assert_eq!(rest["next_before"], Value::Null);
    // The booking call shows up with its count.
    let (_, call) = get(&app, "/api/calls/CA_appt").await;
    assert_eq!(call["records"]["appointments"], 3);
}

#[tokio::test]
async fn unknown_calls_are_404_and_bad_formats_400() {
    let app = app_on(&TestDb::sqlite().url, None).await;
    for path in [
        "/api/calls/CA_unknown",
        "/api/calls/CA_unknown/transcript",
        "/api/calls/CA_unknown/transcript?format=text",
        "/api/transcript/CA_unknown",
    ] {
        let (code, body) = get(&app, path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert!(
            body["error"].as_str().unwrap().contains("CA_unknown"),
            "{body}"
        );
    }
    let call = NewCall {
        call_sid: "CA_known".into(),
        started_at: 1,
        ..NewCall::default()
    };
    app.state.store.call_started(&call).await.unwrap();
    let (code, body) = get(&app, "/api/calls/CA_known/transcript?format=xml").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = get(&app, "/api/transcript/CA_known?format=json").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        json!({"call_sid": "CA_known", "turns": [], "tool_calls": [], "next_after": null})
    );
}

#[tokio::test]
async fn a_broken_database_never_breaks_the_call() {
    let db = TestDb::sqlite();
    let app = app_on(&db.url, None).await;
    // Someone drops the tables under the running server.
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    sqlx::raw_sql("DROP TABLE turns; DROP TABLE calls;")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let mut call = app.relay().await;
    call.setup("CA_broken").await;
    for prompt in ["Oi", "Tudo bem?", "Qual o horário de funcionamento?"] {
        call.prompt(prompt).await;
        assert_eq!(
            call.reply().await.text,
            voxrelay::llm::scripted::reply_to(prompt),
            "the caller still gets every reply"
        );
    }
    // The failures are counted and retried, and the server says the API is down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status: Value = reqwest::get(app.url("/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["store"]["writes"]["retried"].as_u64().unwrap() > 0 {
            assert_eq!(status["store"]["backend"], "sqlite");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed write: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = get(&app, "/api/calls").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "the call store is unavailable");
    // Another call at the same time is fine too.
    let mut other = app.relay().await;
    other.setup("CA_other").await;
    other.prompt("Olá").await;
    assert_eq!(
        other.reply().await.text,
        voxrelay::llm::scripted::reply_to("Olá")
    );
    call.prompt("Ainda aí?").await;
    assert_eq!(
        call.reply().await.text,
        voxrelay::llm::scripted::reply_to("Ainda aí?")
    );
}

#[tokio::test]
async fn the_offline_agent_books_an_appointment_into_the_api() {
    let app = app_on(&TestDb::sqlite().url, None).await;
    let mut call = app.relay().await;
    call.setup("CA_booking").await;
    for prompt in [
        "Quero agendar uma visita",
        "meu nome é ana souza",
        "24/11",
        "às 15h",
    ] {
        call.prompt(prompt).await;
        call.reply().await;
    }
    call.prompt("tchau").await;
    // The goodbye, then the agent ends the call.
    loop {
        let message = call.recv().await;
        if message["type"] == "end" {
            break;
        }
    }
    hang_up(call).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let detail = loop {
        let (_, body) = get(&app, "/api/calls/CA_booking").await;
        if body["ended_at"].is_string() {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never ended: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(detail["records"]["appointments"], 1, "{detail}");
    assert!(
        detail["handoff_data"]["reasonCode"].is_string(),
        "the end of the call is kept: {detail}"
    );

    let (code, body) = get(&app, "/api/appointments").await;
    assert_eq!(code, StatusCode::OK);
    let appointment = &body["appointments"][0];
    assert_eq!(appointment["call_sid"], "CA_booking");
    assert_eq!(appointment["name"], "Ana Souza");
    assert_eq!(appointment["caller_number"], "+5511999990000");
    assert!(appointment["preferred_day"].is_string(), "{appointment}");

    let (_, transcript) = get(&app, "/api/calls/CA_booking/transcript").await;
    let tools: Vec<(&str, bool)> = transcript["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["ok"] == true))
        .collect();
    assert!(
        tools.contains(&("schedule_appointment", true)),
        "{transcript}"
    );
    let booked = transcript["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "schedule_appointment")
        .unwrap();
    assert_eq!(booked["arguments"]["name"], "Ana Souza");
    assert_eq!(booked["seq"], 0);
}
