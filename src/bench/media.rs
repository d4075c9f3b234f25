//! `voxrelay bench media`: the Media Streams load mode. It plays both ends of a
//! Media Streams server, so the same run can measure ours and any other:
//!
//! - the Twilio callers: N WebSockets to `/media-stream`, each sending `connected`,
//!   `start`, then one 20 ms `media` frame every 20 ms for the call's length,
//!   echoing every `mark` at once, then `stop`;
//! - the upstream: [`FakeRealtime`], which answers each second of caller audio
//!   (its last frame is a cue) with half a second of agent audio in 25 deltas.
//!
//! The server under test is ours, started as a child process with
//! `MEDIA_PIPELINE=openai-realtime` pointed at the fake, or any running server
//! given by `--target` and `--pid` (BENCHMARKS.md runs Twilio's Node sample so).
//! It reports the server's CPU time over the run, its RSS before and with every
//! call live, and the time from the caller frame that completes a second of audio
//! to the first agent frame of the reply to it.
//!
//! May import `server` (the child process), `sim`'s Media Streams peer and the
//! media protocol types.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::fake_realtime::{self, FakeRealtime};
use super::flags::Flags;
use super::server::{self, ServerProcess, Usage, process_usage};
use super::{BenchArgsError, Percentiles};
use crate::media::protocol::Outbound;
use crate::sim::peer::{MediaPeer, Received};

/// One 20 ms frame of μ-law silence, the caller's audio.
const SILENCE: [u8; 160] = [0xff; 160];
/// Caller frames per second.
const FRAMES_PER_SECOND: u64 = 50;
/// How long a call keeps listening after its last frame, for the last reply.
const TAIL: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaBenchOptions {
    /// Concurrent call counts, one run each.
    pub calls: Vec<usize>,
    /// How long each call streams caller audio.
    pub seconds: u64,
    /// Our binary to start as the server (default: this one).
    pub server_exe: Option<PathBuf>,
    /// A running server's `/media-stream` URL instead of starting ours.
    pub target: Option<String>,
    /// That server's process id, for its CPU and memory.
    pub pid: Option<u32>,
    /// The fake Realtime's port (0: any; give one for a server started beforehand).
    pub realtime_port: u16,
}

impl Default for MediaBenchOptions {
    fn default() -> Self {
        Self {
            calls: vec![200],
            seconds: 10,
            server_exe: None,
            target: None,
            pid: None,
            realtime_port: 0,
        }
    }
}

pub const USAGE: &str = "\
voxrelay bench media: Media Streams load on loopback (fake Twilio callers, fake Realtime)

USAGE:
    voxrelay bench media [OPTIONS]

OPTIONS:
    --calls N[,N...]     concurrent calls, one run each [default: 200]
    --seconds S          caller audio per call, 50 frames a second [default: 10]
    --server PATH        voxrelay binary to start as the server [default: this one]
    --target URL         a running server's ws://…/media-stream instead (needs --pid)
    --pid PID            that server's process, for its CPU time and memory
    --realtime-port P    the fake Realtime's port on 127.0.0.1 [default: any free]

The fake Realtime answers every second of caller audio with 25 deltas of 20 ms.
Results go to stdout as Markdown.";

impl MediaBenchOptions {
    pub fn from_args(args: &[String]) -> Result<Self, BenchArgsError> {
        let mut options = Self::default();
        let mut flags = Flags::new(args);
        while let Some(flag) = flags.next_flag() {
            match flag {
                "--calls" => options.calls = flags.calls(flag)?,
                "--seconds" => options.seconds = flags.positive(flag, "seconds")?,
                "--server" => options.server_exe = Some(PathBuf::from(flags.value(flag)?)),
                "--target" => options.target = Some(flags.ws_url(flag)?),
                "--pid" => options.pid = Some(flags.positive(flag, "a process id")? as u32),
                "--realtime-port" => options.realtime_port = flags.port(flag)?,
                "-h" | "--help" => return Err(BenchArgsError::Help),
                other => return Err(BenchArgsError::Unknown(other.to_string())),
            }
        }
        super::flags::target_with_pid(&options.target, options.pid)?;
        Ok(options)
    }
}

/// The results for one call count.
#[derive(Debug, Clone, Default)]
pub struct MediaReport {
    pub calls: usize,
    pub seconds: u64,
    /// Server CPU (user + system) from the first connection to the last hang-up.
    pub cpu: Duration,
    /// Of which in the kernel.
    pub system: Duration,
    pub idle: Usage,
    /// With every call live, near the end of the run.
    pub live: Usage,
    /// Caller frame completing a second of audio → first agent frame of the reply.
    pub reply_latency: Percentiles,
    pub caller_frames: u64,
    pub agent_frames: u64,
    pub marks: u64,
    /// Replies the fake sent and agent frames it sent in them.
    pub replies: u64,
    pub upstream_connections: u64,
    pub errors: u64,
}

/// Runs every configured call count and prints a Markdown report to stdout.
pub async fn run(options: &MediaBenchOptions) -> Result<Vec<MediaReport>, String> {
    let largest = options.calls.iter().copied().max().unwrap_or(0);
    server::raise_open_files(largest * 3);
    let exe = server::server_exe(options.server_exe.as_deref())?;
    let fake = FakeRealtime::start(options.realtime_port)
        .await
        .map_err(|e| format!("cannot start the fake Realtime: {e}"))?;
    eprintln!("fake Realtime at {}", fake.url());
    let mut reports = Vec::new();
    for &n in &options.calls {
        eprintln!("== {n} media calls x {} s", options.seconds);
        let report = match (&options.target, options.pid) {
            (Some(url), Some(pid)) => measure(url, pid, n, options.seconds, &fake).await,
            _ => {
                let server = ServerProcess::start_media(&exe, &fake.url(), (n * 2).max(2000))
                    .await
                    .map_err(|e| e.to_string())?;
                let url = format!("ws://127.0.0.1:{}/media-stream", server.port);
                let report = measure(&url, server.pid(), n, options.seconds, &fake).await;
                if !server.stop().await.is_some_and(|s| s.success()) {
                    eprintln!("warning: the server did not exit cleanly after SIGTERM");
                }
                report
            }
        };
        println!("{}", report.markdown());
        reports.push(report);
    }
    Ok(reports)
}

/// What the callers saw, summed.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    caller_frames: u64,
    agent_frames: u64,
    marks: u64,
    errors: u64,
}

async fn measure(url: &str, pid: u32, n: usize, seconds: u64, fake: &FakeRealtime) -> MediaReport {
    // Warm up: two short calls (first connections, allocator arenas), then rest.
    let warm = Arc::new(Mutex::new(Tally::default()));
    let warm_calls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(call(url.to_string(), 2, Duration::ZERO, warm.clone())))
        .collect();
    for task in warm_calls {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = process_usage(pid);
    let replies_before = fake.replies();
    let connections_before = fake.connections();

    let tally = Arc::new(Mutex::new(Tally::default()));
    let spread = Duration::from_secs(1);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let delay = spread * i as u32 / n.max(1) as u32;
            tokio::spawn(call(url.to_string(), seconds, delay, tally.clone()))
        })
        .collect();
    // Every call is live from 1 s in until `seconds`; read the memory near the end.
    tokio::time::sleep(Duration::from_secs(seconds).saturating_sub(Duration::from_millis(500)))
        .await;
    let live = process_usage(pid);
    for task in tasks {
        if task.await.is_err() {
            tally.lock().map(|mut t| t.errors += 1).ok();
        }
    }
    let end = process_usage(pid);
    let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    MediaReport {
        calls: n,
        seconds,
        cpu: end.cpu.saturating_sub(idle.cpu),
        system: end.system.saturating_sub(idle.system),
        idle,
        live,
        reply_latency: Percentiles::of(&mut tally.latencies),
        caller_frames: tally.caller_frames,
        agent_frames: tally.agent_frames,
        marks: tally.marks,
        replies: fake.replies() - replies_before,
        upstream_connections: fake.connections() - connections_before,
        errors: tally.errors + warm.lock().map(|t| t.errors).unwrap_or(0),
    }
}

/// One caller: `seconds` of silence at 50 frames a second, each second's last
/// frame a cue for a reply; marks echoed at once.
async fn call(url: String, seconds: u64, delay: Duration, tally: Arc<Mutex<Tally>>) {
    tokio::time::sleep(delay).await;
    let mut seen = Tally::default();
    let stream_sid = crate::sim::random_sid("MZ");
    let mut peer = match MediaPeer::connect(url.as_str(), &stream_sid).await {
        Ok(peer) => peer,
        Err(e) => {
            eprintln!("call failed to connect: {e}");
            record(&tally, Tally { errors: 1, ..seen });
            return;
        }
    };
    let call_sid = crate::sim::random_sid("CA");
    if peer.start(&call_sid, Default::default()).await.is_err() {
        record(&tally, Tally { errors: 1, ..seen });
        return;
    }
    let total = seconds * FRAMES_PER_SECOND;
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // When the frame completing each second of audio was sent: reply k answers
    // second k, and its first agent frame is agent frame k × 25.
    let mut second_done: Vec<Instant> = Vec::with_capacity(seconds as usize);
    let mut hang_up = None::<Instant>;
    loop {
        tokio::select! {
            _ = ticks.tick(), if seen.caller_frames < total => {
                let cue = (seen.caller_frames + 1) % FRAMES_PER_SECOND == 0;
                let frame = if cue { &fake_realtime::CUE } else { &SILENCE };
                if peer.media(frame).await.is_err() {
                    seen.errors += 1;
                    break;
                }
                seen.caller_frames += 1;
                if cue {
                    second_done.push(Instant::now());
                }
                if seen.caller_frames == total {
                    hang_up = Some(Instant::now() + TAIL);
                }
            }
            received = peer.next() => match received {
                Received::Message(Outbound::Media { .. }) => {
                    let index = seen.agent_frames as usize;
                    seen.agent_frames += 1;
                    if index % fake_realtime::DELTAS_PER_REPLY == 0
                        && let Some(sent) = second_done.get(index / fake_realtime::DELTAS_PER_REPLY)
                    {
                        seen.latencies.push(sent.elapsed());
                    }
                }
                Received::Message(Outbound::Mark { mark, .. }) => {
                    seen.marks += 1;
                    if peer.mark(&mark.name).await.is_err() {
                        seen.errors += 1;
                        break;
                    }
                }
                Received::Message(Outbound::Clear { .. }) | Received::Unreadable(_) => {}
                Received::Closed(_) => {
                    if hang_up.is_none() {
                        eprintln!("the server closed a call early");
                        seen.errors += 1;
                    }
                    break;
                }
            },
            _ = sleep_until(hang_up) => break,
        }
    }
    let _ = peer.stop().await;
    peer.close(Duration::from_secs(2)).await;
    record(&tally, seen);
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn record(tally: &Mutex<Tally>, seen: Tally) {
    let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    tally.latencies.extend(seen.latencies);
    tally.caller_frames += seen.caller_frames;
    tally.agent_frames += seen.agent_frames;
    tally.marks += seen.marks;
    tally.errors += seen.errors;
}

impl MediaReport {
    /// Server CPU per call-second of audio, in µs.
    pub fn cpu_per_call_second_us(&self) -> f64 {
        let call_seconds = (self.calls as u64 * self.seconds).max(1) as f64;
        self.cpu.as_secs_f64() * 1e6 / call_seconds
    }

    /// The report as a Markdown table.
    pub fn markdown(&self) -> String {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
        let rows = [
            (
                "server CPU over the run (user + system)".to_string(),
                format!(
                    "{:.2} s, {:.2} s of it in the kernel ({:.0} µs per call-second)",
                    self.cpu.as_secs_f64(),
                    self.system.as_secs_f64(),
                    self.cpu_per_call_second_us()
                ),
            ),
            (
                "reply latency p50 / p99 / max (caller frame → first agent frame)".to_string(),
                format!(
                    "{} / {} / {} ({} replies)",
                    ms(self.reply_latency.p50),
                    ms(self.reply_latency.p99),
                    ms(self.reply_latency.max),
                    self.reply_latency.count
                ),
            ),
            (
                "server RSS idle / with all calls live".to_string(),
                format!("{} / {}", mib(self.idle.rss), mib(self.live.rss)),
            ),
            (
                "anonymous memory idle / with all calls live".to_string(),
                format!("{} / {}", mib(self.idle.anon), mib(self.live.anon)),
            ),
            (
                "RSS per live call (of it anonymous)".to_string(),
                self.live.per_call_text(&self.idle, self.calls),
            ),
            (
                "caller frames / agent frames / marks".to_string(),
                format!(
                    "{} / {} / {}",
                    self.caller_frames, self.agent_frames, self.marks
                ),
            ),
            (
                "fake Realtime: connections / replies (25 frames each)".to_string(),
                format!("{} / {}", self.upstream_connections, self.replies),
            ),
            ("errors".to_string(), self.errors.to_string()),
        ];
        let mut out = format!(
            "### {} media calls × {} s\n\n| measure | result |\n|---|---|\n",
            self.calls, self.seconds
        );
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_from_flags() {
        let o =
            MediaBenchOptions::from_args(&args(&["--calls", "5,10", "--seconds", "3"])).unwrap();
        assert_eq!(o.calls, vec![5, 10]);
        assert_eq!(o.seconds, 3);
        let o = MediaBenchOptions::from_args(&args(&[
            "--target",
            "ws://127.0.0.1:5050/media-stream",
            "--pid",
            "42",
            "--realtime-port",
            "18765",
        ]))
        .unwrap();
        assert_eq!(o.pid, Some(42));
        assert_eq!(o.realtime_port, 18765);
        assert!(MediaBenchOptions::from_args(&args(&["--target", "ws://x/m"])).is_err());
        assert!(
            MediaBenchOptions::from_args(&args(&["--target", "http://x", "--pid", "1"])).is_err()
        );
        assert!(MediaBenchOptions::from_args(&args(&["--seconds", "0"])).is_err());
    }
}
