//! Unit tests of the agent core: replies, interruptions, digits, time limits.

use super::*;
use crate::llm::scripted::ScriptedProvider;
use crate::llm::{LlmProvider, LlmRequest, LlmStream, Role};
use futures::stream;

fn settings() -> Arc<AgentSettings> {
    Arc::new(AgentSettings::for_tests())
}

#[tokio::test]
async fn time_up_says_goodbye_and_ends_the_call() {
    let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
    agent.handle(AgentInput::CallStarted(CallInfo::default()));
    agent.handle(AgentInput::TimeUp);
    assert_eq!(collect_reply(&mut agent).await, "Tchau!");
    match agent.next_output().await {
        AgentOutput::End(handoff) => assert_eq!(handoff.reason_code, REASON_MAX_DURATION),
        other => panic!("unexpected {other:?}"),
    }
    agent.handle(AgentInput::UserText {
        text: "ainda aí?".into(),
        lang: None,
    });
    assert!(!agent.is_replying(), "nothing more is said");
}

#[tokio::test]
async fn an_oversized_utterance_is_cut() {
    let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
    agent.handle(AgentInput::CallStarted(CallInfo::default()));
    agent.handle(AgentInput::UserText {
        text: "ã".repeat(1000),
        lang: None,
    });
    let user = agent
        .history()
        .iter()
        .rfind(|m| m.role == Role::User)
        .unwrap();
    assert_eq!(
        user.content.as_str(),
        "ã".repeat(32),
        "64 bytes, on a character boundary"
    );
}

async fn collect_reply(agent: &mut Agent) -> String {
    let mut text = String::new();
    loop {
        match agent.next_output().await {
            AgentOutput::Token(t) => text.push_str(&t),
            AgentOutput::TurnEnd => return text,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A provider whose stream never yields.
struct Silent;
impl LlmProvider for Silent {
    fn name(&self) -> &'static str {
        "silent"
    }
    fn model(&self) -> &str {
        "silent"
    }
    fn stream(&self, _: LlmRequest<'_>) -> LlmStream {
        stream::pending().boxed()
    }
}

#[tokio::test]
async fn reply_is_streamed_and_recorded() {
    let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
    agent.handle(AgentInput::CallStarted(CallInfo::default()));
    agent.handle(AgentInput::UserText {
        text: "oi".into(),
        lang: None,
    });
    let reply = collect_reply(&mut agent).await;
    assert_eq!(reply, crate::llm::scripted::reply_to("oi"));
    let roles: Vec<_> = agent.history().iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        vec![Role::System, Role::Assistant, Role::User, Role::Assistant]
    );
    assert_eq!(agent.history()[1].content, "Olá!");
}

#[test]
fn a_per_call_greeting_replaces_the_configured_one() {
    let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
    let parameters = [
        (
            GREETING_PARAMETER.to_string(),
            "Oi Ana, aqui é a Clínica Sol!".to_string(),
        ),
        ("lead".to_string(), "Ana".to_string()),
    ];
    agent.handle(AgentInput::CallStarted(CallInfo {
        parameters: parameters.into_iter().collect(),
        ..CallInfo::default()
    }));
    let history = agent.history();
    assert_eq!(history[1].content, "Oi Ana, aqui é a Clínica Sol!");
    assert!(
        history[0].content.contains("lead: Ana"),
        "{}",
        history[0].content
    );
    assert!(!history[0].content.contains(GREETING_PARAMETER));
    assert!(
        !agent
            .call()
            .unwrap()
            .parameters
            .contains_key(GREETING_PARAMETER)
    );

    // An empty per-call greeting means Twilio said nothing first.
    let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
    agent.handle(AgentInput::CallStarted(CallInfo {
        parameters: [(GREETING_PARAMETER.to_string(), String::new())]
            .into_iter()
            .collect(),
        ..CallInfo::default()
    }));
    assert_eq!(agent.history().len(), 1);
    assert_eq!(agent.history()[0].content, "sys");
}

#[tokio::test(start_paused = true)]
async fn digits_are_flushed_after_the_timeout() {
    let mut agent = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings());
    agent.handle(AgentInput::Digit('4'));
    agent.handle(AgentInput::Digit('2'));
    let reply = collect_reply(&mut agent).await;
    assert!(reply.contains("4 2"), "{reply}");
    assert_eq!(agent.history()[1].content, "DTMF: 42");
}

#[tokio::test(start_paused = true)]
async fn silent_llm_times_out_into_the_fallback() {
    let mut agent = Agent::new(Arc::new(Silent), settings());
    agent.handle(AgentInput::UserText {
        text: "oi".into(),
        lang: None,
    });
    assert_eq!(collect_reply(&mut agent).await, "Desculpe.");
    assert_eq!(agent.stats().llm_errors, 1);
    assert_eq!(agent.stats().last_error, Some("timeout"));
    assert!(!agent.is_replying());
}

/// A provider that asks for `end_call` on every request.
struct Hangs;
impl LlmProvider for Hangs {
    fn name(&self) -> &'static str {
        "hangs"
    }
    fn model(&self) -> &str {
        "hangs"
    }
    fn stream(&self, _: LlmRequest<'_>) -> LlmStream {
        stream::iter([
            Ok(LlmEvent::ToolCallDelta {
                index: 0,
                id: Some("c1".into()),
                name: Some("end_call".into()),
                arguments: "{\"rea".into(),
            }),
            Ok(LlmEvent::ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "son\":\"fim\"}".into(),
            }),
            Ok(LlmEvent::Finished {
                reason: Some("tool_calls".into()),
            }),
        ])
        .boxed()
    }
}

#[tokio::test]
async fn the_end_survives_an_interrupt_during_the_goodbye() {
    let config = crate::Config::from_vars(Default::default()).unwrap();
    let mut agent = Agent::new(Arc::new(Hangs), settings())
        .with_tools(Arc::new(ToolRegistry::from_config(&config)));
    agent.handle(AgentInput::CallStarted(CallInfo {
        call_sid: "CA1".into(),
        ..CallInfo::default()
    }));
    agent.handle(AgentInput::UserText {
        text: "tchau".into(),
        lang: None,
    });
    assert_eq!(
        agent.next_output().await,
        AgentOutput::Token("Tchau!".into())
    );
    agent.handle(AgentInput::Interrupt {
        heard: String::new(),
    });
    let AgentOutput::End(handoff) = agent.next_output().await else {
        panic!("the end was lost")
    };
    assert_eq!(handoff.reason_code, REASON_END_CALL);
    assert_eq!(handoff.reason.as_deref(), Some("fim"));
    // Nothing more is said once the call is ending.
    agent.handle(AgentInput::UserText {
        text: "espera".into(),
        lang: None,
    });
    assert!(!agent.is_replying());
    assert!(agent.ended().is_some());
}

#[test]
fn calls_share_the_system_prompt_until_one_adds_its_data() {
    let settings = settings();
    let mut plain = Agent::new(
        Arc::new(ScriptedProvider::new(Duration::ZERO)),
        settings.clone(),
    );
    plain.handle(AgentInput::CallStarted(CallInfo::default()));
    let crate::llm::Text::Shared(prompt) = &plain.history()[0].content else {
        panic!("a call without parameters copied the system prompt");
    };
    assert!(Arc::ptr_eq(prompt, &settings.system_prompt));

    let mut with_data = Agent::new(Arc::new(ScriptedProvider::new(Duration::ZERO)), settings);
    with_data.handle(AgentInput::CallStarted(CallInfo {
        parameters: [("lead".to_string(), "Ana".to_string())]
            .into_iter()
            .collect(),
        ..CallInfo::default()
    }));
    let content = &with_data.history()[0].content;
    assert!(matches!(content, crate::llm::Text::Owned(_)));
    assert!(
        content.starts_with("sys") && content.contains("lead: Ana"),
        "{content}"
    );
}
