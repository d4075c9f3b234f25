//! Three real `voxrelay` processes on one PostgreSQL database behind a real HAProxy,
//! with Twilio's side played through the balancer: a replica is `kill -9`ed in the
//! middle of a reply and the call goes on, with its whole conversation, on another;
//! one is drained (SIGTERM) while calls go on elsewhere.
//!
//! Needs `haproxy` (`scripts/setup.sh` installs it) and `TEST_DATABASE_URL`; where
//! either is missing the tests say so and skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::support::db::TestDb;
use crate::support::fake_llm::{FakeLlm, Reply};
use crate::support::signed::{PUBLIC, TOKEN, sign, ws_connect_url};
use crate::support::{RelayClient, free_port, init_logs};

const API_TOKEN: &str = "cluster-test-api-token-0123456789";

/// One `voxrelay serve` process.
struct Replica {
    name: String,
    port: u16,
    child: Child,
}

impl Replica {
    async fn start(name: &str, database_url: &str, llm: &FakeLlm, dir: &Path) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_voxrelay"))
            .arg("serve")
            .env_clear()
            .current_dir(dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("LLM_PROVIDER", "openai")
            .env("OPENAI_BASE_URL", llm.base_url())
            .env("OPENAI_API_KEY", "sk-test")
            .env("DATABASE_URL", database_url)
            .env("TWILIO_AUTH_TOKEN", TOKEN)
            .env("PUBLIC_URL", PUBLIC)
            .env("API_TOKEN", API_TOKEN)
            .env(
                "REPLICAS",
                if database_url.starts_with("sqlite:") {
                    "1"
                } else {
                    "3"
                },
            )
            .env("REPLICA_ID", name)
            .env("REPLICA_STALE_SECS", "2")
            .env("DRAIN_TIMEOUT_SECS", "20")
            .env("LOG_DIR", dir.join(format!("logs-{name}")))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("voxrelay starts");
        let replica = Self {
            name: name.to_string(),
            port,
            child,
        };
        wait_healthy(&format!("http://127.0.0.1:{port}/health")).await;
        replica
    }

    fn pid(&self) -> String {
        self.child.id().expect("running").to_string()
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// HAProxy in front of the replicas: round robin, no stickiness, health checks.
struct Balancer {
    port: u16,
    _child: Child,
}

impl Balancer {
    async fn start(replicas: &[&Replica], dir: &Path) -> Self {
        let port = free_port();
        let mut config = format!(
            "global\n  maxconn 2000\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  \
             timeout server 30s\n  timeout tunnel 1h\n  retries 3\n  option redispatch\n\
             frontend calls\n  bind 127.0.0.1:{port}\n  default_backend voxrelay\n\
             backend voxrelay\n  balance roundrobin\n  option httpchk GET /ready\n  \
             http-check expect status 200\n"
        );
        for r in replicas {
            config.push_str(&format!(
                "  server {} 127.0.0.1:{} check inter 200ms fall 1 rise 2\n",
                r.name, r.port
            ));
        }
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = Command::new(haproxy().expect("checked by the caller"))
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy starts");
        wait_healthy(&format!("http://127.0.0.1:{port}/health")).await;
        Self {
            port,
            _child: child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A signed webhook through the balancer, as Twilio posts it; the WebSocket
    /// path its `<ConversationRelay url>` names, and that URL.
    async fn webhook(&self, path: &str, params: &[(&str, &str)]) -> (String, String) {
        let signature = sign(TOKEN, &format!("{PUBLIC}{path}"), params);
        let res = reqwest::Client::new()
            .post(self.url(path))
            .header("x-twilio-signature", signature)
            .form(params)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let url = crate::support::twiml_url(&res.text().await.unwrap(), "ConversationRelay");
        let socket_path = url
            .strip_prefix("wss://voz.example.com")
            .unwrap()
            .to_string();
        (socket_path, url)
    }

    /// Twilio's socket for `url` (as signed), through the balancer.
    async fn socket(&self, path: &str, url: &str) -> RelayClient {
        ws_connect_url(
            &format!("ws://127.0.0.1:{}{path}", self.port),
            &sign(TOKEN, url, &[]),
        )
        .await
        .expect("Twilio's handshake is upgraded")
    }
}

async fn wait_healthy(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(res) = reqwest::get(url).await
            && res.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `haproxy` binary, if this machine has one.
fn haproxy() -> Option<PathBuf> {
    [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// What the cluster tests need, or `None` with a notice.
async fn prerequisites(test: &str) -> Option<TestDb> {
    init_logs();
    if haproxy().is_none() {
        eprintln!("skipping {test}: haproxy is not installed (scripts/setup.sh installs it)");
        return None;
    }
    TestDb::postgres(test).await
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cluster-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The replica (by `REPLICA_ID`) whose socket carries `sid`, from the store.
async fn owner(db: &str, sid: &str) -> String {
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    let (owner,): (Option<String>,) = sqlx::query_as("SELECT owner FROM calls WHERE call_sid = $1")
        .bind(sid)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let owner = owner.expect("the call has an owner");
    owner.rsplit_once('-').unwrap().0.to_string()
}

async fn api(balancer: &Balancer, path: &str) -> Value {
    let res = reqwest::Client::new()
        .get(balancer.url(path))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_call_survives_kill_9_of_its_replica() {
    let Some(db) = prerequisites("a_call_survives_kill_9_of_its_replica").await else {
        return;
    };
    let dir = temp_dir("kill");
    let llm = FakeLlm::start().await;
    let mut replicas = Vec::new();
    for name in ["r0", "r1", "r2"] {
        replicas.push(Replica::start(name, &db.url, &llm, &dir).await);
    }
    let balancer = Balancer::start(&replicas.iter().collect::<Vec<_>>(), &dir).await;
    let sid = "CA0000000000000000000000000000c001";
    let long: Vec<String> = (0..40).map(|i| format!("parte{i} ")).collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    llm.push(Reply::tokens(&["Olá, ", "Ana!"]));
    llm.push(Reply::slow_tokens(&long, 50));
    llm.push(Reply::tokens(&["Como ", "eu ", "dizia."]));

    let (path, url) = balancer
        .webhook("/incoming-call", &[("CallSid", sid)])
        .await;
    let mut call = balancer.socket(&path, &url).await;
    call.setup(sid).await;
    call.prompt("Sou a Ana").await;
    assert_eq!(call.reply().await.text, "Olá, Ana!");
    call.prompt("Me explique tudo").await;
    let mut heard = String::new();
    for _ in 0..10 {
        let token = call.recv().await;
        heard.push_str(token["token"].as_str().unwrap());
    }
    // Another call on the same replica, which nobody will pick up.
    let victim = owner(&db.url, sid).await;
    let dead = replicas.iter().position(|r| r.name == victim).unwrap();
    let orphan = "CA0000000000000000000000000000c002";
    let (orphan_path, orphan_url) = balancer
        .webhook("/incoming-call", &[("CallSid", orphan)])
        .await;
    let mut orphan_socket = ws_connect_url(
        &format!("ws://127.0.0.1:{}{orphan_path}", replicas[dead].port),
        &sign(TOKEN, &orphan_url, &[]),
    )
    .await
    .unwrap();
    orphan_socket.setup(orphan).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(owner(&db.url, orphan).await, victim);
    // Kill the replica carrying the call in the middle of that reply.
    replicas[dead].signal("-KILL");
    let killed_at = Instant::now();
    while call.recv_within(Duration::from_secs(5)).await.is_some() {}

    // Twilio's 64105 callback and the new socket, through the balancer.
    let (path, url) = balancer
        .webhook(
            "/twiml/action",
            &[
                ("CallSid", sid),
                ("CallStatus", "in-progress"),
                ("ErrorCode", "64105"),
            ],
        )
        .await;
    let mut call = balancer.socket(&path, &url).await;
    call.setup(sid).await;
    call.prompt("Continue").await;
    let first = call.recv().await;
    let speaking_again = killed_at.elapsed();
    eprintln!(
        "cluster: from kill -9 to the call speaking again on another replica: {:.0} ms \
         (health checks every 200 ms; includes the 64105 webhook and the new socket)",
        speaking_again.as_secs_f64() * 1000.0
    );
    let rest = call.reply().await.text;
    assert_eq!(
        format!("{}{rest}", first["token"].as_str().unwrap()),
        "Como eu dizia."
    );
    let new_owner = owner(&db.url, sid).await;
    assert_ne!(new_owner, victim, "another replica carries the call");

    // The model saw the whole conversation, the cut reply as far as it went out.
    let requests = llm.wait_requests(3).await;
    let history = requests[2].messages();
    let said: Vec<(&str, &str)> = history
        .iter()
        .skip(2)
        .map(|(r, t)| (r.as_str(), t.as_str()))
        .collect();
    assert_eq!(said[0], ("user", "Sou a Ana"));
    assert_eq!(said[1], ("assistant", "Olá, Ana!"));
    assert_eq!(said[2], ("user", "Me explique tudo"));
    assert_eq!(said[3].0, "assistant");
    let kept = said[3].1;
    assert!(
        long.concat().starts_with(kept) && kept.starts_with("parte0 "),
        "{kept:?}"
    );
    assert_eq!(said[4], ("user", "Continue"));
    let lost_tokens = heard.len().saturating_sub(kept.len()) as f64 / "parteNN ".len() as f64;
    eprintln!(
        "cluster: the caller had heard {} chars of the cut reply, the store kept {} \
         (about {:.0} ms of tokens lost at 50 ms a token)",
        heard.len(),
        kept.len(),
        lost_tokens.max(0.0) * 50.0
    );

    // The transcript, read through any replica, holds every completed turn.
    drop(call);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let transcript = api(&balancer, &format!("/api/calls/{sid}/transcript")).await;
    let turns: Vec<(String, String, bool)> = transcript["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["role"].as_str().unwrap().to_string(),
                t["text"].as_str().unwrap().to_string(),
                t["partial"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(turns.len(), 6, "{turns:?}");
    assert_eq!(turns[1], ("agent".into(), "Olá, Ana!".into(), false));
    assert_eq!(turns[3], ("agent".into(), kept.to_string(), true));
    assert_eq!(turns[5], ("agent".into(), "Como eu dizia.".into(), false));

    // A call the dead replica carried alone is closed by a live one.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let call = api(&balancer, &format!("/api/calls/{orphan}")).await;
        if call["status"] == "interrupted" {
            assert!(call["ended_at"].is_string(), "{call}");
            break;
        }
        assert!(Instant::now() < deadline, "never reconciled: {call}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(orphan_socket);
}

#[tokio::test]
async fn a_draining_replica_finishes_its_calls_while_the_others_take_new_ones() {
    let Some(db) =
        prerequisites("a_draining_replica_finishes_its_calls_while_the_others_take_new_ones").await
    else {
        return;
    };
    let dir = temp_dir("drain");
    let llm = FakeLlm::start().await;
    let mut replicas = Vec::new();
    for name in ["d0", "d1", "d2"] {
        replicas.push(Replica::start(name, &db.url, &llm, &dir).await);
    }
    let balancer = Balancer::start(&replicas.iter().collect::<Vec<_>>(), &dir).await;
    for text in ["Um.", "Dois.", "Três.", "Quatro.", "Cinco."] {
        llm.push(Reply::tokens(&[text]));
    }

    // Call A through the balancer; call B straight to another replica.
    let a_sid = "CA0000000000000000000000000000d001";
    let (path, url) = balancer
        .webhook("/incoming-call", &[("CallSid", a_sid)])
        .await;
    let mut a = balancer.socket(&path, &url).await;
    a.setup(a_sid).await;
    a.prompt("Oi").await;
    assert_eq!(a.reply().await.text, "Um.");
    let a_owner = owner(&db.url, a_sid).await;
    let drained = replicas.iter().position(|r| r.name != a_owner).unwrap();
    let b_sid = "CA0000000000000000000000000000d002";
    let (path, url) = balancer
        .webhook("/incoming-call", &[("CallSid", b_sid)])
        .await;
    let mut b = ws_connect_url(
        &format!("ws://127.0.0.1:{}{path}", replicas[drained].port),
        &sign(TOKEN, &url, &[]),
    )
    .await
    .unwrap();
    b.setup(b_sid).await;
    b.prompt("Olá").await;
    assert_eq!(b.reply().await.text, "Dois.");

    // SIGTERM: the replica stops taking calls (its /ready says so, the balancer
    // stops routing to it) but carries B to its end.
    replicas[drained].signal("-TERM");
    let ready = format!("http://127.0.0.1:{}/ready", replicas[drained].port);
    let deadline = Instant::now() + Duration::from_secs(5);
    while reqwest::get(&ready).await.map(|r| r.status()).ok()
        != Some(reqwest::StatusCode::SERVICE_UNAVAILABLE)
    {
        assert!(Instant::now() < deadline, "/ready never said draining");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c_sid = "CA0000000000000000000000000000d003";
    let (path, url) = balancer
        .webhook("/incoming-call", &[("CallSid", c_sid)])
        .await;
    let mut c = balancer.socket(&path, &url).await;
    c.setup(c_sid).await;
    c.prompt("Bom dia").await;
    assert_eq!(c.reply().await.text, "Três.");
    assert_ne!(owner(&db.url, c_sid).await, replicas[drained].name);
    b.prompt("Ainda aí?").await;
    assert_eq!(
        b.reply().await.text,
        "Quatro.",
        "the draining replica's call goes on"
    );
    a.prompt("E agora?").await;
    assert_eq!(a.reply().await.text, "Cinco.");

    // B hangs up: the drained replica exits cleanly, its records written.
    b.ws().close(None).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), replicas[drained].child.wait())
        .await
        .expect("the drained replica exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let transcript = api(&balancer, &format!("/api/calls/{b_sid}/transcript")).await;
    assert_eq!(
        transcript["turns"].as_array().unwrap().len(),
        4,
        "{transcript}"
    );
    let call = api(&balancer, &format!("/api/calls/{b_sid}")).await;
    assert_eq!(call["status"], "completed", "{call}");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM replicas WHERE id LIKE $1")
        .bind(format!("{}-%", replicas[drained].name))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(left, 0, "a replica that stopped cleanly retires");
    drop((a, c));
}

/// One replica on SQLite: `kill -9` in the middle of many calls, then a restart on
/// the same file. Every turn a caller had heard to its end is in the store, each
/// cut reply as far as it had gone out, and the calls are closed as interrupted.
#[tokio::test]
async fn kill_9_on_sqlite_loses_no_completed_turn() {
    init_logs();
    let dir = temp_dir("sqlite-kill");
    let db = format!("sqlite://{}", dir.join("voxrelay.db").display());
    let llm = FakeLlm::start().await;
    const CALLS: usize = 10;
    for _ in 0..CALLS {
        llm.push(Reply::tokens(&["Primeira ", "resposta."]));
    }
    let slow: Vec<String> = (0..60).map(|i| format!("w{i:02} ")).collect();
    let slow: Vec<&str> = slow.iter().map(String::as_str).collect();
    for _ in 0..CALLS {
        llm.push(Reply::slow_tokens(&slow, 20));
    }
    let replica = Replica::start("solo", &db, &llm, &dir).await;
    let base = format!("127.0.0.1:{}", replica.port);
    let mut calls = Vec::new();
    for n in 0..CALLS {
        let sid = format!("CA{n:032x}");
        let params = [("CallSid", sid.as_str())];
        let signature = sign(TOKEN, &format!("{PUBLIC}/incoming-call"), &params);
        let res = reqwest::Client::new()
            .post(format!("http://{base}/incoming-call"))
            .header("x-twilio-signature", signature)
            .form(&params)
            .send()
            .await
            .unwrap();
        let url = crate::support::twiml_url(&res.text().await.unwrap(), "ConversationRelay");
        let path = url.strip_prefix("wss://voz.example.com").unwrap();
        let mut call = ws_connect_url(&format!("ws://{base}{path}"), &sign(TOKEN, &url, &[]))
            .await
            .unwrap();
        call.setup(&sid).await;
        call.prompt("Primeira pergunta").await;
        assert_eq!(call.reply().await.text, "Primeira resposta.");
        calls.push((sid, call));
    }
    for (_, call) in calls.iter_mut() {
        call.prompt("Segunda pergunta").await;
    }
    // Each call hears the start of its second reply…
    for (_, call) in calls.iter_mut() {
        call.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // … and the server dies.
    replica.signal("-KILL");
    drop(replica);
    drop(calls);

    let restarted = Replica::start("solo", &db, &llm, &dir).await;
    let store = voxrelay::store::open(&db).await.unwrap();
    for n in 0..CALLS {
        let sid = format!("CA{n:032x}");
        let turns = store.transcript(&sid).await.unwrap().unwrap().turns;
        let said: Vec<(&str, &str, bool)> = turns
            .iter()
            .map(|t| (t.role.as_str(), t.text.as_str(), t.partial))
            .collect();
        assert_eq!(said.len(), 4, "{sid}: {said:?}");
        assert_eq!(
            said[..3],
            [
                ("caller", "Primeira pergunta", false),
                ("agent", "Primeira resposta.", false),
                ("caller", "Segunda pergunta", false),
            ]
        );
        assert!(
            said[3].2 && slow.concat().starts_with(said[3].1) && !said[3].1.is_empty(),
            "{said:?}"
        );
    }
    // The calls the dead process left are closed once its heartbeat is stale.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open = store
            .list_calls(50, None, &Default::default())
            .await
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.status == "in-progress")
            .count();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} calls still in progress");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let call = store
        .get_call(&format!("CA{:032x}", 0))
        .await
        .unwrap()
        .unwrap()
        .call;
    assert_eq!((call.status.as_str(), call.turns), ("interrupted", 2));
    store.close().await;
    drop(restarted);
}
