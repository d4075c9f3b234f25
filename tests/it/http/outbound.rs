//! The call-control API against a fake Twilio REST server: outbound calls (form
//! fields, inline TwiML, callbacks), ending calls, listing numbers, compatibility
//! routes, API auth, validation, and Twilio's errors reaching the caller.

use serde_json::{Value, json};

use crate::support::fake_llm::FakeLlm;
use crate::support::fake_twilio::{ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, INVALID_TO};
use crate::support::signed::{sign, ws_connect};
use crate::support::{TestApp, spawn_app, token_after};

const API_TOKEN: &str = "test-api-token-0123456789";
const PUBLIC: &str = "https://voz.example.com";
const CALLS_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";

async fn app_with(fake: &FakeTwilio, extra: &[(&str, &str)]) -> TestApp {
    let base = fake.base_url();
    let mut vars = vec![
        ("API_TOKEN", API_TOKEN),
        ("PUBLIC_URL", PUBLIC),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_API_BASE", base.as_str()),
        ("TWILIO_PHONE_NUMBER", "+5511222220000"),
    ];
    vars.extend_from_slice(extra);
    spawn_app(&vars).await
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(app.url(path))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The `<ConversationRelay>` attributes and `<Parameter>`s, and `<Connect action>`.
type Pairs = Vec<(String, String)>;

fn relay_of(twiml: &str) -> (String, Pairs, Pairs) {
    let doc = roxmltree::Document::parse(twiml).expect("well-formed TwiML");
    let connect = doc.root_element().first_element_child().unwrap();
    assert_eq!(connect.tag_name().name(), "Connect");
    let relay = connect.first_element_child().unwrap();
    assert_eq!(relay.tag_name().name(), "ConversationRelay");
    let attrs = relay
        .attributes()
        .map(|a| (a.name().to_string(), a.value().to_string()))
        .collect();
    let params = relay
        .children()
        .filter(|c| c.tag_name().name() == "Parameter")
        .map(|p| {
            (
                p.attribute("name").unwrap().to_string(),
                p.attribute("value").unwrap().to_string(),
            )
        })
        .collect();
    (
        connect.attribute("action").unwrap().to_string(),
        attrs,
        params,
    )
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn an_outbound_call_sends_twilio_the_documented_form() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    let (status, body) = post(
        &app,
        "/api/calls",
        json!({
            "to": "+5511999990000",
            "greeting": "Oi Ana & cia, aqui é a Clínica \"Sol\"!",
            "parameters": {"lead": "Ana", "score": 7},
            "record": true,
            "machine_detection": true,
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "queued");
    let sid = body["callSid"].as_str().unwrap();
    assert!(sid.starts_with("CA") && sid.len() == 34, "{sid}");

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", CALLS_PATH));
    assert_eq!(
        r.auth,
        Some((ACCOUNT_SID.to_string(), AUTH_TOKEN.to_string()))
    );
    assert_eq!(r.field("To"), Some("+5511999990000"));
    assert_eq!(
        r.field("From"),
        Some("+5511222220000"),
        "TWILIO_PHONE_NUMBER"
    );
    assert_eq!(
        r.field("StatusCallback"),
        Some("https://voz.example.com/twilio/status")
    );
    assert_eq!(r.field("StatusCallbackMethod"), Some("POST"));
    assert_eq!(
        r.fields("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"],
        "one form field per event"
    );
    assert_eq!(r.field("Record"), Some("true"));
    assert_eq!(
        r.field("RecordingStatusCallback"),
        Some("https://voz.example.com/twilio/recording")
    );
    assert_eq!(r.field("MachineDetection"), Some("DetectMessageEnd"));
    assert_eq!(r.field("AsyncAmd"), Some("true"));
    assert_eq!(
        r.field("AsyncAmdStatusCallback"),
        Some("https://voz.example.com/twilio/amd")
    );

    let twiml = r.field("Twiml").expect("TwiML inline");
    let (action, attrs, params) = relay_of(twiml);
    assert_eq!(action, "https://voz.example.com/twiml/action");
    token_after(get(&attrs, "url"), "wss://voz.example.com/websocket");
    assert_eq!(
        get(&attrs, "welcomeGreeting"),
        Some("Oi Ana & cia, aqui é a Clínica \"Sol\"!")
    );
    assert_eq!(get(&attrs, "language"), Some("pt-BR"));
    assert_eq!(get(&params, "lead"), Some("Ana"));
    assert_eq!(get(&params, "score"), Some("7"));
}

#[tokio::test]
async fn a_stream_call_connects_to_the_media_stream_with_its_parameters() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    let (status, answer) = post(
        &app,
        "/api/calls",
        json!({"to": "+5511999990000", "mode": "stream", "greeting": "Oi Ana!",
               "parameters": {"lead": "Ana", "pipeline": "elevenlabs-agent"}}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let twiml = fake.requests()[0].field("Twiml").unwrap().to_string();
    let doc = roxmltree::Document::parse(&twiml).expect("well-formed TwiML");
    let connect = doc.root_element().first_element_child().unwrap();
    assert_eq!(connect.tag_name().name(), "Connect");
    let stream = connect.first_element_child().unwrap();
    assert_eq!(stream.tag_name().name(), "Stream");
    token_after(
        stream.attribute("url"),
        "wss://voz.example.com/media-stream",
    );
    let params: Pairs = stream
        .children()
        .filter(|c| c.tag_name().name() == "Parameter")
        .map(|p| {
            (
                p.attribute("name").unwrap().to_string(),
                p.attribute("value").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(get(&params, "lead"), Some("Ana"));
    assert_eq!(get(&params, "pipeline"), Some("elevenlabs-agent"));
    assert_eq!(get(&params, "voxrelay_greeting"), Some("Oi Ana!"));
    assert_eq!(get(&params, "from"), Some("+5511222220000"));
    assert_eq!(get(&params, "to"), Some("+5511999990000"));
    assert_eq!(get(&params, "direction"), Some("outbound-api"));
    let redirect = connect.next_sibling_element().unwrap();
    assert_eq!(redirect.tag_name().name(), "Redirect");
    assert_eq!(
        redirect.text(),
        Some("https://voz.example.com/twiml/stream/next")
    );
}

#[tokio::test]
async fn a_minimal_call_records_nothing_and_skips_detection() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    let (status, _) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
    assert_eq!(status, 201);
    let r = &fake.requests()[0];
    for absent in [
        "Record",
        "RecordingStatusCallback",
        "MachineDetection",
        "AsyncAmd",
    ] {
        assert_eq!(r.field(absent), None, "{absent}");
    }
    let (_, attrs, params) = relay_of(r.field("Twiml").unwrap());
    assert_eq!(
        get(&attrs, "welcomeGreeting"),
        Some(voxrelay::config::DEFAULT_WELCOME_GREETING)
    );
    assert!(params.is_empty(), "{params:?}");
}

/// The parameters and greeting of the call's TwiML reach the agent: the greeting is
/// its first turn, the parameters are in its instructions.
#[tokio::test]
async fn the_agent_hears_the_greeting_and_reads_the_parameters() {
    let fake = FakeTwilio::start().await;
    let llm = FakeLlm::start().await;
    let llm_base = llm.base_url();
    let app = app_with(
        &fake,
        &[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "sk-test"),
            ("OPENAI_BASE_URL", llm_base.as_str()),
            ("SYSTEM_PROMPT", "Você liga para leads."),
        ],
    )
    .await;
    let greeting = "Oi Ana, aqui é a Clínica Sol!";
    let (status, body) = post(
        &app,
        "/api/calls",
        json!({"to": "+5511999990000", "greeting": greeting, "parameters": {"lead": "Ana"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, attrs, params) = relay_of(fake.requests()[0].field("Twiml").unwrap());

    // Twilio answers: it opens the TwiML's WebSocket URL (signed) and sends setup
    // with the <Parameter>s as customParameters.
    let ws_url = get(&attrs, "url").unwrap();
    let path = ws_url.strip_prefix("wss://voz.example.com").unwrap();
    let signature = sign(AUTH_TOKEN, ws_url, &[]);
    let mut call = ws_connect(&app, path, Some(&signature), &[])
        .await
        .expect("signed handshake");
    let custom: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    call.send(json!({
        "type": "setup", "sessionId": "VX1", "accountSid": ACCOUNT_SID,
        "callSid": body["callSid"], "from": "+5511222220000", "to": "+5511999990000",
        "direction": "outbound-api", "customParameters": custom
    }))
    .await;
    call.prompt("Oi, quem fala?").await;
    call.reply().await;
    let requests = llm.wait_requests(1).await;
    let messages = requests[0].messages();
    assert_eq!(messages[0].0, "system");
    assert!(messages[0].1.contains("Você liga para leads."));
    assert!(messages[0].1.contains("lead: Ana"), "{}", messages[0].1);
    assert!(
        !messages[0].1.contains("voxrelay_greeting"),
        "{}",
        messages[0].1
    );
    assert_eq!(messages[1], ("assistant".to_string(), greeting.to_string()));
    assert_eq!(
        messages[2],
        ("user".to_string(), "Oi, quem fala?".to_string())
    );
}

#[tokio::test]
async fn from_defaults_to_the_accounts_first_number() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[("TWILIO_PHONE_NUMBER", "")]).await;
    let (status, _) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
    assert_eq!(status, 201);
    let requests = fake.requests();
    assert_eq!(requests[0].method, "GET");
    assert!(requests[0].path.ends_with("/IncomingPhoneNumbers.json"));
    assert_eq!(requests[1].field("From"), Some("+5511333330000"));

    // An explicit `from` wins and costs no lookup.
    let (status, _) = post(
        &app,
        "/api/calls",
        json!({"to": "+5511999990000", "from": "+5511444440000"}),
    )
    .await;
    assert_eq!(status, 201);
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].field("From"), Some("+5511444440000"));

    let empty = FakeTwilio::start_with(ACCOUNT_SID, AUTH_TOKEN, &[]).await;
    let app = app_with(&empty, &[("TWILIO_PHONE_NUMBER", "")]).await;
    let (status, body) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["field"], "from");
}

#[tokio::test]
async fn an_api_key_authenticates_instead_of_the_auth_token() {
    let fake =
        FakeTwilio::start_with("SK0123456789abcdef0123456789abcdef", "key-secret", &[]).await;
    let app = app_with(
        &fake,
        &[
            ("TWILIO_API_KEY_SID", "SK0123456789abcdef0123456789abcdef"),
            ("TWILIO_API_KEY_SECRET", "key-secret"),
        ],
    )
    .await;
    let (status, body) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        fake.requests()[0].path,
        CALLS_PATH,
        "the account stays in the path"
    );
}

#[tokio::test]
async fn twilio_errors_reach_the_caller_with_code_and_message() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    let (status, body) = post(&app, "/api/calls", json!({"to": INVALID_TO})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 21211);
    assert_eq!(
        body["message"],
        format!("The 'To' number {INVALID_TO} is not a valid phone number.")
    );
    assert!(body["error"].as_str().unwrap().contains("21211"));

    // Our own credentials being wrong is not the API caller's fault: 502.
    let app = app_with(&fake, &[("TWILIO_AUTH_TOKEN", "wrong-token")]).await;
    let (status, body) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], 20003);
    assert_eq!(body["message"], "Authenticate");
    assert_eq!(body["twilio_status"], 401);
}

#[tokio::test]
async fn a_silent_twilio_times_out_cleanly() {
    let fake = FakeTwilio::start().await;
    fake.hang();
    let app = app_with(&fake, &[("TWILIO_TIMEOUT_MS", "300")]).await;
    let (status, body) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
    assert_eq!(status, 504, "{body}");
    assert!(body["error"].as_str().unwrap().contains("did not answer"));
}

#[tokio::test]
async fn ending_a_call_sets_status_completed() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    let (_, created) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
    let sid = created["callSid"].as_str().unwrap();
    let (status, body) = post(&app, &format!("/api/calls/{sid}/end"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"callSid": sid, "status": "completed"}));
    let r = &fake.requests()[1];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json")
    );
    assert_eq!(
        r.form,
        vec![("Status".to_string(), "completed".to_string())]
    );

    let unknown = "CAffffffffffffffffffffffffffffffff";
    let (status, body) = post(&app, &format!("/api/calls/{unknown}/end"), json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], 20404);

    let (status, body) = post(&app, "/api/calls/not-a-sid/end", json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["field"], "sid");
}

#[tokio::test]
async fn numbers_are_listed() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    let res = reqwest::Client::new()
        .get(app.url("/api/numbers"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let numbers = body["numbers"].as_array().unwrap();
    assert_eq!(numbers.len(), 2);
    assert_eq!(numbers[0]["phoneNumber"], "+5511333330000");
    assert_eq!(numbers[0]["capabilities"]["voice"], true);
    let r = &fake.requests()[0];
    assert_eq!(r.method, "GET");
    assert_eq!(
        r.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/IncomingPhoneNumbers.json")
    );
    assert_eq!(r.query, "PageSize=1000");
}

#[tokio::test]
async fn compatibility_routes() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    let (status, body) = post(
        &app,
        "/make-call",
        json!({"to": "+5511999990000", "message": "Olá, é um lembrete."}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["success"], true);
    let (_, attrs, _) = relay_of(fake.requests()[0].field("Twiml").unwrap());
    assert_eq!(get(&attrs, "welcomeGreeting"), Some("Olá, é um lembrete."));

    let (status, body) = post(
        &app,
        "/api/call",
        json!({"number": "+5511999990000", "fromNumber": "+5511444440000"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(fake.requests()[1].field("From"), Some("+5511444440000"));
    let sid = body["callSid"].as_str().unwrap().to_string();

    let (status, body) = post(&app, "/api/end-call", json!({"callSid": sid})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    assert_eq!(fake.requests()[2].field("Status"), Some("completed"));

    let (status, body) = post(&app, "/api/call", json!({"to": "+5511999990000"})).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("number")));
    let (status, body) = post(&app, "/api/end-call", json!({})).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("callSid")));
}

#[tokio::test]
async fn every_api_route_needs_the_bearer_token() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    let client = reqwest::Client::new();
    let sid = "CA0123456789abcdef0123456789abcdef";
    for (method, path) in [
        ("POST", "/api/calls".to_string()),
        ("POST", format!("/api/calls/{sid}/end")),
        ("GET", "/api/numbers".to_string()),
        ("POST", "/make-call".to_string()),
        ("POST", "/api/call".to_string()),
        ("POST", "/api/end-call".to_string()),
    ] {
        for auth in [None, Some("Bearer wrong-token-0123456789")] {
            let mut request = match method {
                "GET" => client.get(app.url(&path)),
                _ => client.post(app.url(&path)).json(
                    &json!({"to": "+5511999990000", "number": "+5511999990000", "callSid": sid}),
                ),
            };
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let res = request.send().await.unwrap();
            assert_eq!(res.status(), 401, "{method} {path} with {auth:?}");
        }
    }
    assert!(fake.requests().is_empty(), "nothing reached Twilio");
}

#[tokio::test]
async fn invalid_bodies_are_refused_naming_the_field() {
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    for (body, field) in [
        (json!({}), "to"),
        (json!({"to": "011 99999-0000"}), "to"),
        (json!({"to": "+5511999990000", "from": "5511"}), "from"),
        (json!({"to": "+5511999990000", "mode": "video"}), "mode"),
        (json!({"to": "+5511999990000", "record": "yes"}), "record"),
        (
            json!({"to": "+5511999990000", "parameters": "lead=Ana"}),
            "parameters",
        ),
        (json!({"to": "+5511999990000", "greeting": 42}), "greeting"),
        (
            json!({"to": "+5511999990000", "machineDetection": true}),
            "machineDetection",
        ),
    ] {
        let (status, answer) = post(&app, "/api/calls", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
        assert!(
            answer["error"].as_str().unwrap().starts_with(field),
            "{answer}"
        );
    }

    let client = reqwest::Client::new();
    let res = client
        .post(app.url("/api/calls"))
        .bearer_auth(API_TOKEN)
        .body("to=+5511999990000")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let answer: Value = res.json().await.unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("JSON object"),
        "{answer}"
    );

    // Parameters too large for Twilio's 4000-character inline TwiML.
    let parameters: serde_json::Map<String, Value> = (0..12)
        .map(|i| (format!("p{i}"), Value::String("x".repeat(400))))
        .collect();
    let (status, answer) = post(
        &app,
        "/api/calls",
        json!({"to": "+5511999990000", "parameters": parameters}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("4000"),
        "{answer}"
    );

    let res = client
        .post(app.url("/api/calls"))
        .bearer_auth(API_TOKEN)
        .body(vec![b' '; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert!(fake.requests().is_empty(), "nothing invalid reached Twilio");
}

#[tokio::test]
async fn without_public_url_a_loopback_request_cannot_place_a_call() {
    let fake = FakeTwilio::start().await;
    let base = fake.base_url();
    let app = spawn_app(&[
        ("API_TOKEN", API_TOKEN),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_API_BASE", base.as_str()),
        ("TWILIO_PHONE_NUMBER", "+5511222220000"),
        ("TRUSTED_PROXIES", "1"),
    ])
    .await;
    let (status, body) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("PUBLIC_URL"),
        "{body}"
    );
    assert!(fake.requests().is_empty());

    // Behind a proxy the forwarded host is public: the call goes out with it.
    let res = reqwest::Client::new()
        .post(app.url("/api/calls"))
        .bearer_auth(API_TOKEN)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "voz.up.railway.app")
        .json(&json!({"to": "+5511999990000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let r = &fake.requests()[0];
    assert_eq!(
        r.field("StatusCallback"),
        Some("https://voz.up.railway.app/twilio/status")
    );
    let (_, attrs, _) = relay_of(r.field("Twiml").unwrap());
    token_after(get(&attrs, "url"), "wss://voz.up.railway.app/websocket");
}

#[tokio::test]
async fn without_twilio_credentials_the_api_says_what_to_set() {
    let app = spawn_app(&[("API_TOKEN", API_TOKEN)]).await;
    let (status, body) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("TWILIO_ACCOUNT_SID"),
        "{body}"
    );
}

#[tokio::test]
async fn an_outbound_calls_socket_opens_once_and_only_for_the_call_twilio_created() {
    use crate::support::signed::{sign, ws_connect};
    let fake = FakeTwilio::start().await;
    let app = app_with(&fake, &[]).await;
    let place = || async {
        let (status, answer) = post(&app, "/api/calls", json!({"to": "+5511999990000"})).await;
        assert_eq!(status, 201, "{answer}");
        let sid = answer["callSid"].as_str().unwrap().to_string();
        let twiml = fake
            .requests()
            .last()
            .unwrap()
            .field("Twiml")
            .unwrap()
            .to_string();
        let url = crate::support::twiml_url(&twiml, "ConversationRelay");
        (sid, url)
    };
    // Twilio connects the call it created: the setup names that SID.
    let (sid, url) = place().await;
    let path = url
        .strip_prefix("wss://voz.example.com")
        .unwrap()
        .to_string();
    let signature = sign(AUTH_TOKEN, &url, &[]);
    let mut call = ws_connect(&app, &path, Some(&signature), &[])
        .await
        .unwrap();
    call.setup(&sid).await;
    call.prompt("Alô?").await;
    assert!(!call.reply().await.text.is_empty());
    assert_eq!(
        ws_connect(&app, &path, Some(&signature), &[]).await.err(),
        Some(403),
        "the handshake cannot be replayed"
    );
    // A socket presenting an outbound token with another call's SID is ended.
    let (_, url) = place().await;
    let path = url
        .strip_prefix("wss://voz.example.com")
        .unwrap()
        .to_string();
    let mut other = ws_connect(&app, &path, Some(&sign(AUTH_TOKEN, &url, &[])), &[])
        .await
        .unwrap();
    other.setup(&sid).await;
    other.closed().await;
}
