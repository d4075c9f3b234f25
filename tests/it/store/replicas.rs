//! Call state shared through the store, with several servers in this process on one
//! database (SQLite, and PostgreSQL when `TEST_DATABASE_URL` is set): a call that
//! drops on one replica resumes on another with its conversation; a socket that
//! drops comes back with its token (applicationReconnect) once, never after a clean
//! close; a reply is in the store while it is spoken; a dead replica's calls are
//! closed by a live one. The real multi-process test behind HAProxy, with
//! `kill -9`, is in `cluster.rs`.

use std::time::Duration;

use voxrelay::config::ReplicasConfig;
use voxrelay::store::{self, NewCall, Store, Turn};

use crate::support::db::{TestDb, on_both};
use crate::support::fake_llm::{FakeLlm, Reply};
use crate::support::signed::{
    PUBLIC, TOKEN, sign, signed_relay_via, signed_socket_path_with, ws_connect,
};
use crate::support::{TestApp, spawn_app};

/// A replica: signatures checked, the fake LLM, the shared database `db`.
async fn replica(db: &str, llm: &FakeLlm, extra: &[(&str, &str)]) -> TestApp {
    let base = llm.base_url();
    let mut vars = vec![
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_BASE_URL", base.as_str()),
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("PUBLIC_URL", PUBLIC),
        ("DATABASE_URL", db),
    ];
    vars.extend_from_slice(extra);
    spawn_app(&vars).await
}

async fn turns(store: &dyn Store, sid: &str) -> Vec<(i64, String, String, bool)> {
    store
        .transcript(sid)
        .await
        .unwrap()
        .map(|t| {
            t.turns
                .into_iter()
                .map(|t| (t.seq, t.role, t.text, t.partial))
                .collect()
        })
        .unwrap_or_default()
}

on_both!(
    sqlite_a_dropped_call_resumes_on_another_replica,
    postgres_a_dropped_call_resumes_on_another_replica,
    a_dropped_call_resumes_on_another_replica
);
async fn a_dropped_call_resumes_on_another_replica(db: &TestDb) {
    let llm = FakeLlm::start().await;
    let a = replica(&db.url, &llm, &[]).await;
    let b = replica(&db.url, &llm, &[]).await;
    let sid = "CA00000000000000000000000000000001";
    llm.push(Reply::tokens(&["Claro, ", "Ana."]));
    llm.push(Reply::tokens(&["Continuando."]));

    let mut call = signed_relay_via(&a, "/incoming-call", &[("CallSid", sid)]).await;
    call.setup(sid).await;
    call.prompt("Sou a Ana e preciso de ajuda").await;
    assert_eq!(call.reply().await.text, "Claro, Ana.");
    drop(call);
    a.wait_active_calls(0).await;

    // Twilio's 64105 callback and the new socket land on the other replica.
    let mut call = signed_relay_via(
        &b,
        "/twiml/action",
        &[
            ("CallSid", sid),
            ("CallStatus", "in-progress"),
            ("ErrorCode", "64105"),
        ],
    )
    .await;
    call.setup(sid).await;
    call.prompt("Você ainda está aí?").await;
    assert_eq!(call.reply().await.text, "Continuando.");
    let requests = llm.wait_requests(2).await;
    let history = requests[1].messages();
    assert_eq!(
        history[history.len() - 3..],
        [
            (
                "user".to_string(),
                "Sou a Ana e preciso de ajuda".to_string()
            ),
            ("assistant".into(), "Claro, Ana.".into()),
            ("user".into(), "Você ainda está aí?".into()),
        ],
        "the conversation goes on from the store: {history:?}"
    );
    drop(call);
    b.wait_active_calls(0).await;
    assert!(b.state.recorder.flush(Duration::from_secs(5)).await);
    let stored = turns(&*b.state.store, sid).await;
    let numbered: Vec<(i64, &str)> = stored.iter().map(|t| (t.0, t.2.as_str())).collect();
    assert_eq!(
        numbered,
        [
            (0, "Sou a Ana e preciso de ajuda"),
            (1, "Claro, Ana."),
            (2, "Você ainda está aí?"),
            (3, "Continuando.")
        ]
    );
    assert!(stored.iter().all(|t| !t.3), "no partial turn is left");
}

#[tokio::test]
async fn application_reconnect_lets_a_dropped_socket_back_once() {
    let llm = FakeLlm::start().await;
    let db = crate::support::temp_sqlite_url();
    let extra = [("RELAY_APPLICATION_RECONNECT", "true")];
    let a = replica(&db, &llm, &extra).await;
    let b = replica(&db, &llm, &extra).await;
    let sid = "CA00000000000000000000000000000002";
    llm.push(Reply::tokens(&["Oi, ", "Bia."]));
    llm.push(Reply::tokens(&["Sigo aqui."]));

    let (path, url) = signed_socket_path_with(
        &a,
        "/incoming-call",
        "ConversationRelay",
        &[("CallSid", sid)],
    )
    .await;
    let signature = sign(TOKEN, &url, &[]);
    let mut call = ws_connect(&a, &path, Some(&signature), &[]).await.unwrap();
    call.setup(sid).await;
    call.prompt("Aqui é a Bia").await;
    assert_eq!(call.reply().await.text, "Oi, Bia.");
    // While the socket lives, its URL is a replay on any replica.
    assert_eq!(
        ws_connect(&b, &path, Some(&signature), &[]).await.err(),
        Some(403)
    );
    // The socket drops without a close frame; Twilio reconnects to the same URL,
    // here through the other replica, and replays a setup.
    drop(call);
    a.wait_active_calls(0).await;
    let mut back = ws_connect(&b, &path, Some(&signature), &[])
        .await
        .expect("the dropped call's socket comes back");
    assert_eq!(
        ws_connect(&a, &path, Some(&signature), &[]).await.err(),
        Some(403),
        "one socket at a time"
    );
    back.setup(sid).await;
    back.prompt("Ainda me ouve?").await;
    assert_eq!(back.reply().await.text, "Sigo aqui.");
    let history = llm.wait_requests(2).await[1].messages();
    assert!(
        history.contains(&("assistant".into(), "Oi, Bia.".into())),
        "{history:?}"
    );
    // A clean close ends the call's use of the URL for good.
    back.ws().close(None).await.unwrap();
    b.wait_active_calls(0).await;
    for app in [&a, &b] {
        assert_eq!(
            ws_connect(app, &path, Some(&signature), &[]).await.err(),
            Some(403)
        );
    }
}

#[tokio::test]
async fn the_relay_twiml_asks_for_application_reconnect_when_set() {
    let llm = FakeLlm::start().await;
    let db = crate::support::temp_sqlite_url();
    let on = replica(&db, &llm, &[("RELAY_APPLICATION_RECONNECT", "true")]).await;
    let off = replica(&db, &llm, &[]).await;
    for (app, expected) in [(&on, Some("true")), (&off, None)] {
        let params = [("CallSid", "CA00000000000000000000000000000003")];
        let res = reqwest::Client::new()
            .post(app.url("/incoming-call"))
            .header(
                "x-twilio-signature",
                sign(TOKEN, &format!("{PUBLIC}/incoming-call"), &params),
            )
            .form(&params)
            .send()
            .await
            .unwrap();
        let xml = res.text().await.unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let relay = doc
            .descendants()
            .find(|n| n.has_tag_name("ConversationRelay"))
            .unwrap();
        assert_eq!(relay.attribute("applicationReconnect"), expected, "{xml}");
    }
}

#[tokio::test]
async fn a_reply_is_in_the_store_while_it_is_spoken() {
    let llm = FakeLlm::start().await;
    let db = crate::support::temp_sqlite_url();
    let app = replica(&db, &llm, &[]).await;
    let sid = "CA00000000000000000000000000000004";
    let words: Vec<String> = (0..30).map(|i| format!("palavra{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    llm.push(Reply::slow_tokens(&words, 20));
    let mut call = signed_relay_via(&app, "/incoming-call", &[("CallSid", sid)]).await;
    call.setup(sid).await;
    call.prompt("Fale bastante").await;
    // Half way through the reply (600 ms of tokens), the store already holds
    // what went out, marked partial.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mid = turns(&*app.state.store, sid).await;
    assert_eq!(mid.len(), 2, "{mid:?}");
    let (seq, role, text, partial) = &mid[1];
    assert_eq!((*seq, role.as_str(), *partial), (1, "agent", true));
    assert!(
        text.starts_with("palavra0 palavra1 ") && text.len() < words.concat().len(),
        "{text:?}"
    );
    let reply = call.reply().await;
    assert_eq!(reply.text, words.concat());
    assert!(app.state.recorder.flush(Duration::from_secs(5)).await);
    let done = turns(&*app.state.store, sid).await;
    assert_eq!(done[1].2, words.concat());
    assert!(!done[1].3, "completed at its end");
}

on_both!(
    sqlite_shared_state_is_once_only_and_dead_replicas_are_reconciled,
    postgres_shared_state_is_once_only_and_dead_replicas_are_reconciled,
    shared_state_is_once_only_and_dead_replicas_are_reconciled
);
async fn shared_state_is_once_only_and_dead_replicas_are_reconciled(db: &TestDb) {
    let s = store::open(&db.url).await.unwrap();
    let t = store::open(&db.url).await.unwrap();
    // Insert-if-absent and take-once hold across two connections pools.
    assert!(
        s.state_insert("token", "id1", "open:a", 2_000, 1_000)
            .await
            .unwrap()
    );
    assert!(
        !t.state_insert("token", "id1", "open:b", 2_000, 1_000)
            .await
            .unwrap()
    );
    assert!(
        t.state_insert("token", "id1", "open:b", 9_000, 2_001)
            .await
            .unwrap(),
        "expired entries are free"
    );
    s.state_put("media-ending", "CA1", "{}", 5_000)
        .await
        .unwrap();
    assert_eq!(
        t.state_get("media-ending", "CA1", 4_000)
            .await
            .unwrap()
            .as_deref(),
        Some("{}")
    );
    assert_eq!(
        t.state_take("media-ending", "CA1", 4_000)
            .await
            .unwrap()
            .as_deref(),
        Some("{}")
    );
    assert_eq!(
        s.state_take("media-ending", "CA1", 4_000).await.unwrap(),
        None
    );
    assert_eq!(s.state_purge(10_000).await.unwrap(), 1);

    // A partial reply is completed once; a complete turn is never written over.
    let partial = Turn {
        seq: 1,
        role: "agent".into(),
        text: "Olá".into(),
        started_at: 1_000,
        ended_at: 1_100,
        partial: true,
        ..Turn::default()
    };
    s.add_turn("CAlive", &partial).await.unwrap();
    let done = Turn {
        text: "Olá, tudo bem?".into(),
        ended_at: 1_500,
        partial: false,
        ..partial.clone()
    };
    s.add_turn("CAlive", &done).await.unwrap();
    s.add_turn(
        "CAlive",
        &Turn {
            text: "outra".into(),
            ..done.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        turns(&*s, "CAlive").await,
        [(1, "agent".into(), "Olá, tudo bem?".into(), false)]
    );

    // Two replicas own a call each; one stops beating.
    let call = |sid: &str, owner: &str| NewCall {
        call_sid: sid.into(),
        started_at: 1_000,
        owner: Some(owner.into()),
        ..NewCall::default()
    };
    s.call_started(&call("CAdead", "replica-dead"))
        .await
        .unwrap();
    s.call_started(&call("CAlive", "replica-live"))
        .await
        .unwrap();
    s.add_turn(
        "CAdead",
        &Turn {
            seq: 0,
            role: "caller".into(),
            text: "Oi".into(),
            started_at: 1_200,
            ended_at: 1_300,
            ..Turn::default()
        },
    )
    .await
    .unwrap();
    s.add_turn(
        "CAdead",
        &Turn {
            seq: 1,
            role: "agent".into(),
            text: "Olá, em que".into(),
            started_at: 1_300,
            ended_at: 1_900,
            partial: true,
            ..Turn::default()
        },
    )
    .await
    .unwrap();
    s.heartbeat("replica-dead", 0, 1_000).await.unwrap();
    let config = |id: &str| ReplicasConfig {
        id: id.into(),
        expected: 2,
        stale_after: Duration::from_secs(10),
    };
    // The live replica beats now; the dead one last beat long ago.
    voxrelay::replica::beat(&*t, &config("replica-live"), 0).await;
    let dead = s.get_call("CAdead").await.unwrap().unwrap().call;
    assert_eq!(dead.status, "interrupted");
    assert_eq!(
        (dead.ended_at, dead.duration_ms, dead.turns),
        (Some(1_900), Some(900), 1)
    );
    let live = s.get_call("CAlive").await.unwrap().unwrap().call;
    assert_eq!(
        live.status, "in-progress",
        "a live replica's call stays open"
    );
    // A Twilio status callback after that keeps what we know.
    s.upsert_status(&store::StatusUpdate {
        call_sid: "CAdead".into(),
        status: "completed".into(),
        at: 5_000,
        ..store::StatusUpdate::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_call("CAdead").await.unwrap().unwrap().call.status,
        "interrupted"
    );
    // The call's socket comes back elsewhere: it is live again, owned there.
    t.call_started(&call("CAdead", "replica-live"))
        .await
        .unwrap();
    voxrelay::replica::beat(&*t, &config("replica-live"), 0).await;
    assert_eq!(
        s.get_call("CAdead").await.unwrap().unwrap().call.status,
        "in-progress"
    );
    s.close().await;
    t.close().await;
}

/// `POST /api/calls/{sid}/end` without Twilio's REST API: the session carrying
/// the call sends `end`, here or on another replica (PostgreSQL `NOTIFY`).
async fn end_from_the_api(app: &TestApp, sid: &str) -> (u16, serde_json::Value) {
    let token = app.state.config.api_token.expose().to_string();
    let res = reqwest::Client::new()
        .post(app.url(&format!("/api/calls/{sid}/end")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

on_both!(
    sqlite_the_api_ends_a_live_call_on_whichever_replica_carries_it,
    postgres_the_api_ends_a_live_call_on_whichever_replica_carries_it,
    the_api_ends_a_live_call_on_whichever_replica_carries_it
);
async fn the_api_ends_a_live_call_on_whichever_replica_carries_it(db: &TestDb) {
    let llm = FakeLlm::start().await;
    let token = ("API_TOKEN", "replicas-test-api-token-0123456789");
    let a = replica(&db.url, &llm, &[token]).await;
    let b = replica(&db.url, &llm, &[token]).await;
    // SQLite serves one replica: there the call is ended where it lives.
    let other = if db.backend() == "postgres" { &b } else { &a };
    let sid = "CA00000000000000000000000000000005";
    let mut call = signed_relay_via(&a, "/incoming-call", &[("CallSid", sid)]).await;
    call.setup(sid).await;
    // The call is live in the store once its setup is handled.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while a.state.store.get_call(sid).await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = end_from_the_api(other, sid).await;
    assert_eq!(
        (status, &body["status"]),
        (202, &serde_json::json!("ending")),
        "{body}"
    );
    let end = call.recv().await;
    assert_eq!(end["type"], "end", "{end}");
    let handoff: serde_json::Value =
        serde_json::from_str(end["handoffData"].as_str().unwrap()).unwrap();
    assert_eq!(handoff["reasonCode"], "api-end");
    // Twilio closes the socket after `end`, as it does when the agent ends a call.
    call.ws().close(None).await.unwrap();
    a.wait_active_calls(0).await;
    assert!(a.state.recorder.flush(Duration::from_secs(5)).await);
    let stored = a.state.store.get_call(sid).await.unwrap().unwrap().call;
    assert_eq!(stored.status, "completed");
    // A call that is not live anywhere: 404.
    let (status, _) = end_from_the_api(other, sid).await;
    assert_eq!(status, 404);
}
