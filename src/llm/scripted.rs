//! The offline provider: deterministic pt-BR replies streamed word by word, with no
//! key and no network, so a fresh checkout answers calls at once and tests and
//! benchmarks have a fixed, repeatable model.
//!
//! It reads the newest user message and picks a reply by keywords (greeting, hours,
//! goodbye, keypad digits); anything else is acknowledged by repeating it back.
//!
//! When tools are offered it drives them like a real model, with streamed
//! tool-call deltas: asked to book ("quero agendar…") it asks for the name, the day
//! and the time, calls `schedule_appointment`, and confirms the result (or asks
//! again when the tool rejects the day); told goodbye it says goodbye and calls
//! `end_call`. Its state is derived from the conversation it is given, so it stays
//! deterministic and survives interruptions and resumed calls.

use std::time::Duration;

use futures::{StreamExt, stream};
use serde_json::{Value, json};

use super::{ChatMessage, LlmEvent, LlmProvider, LlmRequest, LlmStream, Role};

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

    fn stream(&self, request: LlmRequest<'_>) -> LlmStream {
        let events = plan(&request);
        let delay = self.delay;
        let events = stream::iter(events).then(move |event| async move {
            if !delay.is_zero() && matches!(event, LlmEvent::Text(_)) {
                tokio::time::sleep(delay).await;
            }
            Ok(event)
        });
        let done = stream::iter([Ok(LlmEvent::Finished {
            reason: Some("stop".into()),
        })]);
        events.chain(done).boxed()
    }
}

const ASK_NAME: &str = "Claro, vamos agendar! Qual é o seu nome?";
const ASK_TIME: &str = "E qual horário fica melhor para você?";
const ASK_DAY_AGAIN: &str = "Desculpe, não entendi o dia. Para qual dia você gostaria de agendar? Por exemplo: amanhã, segunda-feira ou 24/11.";
pub const GOODBYE: &str = "Eu que agradeço a ligação! Tenha um ótimo dia. Até logo!";

/// Which question an agent message asks, by its wording.
#[derive(Clone, Copy, PartialEq)]
enum Question {
    Name,
    Day,
    Time,
}

fn question_in(text: &str) -> Option<Question> {
    let said = crate::text::fold(text);
    if said.contains("qual e o seu nome") {
        Some(Question::Name)
    } else if said.contains("para qual dia") {
        Some(Question::Day)
    } else if said.contains("qual horario") {
        Some(Question::Time)
    } else {
        None
    }
}

/// Everything the scripted model streams in answer to `request`.
pub fn plan(request: &LlmRequest<'_>) -> Vec<LlmEvent> {
    let offered = |name: &str| request.tools.iter().any(|t| t.name == name);
    let messages = request.messages;
    let call_id = format!("call_scripted_{}", messages.len());
    let text = |t: String| split_words(&t).into_iter().map(LlmEvent::Text).collect();
    if messages.last().is_some_and(|m| m.role == Role::Tool) {
        return text(after_tools(messages));
    }
    let user = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    if offered("end_call") && is_goodbye(user) {
        let mut events: Vec<LlmEvent> = text(GOODBYE.to_string());
        events.extend(tool_call(
            &call_id,
            "end_call",
            &json!({"reason": "o cliente se despediu"}),
        ));
        return events;
    }
    if offered("schedule_appointment")
        && let Some(step) = booking_step(messages)
    {
        return match step {
            Booking::Ask(Question::Name) => text(ASK_NAME.to_string()),
            Booking::Ask(Question::Day) => text(format!(
                "Prazer, {}! Para qual dia você gostaria de agendar?",
                booking_name(messages).unwrap_or_default()
            )),
            Booking::Ask(Question::Time) => text(ASK_TIME.to_string()),
            Booking::Book { name, day, time } => tool_call(
                &call_id,
                "schedule_appointment",
                &json!({"name": name, "preferred_day": day, "preferred_time": time}),
            ),
        };
    }
    text(reply_to(user))
}

/// A tool call streamed as OpenAI does: id and name first, then the arguments in
/// pieces.
fn tool_call(id: &str, name: &str, arguments: &Value) -> Vec<LlmEvent> {
    let arguments = arguments.to_string();
    let mut cut = arguments.len() / 2;
    while !arguments.is_char_boundary(cut) {
        cut += 1;
    }
    vec![
        LlmEvent::ToolCallDelta {
            index: 0,
            id: Some(id.to_string()),
            name: Some(name.to_string()),
            arguments: String::new(),
        },
        LlmEvent::ToolCallDelta {
            index: 0,
            id: None,
            name: None,
            arguments: arguments[..cut].to_string(),
        },
        LlmEvent::ToolCallDelta {
            index: 0,
            id: None,
            name: None,
            arguments: arguments[cut..].to_string(),
        },
    ]
}

/// What to say once tools answered: confirm a booking, or ask again.
fn after_tools(messages: &[ChatMessage]) -> String {
    let results: Vec<Value> = messages
        .iter()
        .rev()
        .take_while(|m| m.role == Role::Tool)
        .filter_map(|m| serde_json::from_str(&m.content).ok())
        .collect();
    for result in &results {
        if let Some(booked) = result.get("booked") {
            let name = booked["name"].as_str().unwrap_or_default();
            let day = booked["day_spoken"].as_str().unwrap_or_default();
            let at = booked["time"]
                .as_str()
                .map(|t| format!(", às {t}"))
                .unwrap_or_default();
            return format!(
                "Pronto, {name}! Seu horário ficou agendado para {day}{at}. Posso ajudar em mais alguma coisa?"
            );
        }
        if let Some(error) = result.get("error").and_then(Value::as_str) {
            if error.contains("day") {
                return ASK_DAY_AGAIN.to_string();
            }
            if error.contains("name") {
                return ASK_NAME.to_string();
            }
            return "Desculpe, não consegui fazer isso agora. Posso ajudar com outra coisa?"
                .to_string();
        }
    }
    "Feito. Posso ajudar em mais alguma coisa?".to_string()
}

enum Booking {
    Ask(Question),
    Book {
        name: String,
        day: String,
        time: String,
    },
}

/// Where a booking stands, from the newest request to book on.
fn booking_step(messages: &[ChatMessage]) -> Option<Booking> {
    let start = booking_start(messages)?;
    if messages[start..]
        .iter()
        .any(|m| m.role == Role::Tool && m.content.contains("\"booked\""))
    {
        return None;
    }
    let answers = answers_since(messages, start);
    let find = |q: Question| {
        answers
            .iter()
            .rev()
            .find(|(asked, _)| *asked == q)
            .map(|(_, a)| a.clone())
    };
    let Some(name) = find(Question::Name) else {
        return Some(Booking::Ask(Question::Name));
    };
    let Some(day) = find(Question::Day) else {
        return Some(Booking::Ask(Question::Day));
    };
    let Some(time) = find(Question::Time) else {
        return Some(Booking::Ask(Question::Time));
    };
    Some(Booking::Book {
        name: clean_name(&name),
        day,
        time,
    })
}

/// The newest caller message asking to book that is not itself an answer.
fn booking_start(messages: &[ChatMessage]) -> Option<usize> {
    (0..messages.len()).rev().find(|&i| {
        let m = &messages[i];
        m.role == Role::User && wants_booking(&m.content) && question_before(messages, i).is_none()
    })
}

/// The question the agent asked right before message `i`, if any.
fn question_before(messages: &[ChatMessage], i: usize) -> Option<Question> {
    messages[..i]
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant && !m.content.is_empty())
        .filter(|_| {
            messages[..i]
                .last()
                .is_some_and(|m| m.role == Role::Assistant)
        })
        .and_then(|m| question_in(&m.content))
}

/// `(question, answer)` pairs after `start`, in order.
fn answers_since(messages: &[ChatMessage], start: usize) -> Vec<(Question, String)> {
    (start + 1..messages.len())
        .filter(|&i| messages[i].role == Role::User)
        .filter_map(|i| question_before(messages, i).map(|q| (q, messages[i].content.to_string())))
        .collect()
}

fn booking_name(messages: &[ChatMessage]) -> Option<String> {
    let start = booking_start(messages)?;
    answers_since(messages, start)
        .into_iter()
        .rev()
        .find(|(q, _)| *q == Question::Name)
        .map(|(_, a)| clean_name(&a))
}

fn wants_booking(text: &str) -> bool {
    let said = crate::text::fold(text);
    ["agend", "marcar", "consulta", "reuniao", "visita"]
        .iter()
        .any(|w| said.contains(w))
}

fn is_goodbye(text: &str) -> bool {
    let said = crate::text::fold(text);
    [
        "tchau",
        "ate logo",
        "ate mais",
        "so isso",
        "pode desligar",
        "adeus",
    ]
    .iter()
    .any(|w| said.contains(w))
}

/// "Meu nome é ana souza." → "Ana Souza".
fn clean_name(answer: &str) -> String {
    let mut rest = answer.trim();
    const PREFIXES: &[&str] = &[
        "o meu nome é ",
        "meu nome é ",
        "me chamo ",
        "eu me chamo ",
        "eu sou o ",
        "eu sou a ",
        "eu sou ",
        "aqui é o ",
        "aqui é a ",
        "aqui é ",
        "sou o ",
        "sou a ",
        "sou ",
        "é o ",
        "é a ",
        "é ",
    ];
    let lower = rest.to_lowercase();
    if let Some(p) = PREFIXES.iter().find(|p| lower.starts_with(**p))
        && let Some(after) = rest.get(p.len()..)
    {
        rest = after;
    }
    let rest = rest
        .split(['.', ',', '!', '?', ';'])
        .next()
        .unwrap_or_default();
    rest.split_whitespace()
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reply to one caller utterance.
pub fn reply_to(user: &str) -> String {
    let said = crate::text::fold(user);
    let has = |words: &[&str]| words.iter().any(|w| said.contains(w));
    if let Some(digits) = user.strip_prefix("DTMF: ") {
        format!("Você digitou {}. Obrigado, anotei.", spell_digits(digits))
    } else if has(&["tchau", "ate logo", "ate mais", "obrigad"]) {
        "Eu que agradeço a ligação! Tenha um ótimo dia. Até logo!".to_string()
    } else if has(&["horario", "funciona", "abre", "aberto"]) {
        "Nosso atendimento funciona de segunda a sexta, das nove da manhã às seis da tarde."
            .to_string()
    } else if has(&["ola", "oi", "bom dia", "boa tarde", "boa noite", "alo"]) {
        "Olá! Aqui é o assistente virtual da voxrelay. Posso tirar dúvidas ou agendar um horário para você. Em que posso ajudar?".to_string()
    } else if said.trim().is_empty() {
        "Desculpe, não consegui ouvir. Pode repetir, por favor?".to_string()
    } else {
        format!(
            "Entendi, você disse: {}. Posso ajudar com mais alguma coisa?",
            user.trim().trim_end_matches(['.', '!', '?'])
        )
    }
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

    fn spec(name: &str) -> crate::llm::ToolSpec {
        crate::llm::ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: json!({}).into(),
        }
    }

    fn said(events: &[LlmEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                LlmEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn called(events: &[LlmEvent]) -> Option<(String, Value)> {
        let mut name = None;
        let mut args = String::new();
        for e in events {
            if let LlmEvent::ToolCallDelta {
                name: n, arguments, ..
            } = e
            {
                if n.is_some() {
                    name = n.clone();
                }
                args.push_str(arguments);
            }
        }
        name.map(|n| (n, serde_json::from_str(&args).unwrap()))
    }

    #[test]
    fn books_step_by_step_from_the_history() {
        let tools = vec![spec("schedule_appointment"), spec("end_call")];
        let mut messages = vec![ChatMessage::system("s"), ChatMessage::assistant("Olá!")];
        let turn = |messages: &mut Vec<ChatMessage>, user: &str| {
            messages.push(ChatMessage::user(user));
            let events = plan(&LlmRequest {
                messages,
                tools: &tools,
            });
            let text = said(&events);
            if !text.is_empty() {
                messages.push(ChatMessage::assistant(text));
            }
            events
        };
        assert_eq!(
            said(&turn(&mut messages, "Quero agendar uma visita")),
            ASK_NAME
        );
        assert!(
            said(&turn(&mut messages, "meu nome é ana souza")).starts_with("Prazer, Ana Souza!")
        );
        assert_eq!(said(&turn(&mut messages, "amanhã")), ASK_TIME);
        let events = turn(&mut messages, "às 15h");
        assert_eq!(said(&events), "");
        let (name, args) = called(&events).unwrap();
        assert_eq!(name, "schedule_appointment");
        assert_eq!(
            args,
            json!({"name": "Ana Souza", "preferred_day": "amanhã", "preferred_time": "às 15h"})
        );
        let events = turn(&mut messages, "tchau");
        assert_eq!(said(&events), GOODBYE);
        assert_eq!(called(&events).unwrap().0, "end_call");
    }
    #[tokio::test]
    async fn streams_the_reply_then_finishes() {
        let provider = ScriptedProvider::new(Duration::ZERO);
        let events: Vec<_> = provider
            .stream(LlmRequest {
                messages: &[ChatMessage::user("oi")],
                tools: &[],
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
