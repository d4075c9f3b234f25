//! The agents this server runs (README "Agents per number"): one [`AgentEntry`] per
//! agent of the configuration, built once at start, found by id (the call token's
//! agent) or by phone number (`To` of an inbound call, `from` of an outbound one);
//! and each agent's admission [`Load`], so a line never takes more calls than its
//! `max_calls`. May import `config`, `agent`, `llm` and `tools`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::{AgentDeps, AgentSettings};
use crate::config::{Config, DEFAULT_AGENT};
use crate::llm::{self, LlmError, LlmProvider};
use crate::tools::ToolRegistry;

/// How long a call turned into TwiML holds its agent's slot before its socket
/// opens: Twilio connects inbound calls within a second or two.
pub const INBOUND_SLOT_TTL: Duration = Duration::from_secs(30);
/// How long an outbound call holds its slot before it is answered (ringing, then
/// the socket): Twilio rings for 60 s by default.
pub const OUTBOUND_SLOT_TTL: Duration = Duration::from_secs(120);
/// Most pending reservations one agent keeps (beyond, the oldest go first).
const MAX_PENDING: usize = 10_000;

/// One agent: its configuration and what its calls are built from.
pub struct AgentEntry {
    /// The agent's whole configuration (the server's settings are the same in all).
    pub config: Arc<Config>,
    pub settings: Arc<AgentSettings>,
    pub tools: Arc<ToolRegistry>,
    pub llm: Arc<dyn LlmProvider>,
    pub load: Arc<Load>,
}

impl AgentEntry {
    pub fn id(&self) -> &str {
        &self.config.agent.id
    }

    /// What this agent's calls need, around the server's shared pieces.
    pub fn deps(&self, shared: &AgentDeps) -> AgentDeps {
        AgentDeps {
            llm: self.llm.clone(),
            settings: self.settings.clone(),
            tools: self.tools.clone(),
            observer: shared.observer.clone(),
            metrics: shared.metrics.clone(),
        }
    }
}

/// Every agent, the default first.
pub struct Roster {
    agents: Vec<Arc<AgentEntry>>,
    /// E.164 number → index in `agents`.
    by_number: HashMap<String, usize>,
}

impl Roster {
    /// Builds every agent of `config`. The default agent uses `default_llm`; an
    /// agent whose LLM settings are the default's shares it, the others get their own.
    pub fn new(config: &Config, default_llm: Arc<dyn LlmProvider>) -> Result<Self, LlmError> {
        let mut agents = Vec::new();
        let mut by_number = HashMap::new();
        for agent in config.all_agents() {
            let llm = if agent.llm == config.llm {
                default_llm.clone()
            } else {
                llm::from_config(&agent.llm)?
            };
            for number in &agent.agent.numbers {
                by_number.insert(number.as_str().to_string(), agents.len());
            }
            let mut agent_config = agent.clone();
            agent_config.agents = Vec::new();
            agents.push(Arc::new(AgentEntry {
                settings: Arc::new(AgentSettings::from_config(agent)),
                tools: Arc::new(ToolRegistry::from_config(agent)),
                llm,
                load: Arc::new(Load::new(agent.agent.max_calls)),
                config: Arc::new(agent_config),
            }));
        }
        Ok(Self { agents, by_number })
    }

    /// The agent of `AGENT_CONFIG` and the environment.
    pub fn default_agent(&self) -> &Arc<AgentEntry> {
        &self.agents[0]
    }

    /// The agent called `id`; an empty id is the default one.
    pub fn named(&self, id: &str) -> Option<&Arc<AgentEntry>> {
        if id.is_empty() || id == DEFAULT_AGENT {
            return Some(self.default_agent());
        }
        self.agents.iter().find(|a| a.id() == id)
    }

    /// The agent a token or record names, falling back to the default one when the
    /// agent is gone (a replica of another release minted it, or the file was
    /// removed): the call still gets an agent.
    pub fn named_or_default(&self, id: &str) -> &Arc<AgentEntry> {
        self.named(id).unwrap_or_else(|| {
            // The log formatter escapes what came from outside.
            tracing::warn!(agent = id, "no such agent here; using the default");
            self.default_agent()
        })
    }

    /// The agent that answers `number`; unknown numbers get the default agent.
    pub fn for_number(&self, number: Option<&str>) -> &Arc<AgentEntry> {
        number
            .and_then(|n| self.by_number.get(n.trim()))
            .map(|&i| &self.agents[i])
            .unwrap_or_else(|| self.default_agent())
    }

    /// Every agent, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<AgentEntry>> {
        self.agents.iter()
    }
}

/// An agent's live calls and the calls promised to it (TwiML served, socket not
/// yet open), against its `max_calls`. Clock-free: the time is an argument.
#[derive(Debug)]
pub struct Load {
    max: Option<usize>,
    inner: Mutex<LoadInner>,
}

#[derive(Debug, Default)]
struct LoadInner {
    live: usize,
    /// Calls started since start.
    total: u64,
    /// Calls turned away since start.
    refused: u64,
    /// Slot key (call SID or outbound nonce) → when the reservation lapses.
    pending: HashMap<String, Instant>,
}

impl Load {
    pub fn new(max: Option<usize>) -> Self {
        Self {
            max,
            inner: Mutex::default(),
        }
    }

    /// The agent's limit, if it has one.
    pub fn max(&self) -> Option<usize> {
        self.max
    }

    /// Live calls now.
    pub fn live(&self) -> usize {
        self.lock().live
    }

    /// `(live, started, turned away)` since start, for `/metrics`.
    pub fn counts(&self) -> (usize, u64, u64) {
        let inner = self.lock();
        (inner.live, inner.total, inner.refused)
    }

    /// Counts a call turned away from this agent.
    pub fn refused(&self) {
        self.lock().refused += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoadInner> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Promises `key`'s call a slot until `now + ttl`; `false` when the agent is
    /// full (its live calls and unexpired promises reach `max_calls`). A key
    /// already promised keeps its slot (Twilio retried the webhook).
    pub fn reserve(&self, key: &str, now: Instant, ttl: Duration) -> bool {
        let mut inner = self.lock();
        inner.pending.retain(|_, until| *until > now);
        if inner.pending.contains_key(key) {
            inner.pending.insert(key.to_string(), now + ttl);
            return true;
        }
        if let Some(max) = self.max
            && inner.live + inner.pending.len() >= max
        {
            return false;
        }
        if inner.pending.len() >= MAX_PENDING
            && let Some(oldest) = inner
                .pending
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| k.clone())
        {
            inner.pending.remove(&oldest);
        }
        inner.pending.insert(key.to_string(), now + ttl);
        true
    }

    /// Gives back a promise whose call will not come (the REST API refused it).
    pub fn cancel(&self, key: &str) {
        self.lock().pending.remove(key);
    }

    /// `key`'s call is live: its promise (if any) becomes a live call until the
    /// returned guard drops.
    pub fn start(self: &Arc<Self>, key: &str) -> LiveCall {
        let mut inner = self.lock();
        inner.pending.remove(key);
        inner.live += 1;
        inner.total += 1;
        LiveCall(self.clone())
    }
}

/// One live call of an agent; dropping it frees the slot.
#[derive(Debug)]
pub struct LiveCall(Arc<Load>);

impl Drop for LiveCall {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.live = inner.live.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promises_and_live_calls_count_against_the_limit_and_lapse() {
        let load = Arc::new(Load::new(Some(2)));
        let t0 = Instant::now();
        assert!(load.reserve("CA1", t0, INBOUND_SLOT_TTL));
        assert!(load.reserve("CA2", t0, INBOUND_SLOT_TTL));
        assert!(!load.reserve("CA3", t0, INBOUND_SLOT_TTL), "full");
        assert!(
            load.reserve("CA2", t0, INBOUND_SLOT_TTL),
            "a retry keeps its slot"
        );
        let live = load.start("CA1");
        assert_eq!(load.live(), 1);
        assert!(!load.reserve("CA3", t0, INBOUND_SLOT_TTL));
        // CA2's socket never came: its promise lapses.
        let later = t0 + INBOUND_SLOT_TTL + Duration::from_secs(1);
        assert!(load.reserve("CA3", later, INBOUND_SLOT_TTL));
        assert!(!load.reserve("CA4", later, INBOUND_SLOT_TTL));
        drop(live);
        assert_eq!(load.live(), 0);
        assert!(load.reserve("CA4", later, INBOUND_SLOT_TTL));
        load.cancel("CA4");
        assert!(load.reserve("CA5", later, INBOUND_SLOT_TTL));
    }

    #[test]
    fn no_limit_takes_every_call() {
        let load = Arc::new(Load::new(None));
        let now = Instant::now();
        for i in 0..100 {
            assert!(load.reserve(&format!("CA{i}"), now, INBOUND_SLOT_TTL));
        }
        let _calls: Vec<_> = (0..100).map(|i| load.start(&format!("CA{i}"))).collect();
        assert_eq!(load.live(), 100);
    }
}
