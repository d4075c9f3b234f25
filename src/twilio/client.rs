//! Twilio's REST API (v2010) for voice: create a call, end a call, redirect a live
//! call to new TwiML, list the account's phone numbers.
//!
//! Each request is first built as a plain [`ApiRequest`] (method, path, form fields)
//! by a pure function, so a test can check every request we send against Twilio's
//! OpenAPI description; [`TwilioClient::send`] then performs it with basic auth, a
//! connect timeout and an overall timeout (`TWILIO_TIMEOUT_MS`). Twilio's own errors come back as
//! [`TwilioError::Api`] with Twilio's code and message.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::{Secret, TwilioConfig};

/// Time allowed to open a connection to Twilio.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The lifecycle events our status callback asks for (one form field each).
pub const STATUS_CALLBACK_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

/// HTTP method of an [`ApiRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// One request to Twilio's API, before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: Method,
    /// Path below the API base, e.g. `/2010-04-01/Accounts/AC…/Calls.json`.
    pub path: String,
    /// Query parameters (GET).
    pub query: Vec<(String, String)>,
    /// Form fields (POST), in order; a repeated name is a list.
    pub form: Vec<(String, String)>,
}

/// An outbound call to place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewCall {
    /// E.164.
    pub to: String,
    /// E.164: one of the account's numbers or a verified caller id.
    pub from: String,
    /// The TwiML run when the call is answered (≤ 4000 characters).
    pub twiml: String,
    /// Where Twilio reports the call's lifecycle ([`STATUS_CALLBACK_EVENTS`]).
    pub status_callback: Option<String>,
    /// Record the call; Twilio reports the recording to `recording_status_callback`.
    pub record: bool,
    pub recording_status_callback: Option<String>,
    /// Answering-machine detection, asynchronous (the conversation starts at once);
    /// the result goes to this URL.
    pub machine_detection_callback: Option<String>,
}

/// Twilio's limit on inline TwiML for a new call.
pub const MAX_INLINE_TWIML: usize = 4000;

fn account_path(account_sid: &str, rest: &str) -> String {
    format!("/2010-04-01/Accounts/{account_sid}/{rest}")
}

/// `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`.
pub fn create_call_request(account_sid: &str, call: &NewCall) -> ApiRequest {
    let mut form: Vec<(String, String)> = vec![
        ("To".into(), call.to.clone()),
        ("From".into(), call.from.clone()),
        ("Twiml".into(), call.twiml.clone()),
    ];
    if let Some(url) = &call.status_callback {
        form.push(("StatusCallback".into(), url.clone()));
        form.push(("StatusCallbackMethod".into(), "POST".into()));
        for event in STATUS_CALLBACK_EVENTS {
            form.push(("StatusCallbackEvent".into(), event.into()));
        }
    }
    if call.record {
        form.push(("Record".into(), "true".into()));
        if let Some(url) = &call.recording_status_callback {
            form.push(("RecordingStatusCallback".into(), url.clone()));
            form.push(("RecordingStatusCallbackMethod".into(), "POST".into()));
            form.push(("RecordingStatusCallbackEvent".into(), "completed".into()));
        }
    }
    if let Some(url) = &call.machine_detection_callback {
        // The end of the greeting (the beep), so a voicemail message is recorded.
        form.push(("MachineDetection".into(), "DetectMessageEnd".into()));
        form.push(("AsyncAmd".into(), "true".into()));
        form.push(("AsyncAmdStatusCallback".into(), url.clone()));
        form.push(("AsyncAmdStatusCallbackMethod".into(), "POST".into()));
    }
    ApiRequest {
        method: Method::Post,
        path: account_path(account_sid, "Calls.json"),
        query: Vec::new(),
        form,
    }
}

/// `POST /2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json` with `Status=completed`.
pub fn end_call_request(account_sid: &str, call_sid: &str) -> ApiRequest {
    ApiRequest {
        method: Method::Post,
        path: account_path(account_sid, &format!("Calls/{call_sid}.json")),
        query: Vec::new(),
        form: vec![("Status".into(), "completed".into())],
    }
}

/// `POST /2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json` with `Twiml=…`: the live
/// call leaves the TwiML it is running (a `<Connect><Stream>`, say) and runs `twiml`
/// instead (at most [`MAX_INLINE_TWIML`] characters).
pub fn update_call_twiml_request(account_sid: &str, call_sid: &str, twiml: &str) -> ApiRequest {
    ApiRequest {
        method: Method::Post,
        path: account_path(account_sid, &format!("Calls/{call_sid}.json")),
        query: Vec::new(),
        form: vec![("Twiml".into(), twiml.to_string())],
    }
}

/// `GET /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json` (one page of up
/// to 1000 numbers).
pub fn list_numbers_request(account_sid: &str) -> ApiRequest {
    ApiRequest {
        method: Method::Get,
        path: account_path(account_sid, "IncomingPhoneNumbers.json"),
        query: vec![("PageSize".into(), "1000".into())],
        form: Vec::new(),
    }
}

/// A call resource as Twilio returns it (the fields we use).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Call {
    pub sid: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub direction: Option<String>,
}

/// One of the account's phone numbers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PhoneNumber {
    pub sid: String,
    pub phone_number: String,
    #[serde(default)]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub voice_url: Option<String>,
    #[serde(default)]
    pub capabilities: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct NumberPage {
    #[serde(default)]
    incoming_phone_numbers: Vec<PhoneNumber>,
}

/// Twilio's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
    more_info: Option<String>,
}

/// Why a Twilio request failed.
#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    #[error(
        "Twilio is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET)"
    )]
    NotConfigured,
    /// Twilio answered with an error.
    #[error("Twilio error {}: {message} (HTTP {status})", code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()))]
    Api {
        status: u16,
        code: Option<i64>,
        message: String,
        more_info: Option<String>,
    },
    #[error("Twilio did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach Twilio: {0}")]
    Network(String),
    #[error("unexpected answer from Twilio: {0}")]
    InvalidResponse(String),
}

/// A client for one Twilio account.
#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    api_base: String,
    account_sid: String,
    user: String,
    password: Secret,
    timeout: Duration,
}

impl std::fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioClient")
            .field("api_base", &self.api_base)
            .field("account_sid", &self.account_sid)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl TwilioClient {
    /// A client for the configured account, or `None` without credentials.
    pub fn from_config(config: &TwilioConfig) -> Result<Option<Self>, TwilioError> {
        let (Some(account_sid), Some((user, password))) =
            (config.account_sid.clone(), config.rest_credentials())
        else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(config.timeout)
            .build()
            .map_err(|e| TwilioError::Network(format!("building the HTTP client: {e}")))?;
        Ok(Some(Self {
            http,
            api_base: config.api_base.clone(),
            account_sid,
            user,
            password,
            timeout: config.timeout,
        }))
    }

    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// Places a call.
    pub async fn create_call(&self, call: &NewCall) -> Result<Call, TwilioError> {
        self.send(&create_call_request(&self.account_sid, call))
            .await
    }

    /// Hangs up a call (`Status=completed`).
    pub async fn end_call(&self, call_sid: &str) -> Result<Call, TwilioError> {
        self.send(&end_call_request(&self.account_sid, call_sid))
            .await
    }

    /// Makes a live call run `twiml` instead of its current TwiML.
    pub async fn update_call_twiml(
        &self,
        call_sid: &str,
        twiml: &str,
    ) -> Result<Call, TwilioError> {
        self.send(&update_call_twiml_request(
            &self.account_sid,
            call_sid,
            twiml,
        ))
        .await
    }

    /// The account's phone numbers.
    pub async fn list_numbers(&self) -> Result<Vec<PhoneNumber>, TwilioError> {
        let page: NumberPage = self.send(&list_numbers_request(&self.account_sid)).await?;
        Ok(page.incoming_phone_numbers)
    }

    /// Performs `request` and decodes Twilio's JSON answer.
    pub async fn send<T: DeserializeOwned>(&self, request: &ApiRequest) -> Result<T, TwilioError> {
        let url = format!("{}{}", self.api_base, request.path);
        let builder = match request.method {
            Method::Get => self.http.get(&url),
            Method::Post => self.http.post(&url).form(&request.form),
        };
        let builder = if request.query.is_empty() {
            builder
        } else {
            builder.query(&request.query)
        };
        let response = builder
            .basic_auth(&self.user, Some(self.password.expose()))
            .send()
            .await
            .map_err(|e| transport_error(&e, self.timeout))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&e, self.timeout))?;
        if !status.is_success() {
            let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            let error = TwilioError::Api {
                status: status.as_u16(),
                code: parsed.as_ref().and_then(|b| b.code),
                message: parsed
                    .as_ref()
                    .and_then(|b| b.message.clone())
                    .unwrap_or_else(|| {
                        status
                            .canonical_reason()
                            .unwrap_or("request failed")
                            .to_string()
                    }),
                more_info: parsed.and_then(|b| b.more_info),
            };
            tracing::warn!(
                method = request.method.as_str(),
                path = %request.path,
                error = %error,
                "Twilio request failed"
            );
            return Err(error);
        }
        serde_json::from_slice(&body).map_err(|e| {
            tracing::warn!(path = %request.path, error = %e, "Twilio answered with unexpected JSON");
            TwilioError::InvalidResponse(e.to_string())
        })
    }
}

fn transport_error(e: &reqwest::Error, timeout: Duration) -> TwilioError {
    if e.is_timeout() {
        TwilioError::Timeout(timeout)
    } else {
        // Without the URL: it is ours and adds nothing; the cause chain is what helps.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        TwilioError::Network(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_call_repeats_status_callback_event() {
        let request = create_call_request(
            "AC1",
            &NewCall {
                to: "+5511999990000".into(),
                from: "+5511333330000".into(),
                twiml: "<Response/>".into(),
                status_callback: Some("https://h/twilio/status".into()),
                record: true,
                recording_status_callback: Some("https://h/twilio/recording".into()),
                machine_detection_callback: None,
            },
        );
        assert_eq!(request.method, Method::Post);
        assert_eq!(request.path, "/2010-04-01/Accounts/AC1/Calls.json");
        let events: Vec<&str> = request
            .form
            .iter()
            .filter(|(k, _)| k == "StatusCallbackEvent")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(events, STATUS_CALLBACK_EVENTS);
        assert!(request.form.contains(&("Record".into(), "true".into())));
        assert!(!request.form.iter().any(|(k, _)| k == "MachineDetection"));
    }

    #[test]
    fn end_call_sets_status_completed() {
        let request = end_call_request("AC1", "CA2");
        assert_eq!(request.path, "/2010-04-01/Accounts/AC1/Calls/CA2.json");
        assert_eq!(request.form, vec![("Status".into(), "completed".into())]);
    }

    #[test]
    fn update_call_twiml_sends_only_the_twiml() {
        let request = update_call_twiml_request("AC1", "CA2", "<Response><Hangup/></Response>");
        assert_eq!(request.method, Method::Post);
        assert_eq!(request.path, "/2010-04-01/Accounts/AC1/Calls/CA2.json");
        assert_eq!(
            request.form,
            vec![("Twiml".into(), "<Response><Hangup/></Response>".into())]
        );
    }
}
