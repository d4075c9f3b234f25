//! The offline provider: deterministic pt-BR replies streamed word by word, with no
//! key and no network, so a fresh checkout answers calls at once and tests and
//! benchmarks have a fixed, repeatable model.
//!
//! It reads the newest user message and picks a reply by keywords (greeting, hours,
//! goodbye, keypad digits); anything else is acknowledged by repeating it back.

use std::time::Duration;

use futures::{StreamExt, stream};

use super::{LlmEvent, LlmProvider, LlmRequest, LlmStream, Role};

/// Streams canned replies with `delay` between words.
pub struct ScriptedProvider {
    delay: Duration,
}

impl ScriptedProvider {
    pub fn new(delay: Duration) -> Self {
        Self { delay }
    }
}

impl LlmProvider for ScriptedProvider {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn model(&self) -> &str {
        "scripted"
    }

    fn stream(&self, request: LlmRequest) -> LlmStream {
        let user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        let words = split_words(&reply_to(user));
        let delay = self.delay;
        let tokens = stream::iter(words).then(move |word| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(LlmEvent::Text(word))
        });
        let done = stream::iter([Ok(LlmEvent::Finished {
            reason: Some("stop".into()),
        })]);
        tokens.chain(done).boxed()
    }
}

/// The reply to one caller utterance.
pub fn reply_to(user: &str) -> String {
    let said = fold(user);
    let has = |words: &[&str]| words.iter().any(|w| said.contains(w));
    if let Some(digits) = user.strip_prefix("DTMF: ") {
        format!("Você digitou {}. Obrigado, anotei.", spell_digits(digits))
    } else if has(&["tchau", "ate logo", "ate mais", "obrigad"]) {
        "Eu que agradeço a ligação! Tenha um ótimo dia. Até logo!".to_string()
    } else if has(&["horario", "funciona", "abre", "aberto"]) {
        "Nosso atendimento funciona de segunda a sexta, das nove da manhã às seis da tarde."
            .to_string()
    } else if has(&["ola", "oi", "bom dia", "boa tarde", "boa noite", "alo"]) {
        "Olá! Aqui é o assistente virtual da voxrelay. Em que posso ajudar você hoje?".to_string()
    } else if said.trim().is_empty() {
        "Desculpe, não consegui ouvir. Pode repetir, por favor?".to_string()
    } else {
        format!(
            "Entendi, você disse: {}. Posso ajudar com mais alguma coisa?",
            user.trim().trim_end_matches(['.', '!', '?'])
        )
    }
}

/// Lower case without accents, for keyword matching.
fn fold(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ã' => 'a',
            'é' | 'ê' => 'e',
            'í' => 'i',
            'ó' | 'ô' | 'õ' => 'o',
            'ú' | 'ü' => 'u',
            'ç' => 'c',
            other => other,
        })
        .collect()
}

fn spell_digits(digits: &str) -> String {
    digits
        .chars()
        .map(|c| match c {
            '#' => "sustenido".to_string(),
            '*' => "asterisco".to_string(),
            d => d.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits text into word tokens that keep their trailing space, as an LLM streams.
pub fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        current.push(c);
        if c == ' ' {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ChatMessage;

    #[test]
    fn words_keep_their_spaces() {
        assert_eq!(
            split_words("Olá, tudo bem?"),
            vec!["Olá, ", "tudo ", "bem?"]
        );
        assert_eq!(split_words("Olá, tudo bem?").concat(), "Olá, tudo bem?");
    }

    #[test]
    fn replies_are_deterministic_portuguese() {
        assert!(reply_to("Olá, bom dia").starts_with("Olá!"));
        assert!(reply_to("Qual o horário de funcionamento?").contains("segunda a sexta"));
        assert_eq!(
            reply_to("DTMF: 12#"),
            "Você digitou 1 2 sustenido. Obrigado, anotei."
        );
        assert_eq!(
            reply_to("Quero um orçamento."),
            "Entendi, você disse: Quero um orçamento. Posso ajudar com mais alguma coisa?"
        );
    }

    #[tokio::test]
    async fn streams_the_reply_then_finishes() {
        let provider = ScriptedProvider::new(Duration::ZERO);
        let events: Vec<_> = provider
            .stream(LlmRequest {
                messages: vec![ChatMessage::user("oi")],
                tools: vec![],
            })
            .collect()
            .await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(LlmEvent::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, reply_to("oi"));
        assert!(matches!(events.last(), Some(Ok(LlmEvent::Finished { .. }))));
    }
}
