//! Calls that end without the caller hanging up: a goodbye the model spoke
//! without `end_call`, a silent caller (asked once, then told goodbye), the
//! maximum duration; each counted in `voxrelay_call_endings_total`.

use std::time::Duration;

use serde_json::Value;

use crate::support::agent_app::app;
use crate::support::fake_llm::Reply;
use crate::support::{RelayClient, TestApp};

/// The next `end` message (after any text); its handoff data as JSON.
async fn ended(call: &mut RelayClient) -> (String, Value) {
    let mut said = String::new();
    loop {
        let message = call.recv().await;
        match message["type"].as_str() {
            Some("text") => said.push_str(message["token"].as_str().unwrap_or_default()),
            Some("end") => {
                let data = message["handoffData"].as_str().unwrap();
                return (said, serde_json::from_str(data).unwrap());
            }
            _ => {}
        }
    }
}

async fn counted(app: &TestApp, reason: &str) {
    let metrics = app.state.metrics.clone();
    crate::support::eventually(
        &format!("an ending counted as {reason}"),
        Duration::from_secs(10),
        || (metrics.endings(reason) == 1).then_some(()),
    )
    .await;
    let text = metrics.render(false);
    assert!(
        text.contains(&format!(
            "voxrelay_call_endings_total{{reason=\"{reason}\"}} 1"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_goodbye_without_end_call_still_ends_the_call() {
    let (app, llm, _seen) = app(&[("SILENCE_TIMEOUT_SECS", "0")]).await;
    llm.push(Reply::tokens(&["Está ", "bem."]));
    llm.push(Reply::tokens(&[
        "Perfeito, ",
        "obrigado pela ligação. ",
        "Até logo!",
    ]));
    let mut call = app.relay().await;
    call.setup("CAgoodbye").await;
    // An ordinary reply does not end anything.
    call.prompt("Quero saber o horário").await;
    assert_eq!(call.reply().await.text, "Está bem.");
    call.prompt("Era só isso, obrigado").await;
    let (said, data) = ended(&mut call).await;
    assert!(said.ends_with("Até logo!"), "{said}");
    assert_eq!(data["reasonCode"], "goodbye");
    let _ = call.ws().close(None).await;
    counted(&app, "goodbye").await;
}

#[tokio::test]
async fn the_goodbye_check_can_be_turned_off() {
    let (app, llm, _seen) =
        app(&[("END_ON_GOODBYE", "false"), ("SILENCE_TIMEOUT_SECS", "0")]).await;
    llm.push(Reply::tokens(&["Até logo!"]));
    let mut call = app.relay().await;
    call.setup("CAnogoodbye").await;
    call.prompt("Tchau").await;
    assert_eq!(call.reply().await.text, "Até logo!");
    call.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_silent_caller_is_asked_once_then_told_goodbye() {
    let (app, llm, _seen) = app(&[
        ("SILENCE_TIMEOUT_SECS", "1"),
        ("WELCOME_GREETING", "Oi"),
        ("STILL_THERE_MESSAGE", "Alô, ainda está aí?"),
        ("GOODBYE_MESSAGE", "Vou desligar. Tchau!"),
    ])
    .await;
    llm.push(Reply::tokens(&["Claro, ", "pode falar."]));
    let mut call = app.relay().await;
    call.setup("CAsilent").await;
    // Silence after the greeting: the agent asks.
    let asked = call.reply().await;
    assert_eq!(asked.text, "Alô, ainda está aí?");
    // The caller answers: the conversation goes on, the clock starts over.
    call.prompt("Sim, estou").await;
    assert_eq!(call.reply().await.text, "Claro, pode falar.");
    // Silent again: asked again (a new silence after the caller spoke).
    assert_eq!(call.reply().await.text, "Alô, ainda está aí?");
    // And silent once more: goodbye and the end.
    let (said, data) = ended(&mut call).await;
    assert_eq!(said, "Vou desligar. Tchau!");
    assert_eq!(data["reasonCode"], "silence");
    let _ = call.ws().close(None).await;
    counted(&app, "silence").await;
}

#[tokio::test]
async fn the_maximum_duration_ends_the_call_and_is_counted() {
    let (app, _llm, _seen) = app(&[("MAX_CALL_SECS", "1"), ("SILENCE_TIMEOUT_SECS", "0")]).await;
    let mut call = app.relay().await;
    call.setup("CAlong").await;
    let (_, data) = ended(&mut call).await;
    assert_eq!(data["reasonCode"], "max-duration");
    let _ = call.ws().close(None).await;
    counted(&app, "max-duration").await;
}

#[tokio::test]
async fn a_caller_who_hangs_up_is_counted_as_such() {
    let (app, llm, _seen) = app(&[]).await;
    llm.push(Reply::tokens(&["Oi."]));
    let mut call = app.relay().await;
    call.setup("CAhangup").await;
    call.prompt("Oi").await;
    call.reply().await;
    let _ = call.ws().close(None).await;
    counted(&app, "caller-hangup").await;
}
