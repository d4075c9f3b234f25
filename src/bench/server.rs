//! The server under test: the real `voxrelay serve` binary in a child process on
//! loopback, so its memory and CPU can be read apart from the load generator's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The bearer token the benchmark gives the server (for `/metrics`).
pub const TOKEN: &str = "voxrelay-bench-token-not-secret";

/// Memory and CPU of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Resident set size, bytes.
    pub rss: u64,
    /// Peak resident set size, bytes.
    pub peak_rss: u64,
    /// Of the resident set, anonymous memory (heap, stacks): what grows with
    /// calls. The rest is mostly the binary's and libraries' code pages, mapped
    /// from the page cache the first time some code runs.
    pub anon: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Of which in the kernel (system calls, the network stack).
    pub system: Duration,
}

impl Usage {
    /// What each of `calls` live calls added to `idle`: RSS and anonymous memory,
    /// bytes.
    pub fn per_call(&self, idle: &Usage, calls: usize) -> (u64, u64) {
        let calls = calls.max(1) as u64;
        (
            self.rss.saturating_sub(idle.rss) / calls,
            self.anon.saturating_sub(idle.anon) / calls,
        )
    }

    /// [`Usage::per_call`] for a report: KiB of RSS (of it anonymous), or why there
    /// is no figure. A server measured before with more calls (`--target` with
    /// several counts) can hold more at "idle" than with the calls live: the
    /// difference then says nothing about a call.
    pub fn per_call_text(&self, idle: &Usage, calls: usize) -> String {
        if self.rss < idle.rss {
            return format!(
                "not measured: the server held more before the calls ({:.1} MiB, an earlier run's memory) than with them; run this count on its own",
                idle.rss as f64 / (1024.0 * 1024.0)
            );
        }
        let (rss, anon) = self.per_call(idle, calls);
        format!(
            "{:.1} KiB ({:.1} KiB)",
            rss as f64 / 1024.0,
            anon as f64 / 1024.0
        )
    }
}

pub struct ServerProcess {
    child: Child,
    pub port: u16,
    pid: u32,
    _dir: TempDir,
}

/// A scratch folder removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start {exe:?}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("the server did not answer /health within 20 s")]
    NotHealthy,
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
}

impl ServerProcess {
    /// Starts `exe serve` on `127.0.0.1` with the LLM at `llm_base_url`.
    pub async fn start(
        exe: &Path,
        llm_base_url: &str,
        max_calls: usize,
        database_url: Option<&str>,
    ) -> Result<Self, ServerError> {
        let mut env = vec![
            ("LLM_PROVIDER", "openai".to_string()),
            ("OPENAI_BASE_URL", llm_base_url.to_string()),
            ("OPENAI_MODEL", "bench".to_string()),
        ];
        if let Some(url) = database_url {
            env.push(("DATABASE_URL", url.to_string()));
        }
        Self::start_with(exe, max_calls, &env).await
    }

    /// Starts `exe serve` for Media Streams calls bridged to the Realtime stand-in
    /// at `realtime_url`.
    pub async fn start_media(
        exe: &Path,
        realtime_url: &str,
        max_calls: usize,
    ) -> Result<Self, ServerError> {
        let env = [
            ("MEDIA_PIPELINE", "openai-realtime".to_string()),
            ("OPENAI_REALTIME_URL", realtime_url.to_string()),
        ];
        Self::start_with(exe, max_calls, &env).await
    }

    /// Starts `exe serve` on `127.0.0.1` in an empty folder with `env` on top of
    /// the benchmark's own settings.
    async fn start_with(
        exe: &Path,
        max_calls: usize,
        env: &[(&str, String)],
    ) -> Result<Self, ServerError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(ServerError::Port)?
            .port();
        let dir =
            std::env::temp_dir().join(format!("voxrelay-bench-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut command = Command::new(exe);
        command
            .arg("serve")
            // A clean environment in an empty folder: no .env, no real keys.
            .env_clear()
            .current_dir(&dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("OPENAI_API_KEY", "bench")
            .env("MAX_CALLS", max_calls.to_string())
            .env("LOG_DIR", dir.join("logs"))
            .env("API_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().map_err(|source| ServerError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let server = Self {
            child,
            port,
            pid,
            _dir: TempDir(dir),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = client
                .get(format!("http://127.0.0.1:{port}/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(ServerError::NotHealthy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/websocket", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Current memory and CPU (zeros where `/proc` is unavailable).
    pub fn usage(&self) -> Usage {
        process_usage(self.pid)
    }

    /// `GET /metrics`, for the server's own view of the run.
    pub async fn metrics(&self) -> Option<String> {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// The store writer's counters from `GET /status` (`store.writes`: written,
    /// dropped, pending …), `None` when the server does not answer.
    pub async fn store_writes(&self) -> Option<StoreWrites> {
        let status: serde_json::Value = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/status", self.port))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        serde_json::from_value(status["store"]["writes"].clone()).ok()
    }

    /// SIGTERM, then waits for the drain; kills the process if it hangs.
    pub async fn stop(mut self) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

/// The binary to run as the server: `given` made absolute (the server runs in a
/// folder of its own, where a relative path would not hold), or this one.
pub fn server_exe(given: Option<&Path>) -> Result<PathBuf, String> {
    match given {
        Some(exe) => {
            std::fs::canonicalize(exe).map_err(|e| format!("cannot find {}: {e}", exe.display()))
        }
        None => std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}")),
    }
}

/// Raises this process's open-file limit (the server child inherits it) to hold
/// `sockets`, saying what it got.
pub fn raise_open_files(sockets: usize) {
    match crate::server::raise_open_files_limit(sockets) {
        Ok(limit) => eprintln!("open-file limit: {limit}"),
        Err(e) => eprintln!("warning: cannot raise the open-file limit: {e}"),
    }
}

/// The call records the server's store writer handled, as `/status` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct StoreWrites {
    pub written: u64,
    /// Dropped (past the writer's memory bound).
    pub dropped: u64,
    /// Still queued.
    pub pending: u64,
    /// New calls refused while the writer was behind.
    #[serde(default)]
    pub refused_calls: u64,
}

/// Reads `/proc/<pid>/status` (VmRSS, VmHWM, RssAnon) and `/proc/<pid>/stat` (CPU time).
pub fn process_usage(pid: u32) -> Usage {
    let mut usage = Usage::default();
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let kib = |l: &str| -> u64 {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
                    * 1024
            };
            if line.starts_with("VmRSS:") {
                usage.rss = kib(line);
            } else if line.starts_with("VmHWM:") {
                usage.peak_rss = kib(line);
            } else if line.starts_with("RssAnon:") {
                usage.anon = kib(line);
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after the command name (which may hold spaces, so split after ')').
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 here,
            // in clock ticks of 1/100 s (USER_HZ).
            let ticks = |i: usize| -> u64 {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            usage.cpu = Duration::from_millis((ticks(11) + ticks(12)) * 10);
            usage.system = Duration::from_millis(ticks(12) * 10);
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_usage() {
        let usage = process_usage(std::process::id());
        assert!(usage.rss > 0);
        assert!(usage.peak_rss >= usage.rss);
        assert!(usage.anon > 0 && usage.anon <= usage.rss);
    }

    /// A reading of `rss` and `anon` MiB.
    fn mib(rss: u64, anon: u64) -> Usage {
        Usage {
            rss: rss << 20,
            anon: anon << 20,
            ..Usage::default()
        }
    }

    #[test]
    fn growth_per_call_never_goes_below_zero() {
        let idle = mib(10, 4);
        let live = mib(30, 3); // the allocator gave memory back
        assert_eq!(live.per_call(&idle, 1000), ((20 << 20) / 1000, 0));
        assert_eq!(live.per_call(&idle, 0), (20 << 20, 0));
    }

    #[test]
    fn no_figure_per_call_when_idle_held_more_than_live() {
        let idle = mib(55, 50);
        let live = mib(35, 30);
        let text = live.per_call_text(&idle, 1000);
        assert!(text.starts_with("not measured"), "{text}");
        assert!(text.contains("55.0 MiB"), "{text}");
        assert_eq!(idle.per_call_text(&live, 1024), "20.0 KiB (20.0 KiB)");
    }
}
