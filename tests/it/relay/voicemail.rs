//! Voicemail and call screening on a live ConversationRelay call: Twilio's
//! asynchronous answering-machine result (a signed `/twilio/amd`) stops the reply
//! in flight, leaves the voicemail message and ends; `human` changes nothing; the
//! first caller turns are read for voicemail greetings and screening assistants in
//! pt-BR and English, with no false alarm on an ordinary "alô, quem fala?".

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use voxrelay::sim::peer::inbound_setup;

use crate::support::agent_app::app;
use crate::support::fake_llm::Reply;
use crate::support::signed::{PUBLIC, TOKEN, post_form, sign, signed_relay};
use crate::support::{RelayClient, TestApp};

const VOICEMAIL: &str = "Oi {name}, aqui é {agent_name}. Ligo depois!";
const SCREENING: &str = "Aqui é {agent_name}, ligando sobre {reason}.";

async fn amd_app() -> (TestApp, crate::support::fake_llm::FakeLlm) {
    let (app, llm, _seen) = amd_app_seen().await;
    (app, llm)
}

async fn amd_app_seen() -> (
    TestApp,
    crate::support::fake_llm::FakeLlm,
    std::sync::Arc<crate::support::agent_app::Recorder>,
) {
    app(&[
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("PUBLIC_URL", PUBLIC),
        ("AGENT_NAME", "Bia"),
        ("VOICEMAIL_MESSAGE", VOICEMAIL),
        ("SCREENING_MESSAGE", SCREENING),
        ("SILENCE_TIMEOUT_SECS", "0"),
    ])
    .await
}

async fn call_with(app: &TestApp, sid: &str) -> RelayClient {
    let mut call = signed_relay(app, sid).await;
    let parameters: HashMap<String, String> = [
        ("name".to_string(), "Ana".to_string()),
        ("reason".to_string(), "sua consulta de amanhã".to_string()),
    ]
    .into();
    let setup = inbound_setup(sid, "VX1", "+5511333330000", "+5511999990000", parameters);
    call.peer.setup(setup).await.unwrap();
    call
}

async fn amd(app: &TestApp, sid: &str, answered_by: &str) {
    let params = [
        ("CallSid", sid),
        ("AccountSid", "ACtest"),
        ("AnsweredBy", answered_by),
        ("MachineDetectionDuration", "4200"),
    ];
    let signature = sign(TOKEN, &format!("{PUBLIC}/twilio/amd"), &params);
    let response = post_form(app, "/twilio/amd", &params, Some(&signature)).await;
    assert!(response.status().is_success(), "{}", response.status());
}

/// Text until `end`; the handoff data.
async fn until_end(call: &mut RelayClient) -> (String, Value) {
    let mut said = String::new();
    loop {
        let message = call.recv().await;
        match message["type"].as_str() {
            Some("text") => said.push_str(message["token"].as_str().unwrap_or_default()),
            Some("end") => {
                let data = serde_json::from_str(message["handoffData"].as_str().unwrap()).unwrap();
                return (said, data);
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_beep_during_a_reply_leaves_the_voicemail_message_and_ends() {
    let (app, llm) = amd_app().await;
    let words: Vec<String> = (0..40).map(|i| format!("palavra{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    llm.push(Reply::slow_tokens(&words, 50));
    let mut call = call_with(&app, "CAamd1").await;
    call.prompt("Alô?").await;
    let first = call.recv().await;
    assert_eq!(first["type"], "text");
    amd(&app, "CAamd1", "machine_end_beep").await;
    let (said, data) = until_end(&mut call).await;
    assert!(said.ends_with("Oi Ana, aqui é Bia. Ligo depois!"), "{said}");
    assert!(!said.contains("palavra39"), "the reply went on: {said}");
    assert_eq!(data["reasonCode"], "voicemail");
    assert_eq!(data["reason"], "voicemail detected by amd");
    let _ = call.ws().close(None).await;
    // Twilio's verdict is kept with the call; the ending is counted.
    let detail = app.state.store.get_call("CAamd1").await.unwrap().unwrap();
    assert_eq!(detail.call.answered_by.as_deref(), Some("machine_end_beep"));
    let metrics = app.state.metrics.clone();
    crate::support::eventually(
        "the voicemail ending counted",
        Duration::from_secs(10),
        || (metrics.endings("voicemail") == 1).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn a_person_changes_nothing() {
    let (app, llm) = amd_app().await;
    llm.push(Reply::slow_tokens(&["Bom ", "dia, ", "Ana."], 30));
    let mut call = call_with(&app, "CAamd2").await;
    call.prompt("Alô?").await;
    amd(&app, "CAamd2", "human").await;
    assert_eq!(call.reply().await.text, "Bom dia, Ana.");
    call.expect_silence(Duration::from_millis(200)).await;
    let detail = app.state.store.get_call("CAamd2").await.unwrap().unwrap();
    assert_eq!(detail.call.answered_by.as_deref(), Some("human"));
}

#[tokio::test]
async fn a_voicemail_greeting_in_the_transcript_gets_the_same_message() {
    let (app, llm, seen) = amd_app_seen().await;
    let mut call = call_with(&app, "CAvm").await;
    call.prompt("Você ligou para a Ana. Deixe sua mensagem após o sinal.")
        .await;
    let (said, data) = until_end(&mut call).await;
    assert_eq!(said, "Oi Ana, aqui é Bia. Ligo depois!");
    assert_eq!(data["reason"], "voicemail detected by transcript");
    assert!(llm.requests().is_empty(), "no LLM for a machine");
    assert_eq!(
        seen.answered.lock().unwrap().clone(),
        vec![("CAvm".into(), "voicemail".into(), "transcript".into())]
    );
}

#[tokio::test]
async fn a_screening_assistant_hears_who_calls_and_the_person_then_talks_to_the_agent() {
    let (app, llm, seen) = amd_app_seen().await;
    llm.push(Reply::tokens(&["Oi, Ana! ", "Tudo bem?"]));
    let mut call = call_with(&app, "CAscreen").await;
    call.prompt("The person you're calling is using a screening service. Say your name and why you're calling.")
        .await;
    assert_eq!(
        call.reply().await.text,
        "Aqui é Bia, ligando sobre sua consulta de amanhã."
    );
    assert!(llm.requests().is_empty());
    call.prompt("Alô, quem fala?").await;
    assert_eq!(call.reply().await.text, "Oi, Ana! Tudo bem?");
    assert_eq!(
        seen.answered.lock().unwrap().clone(),
        vec![("CAscreen".into(), "screening".into(), "transcript".into())]
    );
}

#[tokio::test]
async fn an_ordinary_first_answer_is_not_a_machine() {
    let (app, llm) = amd_app().await;
    llm.push(Reply::tokens(&["Aqui é a Bia."]));
    let mut call = call_with(&app, "CAhuman").await;
    call.prompt("Alô, quem fala?").await;
    assert_eq!(call.reply().await.text, "Aqui é a Bia.");
    assert_eq!(llm.requests().len(), 1);
}
