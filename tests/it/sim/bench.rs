//! `voxrelay bench` on a tiny load: the fake LLM, the real server binary as a child
//! process and simulated calls produce every figure, and the server drains cleanly.

use std::time::Duration;

use voxrelay::bench::{BenchOptions, run};

/// Three calls of three turns, a second of saturation: every figure, quickly.
fn small_load() -> BenchOptions {
    BenchOptions {
        calls: vec![3],
        turns: 3,
        think: Duration::from_millis(20),
        saturate: Duration::from_secs(1),
        ..BenchOptions::default()
    }
}

/// Three media calls of two seconds.
fn small_media_load() -> voxrelay::bench::media::MediaBenchOptions {
    voxrelay::bench::media::MediaBenchOptions {
        calls: vec![3],
        seconds: 2,
        ..Default::default()
    }
}

/// The reports of a benchmark run, which must end by itself within a minute.
async fn finished<R>(run: impl std::future::Future<Output = Result<Vec<R>, String>>) -> Vec<R> {
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the benchmark stops by itself")
        .expect("the benchmark runs")
}

#[tokio::test]
async fn a_small_benchmark_measures_everything_and_stops_by_itself() {
    let options = BenchOptions {
        server_exe: Some(env!("CARGO_BIN_EXE_voxrelay").into()),
        ..small_load()
    };
    let reports = finished(run(&options)).await;
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.errors, 0, "{}", r.markdown());
    assert!(r.clean_exit, "the server exits 0 after SIGTERM");
    // Every turn (3 calls x 3 turns) gave a stamped first token.
    assert_eq!(r.added.count, 9, "{}", r.markdown());
    assert!(r.added.p50 > Duration::ZERO && r.added.max < Duration::from_secs(1));
    // Two ordinary turns per call had their time to first token taken; it includes
    // the fake LLM's own 20 ms.
    assert_eq!(r.ttft.count, 6);
    assert!(r.ttft.p50 >= Duration::from_millis(20));
    assert_eq!(r.interrupt_to_silence.count, 3);
    assert!(r.turns_per_sec > 0.0);
    assert!(r.baseline.rss > 0 && r.live.rss > 0 && r.peak_rss >= r.live.rss);
    // The server's store kept every call record at this load (starts, turns, ends).
    let writes = r.store_writes.expect("the server reports its store writes");
    assert!(writes.written >= 3 * 3, "{writes:?}");
    assert_eq!(writes.dropped, 0, "{writes:?}");
    let table = r.markdown();
    assert!(
        table.contains("| turns per second at saturation |"),
        "{table}"
    );
}

/// `voxrelay bench media` on a tiny load: real server, fake callers and fake
/// Realtime; every cue frame gets its reply, every reply reaches the caller paced,
/// and the server's CPU and memory are read.
#[tokio::test]
async fn a_small_media_benchmark_measures_both_ends() {
    use voxrelay::bench::media::{MediaBenchOptions, run};
    let options = MediaBenchOptions {
        server_exe: Some(env!("CARGO_BIN_EXE_voxrelay").into()),
        ..small_media_load()
    };
    let reports = finished(run(&options)).await;
    let r = &reports[0];
    assert_eq!(r.errors, 0, "{}", r.markdown());
    assert_eq!(r.caller_frames, 3 * 2 * 50, "{}", r.markdown());
    // Two cue frames per call, each answered with 25 frames that all arrive.
    assert_eq!(r.upstream_connections, 3);
    assert_eq!(r.replies, 6, "{}", r.markdown());
    assert_eq!(r.agent_frames, 6 * 25, "{}", r.markdown());
    assert_eq!(r.reply_latency.count, 6);
    assert!(
        r.reply_latency.max < Duration::from_millis(500),
        "{}",
        r.markdown()
    );
    // Our server marks its audio every 200 ms; the callers echoed every mark.
    assert!(r.marks >= 6, "{}", r.markdown());
    assert!(r.idle.rss > 0 && r.live.rss > 0);
}

/// The LLM client keeps one HTTP/1.1 connection for a call's finished replies, and
/// closes it when a reply is interrupted (which is what stops the LLM).
#[tokio::test]
async fn finished_replies_reuse_the_llm_connection_and_interrupts_close_it() {
    use voxrelay::bench::fake_llm::FakeLlm;

    let llm = FakeLlm::start(0).await.unwrap();
    let base = llm.base_url();
    let app = crate::support::spawn_app(&[
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-test-key"),
        ("OPENAI_BASE_URL", base.as_str()),
    ])
    .await;
    let mut call = app.relay().await;
    call.setup("CA_reuse").await;
    for turn in 0..5 {
        call.prompt(&format!("Pergunta {turn}")).await;
        let reply = call.reply().await;
        assert_eq!(reply.tokens.len(), 12, "{reply:?}");
    }
    // Give a background drain a moment (the body normally ends with the reply).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        llm.connections(),
        1,
        "five finished replies, one connection"
    );

    // A long reply, interrupted: its connection is closed, the next turn opens one.
    call.prompt(&format!(
        "Conte tudo {}",
        voxrelay::bench::fake_llm::LONG_MARKER
    ))
    .await;
    let first = call.recv().await;
    assert_eq!(first["type"], "text");
    call.interrupt("t").await;
    call.expect_silence(Duration::from_millis(200)).await;
    call.prompt("E agora?").await;
    assert_eq!(call.reply().await.tokens.len(), 12);
    assert_eq!(llm.connections(), 2);
}

/// The lines `voxrelay-floor` writes to stderr after its address.
type FloorLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// Starts `voxrelay-floor` with `args` on a free port; returns the process, its
/// `ws://` address and the rest of its stderr (kept open, so that what it prints
/// on SIGTERM can be read).
async fn start_floor(args: &[&str]) -> (tokio::process::Child, String, FloorLines) {
    use tokio::io::AsyncBufReadExt;
    let mut floor = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxrelay-floor"))
        .args(["--port", "0"])
        .args(args)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(floor.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the floor server starts")
        .unwrap()
        .unwrap();
    let address = line
        .strip_prefix("floor server on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (floor, address, lines)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// `voxrelay-floor`, the bare server the per-turn CPU is compared with,
/// answers the same load as ours: every turn gets its reply, stamped first token
/// included, an interrupt stops the reply, and it is driven through
/// `--target`/`--pid` like any other server.
#[tokio::test]
async fn the_floor_server_answers_the_benchmark_load() {
    let llm_port = free_port();
    let (floor, target, _stderr) = start_floor(&["--llm-port", &llm_port.to_string()]).await;
    let options = BenchOptions {
        target: Some(target),
        pid: floor.id(),
        llm_port,
        ..small_load()
    };
    let reports = finished(run(&options)).await;
    let r = &reports[0];
    assert_eq!(r.errors, 0, "{}", r.markdown());
    assert_eq!(r.added.count, 9, "{}", r.markdown());
    assert_eq!(r.interrupt_to_silence.count, 3, "{}", r.markdown());
    assert_eq!(r.tokens_after_interrupt, 0, "{}", r.markdown());
    assert!(r.turns_per_sec > 0.0, "{}", r.markdown());
    assert!(r.cpu_per_turn > Duration::ZERO, "{}", r.markdown());
}

/// With `--record`, the floor keeps every turn in SQLite as ours does: after the
/// load and a SIGTERM, the file holds one caller row per prompt it answered and
/// the agent's words of every reply that began.
#[tokio::test]
async fn the_recording_floor_keeps_every_turn() {
    let llm_port = free_port();
    let url = crate::support::temp_sqlite_url();
    let file = url.strip_prefix("sqlite://").unwrap().to_string();
    let (mut floor, target, mut stderr) =
        start_floor(&["--llm-port", &llm_port.to_string(), "--record", &file]).await;
    let options = BenchOptions {
        target: Some(target),
        pid: floor.id(),
        llm_port,
        ..small_load()
    };
    let r = &finished(run(&options)).await[0];
    assert_eq!(r.errors, 0, "{}", r.markdown());
    let pid = floor.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(killed.unwrap().success());
    let mut turns = None;
    while let Ok(Some(line)) = stderr.next_line().await {
        if let Some(n) = line.strip_prefix("turns: ") {
            turns = n.parse::<i64>().ok();
        }
        assert!(!line.contains("failed"), "{line}");
    }
    let turns = turns.expect("the floor prints its turns");
    assert!(floor.wait().await.unwrap().success());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (callers, agents, empty): (i64, i64, i64) = sqlx::query_as(
        "SELECT SUM(role = 'caller'), SUM(role = 'agent'), SUM(text = '') FROM turns",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(callers, turns, "a caller row per prompt");
    // Interrupted replies may end before their first words.
    let interrupts = r.interrupt_to_silence.count as i64;
    assert!(
        agents >= turns - interrupts && agents <= turns,
        "{agents} of {turns}"
    );
    assert_eq!(empty, 0);
}

/// The small media load's report against `voxrelay-floor --realtime-port …` with
/// `flags` added.
async fn media_floor_load(flags: &[&str]) -> voxrelay::bench::media::MediaReport {
    use voxrelay::bench::media::{MediaBenchOptions, run};
    let realtime_port = free_port();
    let port = realtime_port.to_string();
    let args: Vec<&str> = ["--realtime-port", port.as_str()]
        .into_iter()
        .chain(flags.iter().copied())
        .collect();
    let (floor, target, _stderr) = start_floor(&args).await;
    let options = MediaBenchOptions {
        target: Some(target),
        pid: floor.id(),
        realtime_port,
        ..small_media_load()
    };
    finished(run(&options)).await.remove(0)
}

/// The Media Streams floor bridges the media load's callers to the fake Realtime:
/// every cue gets its reply and every delta reaches the caller.
#[tokio::test]
async fn the_media_floor_server_bridges_the_media_load() {
    let r = &media_floor_load(&[]).await;
    assert_eq!(r.errors, 0, "{}", r.markdown());
    assert_eq!(r.upstream_connections, 3, "{}", r.markdown());
    assert_eq!(r.replies, 6, "{}", r.markdown());
    assert_eq!(r.agent_frames, 6 * 25, "{}", r.markdown());
    assert!(r.cpu > Duration::ZERO, "{}", r.markdown());
}

/// With `--paced`, the media floor paces the same audio as our session does: every
/// delta still reaches the caller, now with a mark after every tenth frame, which
/// the caller echoes.
#[tokio::test]
async fn the_paced_media_floor_delivers_every_frame_with_its_marks() {
    let r = &media_floor_load(&["--paced"]).await;
    assert_eq!(r.errors, 0, "{}", r.markdown());
    assert_eq!(r.replies, 6, "{}", r.markdown());
    assert_eq!(r.agent_frames, 6 * 25, "{}", r.markdown());
    assert_eq!(
        r.marks,
        3 * 5,
        "a mark per ten frames of each call: {}",
        r.markdown()
    );
}
