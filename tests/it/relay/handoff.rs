//! `/twiml/action` branches (transfer, hang up, reconnect after 64105), a dropped
//! call resuming with its history, and the offline scripted demo booking an
//! appointment in Portuguese over a real socket.

use std::time::SystemTime;

use serde_json::Value;
use voxrelay::tools::dates::Date;

use crate::support::agent_app::{app, app_with_config};
use crate::support::fake_llm::Reply;
use crate::support::{spawn_app, token_after};

async fn action(
    app: &crate::support::TestApp,
    form: &[(&str, &str)],
) -> roxmltree::Document<'static> {
    let res = reqwest::Client::new()
        .post(app.url("/twiml/action"))
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    let xml: &'static str = Box::leak(res.text().await.unwrap().into_boxed_str());
    roxmltree::Document::parse(xml).expect("valid TwiML")
}

fn verbs(doc: &roxmltree::Document) -> Vec<String> {
    doc.root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name().to_string())
        .collect()
}

#[tokio::test]
async fn action_enqueues_to_taskrouter_when_a_workflow_is_set() {
    let app = spawn_app(&[
        (
            "TASKROUTER_WORKFLOW_SID",
            "WW0123456789abcdef0123456789abcdef",
        ),
        ("HANDOFF_NUMBER", "+5511988887777"),
    ])
    .await;
    let data =
        r#"{"reasonCode":"live-agent-handoff","reason":"pediu um atendente","summary":"Fatura"}"#;
    let doc = action(
        &app,
        &[
            ("CallSid", "CA1"),
            ("CallStatus", "in-progress"),
            ("SessionStatus", "ended"),
            ("HandoffData", data),
        ],
    )
    .await;
    assert_eq!(verbs(&doc), vec!["Enqueue", "Hangup"]);
    let enqueue = doc.root_element().first_element_child().unwrap();
    assert_eq!(
        enqueue.attribute("workflowSid"),
        Some("WW0123456789abcdef0123456789abcdef")
    );
    let task = enqueue.first_element_child().unwrap();
    assert_eq!(task.tag_name().name(), "Task");
    let task: Value = serde_json::from_str(task.text().unwrap()).unwrap();
    assert_eq!(task["summary"], "Fatura");
}

#[tokio::test]
async fn action_hangs_up_after_a_normal_end_or_when_the_caller_is_gone() {
    let app = spawn_app(&[("HANDOFF_NUMBER", "+5511988887777")]).await;
    let ended = r#"{"reasonCode":"end-call","reason":"despedida"}"#;
    let handoff = r#"{"reasonCode":"live-agent-handoff"}"#;
    for form in [
        vec![("CallStatus", "in-progress"), ("HandoffData", ended)],
        // A transfer for a caller who already hung up.
        vec![("CallStatus", "completed"), ("HandoffData", handoff)],
        // An error that is not a dropped socket, or a drop after the caller left.
        vec![("CallStatus", "in-progress"), ("ErrorCode", "39001")],
        vec![("CallStatus", "completed"), ("ErrorCode", "64105")],
        // Garbage handoff data.
        vec![("CallStatus", "in-progress"), ("HandoffData", "{not json")],
    ] {
        let doc = action(&app, &form).await;
        assert_eq!(verbs(&doc), vec!["Hangup"], "{form:?}");
    }
}

#[tokio::test]
async fn action_reconnects_a_dropped_socket_without_greeting_again() {
    let app = spawn_app(&[
        ("PUBLIC_URL", "https://voz.example.com"),
        ("LANGUAGES", "pt-BR,en-US"),
    ])
    .await;
    let doc = action(
        &app,
        &[
            ("CallSid", "CA1"),
            ("CallStatus", "in-progress"),
            ("SessionStatus", "failed"),
            ("ErrorCode", "64105"),
            ("ErrorMessage", "WebSocket Ended"),
        ],
    )
    .await;
    assert_eq!(verbs(&doc), vec!["Connect"]);
    let connect = doc.root_element().first_element_child().unwrap();
    assert_eq!(
        connect.attribute("action"),
        Some("https://voz.example.com/twiml/action")
    );
    let relay = connect.first_element_child().unwrap();
    assert_eq!(relay.tag_name().name(), "ConversationRelay");
    token_after(relay.attribute("url"), "wss://voz.example.com/websocket");
    assert_eq!(relay.attribute("welcomeGreeting"), None);
    let languages: Vec<_> = relay
        .children()
        .filter(|n| n.has_tag_name("Language"))
        .map(|n| n.attribute("code").unwrap())
        .collect();
    assert_eq!(languages, vec!["pt-BR", "en-US"]);
}

#[tokio::test]
async fn a_dropped_call_resumes_with_its_history() {
    let (app, llm, recorder) = app(&[]).await;
    llm.push(Reply::tokens(&["Claro, ", "Ana."]));
    llm.push(Reply::tokens(&["Continuando."]));
    let mut call = app.relay().await;
    call.setup("CA_resume").await;
    call.prompt("Sou a Ana e preciso de ajuda").await;
    assert_eq!(call.reply().await.text, "Claro, Ana.");
    // The socket drops (no close handshake).
    drop(call);
    app.wait_active_calls(0).await;

    // Twilio reports 64105 and we answer with a fresh <Connect>; the new socket's
    // setup carries the same call SID.
    let doc = action(
        &app,
        &[
            ("CallSid", "CA_resume"),
            ("CallStatus", "in-progress"),
            ("ErrorCode", "64105"),
        ],
    )
    .await;
    assert_eq!(verbs(&doc), vec!["Connect"]);
    let mut call = app.relay().await;
    call.setup("CA_resume").await;
    call.prompt("Você ainda está aí?").await;
    assert_eq!(call.reply().await.text, "Continuando.");
    let requests = llm.wait_requests(2).await;
    assert_eq!(
        requests[1].messages(),
        vec![
            (
                "system".to_string(),
                "Você é um assistente de testes.".to_string()
            ),
            ("assistant".into(), "Olá! Como posso ajudar?".into()),
            ("user".into(), "Sou a Ana e preciso de ajuda".into()),
            ("assistant".into(), "Claro, Ana.".into()),
            ("user".into(), "Você ainda está aí?".into()),
        ],
        "the history continues, with the greeting once"
    );
    // The store hears of each socket (the call is live again, carried here), the
    // second as a resume: its turns go on from the first's.
    let started: Vec<bool> = recorder
        .started
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.resumed)
        .collect();
    assert_eq!(started, vec![false, true]);

    // A different call starts fresh.
    llm.push(Reply::tokens(&["Olá."]));
    let mut other = app.relay().await;
    other.setup("CA_other").await;
    other.prompt("Oi").await;
    other.reply().await;
    let requests = llm.wait_requests(3).await;
    assert_eq!(requests[2].messages().len(), 3);
}

#[tokio::test]
async fn the_offline_demo_books_an_appointment_in_portuguese() {
    let (app, recorder) = app_with_config(&[]).await;
    let mut call = app.relay().await;
    call.setup("CA_demo").await;
    let mut say = async |text: &str| {
        call.prompt(text).await;
        call.reply().await.text
    };
    assert!(say("Olá, bom dia").await.contains("agendar"));
    assert_eq!(
        say("Quero agendar um horário").await,
        "Claro, vamos agendar! Qual é o seu nome?"
    );
    assert_eq!(
        say("Meu nome é Ana Souza").await,
        "Prazer, Ana Souza! Para qual dia você gostaria de agendar?"
    );
    assert_eq!(
        say("Pode ser amanhã").await,
        "E qual horário fica melhor para você?"
    );
    let tomorrow = Date::today(SystemTime::now(), -180).add_days(1);
    assert_eq!(
        say("Às 15h").await,
        format!(
            "Pronto, Ana Souza! Seu horário ficou agendado para {}, às 15:00. Posso ajudar em mais alguma coisa?",
            tomorrow.spoken_pt()
        )
    );
    {
        let appointments = recorder.appointments.lock().unwrap();
        assert_eq!(appointments.len(), 1);
        let (sid, a) = &appointments[0];
        assert_eq!(sid, "CA_demo");
        assert_eq!(a.name, "Ana Souza");
        assert_eq!(a.preferred_day, tomorrow.to_string());
        assert_eq!(a.preferred_time.as_deref(), Some("15:00"));
        assert_eq!(a.phone.as_deref(), Some("+5511999990000"));
    }
    call.prompt("Não, obrigado. Tchau!").await;
    assert_eq!(call.reply().await.text, voxrelay::llm::scripted::GOODBYE);
    let end = call.recv().await;
    assert_eq!(end["type"], "end");
    let data: Value = serde_json::from_str(end["handoffData"].as_str().unwrap()).unwrap();
    assert_eq!(data["reasonCode"], "end-call");
    drop(call);
    let (_, summary) = recorder.wait_ended().await;
    assert_eq!(summary.status, "completed");
    let tools: Vec<_> = recorder
        .tools
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.name.clone())
        .collect();
    assert_eq!(tools, vec!["schedule_appointment", "end_call"]);
}

#[tokio::test]
async fn the_offline_demo_asks_again_for_a_day_it_cannot_read() {
    let (app, recorder) = app_with_config(&[]).await;
    let mut call = app.relay().await;
    call.setup("CA_demo2").await;
    for (said, expected) in [
        ("Queria marcar uma consulta", "Qual é o seu nome?"),
        ("João", "Para qual dia"),
        ("quando der", "qual horário"),
        ("de manhã", "não entendi o dia"),
        ("24/12", "Pronto, João!"),
    ] {
        call.prompt(said).await;
        let reply = call.reply().await.text;
        assert!(reply.contains(expected), "{said:?} → {reply:?}");
    }
    let appointments = recorder.appointments.lock().unwrap();
    assert_eq!(appointments.len(), 1);
    assert!(appointments[0].1.preferred_day.ends_with("-12-24"));
    assert_eq!(appointments[0].1.preferred_time, Some("de manhã".into()));
}
