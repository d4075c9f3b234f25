//! A fake Twilio REST API on loopback. It checks what real Twilio would refuse
//! (basic auth, the account in the path, required form fields), answers like Twilio
//! (JSON resources, JSON errors with `code` and `message`), and records every request
//! so tests can check the path, method and form fields we sent.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "twilio-test-auth-token";
/// Twilio's magic test number that is "not a valid phone number" (21211).
pub const INVALID_TO: &str = "+15005550001";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    /// `(user, password)` from the basic auth header.
    pub auth: Option<(String, String)>,
    pub form: Vec<(String, String)>,
}

impl Recorded {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    calls: Mutex<HashSet<String>>,
    next: AtomicUsize,
    hang: AtomicBool,
    /// When not 0, every request gets this HTTP status and a Twilio error body.
    fail_status: AtomicU16,
}

#[derive(Clone)]
pub struct FakeTwilio {
    pub addr: SocketAddr,
    /// The credentials it accepts.
    pub user: String,
    pub password: String,
    /// The numbers `IncomingPhoneNumbers.json` lists.
    pub numbers: Vec<String>,
    shared: Arc<Shared>,
}

impl FakeTwilio {
    /// Accepts the account SID and auth token.
    pub async fn start() -> Self {
        Self::start_with(
            ACCOUNT_SID,
            AUTH_TOKEN,
            &["+5511333330000", "+5511444440000"],
        )
        .await
    }

    pub async fn start_with(user: &str, password: &str, numbers: &[&str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Self {
            addr,
            user: user.into(),
            password: password.into(),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            shared: Arc::new(Shared::default()),
        };
        let handler = fake.clone();
        let routes = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::bytes())
            .then(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      query: String,
                      auth: Option<String>,
                      body: Bytes| {
                    let handler = handler.clone();
                    async move {
                        handler
                            .handle(method.as_str(), path.as_str(), query, auth, &body)
                            .await
                    }
                },
            );
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        fake
    }

    /// `TWILIO_API_BASE` for the app.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// From now on, requests get no answer at all.
    pub fn hang(&self) {
        self.shared.hang.store(true, Ordering::SeqCst);
    }

    /// A live call Twilio knows about (an inbound call, say), so it can be updated.
    pub fn add_call(&self, sid: &str) {
        self.shared.calls.lock().unwrap().insert(sid.to_string());
    }

    /// From now on, requests fail with this HTTP status (Twilio error 20500).
    pub fn fail_with(&self, status: u16) {
        self.shared.fail_status.store(status, Ordering::SeqCst);
    }

    async fn handle(
        &self,
        method: &str,
        path: &str,
        query: String,
        auth: Option<String>,
        body: &[u8],
    ) -> warp::reply::WithStatus<warp::reply::Json> {
        let form: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).expect("Twilio requests are form-encoded");
        let auth = auth.and_then(|h| decode_basic(&h));
        self.shared.requests.lock().unwrap().push(Recorded {
            method: method.into(),
            path: path.into(),
            query,
            auth: auth.clone(),
            form: form.clone(),
        });
        if self.shared.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let reply = |status: StatusCode, body: Value| {
            warp::reply::with_status(warp::reply::json(&body), status)
        };
        let error = |status: StatusCode, code: u32, message: &str| {
            reply(
                status,
                json!({"code": code, "message": message,
                       "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                       "status": status.as_u16()}),
            )
        };
        if auth != Some((self.user.clone(), self.password.clone())) {
            return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
        }
        let fail_status = self.shared.fail_status.load(Ordering::SeqCst);
        if fail_status != 0 {
            return error(
                StatusCode::from_u16(fail_status).unwrap(),
                20500,
                "An internal server error has occurred",
            );
        }
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let prefix = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/");
        let Some(rest) = path.strip_prefix(&prefix) else {
            return error(
                StatusCode::NOT_FOUND,
                20404,
                "The requested resource was not found",
            );
        };
        match (method, rest) {
            ("POST", "Calls.json") => {
                for required in ["To", "From"] {
                    if field(required).is_none() {
                        return error(
                            StatusCode::BAD_REQUEST,
                            21201,
                            &format!("No '{required}' number is specified"),
                        );
                    }
                }
                if field("Twiml").is_none() && field("Url").is_none() {
                    return error(StatusCode::BAD_REQUEST, 21205, "Url parameter is required.");
                }
                let to = field("To").unwrap();
                if to == INVALID_TO {
                    return error(
                        StatusCode::BAD_REQUEST,
                        21211,
                        &format!("The 'To' number {to} is not a valid phone number."),
                    );
                }
                let n = self.shared.next.fetch_add(1, Ordering::SeqCst);
                let sid = format!("CA{n:032x}");
                self.shared.calls.lock().unwrap().insert(sid.clone());
                reply(
                    StatusCode::CREATED,
                    json!({"sid": sid, "status": "queued", "to": to, "from": field("From"),
                           "direction": "outbound-api", "account_sid": ACCOUNT_SID}),
                )
            }
            ("POST", call) if call.starts_with("Calls/") && call.ends_with(".json") => {
                let sid = &call["Calls/".len()..call.len() - ".json".len()];
                if !self.shared.calls.lock().unwrap().contains(sid) {
                    return error(
                        StatusCode::NOT_FOUND,
                        20404,
                        &format!(
                            "The requested resource /2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json was not found"
                        ),
                    );
                }
                let status = field("Status").unwrap_or_else(|| "in-progress".into());
                reply(StatusCode::OK, json!({"sid": sid, "status": status}))
            }
            ("GET", "IncomingPhoneNumbers.json") => {
                let numbers: Vec<Value> = self
                    .numbers
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        json!({"sid": format!("PN{i:032x}"), "phone_number": n,
                               "friendly_name": format!("Número {i}"),
                               "voice_url": "https://voz.example.com/incoming-call",
                               "capabilities": {"voice": true, "sms": false}})
                    })
                    .collect();
                reply(
                    StatusCode::OK,
                    json!({"incoming_phone_numbers": numbers, "page": 0, "page_size": 1000}),
                )
            }
            _ => error(
                StatusCode::NOT_FOUND,
                20404,
                "The requested resource was not found",
            ),
        }
    }
}

fn decode_basic(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
