//! The endings nobody asked for: a goodbye the model spoke without calling
//! `end_call` (it would otherwise leave the line open), and a caller gone silent
//! (asked once whether they are still there, then told goodbye). With `end_call`,
//! the transfer tool and the maximum duration (`time_up`), every call has a way
//! to end that does not depend on the caller hanging up. Pure text and state;
//! the transport says when the silence is due.

use std::time::SystemTime;

use super::event::{AgentOutput, Handoff, Latency, REASON_MAX_DURATION, Speaker};
use super::{Agent, ChatMessage};

/// `reasonCode` of a call ended after the model's own goodbye.
pub const REASON_GOODBYE: &str = "goodbye";
/// `reasonCode` of a call ended because the caller stayed silent.
pub const REASON_SILENCE: &str = "silence";

/// Roughly how long a voice takes to say one character of a reply: where a
/// transport cannot see the audio played, the silence clock starts once the
/// reply has had time to be heard.
pub const SPEECH_PER_CHAR: std::time::Duration = std::time::Duration::from_millis(70);

/// Farewells that close a call (pt-BR and English), matched in the reply's last
/// sentence, lower-cased.
const FAREWELLS: &[&str] = &[
    "tchau",
    "até logo",
    "até mais",
    "até breve",
    "até a próxima",
    "tenha um ótimo dia",
    "tenha um bom dia",
    "tenha uma ótima tarde",
    "tenha uma boa tarde",
    "tenha uma ótima noite",
    "tenha uma boa noite",
    "obrigado pela ligação",
    "obrigada pela ligação",
    "goodbye",
    "good bye",
    "bye",
    "have a great day",
    "have a nice day",
    "have a good day",
    "take care",
    "talk to you soon",
    "thanks for calling",
    "thank you for calling",
];

/// Whether `reply` ends the conversation: its last sentence (or the one before a
/// short closing one) bids farewell and asks nothing.
pub fn is_goodbye(reply: &str) -> bool {
    let lower = reply.trim().to_lowercase();
    if lower.is_empty() || lower.ends_with('?') {
        return false;
    }
    let sentences: Vec<&str> = lower
        .split(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    // A question anywhere in the last two sentences keeps the call open.
    let tail_start = lower.rfind('?').map(|i| i + 1).unwrap_or(0);
    let tail = &lower[tail_start..];
    sentences.iter().rev().take(2).any(|sentence| {
        tail.contains(sentence)
            && says_farewell(sentence)
            // "Até mais tarde eu te ligo" is a plan, not a goodbye.
            && !sentence.contains("eu te ligo")
            && !sentence.contains("i'll call")
    })
}

/// Whether one of [`FAREWELLS`] stands in `sentence` as whole words. Tried only
/// where a word starts, each phrase by a prefix comparison: every reply is
/// checked, and a substring search per phrase cost more than the rest of the
/// turn's text handling.
fn says_farewell(sentence: &str) -> bool {
    let mut previous: Option<char> = None;
    sentence.char_indices().any(|(at, c)| {
        let word_starts = previous.is_none_or(|p| !p.is_alphanumeric());
        previous = Some(c);
        word_starts
            && FAREWELLS.iter().any(|farewell| {
                sentence[at..].starts_with(farewell)
                    && sentence[at + farewell.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| !c.is_alphanumeric())
            })
    })
}

impl Agent {
    /// After a complete reply: ends the call when the reply was a goodbye.
    pub(super) fn end_if_goodbye(&mut self, reply: &str) {
        if self.ended.is_some() || !self.settings.end_on_goodbye || !is_goodbye(reply) {
            return;
        }
        tracing::info!("the agent said goodbye without end_call; ending the call");
        let handoff = self.handoff_for(REASON_GOODBYE, "the agent said goodbye");
        self.pending
            .push_back(AgentOutput::End(Box::new(handoff.clone())));
        self.ended = Some(handoff);
    }

    /// The caller has said nothing for the silence timeout since the agent
    /// stopped speaking: the first time, ask whether they are still there; the
    /// second, say goodbye and end.
    pub(super) fn silence(&mut self) {
        if self.ended.is_some() || self.turn.is_some() {
            return;
        }
        if !self.asked_still_there {
            self.asked_still_there = true;
            let question = self.settings.still_there_message.clone();
            self.say(&question);
            return;
        }
        let goodbye = self.settings.goodbye_message.clone();
        self.say_and_end(&goodbye, REASON_SILENCE, "the caller stayed silent");
    }

    /// The call reached its maximum duration: whatever is being said stops, the
    /// goodbye is spoken as a turn of its own, and the call ends.
    pub(super) fn time_up(&mut self) {
        if self.ended.is_some() {
            return;
        }
        self.stop_reply();
        self.pending
            .retain(|o| !matches!(o, AgentOutput::Token(_) | AgentOutput::TurnEnd));
        self.digits.take();
        let goodbye = self.settings.goodbye_message.clone();
        self.say_and_end(
            &goodbye,
            REASON_MAX_DURATION,
            "the call reached its maximum duration",
        );
    }

    pub(super) fn say_and_end(&mut self, words: &str, reason_code: &str, reason: &str) {
        self.say(words);
        let handoff = self.handoff_for(reason_code, reason);
        self.pending
            .push_back(AgentOutput::End(Box::new(handoff.clone())));
        self.ended = Some(handoff);
    }

    /// Speaks `words` as a reply of their own (in history and transcript).
    pub(super) fn say(&mut self, words: &str) {
        if words.is_empty() {
            return;
        }
        for word in crate::llm::scripted::split_words(words) {
            self.pending.push_back(AgentOutput::Token(word));
        }
        self.pending.push_back(AgentOutput::TurnEnd);
        self.history.push(ChatMessage::assistant(words.to_string()));
        self.record_turn(
            Speaker::Agent,
            words,
            SystemTime::now(),
            Latency::default(),
            None,
        );
    }

    fn handoff_for(&self, reason_code: &str, reason: &str) -> Handoff {
        Handoff {
            reason_code: reason_code.into(),
            reason: Some(reason.into()),
            call_sid: self.log.call().map(|c| c.call_sid.clone()),
            ..Handoff::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FAREWELLS, is_goodbye, says_farewell};

    #[test]
    fn every_farewell_is_found_alone_and_between_words() {
        for farewell in FAREWELLS {
            assert!(says_farewell(farewell), "{farewell}");
            assert!(
                says_farewell(&format!("ok, {farewell} então")),
                "{farewell}"
            );
            // Glued to other letters on both sides, it is part of other words.
            assert!(!says_farewell(&format!("x{farewell}x")), "{farewell}");
        }
    }

    #[test]
    fn a_farewell_counts_only_as_whole_words_wherever_it_occurs() {
        // The first "bye" is part of a word, the second stands alone.
        assert!(is_goodbye("Byebye pra você, bye"));
        assert!(!is_goodbye("Abyebye"));
        // "até mais" inside a longer farewell phrase still ends the call.
        assert!(is_goodbye("Muito obrigado, até mais"));
    }

    #[test]
    fn goodbyes_end_and_ordinary_replies_do_not() {
        for reply in [
            "Obrigado pela ligação. Até logo!",
            "Perfeito, está agendado para amanhã às 15h. Tenha um ótimo dia!",
            "Combinado, Ana. Tchau!",
            "Your appointment is booked. Have a great day!",
            "Thanks for calling. Goodbye.",
            "Até mais!",
        ] {
            assert!(is_goodbye(reply), "{reply}");
        }
        for reply in [
            "Bom dia! Como posso ajudar?",
            "Alô, quem fala?",
            "Posso ajudar em mais alguma coisa? Tchau não, né?",
            "Tenha um ótimo dia! Posso ajudar em algo mais?",
            "Até mais tarde eu te ligo com a confirmação.",
            "Claro, vou verificar a agenda.",
            "Byelorussian documents are accepted.",
            "",
        ] {
            assert!(!is_goodbye(reply), "{reply}");
        }
    }
}
