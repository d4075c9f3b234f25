//! The console in a real headless Chromium: sign in (a wrong token first), a
//! ConversationRelay call appears in the list by itself, its page shows the words,
//! the interrupted reply with what was heard, the latency bars and the tools; a
//! media call's recording plays; "Try it" holds a conversation that then shows up
//! as a console call; the Portuguese page; the CSP blocks inline script; nothing
//! shows without the token. The call page's screenshot goes to
//! `target/tmp/console-call.png` (and to `docs/console-call.png` with
//! `UPDATE_DOCS_SCREENSHOT=1`).

use std::time::Duration;

use serde_json::json;

use super::TOKEN;
use crate::media::session::{TwilioMedia, audio_delta, realtime_call_as, recv_type};
use crate::support::browser::Browser;
use crate::support::fake_speech::FakeWsServer;
use crate::support::{TestApp, eventually_async, spawn_app};

async fn console_app(fake: &FakeWsServer, recordings: &str) -> TestApp {
    let url = format!("{}/v1/realtime", fake.base());
    spawn_app(&[
        ("API_TOKEN", TOKEN),
        ("LLM_PROVIDER", "scripted"),
        ("SCRIPTED_TOKEN_DELAY_MS", "40"),
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_REALTIME_URL", url.as_str()),
        ("RECORD_CALLS", "true"),
        ("RECORDINGS_DIR", recordings),
        ("WELCOME_GREETING", "Olá! Aqui é a Bia."),
    ])
    .await
}

/// A ConversationRelay call from +5511999990000: one reply heard in full, one
/// interrupted after its first words.
async fn relay_call(app: &TestApp) {
    let mut call = app.relay().await;
    call.setup("CAbrowser1").await;
    call.prompt("Olá, bom dia").await;
    call.reply().await;
    call.prompt("Quero um orçamento para cem peças, pode ser?")
        .await;
    let first = call.recv().await;
    let heard = first["token"].as_str().unwrap().to_string();
    call.interrupt(&heard).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = call.ws().close(None).await;
}

/// A Media Streams call from +5511988887777 with a recording.
async fn media_call(app: &TestApp, fake: &mut FakeWsServer) {
    let (mut twilio, mut conn, _): (TwilioMedia, _, _) =
        realtime_call_as(app, fake, "CAmedia1", &[("from", "+5511988887777")]).await;
    conn.send_json(audio_delta("A", &[0x20; 8000])).await;
    for _ in 0..50 {
        twilio.media(&[0xA0; 160]).await;
    }
    recv_type(&mut conn, "input_audio_buffer.append").await;
    twilio.audio(8000).await;
    twilio.stop().await;
    conn.until_closed().await;
    // The session finishes the recording and stores it after the upstream has
    // closed: wait for it, or the call page may load before the call has one.
    eventually_async(|| async {
        let res = reqwest::Client::new()
            .get(app.url("/api/calls/CAmedia1/recording"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        res.status().is_success().then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_console_in_a_real_browser() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("console-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut fake = FakeWsServer::start().await;
    let app = console_app(&fake, dir.to_str().unwrap()).await;
    let Some(browser) = Browser::start("the_console_in_a_real_browser", "en-US").await else {
        return;
    };
    let console = app.url("/console");

    // Nothing without the token; a wrong one is refused in words.
    browser.goto(&format!("{console}#/calls")).await;
    browser.find("#login:not([hidden])").await;
    assert_eq!(
        browser
            .run("return document.querySelector('#nav').hidden", json!([]))
            .await,
        json!(true)
    );
    browser.type_into("#token", "not-the-token").await;
    browser.click("#login button[type=submit]").await;
    browser.wait_text("#login-error", "refused").await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login button[type=submit]").await;
    browser.find("#nav:not([hidden])").await;
    browser.wait_text("#view h1", "Calls").await;

    // A call over /websocket appears in the list by itself.
    relay_call(&app).await;
    browser.wait_text("tbody", "+5511999990000").await;
    browser.click("tr[data-sid='CAbrowser1'] a").await;
    let words = browser.wait_text("#conversation", "Olá, bom dia").await;
    assert!(words.contains("Quero um orçamento"), "{words}");
    // The reply the caller cut off is marked, with what was heard.
    let interrupted = browser.wait_text(".turn.interrupted", "caller heard").await;
    assert!(interrupted.contains("interrupted"), "{interrupted}");
    browser
        .wait_until(
            "latency bars drawn",
            "return document.querySelectorAll('.latency.llm').length > 0 && [...document.querySelectorAll('.latency.out .fill')].some(f => parseFloat(f.style.width) > 0)",
        )
        .await;
    let shot = browser.screenshot().await;
    assert!(shot.starts_with(b"\x89PNG"));
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-call.png");
    std::fs::write(&target, &shot).unwrap();
    if std::env::var_os("UPDATE_DOCS_SCREENSHOT").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console-call.png");
        std::fs::write(docs, &shot).unwrap();
    }
    // The text export is offered.
    browser.find("button.secondary").await;

    // A media call's recording plays in the page.
    media_call(&app, &mut fake).await;
    browser.goto(&format!("{console}#/calls/CAmedia1")).await;
    browser
        .wait_text("#conversation, main", "+5511988887777")
        .await;
    let load = "return [...document.querySelectorAll('button')].find(b => b.textContent.includes('Load the recording')) ? true : false";
    browser.wait_until("the recording button", load).await;
    browser
        .run(
            "[...document.querySelectorAll('button')].find(b => b.textContent.includes('Load the recording')).click()",
            json!([]),
        )
        .await;
    browser.find("audio").await;
    browser
        .run(
            "const a = document.querySelector('audio'); a.muted = true; a.play();",
            json!([]),
        )
        .await;
    browser
        .wait_until(
            "the recording plays",
            "const a = document.querySelector('audio'); return a.duration > 0.5 && a.currentTime > 0;",
        )
        .await;

    // Overview and appointments draw.
    browser.goto(&format!("{console}#/overview")).await;
    browser.wait_text("main", "Live calls").await;
    browser.find("svg.chart").await;
    browser.goto(&format!("{console}#/appointments")).await;
    browser.wait_text("#view h1", "Appointments").await;

    // Try it: a short conversation from the page.
    browser.goto(&format!("{console}#/try")).await;
    browser.click("#phone-start").await;
    browser.wait_text("#phone-log", "Aqui é a Bia").await;
    browser
        .type_into("#phone-say", "Quero marcar uma consulta")
        .await;
    browser.click("#phone-send").await;
    browser
        .wait_text("#phone-log", "Quero marcar uma consulta")
        .await;
    browser
        .wait_until(
            "the agent's reply",
            "return document.querySelectorAll('#phone-log .turn.agent').length >= 2 && !document.querySelector('#phone-send').disabled",
        )
        .await;
    browser.click(".keypad button[data-key='5']").await;
    browser.wait_text("#phone-log", "⌨ 5").await;
    browser.click("#phone-hangup").await;
    browser.click("#phone-record").await;
    browser
        .wait_text("#conversation", "Quero marcar uma consulta")
        .await;
    let mode = browser.wait_text("main .facts", "console").await;
    assert!(mode.contains("console"));

    // The CSP holds: a script put into the page does not run.
    browser
        .run(
            "const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.append(s);",
            json!([]),
        )
        .await;
    assert_eq!(
        browser
            .run("return window.__inline === undefined", json!([]))
            .await,
        json!(true)
    );
    // Signing out forgets the token.
    browser.click("#logout").await;
    browser.find("#login:not([hidden])").await;
    browser.goto(&format!("{console}#/calls/CAbrowser1")).await;
    browser.find("#login:not([hidden])").await;
    browser.quit().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_console_speaks_portuguese_to_a_brazilian_browser() {
    let app = spawn_app(&[("API_TOKEN", TOKEN)]).await;
    let Some(browser) = Browser::start("the_console_speaks_portuguese", "pt-BR").await else {
        return;
    };
    browser.goto(&app.url("/console")).await;
    browser.wait_text("#login h1", "Entrar").await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login button[type=submit]").await;
    browser.wait_text("#view h1", "Chamadas").await;
    browser.wait_text("nav", "Agendamentos").await;
    // Phone-sized: the page still lays out (no horizontal scroll of the body).
    browser.resize(390, 800).await;
    browser
        .wait_until(
            "no sideways scrolling on a phone",
            "return document.documentElement.scrollWidth <= window.innerWidth + 1",
        )
        .await;
    browser.quit().await;
}

#[tokio::test]
async fn the_console_talks_to_the_agent_chosen_and_lists_calls_by_agent() {
    let dir = std::env::temp_dir().join(format!("voxrelay-console-agents-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("vendas.toml"),
        "numbers = [\"+5511333330001\"]\nwelcome_greeting = \"Loja Azul, vendas!\"\n",
    )
    .unwrap();
    let agents = dir.display().to_string();
    let app = spawn_app(&[("API_TOKEN", TOKEN), ("AGENTS_DIR", agents.as_str())]).await;
    let Some(browser) = Browser::start("the_console_talks_to_the_agent_chosen", "en-US").await
    else {
        return;
    };
    browser.goto(&app.url("/console")).await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login button[type=submit]").await;
    browser.wait_text("#view h1", "Calls").await;
    browser.goto(&format!("{}#/try", app.url("/console"))).await;
    browser
        .run(
            "const s = document.querySelector('#phone-agent'); s.value = 'vendas'; s.dispatchEvent(new Event('change'));",
            json!([]),
        )
        .await;
    browser.click("#phone-start").await;
    browser.wait_text("#phone-log", "Loja Azul, vendas!").await;
    browser.type_into("#phone-say", "Quero comprar").await;
    browser.click("#phone-send").await;
    browser
        .wait_until(
            "the agent's reply",
            "return document.querySelectorAll('#phone-log .turn.agent').length >= 2",
        )
        .await;
    browser.click("#phone-hangup").await;
    browser.click("#phone-record").await;
    browser.wait_text("main .facts", "vendas").await;
    // The list filtered by agent shows the call, with its agent.
    browser
        .goto(&format!("{}#/calls?agent=vendas", app.url("/console")))
        .await;
    let row = browser.wait_text("#view tbody", "console").await;
    assert!(row.contains("vendas"), "{row}");
    browser
        .goto(&format!("{}#/calls?agent=default", app.url("/console")))
        .await;
    browser.wait_text("#view", "No calls").await;
    browser.quit().await;
    let _ = std::fs::remove_dir_all(&dir);
}
