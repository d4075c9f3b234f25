//! `voxrelay bench`: the load benchmark. One command, loopback only, stops by itself.
//!
//! For each call count N it starts a fake OpenAI-compatible LLM with a fixed token
//! schedule ([`fake_llm`]), the real server as a child process ([`server`]), and N
//! simulated Twilio ConversationRelay calls ([`calls`]), then reports:
//!
//! - server-added latency: the LLM writes a reply's first token → that token
//!   arrives at the caller as `text` (p50, p99, max);
//! - interrupt-to-silence: the caller sends `interrupt` → the last token of that
//!   reply arrives (p50, p99);
//! - turns per second at saturation (every call replies back to back);
//! - the server's peak RSS and RSS per live call.
//!
//! BENCHMARKS.md describes the method and holds the figures.
//!
//! May import `server` (the child process it measures), `sim` (its callers) and
//! `relay`'s protocol types (the order is checked by `.ci/layers`).

pub mod calls;
pub mod fake_llm;
pub mod fake_realtime;
mod flags;
pub mod floor;
mod floor_media;
mod floor_records;
pub mod media;
pub mod server;

use std::path::PathBuf;
use std::time::Duration;

use calls::{LatencyPlan, Samples};
use fake_llm::{FakeLlm, Mode};
use flags::Flags;
use server::{ServerProcess, StoreWrites, Usage};

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Concurrent call counts, one run each.
    pub calls: Vec<usize>,
    /// Turns per call in the conversation phase (one of them is interrupted).
    pub turns: usize,
    /// Mean pause between a reply's end and the caller's next line.
    pub think: Duration,
    /// How long to hold saturation.
    pub saturate: Duration,
    /// The `voxrelay` binary to run as the server (default: this one).
    pub server_exe: Option<PathBuf>,
    /// Whether the fake LLM ends streams with `data: [DONE]` as OpenAI does.
    pub sse_done: bool,
    /// The server's `DATABASE_URL` (default: a SQLite file in its temp folder).
    pub database_url: Option<String>,
    /// A running server's ConversationRelay WebSocket URL instead of starting ours.
    pub target: Option<String>,
    /// That server's process id, for its CPU and memory.
    pub pid: Option<u32>,
    /// The fake LLM's port (0: any; give one for a server started beforehand).
    pub llm_port: u16,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            calls: vec![50, 200, 1000],
            turns: 6,
            think: Duration::from_millis(1000),
            saturate: Duration::from_secs(5),
            server_exe: None,
            sse_done: true,
            database_url: None,
            target: None,
            pid: None,
            llm_port: 0,
        }
    }
}

pub const USAGE: &str = "\
voxrelay bench: load benchmark on loopback (fake LLM, real server, simulated calls)

USAGE:
    voxrelay bench [OPTIONS]
    voxrelay bench media [OPTIONS]   Media Streams load (see `voxrelay bench media --help`)

OPTIONS:
    --calls N[,N...]    concurrent calls, one run each [default: 50,200,1000]
    --turns N           turns per call in the conversation phase [default: 6]
    --think-ms MS       mean pause between turns [default: 1000]
    --saturate-secs S   length of the saturation phase [default: 5]
    --server PATH       voxrelay binary to test [default: this one]
    --database-url URL  the server's DATABASE_URL, e.g. postgres://… (use an empty
                        database) [default: a SQLite file in a temp folder]
    --no-done           the fake LLM ends streams without `data: [DONE]` (lets the
                        server reuse its HTTP/1.1 connection; OpenAI sends it)
    --target URL        a running server's ws://… ConversationRelay URL instead of
                        starting ours (needs --pid; its base URL for the LLM must
                        be http://127.0.0.1:<--llm-port>/v1)
    --pid PID           that server's process, for its CPU time and memory
    --llm-port P        the fake LLM's port on 127.0.0.1 [default: any free]

Build with --release for meaningful figures. Results go to stdout as Markdown.";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BenchArgsError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{flag} wants {what}, got {value:?}")]
    Bad {
        flag: String,
        what: &'static str,
        value: String,
    },
    #[error("unknown option {0:?}")]
    Unknown(String),
    #[error("help requested")]
    Help,
}

impl BenchOptions {
    pub fn from_args(args: &[String]) -> Result<Self, BenchArgsError> {
        let mut options = Self::default();
        let mut flags = Flags::new(args);
        while let Some(flag) = flags.next_flag() {
            match flag {
                "--calls" => options.calls = flags.calls(flag)?,
                "--turns" => options.turns = flags.positive(flag, "a positive number")? as usize,
                "--think-ms" => {
                    options.think = Duration::from_millis(flags.positive(flag, "milliseconds")?);
                }
                "--saturate-secs" => {
                    options.saturate = Duration::from_secs(flags.positive(flag, "seconds")?);
                }
                "--server" => options.server_exe = Some(PathBuf::from(flags.value(flag)?)),
                "--no-done" => options.sse_done = false,
                "--database-url" => options.database_url = Some(flags.value(flag)?),
                "--target" => options.target = Some(flags.ws_url(flag)?),
                "--pid" => options.pid = Some(flags.positive(flag, "a process id")? as u32),
                "--llm-port" => options.llm_port = flags.port(flag)?,
                "-h" | "--help" => return Err(BenchArgsError::Help),
                other => return Err(BenchArgsError::Unknown(other.to_string())),
            }
        }
        flags::target_with_pid(&options.target, options.pid)?;
        Ok(options)
    }
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Self {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// The results for one call count.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub calls: usize,
    /// Server-added latency in the conversation phase.
    pub added: Percentiles,
    /// Caller-side time to first token (includes the fake LLM's 20 ms).
    pub ttft: Percentiles,
    pub interrupt_to_silence: Percentiles,
    /// Tokens that arrived after an interrupt, over all interrupts.
    pub tokens_after_interrupt: u64,
    pub turns_per_sec: f64,
    /// Server-added latency while saturated (queueing included).
    pub added_saturated: Percentiles,
    /// Server CPU time per turn while saturated.
    pub cpu_per_turn: Duration,
    pub baseline: Usage,
    /// With every call live, after the conversation phase.
    pub live: Usage,
    pub peak_rss: u64,
    pub errors: u64,
    /// The server exited 0 after SIGTERM at the end.
    pub clean_exit: bool,
    /// Connections the server opened to the fake LLM over the whole run.
    pub llm_connections: u64,
    /// The store writer's counters once saturation ends (records are dropped,
    /// not waited for, when its queue is full).
    pub store_writes: Option<StoreWrites>,
}

/// Runs every configured call count and prints a Markdown report to stdout.
pub async fn run(options: &BenchOptions) -> Result<Vec<BenchReport>, String> {
    let largest = options.calls.iter().copied().max().unwrap_or(0);
    server::raise_open_files(largest * 2);
    let exe = server::server_exe(options.server_exe.as_deref())?;
    // One fake LLM for every call count: a server started beforehand (`--target`)
    // keeps talking to the same port.
    let llm = FakeLlm::start(options.llm_port)
        .await
        .map_err(|e| format!("cannot start the fake LLM: {e}"))?;
    llm.send_done(options.sse_done);
    let mut reports = Vec::new();
    for &n in &options.calls {
        eprintln!("== {n} calls");
        let report = run_one(&exe, &llm, n, options).await?;
        println!("{}", report.markdown());
        reports.push(report);
    }
    Ok(reports)
}

async fn run_one(
    exe: &std::path::Path,
    llm: &FakeLlm,
    n: usize,
    options: &BenchOptions,
) -> Result<BenchReport, String> {
    let connections_before = llm.connections();
    let subject = match (&options.target, options.pid) {
        (Some(url), Some(pid)) => Subject::Running {
            url: url.clone(),
            pid,
        },
        _ => Subject::Ours(
            ServerProcess::start(
                exe,
                &llm.base_url(),
                (n * 2).max(2000),
                options.database_url.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())?,
        ),
    };
    let server = &subject;
    let url = subject.url();

    // Warm up (first connections, allocator arenas), then take the baseline.
    llm.set_mode(Mode::Conversation);
    let warm = calls::conversation(&url, 4, &LatencyPlan::quick(), |_| {}).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = server.usage();

    eprintln!("conversation phase: {n} calls x {} turns", options.turns);
    let plan = LatencyPlan {
        turns: options.turns,
        think: options.think,
        interrupt_turn: Some(options.turns / 2),
        connect_spread: Duration::from_millis(1000),
    };
    let mut live = Usage::default();
    let samples: Samples = calls::conversation(&url, n, &plan, |_| {
        live = server.usage();
    })
    .await;

    eprintln!("saturation phase: {n} calls for {:?}", options.saturate);
    llm.set_mode(Mode::Burst);
    let cpu_before = server.usage().cpu;
    let saturated = calls::saturate(&url, n, options.saturate).await;
    let cpu = server.usage().cpu.saturating_sub(cpu_before);
    let end = server.usage();
    let store_writes = match &subject {
        Subject::Ours(server) => server.store_writes().await,
        Subject::Running { .. } => None,
    };
    let llm_connections = llm.connections() - connections_before;
    // SIGTERM: our server must drain (no calls are left) and exit 0.
    let clean_exit = match subject {
        Subject::Ours(server) => server.stop().await.is_some_and(|s| s.success()),
        Subject::Running { .. } => true,
    };
    if !clean_exit {
        eprintln!("warning: the server did not exit cleanly after SIGTERM");
    }

    let mut added = samples.added;
    let mut ttft = samples.ttft;
    let mut silence = samples.interrupt_to_silence;
    let mut added_saturated = saturated.added;
    let turns_per_sec = saturated.turns as f64 / saturated.window.as_secs_f64();
    Ok(BenchReport {
        calls: n,
        added: Percentiles::of(&mut added),
        ttft: Percentiles::of(&mut ttft),
        interrupt_to_silence: Percentiles::of(&mut silence),
        tokens_after_interrupt: samples.tokens_after_interrupt,
        turns_per_sec,
        added_saturated: Percentiles::of(&mut added_saturated),
        cpu_per_turn: if saturated.turns_total > 0 {
            cpu / saturated.turns_total as u32
        } else {
            Duration::ZERO
        },
        baseline,
        live,
        peak_rss: end.peak_rss.max(live.peak_rss),
        errors: warm.errors + samples.errors + saturated.errors,
        clean_exit,
        llm_connections,
        store_writes,
    })
}

/// The server measured: ours in a child process, or one already running.
enum Subject {
    Ours(ServerProcess),
    Running { url: String, pid: u32 },
}

impl Subject {
    fn url(&self) -> String {
        match self {
            Subject::Ours(server) => server.ws_url(),
            Subject::Running { url, .. } => url.clone(),
        }
    }

    fn usage(&self) -> Usage {
        match self {
            Subject::Ours(server) => server.usage(),
            Subject::Running { pid, .. } => server::process_usage(*pid),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl BenchReport {
    /// The report as a Markdown table.
    pub fn markdown(&self) -> String {
        let mut rows = vec![
            (
                "server-added latency p50 / p99 / max".to_string(),
                format!(
                    "{} / {} / {} ({} replies)",
                    ms(self.added.p50),
                    ms(self.added.p99),
                    ms(self.added.max),
                    self.added.count
                ),
            ),
            (
                "caller's time to first token p50 / p99 (LLM: 20 ms)".to_string(),
                format!("{} / {}", ms(self.ttft.p50), ms(self.ttft.p99)),
            ),
            (
                "interrupt-to-silence p50 / p99 / max".to_string(),
                format!(
                    "{} / {} / {} ({} interrupts, {} tokens after them)",
                    ms(self.interrupt_to_silence.p50),
                    ms(self.interrupt_to_silence.p99),
                    ms(self.interrupt_to_silence.max),
                    self.interrupt_to_silence.count,
                    self.tokens_after_interrupt
                ),
            ),
            (
                "turns per second at saturation".to_string(),
                format!("{:.0}", self.turns_per_sec),
            ),
            (
                "server CPU per turn at saturation".to_string(),
                format!("{:.1} µs", self.cpu_per_turn.as_secs_f64() * 1e6),
            ),
            (
                "server-added latency at saturation p50 / p99".to_string(),
                format!(
                    "{} / {}",
                    ms(self.added_saturated.p50),
                    ms(self.added_saturated.p99)
                ),
            ),
            (
                "server RSS idle / with all calls live / peak".to_string(),
                format!(
                    "{} / {} / {}",
                    mib(self.baseline.rss),
                    mib(self.live.rss),
                    mib(self.peak_rss)
                ),
            ),
            (
                "anonymous memory idle / with all calls live".to_string(),
                format!("{} / {}", mib(self.baseline.anon), mib(self.live.anon)),
            ),
            (
                "RSS per live call (of it anonymous)".to_string(),
                self.live.per_call_text(&self.baseline, self.calls),
            ),
            (
                "connections opened to the LLM (whole run)".to_string(),
                self.llm_connections.to_string(),
            ),
            (
                "call records stored / dropped / still queued at saturation's end; calls refused while the writer was behind".to_string(),
                match self.store_writes {
                    Some(w) => format!(
                        "{} / {} / {}; {}",
                        w.written, w.dropped, w.pending, w.refused_calls
                    ),
                    None => "unknown (no /status)".to_string(),
                },
            ),
            ("errors".to_string(), self.errors.to_string()),
            (
                "server exit after SIGTERM".to_string(),
                if self.clean_exit {
                    "clean (0)"
                } else {
                    "NOT clean"
                }
                .to_string(),
            ),
        ];
        let mut out = format!(
            "### {} concurrent calls\n\n| measure | result |\n|---|---|\n",
            self.calls
        );
        for (k, v) in rows.drain(..) {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50, Duration::from_millis(50));
        assert_eq!(p.p99, Duration::from_millis(99));
        assert_eq!(p.max, Duration::from_millis(100));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }

    #[test]
    fn options_from_flags() {
        let args: Vec<String> = [
            "--calls",
            "5,10",
            "--turns",
            "3",
            "--think-ms",
            "50",
            "--saturate-secs",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = BenchOptions::from_args(&args).unwrap();
        assert_eq!(o.calls, vec![5, 10]);
        assert_eq!(o.turns, 3);
        assert_eq!(o.think, Duration::from_millis(50));
        assert_eq!(o.saturate, Duration::from_secs(2));
        assert!(BenchOptions::from_args(&["--calls".into(), "0".into()]).is_err());
        assert!(BenchOptions::from_args(&["--x".into()]).is_err());
    }
}
