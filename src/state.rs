//! The state every request handler and call session shares ([`AppState`]), built
//! once at start from the configuration: the LLM provider, the store and its
//! recorder, the tools, the token service, the Twilio client, the live-call
//! registry, and the drain signals. May import every core module; the HTTP edge
//! and the server import it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod roster;

use crate::agent::{AgentDeps, CallObserver, RecentCalls};
use crate::config::Config;
use crate::llm::{self, LlmError, LlmProvider};
use crate::metrics::Metrics;
use crate::recorder::Recorder;
use crate::relay::session::SessionDeps;
use crate::store::{self, Store, StoreError};
use crate::twilio::admission::{CallTokens, ReconnectPolicy};
use crate::twilio::call_token::TokenKey;
use crate::twilio::client::TwilioClient;
use roster::AgentEntry;

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
    /// The default agent's LLM provider.
    pub llm: Arc<dyn LlmProvider>,
    /// Every agent (the default first), found by id or number, with its load.
    pub agents: Arc<roster::Roster>,
    pub metrics: Arc<Metrics>,
    /// Durable call records (read by the API).
    pub store: Arc<dyn Store>,
    /// Queues every call's records for the store.
    pub recorder: Arc<Recorder>,
    /// Receives every call's turns and records: the recorder.
    pub observer: Arc<dyn CallObserver>,
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
    pub live_calls: Arc<crate::transport::live::LiveCalls>,
    /// Call control of SIP mode (accept, reject, refer, hang up).
    pub sip_control: crate::sip::control::Control,
}

impl AppState {
    /// Builds the state: the LLM provider the configuration names, and the store at
    /// `DATABASE_URL` (created and migrated as needed).
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let llm = llm::from_config(&config.llm)?;
        let store = store::open(config.database_url.expose()).await?;
        Self::with_parts(config, llm, store)
    }

    /// Builds the state around a given LLM provider and store, and starts the
    /// store's writer task (so it needs a tokio runtime).
    pub fn with_parts(
        config: Config,
        llm: Arc<dyn LlmProvider>,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartError> {
        let agents = Arc::new(roster::Roster::new(&config, llm.clone())?);
        let recorder = Recorder::start_as(store.clone(), config.replicas.id.clone());
        let twilio = TwilioClient::from_config(&config.twilio)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot set up the Twilio REST client");
                None
            })
            .map(Arc::new);
        let tokens = Arc::new(call_tokens(&config, store.clone()));
        Ok(Self {
            agents,
            twilio,
            tokens,
            live_calls: Arc::default(),
            sip_control: crate::sip::control::Control::new(&config.sip),
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
        })
    }

    /// What the default agent's calls need.
    pub fn agent_deps(&self) -> AgentDeps {
        self.agent_deps_for(self.agents.default_agent())
    }

    /// What `agent`'s calls need.
    pub fn agent_deps_for(&self, agent: &AgentEntry) -> AgentDeps {
        AgentDeps {
            llm: agent.llm.clone(),
            settings: agent.settings.clone(),
            tools: agent.tools.clone(),
            observer: self.observer.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// What a ConversationRelay session of the default agent needs.
    pub fn session_deps(&self) -> SessionDeps {
        self.session_deps_for(self.agents.default_agent())
    }

    /// What a ConversationRelay session of `agent` needs.
    pub fn session_deps_for(&self, agent: &AgentEntry) -> SessionDeps {
        SessionDeps {
            agent: self.agent_deps_for(agent),
            stop: self.stop.clone(),
            recent: self.recent_calls.clone(),
            limits: self.config.limits.clone(),
            admission: None,
            store: self.store.clone(),
            live: self.live_calls.clone(),
            mode: crate::metrics::CallMode::Relay,
            silence_timeout: agent.config.endings.silence_timeout,
        }
    }

    /// What a Media Streams session of `agent` needs.
    pub fn media_deps_for(&self, agent: &AgentEntry) -> crate::media::session::MediaDeps {
        crate::media::session::MediaDeps {
            config: agent.config.clone(),
            agent: self.agent_deps_for(agent),
            stop: self.stop.clone(),
            endings: self.media_endings.clone(),
            twilio: self.twilio.clone(),
            admission: None,
            live: self.live_calls.clone(),
        }
    }

    /// What a SIP call of `agent` needs.
    pub fn sip_deps_for(&self, agent: &AgentEntry) -> crate::sip::session::SipDeps {
        crate::sip::session::SipDeps {
            config: agent.config.clone(),
            agent: self.agent_deps_for(agent),
            control: self.sip_control.clone(),
            stop: self.stop.clone(),
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
