//! Several agents on one server (`AGENTS_DIR`): inbound calls reach the agent of
//! the number called, outbound calls the agent named (or the one of `from`); the
//! agent travels in the call's token and follow-up URLs, so its greeting, prompt,
//! LLM and handoff number are the ones used; each agent's `max_calls` turns calls
//! away before they are answered; records and metrics say which agent took a call.

use serde_json::{Value, json};

use crate::support::fake_llm::FakeLlm;
use crate::support::fake_twilio::{ACCOUNT_SID, FakeTwilio};
use crate::support::signed::{PUBLIC, TOKEN, post_form, sign, ws_connect};
use crate::support::{RelayClient, TestApp, eventually_async, spawn_app, twiml_url};

const API_TOKEN: &str = "agents-api-token-0123456789";
const SALES: &str = "+5511333330001";
const SUPPORT: &str = "+5511333330002";

/// A folder with two agents: `vendas` (at most one live call) and `suporte`.
fn agents_dir(test: &str) -> String {
    let dir = std::env::temp_dir().join(format!("voxrelay-agents-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("vendas.toml"),
        format!(
            r#"name = "Vendas"
numbers = ["{SALES}"]
max_calls = 1
system_prompt = "Você é da equipe de vendas da Loja Azul."
welcome_greeting = "Loja Azul, vendas, bom dia!"
busy_message = "Vendas está com todas as linhas ocupadas."
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("suporte.toml"),
        format!(
            r#"name = "Suporte"
numbers = ["{SUPPORT}"]
system_prompt = "Você é do suporte técnico da Loja Azul."
welcome_greeting = "Suporte da Loja Azul, pois não?"

[handoff]
number = "+5511444440002"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("lembretes.toml"),
        "name = \"Lembretes\"\nwelcome_greeting = \"Olá {name}, aqui é {agent_name}.\"\n",
    )
    .unwrap();
    dir.display().to_string()
}

async fn app(test: &str, fake: &FakeTwilio, llm: &FakeLlm) -> TestApp {
    let dir = agents_dir(test);
    let twilio = fake.base_url();
    let llm = llm.base_url();
    spawn_app(&[
        ("AGENTS_DIR", dir.as_str()),
        ("API_TOKEN", API_TOKEN),
        ("PUBLIC_URL", PUBLIC),
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_API_BASE", twilio.as_str()),
        ("TWILIO_PHONE_NUMBER", "+5511222220000"),
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_BASE_URL", llm.as_str()),
        ("SYSTEM_PROMPT", "Você é o atendente geral."),
        ("WELCOME_GREETING", "Olá, central geral!"),
    ])
    .await
}

/// Twilio's signed voice webhook for an inbound call to `to`; the TwiML.
async fn answer(app: &TestApp, path: &str, call_sid: &str, to: &str) -> String {
    let params = [
        ("CallSid", call_sid),
        ("From", "+5511999990000"),
        ("To", to),
    ];
    let signature = sign(TOKEN, &format!("{PUBLIC}{path}"), &params);
    let res = post_form(app, path, &params, Some(&signature)).await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The attribute `name` of the first `tag` of a TwiML document.
fn attribute(xml: &str, tag: &str, name: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).expect("TwiML is XML");
    doc.descendants()
        .find(|n| n.has_tag_name(tag))
        .and_then(|n| n.attribute(name))
        .map(str::to_string)
}

/// Opens the TwiML's relay socket as Twilio would, and sets the call up.
async fn connect(app: &TestApp, xml: &str, call_sid: &str, to: &str) -> RelayClient {
    let url = twiml_url(xml, "ConversationRelay");
    let path = url.strip_prefix("wss://voz.example.com").unwrap();
    let mut call = ws_connect(app, path, Some(&sign(TOKEN, &url, &[])), &[])
        .await
        .expect("Twilio's handshake is upgraded");
    call.send(json!({
        "type": "setup", "sessionId": format!("VX{call_sid}"), "accountSid": ACCOUNT_SID,
        "callSid": call_sid, "from": "+5511999990000", "to": to, "direction": "inbound",
        "customParameters": {}
    }))
    .await;
    call
}

async fn get(app: &TestApp, path: &str) -> Value {
    reqwest::Client::new()
        .get(app.url(path))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metrics(app: &TestApp) -> String {
    reqwest::Client::new()
        .get(app.url("/metrics"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn inbound_calls_reach_the_agent_of_the_number_called() {
    let fake = FakeTwilio::start().await;
    let llm = FakeLlm::start().await;
    let app = app("inbound", &fake, &llm).await;

    // The support line: its greeting, and its id on the follow-up URL.
    let xml = answer(&app, "/incoming-call", "CAsupport1", SUPPORT).await;
    assert_eq!(
        attribute(&xml, "ConversationRelay", "welcomeGreeting").as_deref(),
        Some("Suporte da Loja Azul, pois não?")
    );
    assert_eq!(
        attribute(&xml, "Connect", "action").as_deref(),
        Some("https://voz.example.com/twiml/action?agent=suporte")
    );
    let mut call = connect(&app, &xml, "CAsupport1", SUPPORT).await;
    call.prompt("Minha internet caiu.").await;
    call.reply().await;
    let request = &llm.wait_requests(1).await[0];
    let system = &request.messages()[0].1;
    assert!(system.contains("suporte técnico da Loja Azul"), "{system}");
    assert_eq!(
        request.messages()[1].1,
        "Suporte da Loja Azul, pois não?",
        "the agent knows the greeting Twilio spoke"
    );

    // A number no agent claims: the default agent, with no agent on its URLs.
    let xml = answer(&app, "/twiml", "CAother1", "+5511777770000").await;
    assert_eq!(
        attribute(&xml, "ConversationRelay", "welcomeGreeting").as_deref(),
        Some("Olá, central geral!")
    );
    assert_eq!(
        attribute(&xml, "Connect", "action").as_deref(),
        Some("https://voz.example.com/twiml/action")
    );
    let mut other = connect(&app, &xml, "CAother1", "+5511777770000").await;
    other.prompt("Oi").await;
    other.reply().await;
    let system = llm.wait_requests(2).await[1].messages()[0].1.clone();
    assert!(system.contains("atendente geral"), "{system}");

    // Media Streams picks the agent the same way.
    let xml = answer(&app, "/twiml/stream", "CAsales9", SALES).await;
    assert_eq!(
        attribute(&xml, "Redirect", "method").as_deref(),
        Some("POST"),
        "{xml}"
    );
    assert!(
        xml.contains("/twiml/stream/next?agent=vendas"),
        "the follow-up names the agent: {xml}"
    );

    // The records and the metrics say which agent took each call.
    drop((call, other));
    let listed = eventually_async(|| async {
        let page = get(&app, "/api/calls?agent=suporte").await;
        let calls = page["calls"].as_array().cloned().unwrap_or_default();
        (calls.len() == 1).then_some(calls)
    })
    .await;
    assert_eq!(listed[0]["call_sid"], "CAsupport1");
    assert_eq!(listed[0]["agent"], "suporte");
    let default = get(&app, "/api/calls/CAother1").await;
    assert_eq!(default["agent"], "default", "{default}");
    let text = metrics(&app).await;
    assert!(
        text.contains("voxrelay_agent_calls_total{agent=\"suporte\"} 1"),
        "{text}"
    );
    assert!(text.contains("voxrelay_agent_calls_total{agent=\"default\"} 1"));
    assert!(text.contains("voxrelay_agent_calls_total{agent=\"vendas\"} 0"));
    assert!(text.contains("voxrelay_agent_calls_total{agent=\"lembretes\"} 0"));
}

#[tokio::test]
async fn outbound_calls_take_the_agent_named_or_the_one_of_from() {
    let fake = FakeTwilio::start().await;
    let llm = FakeLlm::start().await;
    let app = app("outbound", &fake, &llm).await;
    let post = |body: Value| {
        let url = app.url("/api/calls");
        async move {
            let res = reqwest::Client::new()
                .post(url)
                .bearer_auth(API_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };

    // Named: the call goes out from the agent's own number, with its greeting.
    let (status, body) = post(json!({"to": "+5511999990000", "agent": "suporte"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["agent"], "suporte");
    let sent = &fake.requests()[0];
    assert_eq!(sent.field("From"), Some(SUPPORT));
    let twiml = sent.field("Twiml").unwrap().to_string();
    assert_eq!(
        attribute(&twiml, "ConversationRelay", "welcomeGreeting").as_deref(),
        Some("Suporte da Loja Azul, pois não?")
    );
    // Twilio connects the call: the socket runs the support agent.
    let sid = body["callSid"].as_str().unwrap().to_string();
    let mut call = connect(&app, &twiml, &sid, "+5511999990000").await;
    call.prompt("Alô?").await;
    call.reply().await;
    let system = llm.wait_requests(1).await[0].messages()[0].1.clone();
    assert!(system.contains("suporte técnico"), "{system}");

    // By `from`: the agent of that number.
    let (status, body) = post(json!({"to": "+5511999990000", "from": SALES})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["agent"], "vendas");
    let twiml = fake.requests()[1].field("Twiml").unwrap().to_string();
    assert!(twiml.contains("Loja Azul, vendas, bom dia!"), "{twiml}");

    // An agent's greeting names the call's parameters.
    let (status, body) = post(json!({
        "to": "+5511999990000", "agent": "lembretes", "parameters": {"name": "Ana"}
    }))
    .await;
    assert_eq!(status, 201, "{body}");
    let twiml = fake.requests()[2].field("Twiml").unwrap().to_string();
    assert_eq!(
        attribute(&twiml, "ConversationRelay", "welcomeGreeting").as_deref(),
        Some("Olá Ana, aqui é Lembretes."),
        "{twiml}"
    );
    assert_eq!(
        fake.requests()[2].field("From"),
        Some("+5511222220000"),
        "an agent without numbers calls from the server's"
    );

    // Neither: the default agent from the server's number.
    let (status, body) = post(json!({"to": "+5511999990000"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["agent"], "default");
    assert_eq!(fake.requests()[3].field("From"), Some("+5511222220000"));

    // An agent nobody configured: a clear 400, and Twilio is not asked.
    let (status, body) = post(json!({"to": "+5511999990000", "agent": "marketing"})).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("agent") && error.contains("marketing"),
        "{error}"
    );
    assert!(
        error.contains("suporte") && error.contains("vendas"),
        "{error}"
    );
    let (status, _) = post(json!({"to": "+5511999990000", "agent": "../etc"})).await;
    assert_eq!(status, 400);
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn an_agent_at_its_max_calls_turns_calls_away_before_answering() {
    let fake = FakeTwilio::start().await;
    let llm = FakeLlm::start().await;
    let app = app("admission", &fake, &llm).await;

    // The sales line takes one call; the second is turned away with its message,
    // before the first's socket has even opened (the slot is promised).
    let first = answer(&app, "/incoming-call", "CAsales1", SALES).await;
    assert!(first.contains("<Connect"), "{first}");
    let busy = answer(&app, "/incoming-call", "CAsales2", SALES).await;
    assert!(
        busy.contains(
            "<Say language=\"pt-BR\">Vendas está com todas as linhas ocupadas.</Say><Hangup/>"
        ),
        "{busy}"
    );
    // Twilio retrying the first call's webhook keeps its slot.
    let retry = answer(&app, "/incoming-call", "CAsales1", SALES).await;
    assert!(retry.contains("<Connect"), "{retry}");
    // The other lines are not affected.
    let support = answer(&app, "/incoming-call", "CAsupport1", SUPPORT).await;
    assert!(support.contains("<Connect"), "{support}");

    // An outbound call for the full agent: 429, and Twilio is never asked.
    let res = reqwest::Client::new()
        .post(app.url("/api/calls"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"to": "+5511999990000", "agent": "vendas"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let body: Value = res.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("vendas") && error.contains("max_calls"),
        "{error}"
    );
    assert!(fake.requests().is_empty());

    // The first call connects, lives, and ends: its slot is free again.
    let mut call = connect(&app, &first, "CAsales1", SALES).await;
    call.prompt("Quero comprar.").await;
    call.reply().await;
    let busy = answer(&app, "/incoming-call", "CAsales3", SALES).await;
    assert!(busy.contains("<Hangup/>"), "still full while live: {busy}");
    call.ws().close(None).await.unwrap();
    eventually_async(|| async {
        app.state
            .agents
            .named("vendas")
            .is_some_and(|a| a.load.live() == 0)
            .then_some(())
    })
    .await;
    let again = answer(&app, "/incoming-call", "CAsales4", SALES).await;
    assert!(again.contains("<Connect"), "{again}");

    let text = metrics(&app).await;
    assert!(
        text.contains("voxrelay_agent_calls_refused_total{agent=\"vendas\"} 3"),
        "{text}"
    );
    assert!(text.contains("voxrelay_agent_calls_refused_total{agent=\"suporte\"} 0"));
    assert!(text.contains("voxrelay_calls_refused_total 3"));
}

#[tokio::test]
async fn a_transfer_dials_the_handoff_number_of_the_calls_agent() {
    let fake = FakeTwilio::start().await;
    let llm = FakeLlm::start().await;
    let app = app("handoff", &fake, &llm).await;
    let handoff = r#"{"reasonCode":"live-agent-handoff","reason":"pediu"}"#;
    let params = [
        ("CallSid", "CAsupport1"),
        ("CallStatus", "in-progress"),
        ("HandoffData", handoff),
    ];
    let path = "/twiml/action?agent=suporte";
    let signature = sign(TOKEN, &format!("{PUBLIC}{path}"), &params);
    let xml = post_form(&app, path, &params, Some(&signature))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        xml.contains("<Dial><Number>+5511444440002</Number></Dial>"),
        "{xml}"
    );
    // The agent on the URL is signed: changing it breaks the signature.
    let forged = post_form(
        &app,
        "/twiml/action?agent=vendas",
        &params,
        Some(&signature),
    )
    .await;
    assert_eq!(forged.status(), 403);
}
