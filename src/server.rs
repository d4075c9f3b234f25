//! The server: shared state, and [`run`], which serves HTTP and WebSocket calls on
//! an already-bound listener until a shutdown signal, then drains live calls.
//!
//! Draining: warp's own graceful shutdown does not wait for upgraded WebSockets, so
//! every call runs inside a [`TaskTracker`]. On shutdown new calls are refused with
//! 503 while `/health` keeps answering; live calls carry on until they end or the
//! drain timeout passes, when they are told to stop and end cleanly.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{AgentSettings, CallObserver, RecentCalls};
use crate::config::Config;
use crate::llm::{self, LlmError, LlmProvider};
use crate::metrics::Metrics;
use crate::recorder::Recorder;
use crate::relay::session::SessionDeps;
use crate::store::{self, Store, StoreError};
use crate::tools::ToolRegistry;
use crate::twilio::admission::{CallTokens, ReconnectPolicy};
use crate::twilio::call_token::TokenKey;
use crate::twilio::client::TwilioClient;

/// How long a shutdown waits for queued call records to reach the store.
pub const STORE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up the LLM provider: {0}")]
    Llm(#[from] LlmError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
}

/// How many dropped calls' conversations are kept for a resume, and for how long.
const RECENT_CALLS: usize = 500;
const RECENT_CALLS_TTL: Duration = Duration::from_secs(300);

/// Everything a request handler or call session may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub llm: Arc<dyn LlmProvider>,
    pub agent_settings: Arc<AgentSettings>,
    pub metrics: Arc<Metrics>,
    /// Durable call records (read by the API).
    pub store: Arc<dyn Store>,
    /// Queues every call's records for the store.
    pub recorder: Arc<Recorder>,
    /// Receives every call's turns and records: the recorder.
    pub observer: Arc<dyn CallObserver>,
    /// The tools offered to the model on every call.
    pub tools: Arc<ToolRegistry>,
    /// Conversations of recently dropped calls, resumed when Twilio reconnects.
    pub recent_calls: Arc<RecentCalls>,
    /// How the agent ended recent Media Streams calls (for `/twiml/stream/next`).
    pub media_endings: Arc<crate::media::Endings>,
    /// Every live call.
    pub calls: TaskTracker,
    /// Cancelled when a drain starts: no new calls.
    pub draining: CancellationToken,
    /// Cancelled when the drain time is up: live calls end now.
    pub stop: CancellationToken,
    pub started_at: SystemTime,
    pub started: Instant,
    /// Twilio's REST API, when the account is configured.
    pub twilio: Option<Arc<TwilioClient>>,
    /// Mints and admits the per-call WebSocket tokens.
    pub tokens: Arc<CallTokens>,
    /// The ConversationRelay calls this process carries (for commands from the API).
    pub live_calls: Arc<crate::relay::live::LiveCalls>,
}

impl AppState {
    /// Builds the state: the LLM provider the configuration names, and the store at
    /// `DATABASE_URL` (created and migrated as needed).
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let llm = llm::from_config(&config.llm)?;
        let store = store::open(config.database_url.expose()).await?;
        Ok(Self::with_parts(config, llm, store))
    }

    /// Builds the state around a given LLM provider and store, and starts the
    /// store's writer task (so it needs a tokio runtime).
    pub fn with_parts(config: Config, llm: Arc<dyn LlmProvider>, store: Arc<dyn Store>) -> Self {
        let recorder = Recorder::start_as(store.clone(), config.replicas.id.clone());
        let twilio = TwilioClient::from_config(&config.twilio)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot set up the Twilio REST client");
                None
            })
            .map(Arc::new);
        let tokens = Arc::new(call_tokens(&config, store.clone()));
        Self {
            twilio,
            tokens,
            live_calls: Arc::default(),
            agent_settings: Arc::new(AgentSettings::from_config(&config)),
            tools: Arc::new(ToolRegistry::from_config(&config)),
            recent_calls: Arc::new(RecentCalls::new(RECENT_CALLS, RECENT_CALLS_TTL)),
            media_endings: Arc::new(crate::media::Endings::new(store.clone())),
            config: Arc::new(config),
            llm,
            metrics: Arc::new(Metrics::default()),
            store,
            observer: recorder.clone(),
            recorder,
            calls: TaskTracker::new(),
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            started_at: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// What a ConversationRelay session needs.
    pub fn session_deps(&self) -> SessionDeps {
        SessionDeps {
            llm: self.llm.clone(),
            settings: self.agent_settings.clone(),
            metrics: self.metrics.clone(),
            stop: self.stop.clone(),
            observer: self.observer.clone(),
            tools: self.tools.clone(),
            recent: self.recent_calls.clone(),
            limits: self.config.limits.clone(),
            admission: None,
            store: self.store.clone(),
            live: self.live_calls.clone(),
        }
    }

    /// What a Media Streams session needs.
    pub fn media_deps(&self) -> crate::media::session::MediaDeps {
        crate::media::session::MediaDeps {
            config: self.config.clone(),
            llm: self.llm.clone(),
            settings: self.agent_settings.clone(),
            metrics: self.metrics.clone(),
            stop: self.stop.clone(),
            observer: self.observer.clone(),
            tools: self.tools.clone(),
            endings: self.media_endings.clone(),
            twilio: self.twilio.clone(),
            admission: None,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }
}

/// The token service: keyed by `CALL_TOKEN_SECRET`, else by the Twilio auth token
/// (so every replica agrees), else by a random key; tokens are required whenever
/// Twilio's signatures are checked, unless `ALLOW_STATIC_TWIML` is set.
fn call_tokens(config: &Config, store: Arc<dyn Store>) -> CallTokens {
    let key = match (
        &config.security.call_token_secret,
        &config.twilio.auth_token,
    ) {
        (Some(secret), _) | (None, Some(secret)) => TokenKey::derive(secret.expose().as_bytes()),
        (None, None) => TokenKey::random(),
    };
    let required = config.twilio.validate_signatures && !config.security.allow_static_twiml;
    let reconnect = ReconnectPolicy {
        enabled: config.relay.application_reconnect,
        max_call: config.limits.max_call,
        stale_after: config.replicas.stale_after,
    };
    CallTokens::new(key, store, config.replicas.id.clone(), reconnect, required)
}

/// The multi-threaded runtime the server runs on (one worker per core), shared
/// with the benchmarks so they measure the same scheduler.
///
/// Tokio's defaults are kept. Measured alternative: checking timers and I/O every
/// 16 tasks instead of 61 (`event_interval`) cut the Media Streams frames sent more
/// than 5 ms late by about 5x at 200 media calls, but cost ConversationRelay 10-20 %
/// of its turns per second, so it is not the default (BENCHMARKS.md).
pub fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    builder
}

/// Binds a listener for [`run`]. Accepted sockets inherit `TCP_NODELAY` from it,
/// so a small WebSocket frame (one token) is sent at once instead of waiting for
/// the peer's ACK of the previous one (Nagle's algorithm).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Raises this process's open-file limit towards what `calls` live calls need
/// (each holds a socket to Twilio and one to the LLM). Returns the limit in force.
pub fn raise_open_files_limit(calls: usize) -> std::io::Result<u64> {
    let wanted = (calls as u64).saturating_mul(2).saturating_add(256);
    rlimit::increase_nofile_limit(wanted)
}

/// Hands the live-call commands other replicas send through the store (PostgreSQL
/// `NOTIFY`) to the sessions this process carries, until `stop`.
async fn relay_commands(state: AppState, stop: CancellationToken) {
    use futures::StreamExt as _;
    let mut notes = match state.store.listen().await {
        Ok(Some(notes)) => notes,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for live-call commands from other replicas");
            return;
        }
    };
    loop {
        let note = tokio::select! {
            () = stop.cancelled() => return,
            note = notes.next() => match note {
                Some(note) => note,
                None => return,
            },
        };
        if let Some((command, call_sid)) = crate::relay::live::CallCommand::parse(&note)
            && state.live_calls.command(call_sid, command)
        {
            tracing::info!(call_sid, command = ?command, "command for a call carried here");
        }
    }
}

/// Serves until `shutdown` completes, then drains live calls (at most the
/// configured drain timeout) and returns.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let server_stop = CancellationToken::new();
    let routes = crate::http::routes(state.clone());
    let limits = crate::http::serve::ServeLimits {
        header_read_timeout: state.config.limits.header_read_timeout,
        max_connections: state.config.limits.max_connections,
    };
    let server = tokio::spawn(crate::http::serve::serve(
        listener,
        routes,
        limits,
        server_stop.clone(),
    ));

    let replica_stop = CancellationToken::new();
    let replica = tokio::spawn(crate::replica::run(
        state.store.clone(),
        state.config.replicas.clone(),
        store::millis(state.started_at),
        replica_stop.clone(),
    ));

    let commands = tokio::spawn(relay_commands(state.clone(), replica_stop.clone()));

    shutdown.await;
    let live = state.calls.len();
    tracing::info!(live_calls = live, timeout = ?state.config.drain_timeout, "draining: refusing new calls");
    state.draining.cancel();
    state.calls.close();
    if tokio::time::timeout(state.config.drain_timeout, state.calls.wait())
        .await
        .is_err()
    {
        let left = state.calls.len();
        tracing::warn!(calls = left, "drain timeout: ending the remaining calls");
        state.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), state.calls.wait()).await;
    }
    // Every call has ended: what they said must reach the store before we exit.
    if !state.recorder.flush(STORE_FLUSH_TIMEOUT).await {
        tracing::warn!(
            pending = state.recorder.counts().pending,
            "call records still unwritten at shutdown"
        );
    }
    // Every call is over and written: retire this replica from the store.
    replica_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), replica).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), commands).await;
    server_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), state.store.close()).await;
    tracing::info!("server stopped");
}
