//! Tool calling end to end: a fake LLM streams tool calls as deltas split across
//! chunks, the real server runs the tools, and the fake Twilio client sees what the
//! caller would (text, `end`, `sendDigits`, `language`). A recording observer stands
//! in for the store and shows what the agent reports.

use std::time::Duration;

use serde_json::{Value, json};
use voxrelay::config::{DEFAULT_GOODBYE_MESSAGE, DEFAULT_HANDOFF_MESSAGE, DEFAULT_TOOL_FILLER};

use crate::support::fake_http::{Answer, FakeHttp};
use crate::support::fake_llm::{Recorded, Reply};
use crate::support::{RelayClient, TestApp};

const FALLBACK: &str = "Desculpe, tive um problema para responder agora. Pode repetir, por favor?";
const CALLER: &str = "+5511999990000";

use crate::support::agent_app::*;

async fn call(app: &TestApp, sid: &str) -> RelayClient {
    let mut call = app.relay().await;
    call.setup(sid).await;
    call
}

/// The tool messages of a request, as `(tool_call_id, content)`.
fn tool_results(request: &Recorded) -> Vec<(String, String)> {
    request
        .raw_messages()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn offered_tools(request: &Recorded) -> Vec<String> {
    request.body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn handoff_data(end: &Value) -> Value {
    assert_eq!(end["type"], "end", "expected an end message, got {end}");
    let data = end["handoffData"]
        .as_str()
        .expect("handoffData is a JSON string");
    serde_json::from_str(data).expect("handoffData holds JSON")
}

/// Every tool call in the history is answered by a tool message.
fn assert_history_valid(request: &Recorded) {
    let messages = request.raw_messages();
    for (i, m) in messages.iter().enumerate() {
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            let id = call["id"].as_str().unwrap();
            assert!(
                messages[i + 1..]
                    .iter()
                    .take_while(|n| n["role"] == "tool")
                    .any(|n| n["tool_call_id"] == id),
                "tool call {id} has no result in {messages:#?}"
            );
        }
    }
}

#[tokio::test]
async fn end_call_says_goodbye_then_ends_with_handoff_data() {
    let (app, llm, recorder) = app(&[]).await;
    llm.push(Reply::tool(
        "c1",
        "end_call",
        json!({"reason": "cliente satisfeito"}),
    ));
    let mut call = call(&app, "CA_end").await;
    call.prompt("Era só isso, obrigado.").await;
    let goodbye = call.reply().await;
    assert_eq!(goodbye.text, DEFAULT_GOODBYE_MESSAGE);
    let data = handoff_data(&call.recv().await);
    assert_eq!(data["reasonCode"], "end-call");
    assert_eq!(data["reason"], "cliente satisfeito");
    assert_eq!(data["callSid"], "CA_end");
    // The call is over: nothing more is said.
    call.prompt("Espera, mais uma coisa").await;
    call.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(llm.requests().len(), 1);

    let first = &llm.requests()[0];
    assert_eq!(
        offered_tools(first),
        vec!["end_call", "schedule_appointment"]
    );
    assert_eq!(first.body["tool_choice"], "auto");
    drop(call);
    let (sid, summary) = recorder.wait_ended().await;
    assert_eq!(sid, "CA_end");
    assert_eq!(summary.status, "completed");
    assert!(summary.handoff_data.unwrap().contains("end-call"));
    let tools = recorder.tools.lock().unwrap().clone();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].1.name, "end_call");
    assert!(tools[0].1.ok);
    assert_eq!(tools[0].1.arguments, r#"{"reason":"cliente satisfeito"}"#);
}

#[tokio::test]
async fn end_call_after_the_models_own_goodbye_adds_nothing() {
    let (app, llm, _) = app(&[]).await;
    llm.push(Reply::Deltas(
        vec![
            json!({"role": "assistant", "content": "Até mais, "}),
            json!({"content": "Ana!"}),
            json!({"tool_calls": [{"index": 0, "id": "c9", "type": "function", "function": {"name": "end_call", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        ],
        "tool_calls".into(),
    ));
    let mut call = call(&app, "CA_end2").await;
    call.prompt("Tchau!").await;
    assert_eq!(call.reply().await.text, "Até mais, Ana!");
    assert_eq!(handoff_data(&call.recv().await)["reasonCode"], "end-call");
    assert_eq!(llm.requests().len(), 1, "no second round for a goodbye");
}

#[tokio::test]
async fn transfer_to_human_hands_off_and_the_action_url_dials() {
    let (app, llm, recorder) = app(&[("HANDOFF_NUMBER", "+5511988887777")]).await;
    llm.push(Reply::tool(
        "c1",
        "transfer_to_human",
        json!({"reason": "quer falar com um atendente", "summary": "Dúvida sobre a fatura de março"}),
    ));
    let mut call = call(&app, "CA_human").await;
    call.prompt("Quero falar com uma pessoa").await;
    assert_eq!(call.reply().await.text, DEFAULT_HANDOFF_MESSAGE);
    let end = call.recv().await;
    let data = handoff_data(&end);
    assert_eq!(data["reasonCode"], "live-agent-handoff");
    assert_eq!(data["reason"], "quer falar com um atendente");
    assert_eq!(data["summary"], "Dúvida sobre a fatura de março");
    assert!(offered_tools(&llm.requests()[0]).contains(&"transfer_to_human".to_string()));

    // Twilio posts the session's end with our handoff data; we dial the human.
    let xml = reqwest::Client::new()
        .post(app.url("/twiml/action"))
        .form(&[
            ("CallSid", "CA_human"),
            ("CallStatus", "in-progress"),
            ("SessionStatus", "ended"),
            ("HandoffData", end["handoffData"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let dial = doc.root_element().first_element_child().unwrap();
    assert_eq!(dial.tag_name().name(), "Dial");
    assert_eq!(
        dial.first_element_child().unwrap().text(),
        Some("+5511988887777")
    );
    drop(call);
    let (_, summary) = recorder.wait_ended().await;
    assert_eq!(summary.status, "handoff");
}

#[tokio::test]
async fn send_dtmf_presses_keys_and_rejects_bad_digits() {
    let (app, llm, recorder) = app(&[("AGENT_TOOLS", "send_dtmf,end_call")]).await;
    llm.push(Reply::tool("c1", "send_dtmf", json!({"digits": "1w2#"})));
    llm.push(Reply::tokens(&["Opção ", "enviada."]));
    llm.push(Reply::tool("c2", "send_dtmf", json!({"digits": "9x"})));
    llm.push(Reply::tokens(&["Não ", "consegui."]));
    let mut call = call(&app, "CA_dtmf").await;
    call.prompt("Aperte um e depois dois").await;
    assert_eq!(
        call.recv().await,
        json!({"type": "sendDigits", "digits": "1w2#"})
    );
    assert_eq!(call.reply().await.text, "Opção enviada.");
    let requests = llm.wait_requests(2).await;
    assert_eq!(offered_tools(&requests[0]), vec!["send_dtmf", "end_call"]);
    assert_eq!(
        tool_results(&requests[1]),
        vec![("c1".to_string(), r#"{"ok":true,"sent":"1w2#"}"#.to_string())]
    );

    call.prompt("Agora aperte nove xis").await;
    // No sendDigits for invalid digits: the model hears why and says so.
    assert_eq!(call.reply().await.text, "Não consegui.");
    let requests = llm.wait_requests(4).await;
    let (id, content) = tool_results(&requests[3]).pop().unwrap();
    assert_eq!(id, "c2");
    assert!(
        content.contains("error") && content.contains("0-9"),
        "{content}"
    );
    let tools = recorder.tools.lock().unwrap().clone();
    assert_eq!(
        tools.iter().map(|(_, t)| t.ok).collect::<Vec<_>>(),
        vec![true, false]
    );
}

#[tokio::test]
async fn switch_language_sends_language_and_the_twiml_declares_each() {
    let (app, llm, _) = app(&[
        ("LANGUAGES", "pt-BR,en-US"),
        ("PUBLIC_URL", "https://voz.example.com"),
    ])
    .await;
    llm.push(Reply::tool(
        "c1",
        "switch_language",
        json!({"language": "en-US"}),
    ));
    llm.push(Reply::tokens(&["Sure, ", "let's ", "speak ", "English."]));
    llm.push(Reply::tool(
        "c2",
        "switch_language",
        json!({"language": "fr-FR"}),
    ));
    llm.push(Reply::tokens(&["Sorry, ", "no ", "French."]));
    let mut call = call(&app, "CA_lang").await;
    call.prompt("Can we speak English?").await;
    assert_eq!(
        call.recv().await,
        json!({"type": "language", "ttsLanguage": "en-US", "transcriptionLanguage": "en-US"})
    );
    assert_eq!(call.reply().await.text, "Sure, let's speak English.");
    let requests = llm.wait_requests(2).await;
    let switch = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "switch_language")
        .expect("switch_language is offered with two languages");
    assert_eq!(
        switch["function"]["parameters"]["properties"]["language"]["enum"],
        json!(["pt-BR", "en-US"])
    );

    call.prompt("Parlez-vous français?").await;
    assert_eq!(call.reply().await.text, "Sorry, no French.");
    let requests = llm.wait_requests(4).await;
    assert!(
        tool_results(&requests[3])[1]
            .1
            .contains("must be one of pt-BR, en-US")
    );

    let xml = reqwest::get(app.url("/twiml"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let codes: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("Language"))
        .map(|n| n.attribute("code").unwrap().to_string())
        .collect();
    assert_eq!(codes, vec!["pt-BR", "en-US"]);
}

#[tokio::test]
async fn schedule_appointment_is_reported_confirmed_and_validated() {
    let (app, llm, recorder) = app(&[]).await;
    llm.push(Reply::tool(
        "c1",
        "schedule_appointment",
        json!({"name": "Ana Souza", "email": "ana@example.com", "preferred_day": "2030-05-10",
               "preferred_time": "15h", "notes": "primeira visita"}),
    ));
    llm.push(Reply::tokens(&[
        "Agendado ",
        "para ",
        "10 ",
        "de ",
        "maio.",
    ]));
    llm.push(Reply::tool(
        "c2",
        "schedule_appointment",
        json!({"preferred_day": "amanhã"}),
    ));
    llm.push(Reply::tokens(&["Qual ", "é ", "o ", "seu ", "nome?"]));
    let mut call = call(&app, "CA_book").await;
    call.prompt("Quero agendar para 10 de maio de 2030 às 15h")
        .await;
    assert_eq!(call.reply().await.text, "Agendado para 10 de maio.");
    let appointments = recorder.appointments.lock().unwrap().clone();
    assert_eq!(appointments.len(), 1);
    let (sid, a) = &appointments[0];
    assert_eq!(sid, "CA_book");
    assert_eq!(a.name, "Ana Souza");
    assert_eq!(a.preferred_day, "2030-05-10");
    assert_eq!(a.preferred_time.as_deref(), Some("15:00"));
    assert_eq!(a.email.as_deref(), Some("ana@example.com"));
    assert_eq!(
        a.phone.as_deref(),
        Some(CALLER),
        "the caller's number by default"
    );
    assert_eq!(a.notes.as_deref(), Some("primeira visita"));
    let requests = llm.wait_requests(2).await;
    let result: Value = serde_json::from_str(&tool_results(&requests[1])[0].1).unwrap();
    assert_eq!(result["booked"]["day"], "2030-05-10");
    assert!(
        result["booked"]["day_spoken"]
            .as_str()
            .unwrap()
            .ends_with("10 de maio")
    );

    // No name: the model is told to ask for it, nothing is booked.
    call.prompt("Marca outro para amanhã").await;
    assert_eq!(call.reply().await.text, "Qual é o seu nome?");
    let requests = llm.wait_requests(4).await;
    assert!(tool_results(&requests[3])[1].1.contains("name is missing"));
    assert_eq!(recorder.appointments.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn several_tool_calls_in_one_turn_run_and_answer_in_order() {
    let (app, llm, recorder) = app(&[("AGENT_TOOLS", "send_dtmf,schedule_appointment")]).await;
    llm.push(Reply::tools(&[
        ("c1", "send_dtmf", r#"{"digits":"5"}"#),
        (
            "c2",
            "schedule_appointment",
            r#"{"name":"João","preferred_day":"2030-01-15"}"#,
        ),
    ]));
    llm.push(Reply::tokens(&["Feito."]));
    let mut call = call(&app, "CA_many").await;
    call.prompt("Aperte cinco e marque para 15 de janeiro de 2030")
        .await;
    assert_eq!(
        call.recv().await,
        json!({"type": "sendDigits", "digits": "5"})
    );
    assert_eq!(call.reply().await.text, "Feito.");
    let requests = llm.wait_requests(2).await;
    let messages = requests[1].raw_messages();
    let asked = &messages[messages.len() - 3];
    assert_eq!(asked["role"], "assistant");
    let names: Vec<_> = asked["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap(),
                c["function"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![("c1", "send_dtmf"), ("c2", "schedule_appointment")]
    );
    let ids: Vec<_> = tool_results(&requests[1])
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, vec!["c1", "c2"]);
    assert_eq!(recorder.tools.lock().unwrap().len(), 2);
    assert_eq!(recorder.appointments.lock().unwrap()[0].1.name, "João");
}

#[tokio::test]
async fn tool_rounds_per_reply_are_bounded() {
    let (app, llm, _) = app(&[("MAX_TOOL_ROUNDS", "2")]).await;
    for i in 0..3 {
        llm.push(Reply::tool(
            &format!("c{i}"),
            "schedule_appointment",
            json!({"preferred_day": "amanhã"}),
        ));
    }
    llm.push(Reply::tokens(&["Ok."]));
    let mut call = call(&app, "CA_rounds").await;
    call.prompt("Agende algo").await;
    assert_eq!(call.reply().await.text, FALLBACK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        llm.requests().len(),
        3,
        "two tool rounds, then no more asking"
    );

    call.prompt("Tudo bem").await;
    assert_eq!(call.reply().await.text, "Ok.");
    let requests = llm.wait_requests(4).await;
    assert_history_valid(&requests[3]);
    assert!(
        tool_results(&requests[3])
            .iter()
            .any(|(id, c)| id == "c2" && c.contains("too many tool calls"))
    );
}

#[tokio::test]
async fn bad_tool_arguments_and_unknown_tools_go_back_to_the_model() {
    let (app, llm, recorder) = app(&[]).await;
    llm.push(Reply::tools(&[
        ("c1", "schedule_appointment", "{oops"),
        ("c2", "launch_rockets", "{}"),
    ]));
    llm.push(Reply::tokens(&["Desculpe, ", "pode ", "repetir?"]));
    llm.push(Reply::tokens(&["Claro."]));
    let mut call = call(&app, "CA_bad").await;
    call.prompt("Agende algo").await;
    assert_eq!(call.reply().await.text, "Desculpe, pode repetir?");
    let requests = llm.wait_requests(2).await;
    let results = tool_results(&requests[1]);
    assert!(results[0].1.contains("invalid arguments"), "{results:?}");
    assert!(results[1].1.contains("unknown tool"), "{results:?}");
    assert!(results[1].1.contains("schedule_appointment"));
    let tools = recorder.tools.lock().unwrap().clone();
    assert!(tools.iter().all(|(_, t)| !t.ok));
    // The call goes on.
    call.prompt("Ok, esqueça").await;
    assert_eq!(call.reply().await.text, "Claro.");
}

#[tokio::test]
async fn tool_calls_without_ids_or_index_still_work() {
    let (app, llm, _) = app(&[("AGENT_TOOLS", "send_dtmf")]).await;
    // Ollama style: the whole call in one chunk, no index, no id, arguments as an object.
    llm.push(Reply::Deltas(
        vec![json!({"tool_calls": [{"function": {"name": "send_dtmf", "arguments": {"digits": "7"}}}]})],
        "tool_calls".into(),
    ));
    llm.push(Reply::tokens(&["Pronto."]));
    let mut call = call(&app, "CA_ollama").await;
    call.prompt("Aperte sete").await;
    assert_eq!(
        call.recv().await,
        json!({"type": "sendDigits", "digits": "7"})
    );
    assert_eq!(call.reply().await.text, "Pronto.");
    let requests = llm.wait_requests(2).await;
    assert_history_valid(&requests[1]);
    let (id, _) = tool_results(&requests[1]).pop().unwrap();
    assert!(!id.is_empty());
}

fn http_tools_file(ok_url: &str, failing_url: &str, slow_url: &str) -> String {
    format!(
        r#"
[tools]
filler_after_ms = 200

[[http_tools]]
name = "consultar_pedido"
description = "Consulta o status de um pedido."
url = "{ok_url}"
headers = {{ Authorization = "Bearer ${{CRM_TOKEN}}", X-Tenant = "acme" }}
timeout_ms = 3000
parameters = {{ type = "object", properties = {{ pedido = {{ type = "string" }} }}, required = ["pedido"] }}

[[http_tools]]
name = "consultar_estoque"
description = "Consulta o estoque."
url = "{failing_url}"
method = "GET"

[[http_tools]]
name = "consultar_lento"
description = "Um serviço lento."
url = "{slow_url}"
timeout_ms = 300
"#
    )
}

#[tokio::test]
async fn http_tools_post_json_with_headers_and_a_slow_one_gets_a_filler() {
    let ok = FakeHttp::start(Answer {
        status: 200,
        body: r#"{"status":"enviado","previsao":"amanhã"}"#.into(),
        delay: Duration::from_millis(700),
    })
    .await;
    let failing = FakeHttp::start(Answer {
        status: 500,
        body: "boom".into(),
        delay: Duration::ZERO,
    })
    .await;
    let slow = FakeHttp::start(Answer {
        status: 200,
        body: "{}".into(),
        delay: Duration::from_secs(5),
    })
    .await;
    let path = agent_file(
        "http-tools",
        &http_tools_file(
            &ok.url("/pedidos/status"),
            &failing.url("/estoque"),
            &slow.url("/lento"),
        ),
    );
    let (app, llm, _) = app(&[
        ("AGENT_CONFIG", path.as_str()),
        ("CRM_TOKEN", "crm-secret-123"),
    ])
    .await;
    llm.push(Reply::tool(
        "c1",
        "consultar_pedido",
        json!({"pedido": "A-123"}),
    ));
    llm.push(Reply::tokens(&["Seu ", "pedido ", "foi ", "enviado."]));
    let mut call = call(&app, "CA_http").await;
    call.prompt("Cadê meu pedido A-123?").await;
    let reply = call.reply().await;
    assert_eq!(
        reply.text,
        format!("{DEFAULT_TOOL_FILLER} Seu pedido foi enviado.")
    );

    let sent = ok.requests();
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/pedidos/status");
    assert_eq!(sent.headers["authorization"], "Bearer crm-secret-123");
    assert_eq!(sent.headers["x-tenant"], "acme");
    assert_eq!(sent.headers["content-type"], "application/json");
    assert_eq!(sent.headers["x-voxrelay-call-sid"], "CA_http");
    assert_eq!(sent.body, json!({"pedido": "A-123"}));

    let requests = llm.wait_requests(2).await;
    let tools = requests[0].body["tools"].as_array().unwrap().clone();
    let pedido = tools
        .iter()
        .find(|t| t["function"]["name"] == "consultar_pedido")
        .unwrap();
    assert_eq!(
        pedido["function"]["parameters"]["required"],
        json!(["pedido"])
    );
    assert_eq!(
        tool_results(&requests[1]),
        vec![(
            "c1".to_string(),
            r#"{"status":"enviado","previsao":"amanhã"}"#.to_string()
        )]
    );
    // The filler is part of what the agent said before the tool answered.
    let messages = requests[1].raw_messages();
    assert_eq!(messages[messages.len() - 2]["content"], DEFAULT_TOOL_FILLER);

    // An HTTP error and a timeout come back to the model as errors.
    llm.push(Reply::tools(&[
        ("c2", "consultar_estoque", r#"{"item":"caneta","qtd":2}"#),
        ("c3", "consultar_lento", "{}"),
    ]));
    llm.push(Reply::tokens(&["Não ", "consegui ", "verificar."]));
    call.prompt("E o estoque?").await;
    let reply = call.reply().await;
    assert!(
        reply.text.ends_with("Não consegui verificar."),
        "{}",
        reply.text
    );
    let requests = llm.wait_requests(4).await;
    let results = tool_results(&requests[3]);
    assert!(results[1].1.contains("HTTP 500: boom"), "{results:?}");
    assert!(results[2].1.contains("longer than"), "{results:?}");
    let get = &failing.requests()[0];
    assert_eq!(get.method, "GET");
    assert!(get.path.starts_with("/estoque?"), "{}", get.path);
    assert!(get.path.contains("item=caneta") && get.path.contains("qtd=2"));
}

#[tokio::test]
async fn an_interrupt_cancels_a_running_tool_and_keeps_the_history_valid() {
    let slow = FakeHttp::start(Answer {
        status: 200,
        body: "{}".into(),
        delay: Duration::from_secs(5),
    })
    .await;
    let path = agent_file(
        "interrupt-tool",
        &format!(
            "[tools]\nfiller_after_ms = 100\n\n[[http_tools]]\nname = \"consultar\"\ndescription = \"Consulta.\"\nurl = \"{}\"\ntimeout_ms = 10000\n",
            slow.url("/x")
        ),
    );
    let (app, llm, recorder) = app(&[("AGENT_CONFIG", path.as_str())]).await;
    llm.push(Reply::tool("c1", "consultar", json!({})));
    llm.push(Reply::tokens(&["Ok."]));
    let mut call = call(&app, "CA_cancel").await;
    call.prompt("Consulte para mim").await;
    let first = call.recv().await;
    assert!(
        first["token"].as_str().unwrap().starts_with("Só "),
        "the filler: {first}"
    );
    call.interrupt("Só um instante").await;
    let mut after = Vec::new();
    while let Some(m) = call.recv_within(Duration::from_millis(300)).await {
        after.push(m);
    }
    assert!(
        after.iter().all(|m| m["last"] == false),
        "nothing closes an interrupted reply: {after:?}"
    );
    call.prompt("Deixa pra lá").await;
    assert_eq!(call.reply().await.text, "Ok.");
    let requests = llm.wait_requests(2).await;
    assert_history_valid(&requests[1]);
    let messages = requests[1].raw_messages();
    let n = messages.len();
    assert_eq!(messages[n - 3]["content"], "Só um instante");
    assert_eq!(messages[n - 3]["tool_calls"][0]["id"], "c1");
    assert!(
        messages[n - 2]["content"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    assert_eq!(messages[n - 1]["content"], "Deixa pra lá");
    let tools = recorder.tools.lock().unwrap().clone();
    assert_eq!(tools.len(), 1);
    assert!(!tools[0].1.ok);
}

/// A one-route server that redirects every request to `location`.
async fn redirector(location: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                let _ = crate::support::fake_llm::read_request(&mut socket).await;
                let head = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, head.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_tool_secrets_never_follow_a_redirect_to_another_host() {
    let elsewhere = FakeHttp::start(Answer {
        status: 200,
        body: "{}".into(),
        delay: Duration::ZERO,
    })
    .await;
    let redirect = redirector(elsewhere.url("/steal")).await;
    let path = agent_file(
        "http-tool-redirect",
        &format!(
            "[[http_tools]]\nname = \"consultar\"\ndescription = \"Consulta.\"\nurl = \"http://{redirect}/api\"\nheaders = {{ X-Api-Key = \"${{CRM_TOKEN}}\" }}\n"
        ),
    );
    let (app, llm, _) = app(&[
        ("AGENT_CONFIG", path.as_str()),
        ("CRM_TOKEN", "crm-secret-123"),
    ])
    .await;
    llm.push(Reply::tool("c1", "consultar", json!({"q": "1"})));
    llm.push(Reply::tokens(&["Ok."]));
    let mut call = call(&app, "CA_redirect").await;
    call.prompt("Consulte, por favor.").await;
    assert!(call.reply().await.text.ends_with("Ok."));
    llm.wait_requests(2).await;
    assert!(
        elsewhere.requests().is_empty(),
        "the tool followed a redirect to another host: {:?}",
        elsewhere.requests()
    );
}
