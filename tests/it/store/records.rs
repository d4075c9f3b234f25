//! The store's contract, checked on SQLite in every run and on PostgreSQL when
//! `TEST_DATABASE_URL` is set: records round-trip, writes are idempotent, status
//! callbacks may come first, pages cover everything once, data outlives a reopen.

use voxrelay::store::{
    self, Appointment, CallEnd, NewCall, Recording, StatusUpdate, ToolCall, Turn,
};

use crate::support::db::TestDb;

use crate::support::db::on_both;

fn new_call(sid: &str, started_at: i64) -> NewCall {
    NewCall {
        call_sid: sid.into(),
        session_id: Some("VX1".into()),
        from: Some("+5511999990000".into()),
        to: Some("+5511333330000".into()),
        direction: Some("inbound".into()),
        mode: Some("relay".into()),
        agent: Some("default".into()),
        parameters: Some(r#"{"lead":"Ana"}"#.into()),
        started_at,
        owner: Some("replica-a".into()),
    }
}

fn turn(seq: i64, role: &str, text: &str) -> Turn {
    Turn {
        seq,
        role: role.into(),
        text: text.into(),
        started_at: 1_000 + seq,
        ended_at: 2_000 + seq,
        time_to_first_token_ms: (role == "agent").then_some(120),
        llm_first_token_ms: (role == "agent").then_some(110),
        ..Turn::default()
    }
}

on_both!(
    sqlite_records_round_trip,
    postgres_records_round_trip,
    records_round_trip
);
async fn records_round_trip(db: &TestDb) {
    let s = store::open(&db.url).await.expect("store opens");
    assert_eq!(s.backend(), db.backend());
    s.ping().await.unwrap();
    s.call_started(&new_call("CA1", 1_000)).await.unwrap();
    s.add_turn("CA1", &turn(0, "caller", "Oi")).await.unwrap();
    s.add_turn("CA1", &turn(1, "agent", "Olá, tudo bem? Posso ajudar?"))
        .await
        .unwrap();
    s.mark_interrupted("CA1", 1, "Olá, tudo bem?")
        .await
        .unwrap();
    // A retried write changes nothing.
    s.add_turn("CA1", &turn(0, "caller", "Oi")).await.unwrap();
    let tool = ToolCall {
        seq: 0,
        name: "schedule_appointment".into(),
        arguments: r#"{"name":"Ana"}"#.into(),
        result: "ok".into(),
        ok: true,
        started_at: 1_500,
        duration_ms: 12,
    };
    s.add_tool_call("CA1", &tool).await.unwrap();
    s.add_tool_call("CA1", &tool).await.unwrap();
    let appointment = Appointment {
        call_sid: "CA1".into(),
        caller_number: Some("+5511999990000".into()),
        name: "Ana".into(),
        email: Some("ana@example.com".into()),
        preferred_day: "2026-11-24".into(),
        preferred_time: Some("14:00".into()),
        notes: Some("primeira consulta".into()),
        created_at: 1_600,
        ..Appointment::default()
    };
    s.add_appointment(&appointment).await.unwrap();
    s.add_appointment(&appointment).await.unwrap();
    s.call_ended(
        "CA1",
        &CallEnd {
            status: "completed".into(),
            ended_at: 61_000,
            handoff_data: None,
            turns: 1,
            interrupts: 1,
            errors: 0,
        },
    )
    .await
    .unwrap();

    let detail = s
        .get_call("CA1")
        .await
        .unwrap()
        .expect("the call is stored");
    let call = &detail.call;
    assert_eq!(call.session_id.as_deref(), Some("VX1"));
    assert_eq!(call.from.as_deref(), Some("+5511999990000"));
    assert_eq!(call.mode.as_deref(), Some("relay"));
    assert_eq!(call.status, "completed");
    assert_eq!(call.started_at, 1_000);
    assert_eq!(call.ended_at, Some(61_000));
    assert_eq!(call.duration_ms, Some(60_000));
    assert_eq!((call.turns, call.interrupts, call.errors), (1, 1, 0));
    assert_eq!(call.recording, None);
    assert_eq!(
        (
            detail.transcript_turns,
            detail.tool_calls,
            detail.appointments
        ),
        (2, 1, 1)
    );

    let transcript = s.transcript("CA1").await.unwrap().unwrap();
    assert_eq!(transcript.turns.len(), 2);
    assert_eq!(transcript.turns[0], turn(0, "caller", "Oi"));
    let agent = &transcript.turns[1];
    assert!(agent.interrupted);
    assert_eq!(agent.heard.as_deref(), Some("Olá, tudo bem?"));
    assert_eq!(agent.text, "Olá, tudo bem? Posso ajudar?");
    assert_eq!(agent.time_to_first_token_ms, Some(120));
    assert_eq!(agent.llm_first_token_ms, Some(110));
    assert_eq!(transcript.tool_calls, vec![tool]);

    let page = s.list_appointments(10, None).await.unwrap();
    assert_eq!(page.appointments.len(), 1);
    let stored = &page.appointments[0];
    assert!(stored.id > 0);
    assert_eq!(
        Appointment {
            id: 0,
            ..stored.clone()
        },
        appointment
    );
    assert_eq!(page.next_before, None);

    assert!(s.get_call("CA_nope").await.unwrap().is_none());
    assert!(s.transcript("CA_nope").await.unwrap().is_none());
    s.close().await;
}

on_both!(
    sqlite_status_callbacks_may_come_first,
    postgres_status_callbacks_may_come_first,
    status_callbacks_may_come_first
);
async fn status_callbacks_may_come_first(db: &TestDb) {
    let s = store::open(&db.url).await.unwrap();
    let update = |status: &str, at: i64| StatusUpdate {
        call_sid: "CAout".into(),
        status: status.into(),
        from: Some("+5511333330000".into()),
        to: Some("+5511988887777".into()),
        direction: Some("outbound-api".into()),
        at,
        ..StatusUpdate::default()
    };
    // An outbound call: Twilio reports it before the session connects.
    s.upsert_status(&update("ringing", 500)).await.unwrap();
    let call = s.get_call("CAout").await.unwrap().unwrap().call;
    assert_eq!(call.status, "ringing");
    assert_eq!(call.started_at, 500);
    assert_eq!(call.direction.as_deref(), Some("outbound-api"));

    let mut connected = new_call("CAout", 900);
    connected.direction = None;
    s.call_started(&connected).await.unwrap();
    let call = s.get_call("CAout").await.unwrap().unwrap().call;
    assert_eq!(call.status, "in-progress");
    assert_eq!(call.started_at, 500, "the first sighting stays the start");
    assert_eq!(call.direction.as_deref(), Some("outbound-api"));
    assert_eq!(call.session_id.as_deref(), Some("VX1"));

    let mut done = update("completed", 70_000);
    done.duration_secs = Some(65);
    done.answered_by = Some("human".into());
    s.upsert_status(&done).await.unwrap();
    // A late, out-of-order callback does not reopen the call.
    s.upsert_status(&update("in-progress", 71_000))
        .await
        .unwrap();
    let call = s.get_call("CAout").await.unwrap().unwrap().call;
    assert_eq!(call.status, "completed");
    assert_eq!(call.twilio_duration_secs, Some(65));
    assert_eq!(call.answered_by.as_deref(), Some("human"));
    assert_eq!(call.answered_by_signal.as_deref(), Some("amd"));
    assert_eq!(call.answered_at, Some(70_000));
    // A later callback without AnsweredBy keeps who answered, and when.
    s.upsert_status(&update("completed", 72_000)).await.unwrap();
    let call = s.get_call("CAout").await.unwrap().unwrap().call;
    assert_eq!(call.answered_by_signal.as_deref(), Some("amd"));
    assert_eq!(call.answered_at, Some(70_000));
    // Our own detection, from the caller's first words, with its signal and time.
    s.set_answered_by(
        "CAheard",
        &voxrelay::store::Detection {
            what: "voicemail".into(),
            signal: "transcript".into(),
            at: 1_234,
        },
    )
    .await
    .unwrap();
    let call = s.get_call("CAheard").await.unwrap().unwrap().call;
    assert_eq!(call.answered_by.as_deref(), Some("voicemail"));
    assert_eq!(call.answered_by_signal.as_deref(), Some("transcript"));
    assert_eq!(call.answered_at, Some(1_234));

    // A dropped socket ends a session; Twilio reconnects it to the same call.
    let mut dropped_call = new_call("CAresumed", 100);
    dropped_call.direction = None;
    s.call_started(&dropped_call).await.unwrap();
    let end = |status: &str, at: i64| CallEnd {
        status: status.into(),
        ended_at: at,
        ..CallEnd::default()
    };
    s.call_ended("CAresumed", &end("failed", 5_100))
        .await
        .unwrap();
    s.call_started(&new_call("CAresumed", 6_000)).await.unwrap();
    let call = s.get_call("CAresumed").await.unwrap().unwrap().call;
    assert_eq!((call.status.as_str(), call.ended_at), ("in-progress", None));
    s.call_ended("CAresumed", &end("completed", 20_100))
        .await
        .unwrap();
    let call = s.get_call("CAresumed").await.unwrap().unwrap().call;
    assert_eq!(call.status, "completed");
    assert_eq!(call.duration_ms, Some(20_000), "from the first connect");

    let recording = Recording {
        sid: Some("RE1".into()),
        url: Some("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1".into()),
        duration_secs: Some(64),
        path: None,
    };
    s.set_recording("CAout", &recording).await.unwrap();
    s.set_recording_path("CAout", "recordings/CAout.wav")
        .await
        .unwrap();
    let call = s.get_call("CAout").await.unwrap().unwrap().call;
    assert_eq!(
        call.recording,
        Some(Recording {
            path: Some("recordings/CAout.wav".into()),
            ..recording.clone()
        })
    );

    // A recording callback for a call we never saw creates it.
    s.set_recording("CAunseen", &recording).await.unwrap();
    let call = s.get_call("CAunseen").await.unwrap().unwrap().call;
    assert_eq!(call.status, "unknown");
    assert_eq!(call.recording.unwrap().sid.as_deref(), Some("RE1"));
    s.close().await;
}

on_both!(
    sqlite_pages_cover_every_call_once,
    postgres_pages_cover_every_call_once,
    pages_cover_every_call_once
);
async fn pages_cover_every_call_once(db: &TestDb) {
    let s = store::open(&db.url).await.unwrap();
    // Seven calls, two pairs sharing a start time.
    let starts = [
        ("CA_a", 10),
        ("CA_b", 20),
        ("CA_c", 20),
        ("CA_d", 30),
        ("CA_e", 40),
        ("CA_f", 40),
        ("CA_g", 50),
    ];
    for (sid, at) in starts {
        s.call_started(&new_call(sid, at)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = s
            .list_calls(3, before.as_ref(), &Default::default())
            .await
            .unwrap();
        pages += 1;
        assert!(page.calls.len() <= 3);
        seen.extend(page.calls.iter().map(|c| c.call_sid.clone()));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ["CA_g", "CA_f", "CA_e", "CA_d", "CA_c", "CA_b", "CA_a"],
        "newest first, each once"
    );
    s.close().await;
}

on_both!(
    sqlite_records_outlive_a_reopen,
    postgres_records_outlive_a_reopen,
    records_outlive_a_reopen
);
async fn records_outlive_a_reopen(db: &TestDb) {
    let s = store::open(&db.url).await.unwrap();
    s.call_started(&new_call("CAkeep", 1)).await.unwrap();
    s.add_turn("CAkeep", &turn(0, "caller", "Alô"))
        .await
        .unwrap();
    s.close().await;
    drop(s);
    // Reopening applies no migration twice and finds everything.
    let s = store::open(&db.url).await.expect("reopens");
    let transcript = s.transcript("CAkeep").await.unwrap().unwrap();
    assert_eq!(transcript.turns, vec![turn(0, "caller", "Alô")]);
    s.close().await;
}

#[tokio::test]
async fn sqlite_file_and_folder_are_created_on_first_run() {
    let base = TestDb::sqlite();
    let file = base.url.strip_prefix("sqlite://").unwrap().to_string();
    let dir = format!("{file}.d/nested");
    let url = format!("sqlite://{dir}/voxrelay.db");
    let s = store::open(&url)
        .await
        .expect("creates the folders and the file");
    s.close().await;
    assert!(std::path::Path::new(&dir).join("voxrelay.db").is_file());
    let _ = std::fs::remove_dir_all(format!("{file}.d"));
}

#[tokio::test]
async fn unreachable_postgres_fails_to_open_with_a_clear_error() {
    // Port 9 (discard) on loopback: nothing listens there.
    let err = match store::open("postgres://voxrelay:secret@127.0.0.1:9/none").await {
        Ok(_) => panic!("opened a store on a closed port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("database error"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}
