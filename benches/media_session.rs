//! Media Streams load benchmark: N concurrent calls through the real
//! `media::session::run` with the `openai-realtime` pipeline, on a 2-worker tokio
//! runtime, against a fake Realtime server on loopback (real WebSockets, in a
//! child process of its own so its CPU and memory are not counted) that answers
//! each call's greeting with a long reply (sent faster than real time, as Realtime
//! does). The Twilio side of each call is an
//! in-memory channel pair: 50 caller frames a second in, agent frames out.
//!
//! Run with `cargo bench --bench media_session` (optionally `-- 200 20 25`: calls,
//! call seconds, seconds of agent audio sent at the greeting). It prints:
//! - how late each outbound frame was against its real-time schedule (after the
//!   80 ms lead), over every frame of every call;
//! - CPU time per 20 ms frame handled (caller frames in plus agent frames out; the
//!   simulated Twilio side runs in this process too, so this is an upper bound);
//! - resident memory per call (process RSS with every call live, minus before);
//! - the per-frame cost of the session's outbound bookkeeping (`Playback`) alone;
//! - the vCPU time the hypervisor took during the run (steal), which stalls
//!   everything on a vCPU at once: read late frames against it;
//! - a probe thread's stalls: it sleeps 1 ms at a time at real-time priority (when
//!   `chrt` may raise it), so nothing in this machine but the hypervisor delays it;
//!   the episodes of late frames it shares with the probe are counted.
//!
//! `BENCH_GAPS=1` lists every frame more than 5 ms late on stderr, with when it was
//! written (seconds from the bench's start, which is printed in Unix time), so a
//! stall can be matched with a probe running beside the bench.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::channel::mpsc;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use voxrelay::agent::{AgentDeps, AgentSettings, NoObserver};
use voxrelay::media::playback::Playback;
use voxrelay::media::protocol::{Inbound, Media, MediaEvent, Outbound, Start, StartEvent};
use voxrelay::media::session::{self, MediaDeps};
use voxrelay::metrics::Metrics;
use voxrelay::tools::ToolRegistry;
use voxrelay::transport::Frame;

/// When the benchmark started, to place late frames in time (`BENCH_GAPS`).
static BENCH_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The allocator the `voxrelay` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Twilio side of a session as channels. Each message the session writes is
/// serialised to its JSON text as the server's WebSocket edge does, and stamped
/// then (where the real server would hand it to the socket), so the bench's own
/// reading task's wake-up is not counted as lateness.
struct Duplex {
    rx: mpsc::Receiver<Frame>,
    tx: mpsc::Sender<(Instant, String)>,
}

impl Stream for Duplex {
    type Item = Result<Frame, std::convert::Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx).map(|f| f.map(Ok))
    }
}

impl Sink<Outbound> for Duplex {
    type Error = mpsc::SendError;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.tx).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Outbound) -> Result<(), Self::Error> {
        let text = item.to_json();
        Pin::new(&mut self.tx).start_send((Instant::now(), text))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.tx).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.tx).poll_close(cx)
    }
}

/// A Realtime stand-in: after the greeting request, `seconds` of audio in 200 ms
/// deltas, then it reads (and ignores) until the client closes.
async fn fake_realtime(listener: tokio::net::TcpListener, seconds: u64) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            // A small read buffer, as the server's own sockets have: tungstenite's
            // 128 KiB default is zero-filled as it is used.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(8 * 1024);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            // session.update, then response.create.
            let mut seen = 0;
            while seen < 2 {
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => seen += 1,
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
            let chunk = base64::engine::general_purpose::STANDARD.encode([0x55u8; 1600]);
            let delta = serde_json::json!({"type": "response.output_audio.delta",
                "response_id": "r1", "item_id": "i1", "delta": chunk})
            .to_string();
            for _ in 0..seconds * 5 {
                if ws.send(Message::text(delta.clone())).await.is_err() {
                    return;
                }
            }
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
            }
        });
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of the process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// CPU time the hypervisor gave to other guests while this VM's vCPUs wanted to
/// run ("steal" in `/proc/stat`, all vCPUs together; 0 on bare metal). A vCPU that
/// is stolen stops every task on it, so late frames are read against this.
fn host_steal() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8)?.parse().ok())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct CallResult {
    /// Lateness of each outbound frame after the lead.
    late: Vec<Duration>,
    /// When each frame more than 5 ms late was written, and how late it was.
    late_at: Vec<(Instant, Duration)>,
    frames_out: u64,
}

/// A frame later than this counts against the target.
const LATE: Duration = Duration::from_millis(5);
/// A probe wake-up later than this is a stall of its vCPU.
const PROBE_STALL: Duration = Duration::from_millis(3);

/// What the stall probe saw: when it woke more than [`PROBE_STALL`] late, and by how
/// much; whether it ran at real-time priority.
struct ProbeResult {
    stalls: Vec<(Instant, Duration)>,
    realtime: bool,
}

/// A thread beside the benchmark that sleeps 1 ms at a time and records every
/// wake-up more than [`PROBE_STALL`] late. It asks for real-time priority
/// (`chrt -f 50`, which needs root): then nothing else in this machine can hold it
/// back, so a stall it sees is the hypervisor taking its vCPU.
fn start_probe(stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<ProbeResult> {
    std::thread::spawn(move || {
        let realtime = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|link| link.file_name()?.to_str().map(str::to_string))
            .and_then(|tid| {
                std::process::Command::new("chrt")
                    .args(["-f", "-p", "50", &tid])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .ok()
            })
            .is_some_and(|status| status.success());
        let mut stalls = Vec::new();
        let tick = Duration::from_millis(1);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let before = Instant::now();
            std::thread::sleep(tick);
            let woke = Instant::now();
            let over = woke.duration_since(before).saturating_sub(tick);
            if over > PROBE_STALL {
                stalls.push((woke, over));
            }
        }
        ProbeResult { stalls, realtime }
    })
}

/// Groups late frames into episodes (frames within 50 ms of each other) and counts
/// the episodes during which the probe was stalled too.
fn episodes(mut late_at: Vec<(Instant, Duration)>, probe: &ProbeResult) -> (usize, usize) {
    late_at.sort();
    let mut episodes: Vec<(Instant, Instant, Duration)> = Vec::new();
    for (at, late) in late_at {
        match episodes.last_mut() {
            Some((_, last, worst)) if at.duration_since(*last) < Duration::from_millis(50) => {
                *last = at;
                *worst = (*worst).max(late);
            }
            _ => episodes.push((at, at, late)),
        }
    }
    let margin = Duration::from_millis(20);
    let shared = episodes
        .iter()
        .filter(|(first, last, worst)| {
            let from = first.checked_sub(*worst + margin).unwrap_or(*first);
            let to = *last + margin;
            probe
                .stalls
                .iter()
                .any(|(woke, _)| *woke >= from && *woke <= to)
        })
        .count();
    (episodes.len(), shared)
}

async fn one_call(
    deps: MediaDeps,
    n: usize,
    seconds: u64,
    ready: Arc<tokio::sync::Barrier>,
    mut times: Vec<Instant>,
) -> CallResult {
    let (mut in_tx, in_rx) = mpsc::channel::<Frame>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<(Instant, String)>(64);
    let session = tokio::spawn(session::run(
        Duplex {
            rx: in_rx,
            tx: out_tx,
        },
        deps,
    ));
    let start = Inbound::Start(StartEvent {
        sequence_number: Some(1),
        stream_sid: format!("MZ{n}"),
        start: Start {
            call_sid: format!("CA{n}"),
            stream_sid: format!("MZ{n}"),
            ..Start::default()
        },
    });
    let _ = in_tx.send(Frame::Text(start.to_json())).await;
    let caller = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut media = MediaEvent {
            sequence_number: None,
            stream_sid: format!("MZ{n}"),
            media: Media::from_mulaw(&[0xFFu8; 160]),
        };
        for chunk in 0..seconds * 50 {
            tick.tick().await;
            media.media.chunk = Some(chunk + 1);
            let text = Inbound::Media(media.clone()).to_json();
            if in_tx.send(Frame::Text(text)).await.is_err() {
                break;
            }
        }
        let _ = in_tx
            .send(Frame::Text(r#"{"event":"stop","stop":{}}"#.into()))
            .await;
    });
    let mut marked_ready = false;
    while let Some((written, message)) = out_rx.next().await {
        if message.starts_with(r#"{"event":"media""#) {
            times.push(written);
            if !marked_ready && times.len() == 5 {
                // Signalled from another task: this loop must not stop reading.
                marked_ready = true;
                let ready = ready.clone();
                tokio::spawn(async move { ready.wait().await });
            }
        }
    }
    if !marked_ready {
        ready.wait().await;
    }
    let _ = caller.await;
    let _ = session.await;
    if std::env::var_os("BENCH_GAPS").is_some() {
        for (i, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            if gap > Duration::from_millis(30) {
                eprintln!("call {n}: gap of {gap:?} before frame {}", i + 1);
            }
        }
    }
    let lead = (session::LEAD.as_millis() / 20) as usize;
    let late = match times.first() {
        Some(&t0) => times
            .iter()
            .enumerate()
            .skip(lead)
            .map(|(i, t)| {
                t.saturating_duration_since(t0 + Duration::from_millis(20 * (i - lead) as u64))
            })
            .collect(),
        None => Vec::new(),
    };
    let mut late_at = Vec::new();
    for (i, l) in late.iter().enumerate() {
        if *l > LATE {
            late_at.push((times[i + lead], *l));
            if std::env::var_os("BENCH_GAPS").is_some() {
                let at = times[i + lead].duration_since(*BENCH_START.get_or_init(Instant::now));
                eprintln!("call {n}: frame {} late by {l:?} at {at:?}", i + lead);
            }
        }
    }
    CallResult {
        late_at,
        frames_out: times.len() as u64,
        late,
    }
}

fn playback_cost() -> (Duration, Duration) {
    let mut p = Playback::new(Duration::from_secs(60), session::LEAD);
    let chunk = [0x55u8; 1600];
    let mut samples = Vec::with_capacity(100_000);
    let base = Instant::now();
    for i in 0..100_000u64 {
        if i % 10 == 0 {
            p.push(1, &chunk);
        }
        let now = base + Duration::from_millis(20 * i);
        let t = Instant::now();
        let frame = p.pop_frame(now);
        let json = frame.map(|f| Outbound::media("MZ1", &f.frame).to_json());
        std::hint::black_box(json);
        samples.push(t.elapsed());
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Set in the child process that plays the Realtime server: seconds of reply.
const FAKE_UPSTREAM_ENV: &str = "VOXRELAY_BENCH_FAKE_REALTIME";

/// The child process: serves the fake Realtime API until its stdin closes.
fn run_fake_upstream(reply_seconds: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        tokio::spawn(fake_realtime(listener, reply_seconds));
        // The parent closes our stdin (or dies): stop.
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while tokio::io::AsyncReadExt::read(&mut stdin, &mut buf)
            .await
            .is_ok_and(|n| n > 0)
        {}
    });
}

/// Starts the fake Realtime server in a child process; returns it and its address.
fn spawn_fake_upstream(reply_seconds: u64) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(FAKE_UPSTREAM_ENV, reply_seconds.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the fake upstream");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("fake upstream address");
    (child, line.trim().to_string())
}

fn main() {
    if let Some(seconds) = std::env::var(FAKE_UPSTREAM_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // As the server does at startup (see `raise_open_files_limit`), so the
        // fake's own descriptor-table growth does not hold back its replies.
        let _ = voxrelay::server::raise_open_files_limit(2000);
        run_fake_upstream(seconds);
        return;
    }
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    BENCH_START.get_or_init(Instant::now);
    if std::env::var_os("BENCH_GAPS").is_some() {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!("bench started at {:.6} (Unix time)", epoch.as_secs_f64());
    }
    let calls = *args.first().unwrap_or(&200) as usize;
    let seconds = *args.get(1).unwrap_or(&20);
    let reply = *args.get(2).unwrap_or(&(seconds + 5));

    // The server's startup step: the descriptor table is grown once, before the
    // calls, so none of them waits for it to double (BENCHMARKS.md, issue 17).
    if let Err(e) = voxrelay::server::raise_open_files_limit(calls) {
        eprintln!("warning: cannot raise the open-file limit: {e}");
    }
    let (p50, p99) = playback_cost();
    println!("## Outbound bookkeeping per frame (Playback pop + media JSON), 100 000 frames\n");
    println!(
        "p50 {:.2} µs, p99 {:.2} µs\n",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );

    let runtime = voxrelay::server::runtime_builder()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let (mut upstream, addr) = spawn_fake_upstream(reply);
    runtime.block_on(async move {
        let mut vars = std::collections::HashMap::new();
        vars.insert("OPENAI_API_KEY".to_string(), "sk-bench".to_string());
        vars.insert("OPENAI_REALTIME_URL".to_string(), format!("ws://{addr}/v1/realtime"));
        vars.insert("LOG_DIR".to_string(), std::env::temp_dir().join("voxrelay-bench").display().to_string());
        let config = voxrelay::Config::from_vars(vars).expect("config");
        let deps = MediaDeps {
            agent: AgentDeps {
                llm: voxrelay::llm::from_config(&config.llm).expect("llm"),
                settings: Arc::new(AgentSettings::from_config(&config)),
                tools: Arc::new(ToolRegistry::from_config(&config)),
                metrics: Arc::new(Metrics::default()),
                observer: Arc::new(NoObserver),
            },
            config: Arc::new(config),
            stop: CancellationToken::new(),
            endings: Arc::new(voxrelay::media::Endings::new(
                voxrelay::store::in_memory().await,
            )),
            twilio: None,
            admission: None,
            live: Arc::default(),
        };
        // The load generator's own per-call record of send times (8 KB a call at
        // 10 s), made before the first memory reading: it is not the server's.
        let mut records: Vec<Vec<Instant>> = (0..calls)
            .map(|_| Vec::with_capacity(seconds as usize * 50))
            .collect();
        let rss_before = rss_kib();
        let cpu_before = cpu_time();
        let steal_before = host_steal();
        let stop_probe = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = start_probe(stop_probe.clone());
        let ready = Arc::new(tokio::sync::Barrier::new(calls + 1));
        let mut handles = Vec::new();
        for n in 0..calls {
            handles.push(tokio::spawn(one_call(
                deps.clone(),
                n,
                seconds,
                ready.clone(),
                records.pop().unwrap_or_default(),
            )));
            // Calls arrive over a second, not all in the same instant.
            tokio::time::sleep(Duration::from_millis(1000 / calls.max(1) as u64)).await;
        }
        ready.wait().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_live = rss_kib();
        let mut late = Vec::new();
        let mut late_at = Vec::new();
        let mut frames_out = 0;
        for h in handles {
            let r = h.await.expect("call task");
            frames_out += r.frames_out;
            late.extend(r.late);
            late_at.extend(r.late_at);
        }
        let cpu = cpu_time().saturating_sub(cpu_before);
        let steal = host_steal().saturating_sub(steal_before);
        stop_probe.store(true, std::sync::atomic::Ordering::Relaxed);
        let probe = probe.join().expect("probe thread");
        let (episodes, shared) = episodes(late_at, &probe);
        late.sort();
        let frames_in = calls as u64 * seconds * 50;
        let over_5ms = late.iter().filter(|l| **l > LATE).count();
        println!("## {calls} concurrent media calls, {seconds} s each, {reply} s of agent audio each, 2 worker threads\n");
        println!("| measure | value |\n|---|---:|");
        println!("| agent frames out (paced) | {frames_out} |");
        println!("| caller frames in | {frames_in} |");
        println!("| outbound lateness p50 | {:.2} ms |", percentile(&late, 0.5).as_secs_f64() * 1e3);
        println!("| outbound lateness p99 | {:.2} ms |", percentile(&late, 0.99).as_secs_f64() * 1e3);
        println!("| outbound lateness max | {:.2} ms |", late.last().copied().unwrap_or_default().as_secs_f64() * 1e3);
        println!("| frames later than 5 ms | {over_5ms} |");
        println!(
            "| CPU per frame (in + out, incl. the simulated Twilio side) | {:.1} µs |",
            cpu.as_secs_f64() * 1e6 / (frames_in + frames_out).max(1) as f64
        );
        println!(
            "| memory per live call (RSS) | {} KiB |",
            rss_live.saturating_sub(rss_before) / calls.max(1) as u64
        );
        println!("| vCPU time taken by the host during the run (steal) | {} ms |", steal.as_millis());
        println!(
            "| stalls of the probe thread ({}) over 3 ms | {} |",
            if probe.realtime { "real-time priority" } else { "normal priority: chrt failed" },
            probe.stalls.len()
        );
        println!("| episodes of frames later than 5 ms (within 50 ms of each other) | {episodes} |");
        println!("| … of which the probe was stalled at the same time | {shared} |");
    });
    drop(upstream.stdin.take());
    let _ = upstream.wait();
}
