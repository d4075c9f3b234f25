//! Voicemail and call-screening assistants, heard in what the called party says
//! (the first caller turns of a call), and what the agent does about them: on a
//! voicemail greeting it leaves the agent's voicemail message and ends the call;
//! on a screening assistant ("the person you're calling is using a screening
//! service…") it says who it is and why it calls, briefly, and waits for the
//! person. Twilio's asynchronous answering-machine detection reaches the same
//! voicemail path through [`AgentInput::Voicemail`](super::AgentInput). Pure
//! text and state.

use super::Agent;
use super::event::AgentOutput;

/// `reasonCode` of a call ended after leaving a voicemail message.
pub const REASON_VOICEMAIL: &str = "voicemail";

/// How many of the first caller turns are checked.
pub const CHECKED_TURNS: u32 = 2;

/// What answered the call, as far as its words tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Voicemail,
    ScreeningAssistant,
}

/// Phrases of call-screening assistants (pt-BR and English), lower-case.
const SCREENING: &[&str] = &[
    "serviço de triagem",
    "triagem de chamadas",
    "filtragem de chamadas",
    "filtro de chamadas",
    "diga seu nome e o motivo",
    "informe seu nome e o motivo",
    "diga o seu nome e o motivo",
    "quem está ligando e por quê",
    "quem está ligando e por que",
    "screening service",
    "call screening",
    "screen this call",
    "the person you're calling is using",
    "the person you are calling is using",
    "say your name and why you're calling",
    "state your name and the reason",
    "who's calling and why",
    "who is calling and why",
];

/// Phrases of voicemail greetings (pt-BR and English), lower-case.
const VOICEMAIL: &[&str] = &[
    "deixe sua mensagem",
    "deixe a sua mensagem",
    "deixe seu recado",
    "deixe o seu recado",
    "grave seu recado",
    "grave sua mensagem",
    "após o sinal",
    "depois do sinal",
    "após o bipe",
    "caixa postal",
    "caixa de mensagens",
    "leave a message",
    "leave your message",
    "leave me a message",
    "after the beep",
    "after the tone",
    "record your message",
    "voicemail",
    "voice mail",
    "mailbox",
];

/// What the words say answered, if anything but a person.
pub fn classify(text: &str) -> Option<Answered> {
    let lower = text.to_lowercase().replace('’', "'");
    if SCREENING.iter().any(|p| lower.contains(p)) {
        return Some(Answered::ScreeningAssistant);
    }
    if VOICEMAIL.iter().any(|p| lower.contains(p)) {
        return Some(Answered::Voicemail);
    }
    None
}

/// `template` with `{key}` replaced by the call's parameters and `{agent_name}`;
/// unknown keys are left out.
pub fn fill(
    template: &str,
    agent_name: &str,
    parameters: &std::collections::HashMap<String, String>,
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = &rest[start + 1..start + len];
        match key {
            "agent_name" => out.push_str(agent_name),
            _ => out.push_str(parameters.get(key).map(String::as_str).unwrap_or_default()),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Agent {
    /// A voicemail answered (`signal`: `amd` or `transcript`): stop what is being
    /// said, leave the voicemail message, end the call.
    pub(super) fn voicemail(&mut self, signal: &str) {
        if self.ended.is_some() {
            return;
        }
        tracing::info!(signal, "a voicemail answered; leaving the message");
        if signal != "amd" {
            // Twilio's own detection is stored from its callback.
            self.log.answered_by("voicemail", signal);
        }
        self.stop_reply();
        self.pending
            .retain(|o| !matches!(o, AgentOutput::Token(_) | AgentOutput::TurnEnd));
        self.digits.take();
        let message = self.fill_message(&self.settings.voicemail_message.clone());
        let reason = format!("voicemail detected by {signal}");
        self.say_and_end(&message, REASON_VOICEMAIL, &reason);
    }

    /// A screening assistant answered: say who calls and why, then wait.
    pub(super) fn screening(&mut self) {
        tracing::info!("a call-screening assistant answered; introducing the call");
        self.log.answered_by("screening", "transcript");
        let message = self.fill_message(&self.settings.screening_message.clone());
        self.say(&message);
    }

    /// The caller's words, checked while they may still be a machine's. True when
    /// they were, and the agent has answered.
    pub(super) fn answered_by_machine(&mut self, text: &str) -> bool {
        if self.caller_turns > CHECKED_TURNS {
            return false;
        }
        match classify(text) {
            Some(Answered::Voicemail) => {
                self.voicemail("transcript");
                true
            }
            Some(Answered::ScreeningAssistant) => {
                self.screening();
                true
            }
            None => false,
        }
    }

    fn fill_message(&self, template: &str) -> String {
        let parameters = self
            .log
            .call()
            .map(|c| c.parameters.clone())
            .unwrap_or_default();
        fill(template, &self.settings.agent_name, &parameters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voicemail_and_screening_in_both_languages() {
        for text in [
            "Você ligou para a Ana. Deixe sua mensagem após o sinal.",
            "A pessoa não pode atender. Sua chamada está sendo encaminhada para a caixa postal.",
            "Hi, this is Bob. Please leave a message after the beep.",
            "The number you have reached has a full mailbox.",
        ] {
            assert_eq!(classify(text), Some(Answered::Voicemail), "{text}");
        }
        for text in [
            "The person you're calling is using a screening service from Google. Say your name and why you're calling.",
            "Olá, a pessoa para quem você ligou usa um serviço de triagem. Diga seu nome e o motivo da ligação.",
            "Hi, the person you’re calling is using a screening service.",
        ] {
            assert_eq!(classify(text), Some(Answered::ScreeningAssistant), "{text}");
        }
        for text in [
            "Alô, quem fala?",
            "Oi, pode falar.",
            "Hello? Who is this?",
            "Sim, sou eu mesma. Qual é o assunto?",
            "Ele não está, quer deixar um número?",
        ] {
            assert_eq!(classify(text), None, "{text}");
        }
    }

    #[test]
    fn messages_are_filled_with_the_call_data() {
        let parameters = [("name".to_string(), "Ana".to_string())].into();
        assert_eq!(
            fill(
                "Olá {name}, aqui é {agent_name}. {missing} Até logo!",
                "Bia",
                &parameters
            ),
            "Olá Ana, aqui é Bia. Até logo!"
        );
        assert_eq!(fill("sem chaves {", "Bia", &parameters), "sem chaves {");
    }
}
