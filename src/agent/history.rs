//! Conversation history: bounded, and truncated to what the caller actually heard
//! when they interrupt (`docs/conversationrelay.md`, "What the caller heard").

use crate::llm::{ChatMessage, Role};

/// The most messages kept besides the system prompt; older ones are dropped in
/// whole turns so a tool call never loses its result.
pub const MAX_MESSAGES: usize = 200;
/// Conversation bytes kept besides the system prompt, unless set otherwise.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// The conversation as the LLM sees it. The first message is always the system
/// prompt. Bounded in messages and in bytes: the oldest turns go first.
#[derive(Debug, Clone)]
pub struct History {
    messages: Vec<ChatMessage>,
    max_bytes: usize,
}

impl History {
    pub fn new(system_prompt: impl Into<crate::llm::Text>) -> Self {
        Self {
            messages: vec![ChatMessage::system(system_prompt)],
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// Keeps at most `max` bytes of conversation besides the system prompt.
    pub fn with_max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    pub fn set_system_prompt(&mut self, prompt: String) {
        self.messages[0].content = prompt.into();
    }

    /// Bytes of the conversation besides the system prompt (texts, tool calls).
    pub fn conversation_bytes(&self) -> usize {
        self.messages[1..].iter().map(message_bytes).sum()
    }

    /// Bytes of the whole history, system prompt included.
    pub fn total_bytes(&self) -> usize {
        self.messages.iter().map(message_bytes).sum()
    }

    pub fn push(&mut self, message: ChatMessage) {
        self.messages.push(message);
        if self.messages.len() > MAX_MESSAGES + 1 {
            // Drop from the oldest user message up to the next one.
            let next_user = self.next_user_after_oldest().unwrap_or(2);
            self.messages.drain(1..next_user);
        }
        while self.conversation_bytes() > self.max_bytes {
            // Whole turns only; the turn in progress is never cut.
            let Some(next_user) = self.next_user_after_oldest() else {
                break;
            };
            self.messages.drain(1..next_user);
        }
    }

    /// The index of the first user message after the oldest kept one.
    fn next_user_after_oldest(&self) -> Option<usize> {
        self.messages
            .get(2..)?
            .iter()
            .position(|m| m.role == Role::User)
            .map(|p| p + 2)
    }

    /// Cuts the reply being spoken down to `heard`, and forgets everything generated
    /// after it, so the model never believes it said what the caller did not hear.
    ///
    /// The newest assistant message containing `heard` (exactly, or ignoring case,
    /// accents and punctuation) is cut right after the last occurrence. If no message
    /// contains it, the newest reply becomes `heard` itself; if nothing was heard, it
    /// is removed. Returns the text kept, if a reply was found.
    pub fn truncate_to_heard(&mut self, heard: &str) -> Option<String> {
        let heard = heard.trim();
        // Replies since the caller last spoke, newest first.
        let last_user = self
            .messages
            .iter()
            .rposition(|m| m.role == Role::User)
            .unwrap_or(0);
        let candidates: Vec<usize> = (last_user + 1..self.messages.len())
            .rev()
            .filter(|&i| {
                self.messages[i].role == Role::Assistant && !self.messages[i].content.is_empty()
            })
            .collect();
        let newest = *candidates.first()?;
        let (index, kept) = if heard.is_empty() {
            (newest, String::new())
        } else {
            candidates
                .iter()
                .find_map(|&i| cut_after(&self.messages[i].content, heard).map(|k| (i, k)))
                .unwrap_or_else(|| (newest, heard.to_string()))
        };
        // Everything the model produced after the interrupted reply was never heard,
        // except the results of the kept message's own tool calls: those tools ran,
        // and a tool call without its result would make the history invalid.
        let kept_calls: Vec<String> = self.messages[index]
            .tool_calls
            .iter()
            .map(|c| c.id.clone())
            .collect();
        let mut i = self.messages.len();
        while i > index + 1 {
            i -= 1;
            let message = &self.messages[i];
            let answers_kept = message.role == Role::Tool
                && message
                    .tool_call_id
                    .as_ref()
                    .is_some_and(|id| kept_calls.contains(id));
            if matches!(message.role, Role::Assistant | Role::Tool) && !answers_kept {
                self.messages.remove(i);
            }
        }
        if kept.is_empty() && self.messages[index].tool_calls.is_empty() {
            self.messages.remove(index);
        } else {
            self.messages[index].content = kept.clone().into();
        }
        Some(kept)
    }
}

fn message_bytes(m: &ChatMessage) -> usize {
    m.content.len()
        + m.tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + c.arguments.len())
            .sum::<usize>()
        + m.tool_call_id.as_ref().map_or(0, String::len)
}

/// `text` up to and including the last occurrence of `heard`, matched exactly or,
/// failing that, ignoring case, accents, punctuation and spacing.
fn cut_after(text: &str, heard: &str) -> Option<String> {
    if let Some(pos) = text.rfind(heard) {
        return Some(text[..pos + heard.len()].to_string());
    }
    let (folded_text, ends) = fold_with_map(text);
    let (folded_heard, _) = fold_with_map(heard);
    if folded_heard.is_empty() {
        return None;
    }
    let pos = folded_text.rfind(&folded_heard)?;
    // `ends[k]` is the byte offset in `text` just after the char that became the
    // k-th folded char; the match ends with folded char pos + len - 1.
    let last = folded_text[..pos + folded_heard.len()].chars().count() - 1;
    let mut end = ends[last];
    // Keep punctuation that closes the heard words ("Olá!" heard as "Olá").
    while let Some(c) = text[end..].chars().next() {
        if c.is_alphanumeric() || c.is_whitespace() {
            break;
        }
        end += c.len_utf8();
    }
    Some(text[..end].to_string())
}

/// Folds text to lower-case ASCII-ish letters, digits and single spaces, with, for
/// each folded char, the byte offset in the original just after it.
fn fold_with_map(text: &str) -> (String, Vec<usize>) {
    let mut out = String::new();
    let mut ends = Vec::new();
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        let folded = match crate::text::fold_char(c) {
            c if c.is_alphanumeric() => c,
            _ => ' ',
        };
        if folded == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(folded);
        ends.push(end);
    }
    if out.ends_with(' ') {
        out.pop();
        ends.pop();
    }
    (out, ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(msgs: &[ChatMessage]) -> History {
        let mut h = History::new("sys");
        for m in msgs {
            h.push(m.clone());
        }
        h
    }

    #[test]
    fn bytes_stay_under_the_cap_across_long_turns_and_the_system_prompt_stays() {
        let mut h = History::new("sys").with_max_bytes(16 * 1024);
        for i in 0..500 {
            h.push(ChatMessage::user(format!("{i} {}", "p".repeat(3000))));
            h.push(ChatMessage::assistant(format!("{i} {}", "r".repeat(1000))));
            assert!(h.conversation_bytes() <= 16 * 1024, "turn {i}");
        }
        assert_eq!(h.messages()[0].content, "sys");
        assert_eq!(h.messages()[1].role, Role::User, "whole turns are dropped");
        assert!(h.messages().last().unwrap().content.starts_with("499 "));
    }

    #[test]
    fn cuts_the_newest_reply_after_the_heard_text() {
        let mut h = history(&[
            ChatMessage::user("me fale da vida"),
            ChatMessage::assistant("A vida é um conjunto complexo de coisas. E mais."),
        ]);
        assert_eq!(
            h.truncate_to_heard("A vida é um conjunto complexo de")
                .as_deref(),
            Some("A vida é um conjunto complexo de")
        );
        assert_eq!(h.messages()[2].content, "A vida é um conjunto complexo de");
    }

    #[test]
    fn fuzzy_match_ignores_case_accents_and_punctuation() {
        let mut h = history(&[
            ChatMessage::user("oi"),
            ChatMessage::assistant("Olá! Tudo bem, João? Posso ajudar."),
        ]);
        h.truncate_to_heard("ola tudo bem joao");
        assert_eq!(h.messages()[2].content, "Olá! Tudo bem, João?");
    }

    #[test]
    fn unknown_heard_text_replaces_the_reply_and_empty_removes_it() {
        let mut h = history(&[ChatMessage::user("oi"), ChatMessage::assistant("Bom dia.")]);
        h.truncate_to_heard("algo diferente");
        assert_eq!(h.messages()[2].content, "algo diferente");
        let mut h = history(&[ChatMessage::user("oi"), ChatMessage::assistant("Bom dia.")]);
        h.truncate_to_heard("");
        assert_eq!(h.messages().len(), 2);
    }

    #[test]
    fn later_generated_messages_are_dropped_and_older_turns_kept() {
        let mut h = history(&[
            ChatMessage::user("um"),
            ChatMessage::assistant("Resposta um."),
            ChatMessage::user("dois"),
            ChatMessage::assistant("Primeira parte da resposta."),
            ChatMessage::tool("c1", "resultado"),
            ChatMessage::assistant("Segunda parte."),
        ]);
        h.truncate_to_heard("Primeira parte");
        let contents: Vec<_> = h.messages().iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            contents,
            vec!["sys", "um", "Resposta um.", "dois", "Primeira parte"]
        );
    }

    #[test]
    fn cutting_at_a_tool_call_keeps_its_results_and_drops_later_rounds() {
        let mut asked = ChatMessage::assistant("Vou verificar agora mesmo.");
        asked.tool_calls.push(crate::llm::ToolCall {
            id: "c1".into(),
            name: "consultar".into(),
            arguments: "{}".into(),
        });
        let mut again = ChatMessage::assistant("");
        again.tool_calls.push(crate::llm::ToolCall {
            id: "c2".into(),
            name: "consultar".into(),
            arguments: "{}".into(),
        });
        let mut h = history(&[
            ChatMessage::user("meu pedido?"),
            asked,
            ChatMessage::tool("c1", "ok"),
            again,
            ChatMessage::tool("c2", "ok"),
            ChatMessage::assistant("Seu pedido chega amanhã."),
        ]);
        h.truncate_to_heard("Vou verificar");
        let shape: Vec<_> = h
            .messages()
            .iter()
            .map(|m| (m.role, m.content.as_str(), m.tool_calls.len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (Role::System, "sys", 0),
                (Role::User, "meu pedido?", 0),
                (Role::Assistant, "Vou verificar", 1),
                (Role::Tool, "ok", 0),
            ]
        );
        assert_eq!(h.messages()[3].tool_call_id.as_deref(), Some("c1"));
    }

    #[test]
    fn history_is_bounded_and_keeps_the_system_prompt() {
        let mut h = History::new("sys");
        for i in 0..MAX_MESSAGES {
            h.push(ChatMessage::user(format!("u{i}")));
            h.push(ChatMessage::assistant(format!("a{i}")));
        }
        assert!(h.messages().len() <= MAX_MESSAGES + 1);
        assert_eq!(h.messages()[0].content, "sys");
        assert_eq!(h.messages()[1].role, Role::User);
    }
}
