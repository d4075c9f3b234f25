//! The recorder's batching on a real database (SQLite in every run, PostgreSQL when
//! `TEST_DATABASE_URL` is set): a burst of queued records lands in one transaction,
//! complete, in order and numbered; a burst whose transaction fails part-way is
//! written record by record, every good record once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use voxrelay::agent::{
    AppointmentRecord, CallInfo, CallObserver, CallSummary, Speaker, ToolCallRecord, TurnRecord,
};
use voxrelay::recorder::{RETRIES, Recorder};
use voxrelay::store::{self, Store};

use crate::support::db::TestDb;

use crate::support::db::on_both;

/// Runs `sql` on the test database through a connection of its own.
async fn raw(db: &TestDb, sql: &str) {
    if db.backend() == "postgres" {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
        sqlx::raw_sql(sql).execute(&pool).await.expect("raw sql");
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("connect");
        sqlx::raw_sql(sql).execute(&pool).await.expect("raw sql");
        pool.close().await;
    }
}

fn call(sid: &str, direction: &str) -> CallInfo {
    CallInfo {
        call_sid: sid.into(),
        session_id: Some("VX1".into()),
        from: format!("+55119{sid}"),
        to: "+5511333330000".into(),
        direction: Some(direction.into()),
        mode: "relay".into(),
        agent: "default".into(),
        parameters: Default::default(),
        may_resume: false,
        resumed: false,
    }
}

fn turn(seq: u32, text: &str) -> TurnRecord {
    TurnRecord {
        seq,
        speaker: if seq % 2 == 0 {
            Speaker::Caller
        } else {
            Speaker::Agent
        },
        text: text.into(),
        started_at: SystemTime::now(),
        ended_at: SystemTime::now(),
        time_to_first_token_ms: None,
        llm_first_token_ms: None,
        partial: false,
    }
}

fn tool(name: &str) -> ToolCallRecord {
    ToolCallRecord {
        name: name.into(),
        arguments: "{}".into(),
        result: "ok".into(),
        ok: true,
        started_at: SystemTime::now(),
        duration_ms: 3,
    }
}

fn booking(name: &str) -> AppointmentRecord {
    AppointmentRecord {
        name: name.into(),
        preferred_day: "2026-11-24".into(),
        ..AppointmentRecord::default()
    }
}

fn ended() -> CallSummary {
    CallSummary {
        status: "completed".into(),
        turns: 2,
        ..CallSummary::default()
    }
}

/// The call's turns as (seq, text, heard) and tool calls as (seq, name).
async fn transcript(
    store: &Arc<dyn Store>,
    sid: &str,
) -> (Vec<(i64, String, Option<String>)>, Vec<(i64, String)>) {
    let t = store
        .transcript(sid)
        .await
        .expect("transcript reads")
        .unwrap_or_else(|| panic!("{sid} is stored"));
    (
        t.turns
            .into_iter()
            .map(|t| (t.seq, t.text, t.heard))
            .collect(),
        t.tool_calls.into_iter().map(|t| (t.seq, t.name)).collect(),
    )
}

/// (call SID, seq, name, caller number) of every appointment, oldest first.
async fn appointments(store: &Arc<dyn Store>) -> Vec<(String, i64, String, Option<String>)> {
    let page = store.list_appointments(100, None).await.expect("list");
    let mut all: Vec<_> = page
        .appointments
        .into_iter()
        .map(|a| (a.call_sid, a.seq, a.name, a.caller_number))
        .collect();
    all.reverse();
    all
}

on_both!(
    sqlite_a_burst_is_written_in_one_transaction,
    postgres_a_burst_is_written_in_one_transaction,
    a_burst_is_written_in_one_transaction
);
async fn a_burst_is_written_in_one_transaction(db: &TestDb) {
    let store = store::open(&db.url).await.expect("store opens");
    let recorder = Recorder::start(store.clone());
    // All queued before the writer runs (this test's runtime has one thread): one
    // burst, interleaved across three calls as live calls interleave.
    let mut queued = 0;
    for sid in ["CA1", "CA2", "CA3"] {
        recorder.call_started(&call(sid, "inbound"));
        queued += 1;
    }
    for sid in ["CA1", "CA2", "CA3"] {
        recorder.turn(sid, &turn(0, "Oi"));
        recorder.turn(sid, &turn(1, "Olá! Em que posso ajudar?"));
        recorder.turn_interrupted(sid, 1, "Olá!");
        recorder.tool_call(sid, &tool("check_calendar"));
        queued += 4;
    }
    for sid in ["CA1", "CA2", "CA3"] {
        recorder.tool_call(sid, &tool("schedule_appointment"));
        recorder.appointment(sid, &booking(sid));
        recorder.call_ended(sid, &ended());
        queued += 3;
    }
    // CA1 reconnects (Twilio redials a dropped socket into the same call) within the
    // same burst: its numbering goes on.
    recorder.call_started(&call("CA1", "inbound"));
    recorder.tool_call("CA1", &tool("again"));
    recorder.appointment("CA1", &booking("CA1 again"));
    queued += 3;
    assert_eq!(recorder.counts().pending, queued);
    assert!(recorder.flush(Duration::from_secs(10)).await);

    let counts = recorder.counts();
    assert_eq!(
        (
            counts.written,
            counts.pending,
            counts.failed,
            counts.retried,
            counts.batches
        ),
        (queued, 0, 0, 0, 1),
        "{counts:?}"
    );
    for sid in ["CA1", "CA2", "CA3"] {
        let (turns, tools) = transcript(&store, sid).await;
        assert_eq!(
            turns,
            [
                (0, "Oi".to_string(), None),
                (
                    1,
                    "Olá! Em que posso ajudar?".to_string(),
                    Some("Olá!".to_string())
                )
            ],
            "{sid}"
        );
        let mut expected = vec![
            (0, "check_calendar".to_string()),
            (1, "schedule_appointment".to_string()),
        ];
        if sid == "CA1" {
            expected.push((2, "again".to_string()));
        }
        assert_eq!(tools, expected, "{sid}");
    }
    let detail = store.get_call("CA2").await.unwrap().unwrap();
    assert_eq!(detail.call.status, "completed");
    // CA1 is live again.
    let detail = store.get_call("CA1").await.unwrap().unwrap();
    assert_eq!(detail.call.status, "in-progress");
    let party = |sid: &str| Some(format!("+55119{sid}"));
    assert_eq!(
        appointments(&store).await,
        [
            ("CA1".into(), 0, "CA1".into(), party("CA1")),
            ("CA2".into(), 0, "CA2".into(), party("CA2")),
            ("CA3".into(), 0, "CA3".into(), party("CA3")),
            ("CA1".into(), 1, "CA1 again".into(), party("CA1")),
        ]
    );

    // A lone record later is written on its own, and numbered after the burst.
    recorder.tool_call("CA1", &tool("later"));
    assert!(recorder.flush(Duration::from_secs(10)).await);
    let counts = recorder.counts();
    assert_eq!((counts.written, counts.batches), (queued + 1, 1));
    let (_, tools) = transcript(&store, "CA1").await;
    assert_eq!(tools.last(), Some(&(3, "later".to_string())));
    store.close().await;
}

/// A trigger that rejects one turn's text, as a constraint would.
const POISON_SQLITE: &str = "CREATE TRIGGER poison BEFORE INSERT ON turns \
     WHEN NEW.text = 'veneno' BEGIN SELECT RAISE(ABORT, 'poisoned turn'); END;";
const POISON_POSTGRES: &str = "CREATE FUNCTION poison() RETURNS trigger AS $$ \
     BEGIN IF NEW.text = 'veneno' THEN RAISE EXCEPTION 'poisoned turn'; END IF; \
     RETURN NEW; END $$ LANGUAGE plpgsql; \
     CREATE TRIGGER poison BEFORE INSERT ON turns FOR EACH ROW EXECUTE FUNCTION poison();";

on_both!(
    sqlite_a_failed_batch_is_written_record_by_record,
    postgres_a_failed_batch_is_written_record_by_record,
    a_failed_batch_is_written_record_by_record
);
async fn a_failed_batch_is_written_record_by_record(db: &TestDb) {
    let store = store::open(&db.url).await.expect("store opens");
    let poison = if db.backend() == "postgres" {
        POISON_POSTGRES
    } else {
        POISON_SQLITE
    };
    raw(db, poison).await;
    let recorder = Recorder::start_with(store.clone(), 256, Duration::from_millis(1));
    recorder.call_started(&call("CA1", "inbound"));
    recorder.turn("CA1", &turn(0, "Oi"));
    recorder.tool_call("CA1", &tool("check_calendar"));
    // CA2's start record was lost: its rows are made by its first records, inside
    // the transaction that rolls back. The store must not believe they exist.
    recorder.turn("CA2", &turn(0, "Alô"));
    recorder.appointment("CA2", &booking("Bia"));
    // Part-way through the burst: this write fails, every time.
    recorder.turn("CA1", &turn(1, "veneno"));
    recorder.turn("CA2", &turn(1, "Pois não?"));
    recorder.tool_call("CA1", &tool("schedule_appointment"));
    recorder.appointment("CA1", &booking("Ana"));
    recorder.turn("CA1", &turn(2, "Obrigada"));
    recorder.call_ended("CA1", &ended());
    assert!(recorder.flush(Duration::from_secs(10)).await);

    let counts = recorder.counts();
    assert_eq!(
        (
            counts.written,
            counts.failed,
            counts.retried,
            counts.pending,
            counts.batches
        ),
        (10, 1, u64::from(RETRIES), 0, 0),
        "{counts:?}"
    );
    let (turns, tools) = transcript(&store, "CA1").await;
    let texts: Vec<(i64, &str)> = turns.iter().map(|t| (t.0, t.1.as_str())).collect();
    assert_eq!(texts, [(0, "Oi"), (2, "Obrigada")]);
    assert_eq!(
        tools,
        [
            (0, "check_calendar".to_string()),
            (1, "schedule_appointment".to_string())
        ]
    );
    let (turns, _) = transcript(&store, "CA2").await;
    let texts: Vec<(i64, &str)> = turns.iter().map(|t| (t.0, t.1.as_str())).collect();
    assert_eq!(texts, [(0, "Alô"), (1, "Pois não?")]);
    // Each appointment once, numbered as in the failed transaction.
    assert_eq!(
        appointments(&store).await,
        [
            ("CA2".into(), 0, "Bia".into(), None),
            ("CA1".into(), 0, "Ana".into(), Some("+55119CA1".into())),
        ]
    );
    assert_eq!(
        store.get_call("CA1").await.unwrap().unwrap().call.status,
        "completed"
    );

    // The next burst (no poison) goes through in one transaction again.
    recorder.call_started(&call("CA3", "inbound"));
    recorder.turn("CA3", &turn(0, "Oi"));
    recorder.tool_call("CA3", &tool("check_calendar"));
    assert!(recorder.flush(Duration::from_secs(10)).await);
    let counts = recorder.counts();
    assert_eq!((counts.written, counts.batches), (13, 1), "{counts:?}");
    assert_eq!(transcript(&store, "CA3").await.1.len(), 1);
    store.close().await;
}

on_both!(
    sqlite_a_later_session_appends_to_the_transcript,
    postgres_a_later_session_appends_to_the_transcript,
    a_later_session_appends_to_the_transcript
);
/// A second session of a call that did not resume it (a reconnect after a
/// restart, or anyone claiming the SID) numbers its turns from 0 again: the store
/// keeps the first session's turns and numbers, and appends the second's after them.
async fn a_later_session_appends_to_the_transcript(db: &TestDb) {
    let store = store::open(&db.url).await.expect("store opens");
    let recorder = Recorder::start(store.clone());
    recorder.call_started(&call("CA1", "inbound"));
    recorder.turn("CA1", &turn(0, "Meu CPF é 123"));
    recorder.turn("CA1", &turn(1, "Anotado."));
    recorder.turn_interrupted("CA1", 1, "Anot");
    recorder.call_ended("CA1", &ended());
    assert!(recorder.flush(Duration::from_secs(10)).await);

    let mut intruder = call("CA1", "inbound");
    intruder.from = "+5511000000000".into();
    recorder.call_started(&intruder);
    recorder.turn("CA1", &turn(0, "Qual é meu CPF?"));
    recorder.turn("CA1", &turn(1, "Não sei."));
    recorder.turn_interrupted("CA1", 1, "Não");
    recorder.call_ended("CA1", &ended());
    assert!(recorder.flush(Duration::from_secs(10)).await);

    let (turns, _) = transcript(&store, "CA1").await;
    assert_eq!(
        turns,
        [
            (0, "Meu CPF é 123".to_string(), None),
            (1, "Anotado.".to_string(), Some("Anot".to_string())),
            (2, "Qual é meu CPF?".to_string(), None),
            (3, "Não sei.".to_string(), Some("Não".to_string())),
        ]
    );
    let detail = store.get_call("CA1").await.unwrap().unwrap();
    assert_eq!(detail.call.from.as_deref(), Some("+55119CA1"));
}
