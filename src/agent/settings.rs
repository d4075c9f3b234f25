//! What the agent of every call shares: the deployment's [`AgentSettings`], read
//! once from the configuration, and [`AgentDeps`], the one dependencies struct
//! every transport builds its agent (or its call log) from. May import `config`,
//! `llm`, `tools`, `metrics` and the agent's own types.

use std::sync::Arc;
use std::time::Duration;

use super::{Agent, CallObserver};
use crate::config::Config;
use crate::llm::LlmProvider;
use crate::metrics::Metrics;
use crate::tools::ToolRegistry;

/// Per-deployment agent settings, shared by every call.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Which agent this is (`default`, or an `AGENTS_DIR` file's name): recorded
    /// with every call it takes.
    pub agent_id: String,
    /// Shared by the histories of all the agent's calls (see [`crate::llm::Text`]).
    pub system_prompt: Arc<str>,
    /// What Twilio says when the call connects; recorded as the first reply.
    pub welcome_greeting: String,
    /// Spoken when the LLM fails.
    pub fallback_message: String,
    /// No first token (or no further token) within this time fails the reply.
    pub llm_timeout: Duration,
    /// Keypad digits are gathered until `#` or this much time without a key.
    pub dtmf_timeout: Duration,
    /// Tool rounds allowed in one reply.
    pub max_tool_rounds: u32,
    /// Spoken when tools run longer than `tool_filler_after` (empty: never).
    pub tool_filler: String,
    pub tool_filler_after: Duration,
    /// Spoken before hanging up when the model said nothing itself.
    pub goodbye_message: String,
    /// Spoken before a transfer when the model said nothing itself.
    pub handoff_message: String,
    /// Asked once when the caller has been silent for a while.
    pub still_there_message: String,
    /// A reply that is a goodbye ends the call without `end_call`.
    pub end_on_goodbye: bool,
    /// The agent's name, for `{agent_name}` in the messages below.
    pub agent_name: String,
    /// Left on a voicemail (`{key}`s are the call's parameters).
    pub voicemail_message: String,
    /// Said to a call-screening assistant: who calls and why.
    pub screening_message: String,
    /// The call's main language.
    pub language: String,
    /// Longest caller utterance (or heard part of a reply) kept; longer ones are cut.
    pub max_prompt_bytes: usize,
    /// Conversation bytes sent to the LLM besides the system prompt.
    pub max_history_bytes: usize,
}

impl AgentSettings {
    /// Small, quick settings for unit tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self {
            agent_id: "default".into(),
            system_prompt: "sys".into(),
            welcome_greeting: "Olá!".into(),
            fallback_message: "Desculpe.".into(),
            llm_timeout: Duration::from_millis(500),
            dtmf_timeout: Duration::from_millis(1500),
            max_tool_rounds: 3,
            tool_filler: "Um momento.".into(),
            tool_filler_after: Duration::from_millis(1000),
            goodbye_message: "Tchau!".into(),
            handoff_message: "Transferindo.".into(),
            still_there_message: "Ainda está aí?".into(),
            end_on_goodbye: true,
            agent_name: "Bia".into(),
            voicemail_message: "Oi {name}, aqui é {agent_name}. Retorne, por favor.".into(),
            screening_message: "Aqui é {agent_name}, sobre {reason}.".into(),
            language: "pt-BR".into(),
            max_prompt_bytes: 64,
            max_history_bytes: 64 * 1024,
        }
    }

    pub fn from_config(config: &Config) -> Self {
        Self {
            agent_id: config.agent.id.clone(),
            system_prompt: config.system_prompt.as_str().into(),
            welcome_greeting: config.relay.welcome_greeting.clone(),
            fallback_message: config.fallback_message.clone(),
            llm_timeout: config.llm.timeout,
            dtmf_timeout: config.dtmf_timeout,
            max_tool_rounds: config.tools.max_rounds,
            tool_filler: config.tools.filler.clone(),
            tool_filler_after: config.tools.filler_after,
            goodbye_message: config.tools.goodbye_message.clone(),
            handoff_message: config.tools.handoff_message.clone(),
            still_there_message: config.endings.still_there_message.clone(),
            end_on_goodbye: config.endings.end_on_goodbye,
            agent_name: config.agent_name.clone(),
            voicemail_message: config.endings.voicemail_message.clone(),
            screening_message: config.endings.screening_message.clone(),
            language: config.relay.language.clone(),
            max_prompt_bytes: config.limits.max_prompt_bytes,
            max_history_bytes: config.limits.max_history_bytes,
        }
    }
}

/// What every call's agent needs from the server, whatever the transport: the
/// ConversationRelay session, the media pipelines and any later bridge build their
/// agent (or their [`super::CallLog`]) from this one struct.
#[derive(Clone)]
pub struct AgentDeps {
    pub llm: Arc<dyn LlmProvider>,
    pub settings: Arc<AgentSettings>,
    /// The tools offered to the model.
    pub tools: Arc<ToolRegistry>,
    /// Where turns, tool calls and call records go (the recorder).
    pub observer: Arc<dyn CallObserver>,
    pub metrics: Arc<Metrics>,
}

impl AgentDeps {
    /// The tools a speech-to-speech session (Realtime, SIP) offers the model for
    /// `ctx`'s call, in the Realtime API's shape, without `unsupported`.
    pub fn realtime_tools(
        &self,
        ctx: &crate::tools::ToolContext,
        unsupported: &[crate::config::BuiltinTool],
    ) -> Vec<crate::speech::realtime::FunctionTool> {
        self.tools
            .specs_except(ctx, unsupported)
            .into_iter()
            .map(|spec| crate::speech::realtime::FunctionTool {
                name: spec.name,
                description: spec.description,
                parameters: spec.parameters,
            })
            .collect()
    }

    /// An agent for one call, reporting to `observer`.
    pub fn agent_with(&self, observer: Arc<dyn CallObserver>) -> Agent {
        Agent::new(self.llm.clone(), self.settings.clone())
            .with_observer(observer)
            .with_tools(self.tools.clone())
            .with_metrics(self.metrics.clone())
    }

    /// An agent for one call, reporting to the shared observer.
    pub fn agent(&self) -> Agent {
        self.agent_with(self.observer.clone())
    }
}
