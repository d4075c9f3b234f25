//! The one place where a failure becomes an HTTP status: every handler returns an
//! [`HttpError`] and this file decides its status and JSON body (`{"error": …}`,
//! plus `field` for a bad field and Twilio's code for Twilio's refusals). Store
//! and Twilio failures are logged here, and their details never reach the client
//! beyond what Twilio itself said. May import the store's and Twilio's error types.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::store::StoreError;
use crate::twilio::client::TwilioError;

/// Why a request was not served.
#[derive(Debug)]
pub enum HttpError {
    /// 400: the body, query or headers are not what the route accepts.
    BadRequest(String),
    /// 400 naming the field at fault.
    BadField {
        field: String,
        message: String,
    },
    /// 401 (with `WWW-Authenticate: Bearer`): no valid API token.
    Unauthorized,
    /// 403: a credential (a signature, a call token) was refused.
    Forbidden(&'static str),
    /// 404: the named thing (or route) does not exist here.
    NotFound(String),
    MethodNotAllowed,
    PayloadTooLarge,
    LengthRequired,
    /// 503: the server cannot take this now (draining, busy, not configured).
    Unavailable(String),
    /// 429: too many calls right now; try again later.
    TooManyCalls(String),
    /// 503: the database failed (logged; the client sees a generic message).
    Store(StoreError),
    /// Twilio's REST API failed or refused the request.
    Twilio(TwilioError),
}

impl HttpError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::BadField {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into())
    }

    /// The status and the JSON body.
    fn parts(self) -> (StatusCode, Value) {
        match self {
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, json!({"error": message})),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "missing or invalid bearer token"}),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "request body too large"}),
            ),
            Self::LengthRequired => (
                StatusCode::LENGTH_REQUIRED,
                json!({"error": "content-length required"}),
            ),
            Self::BadField { field, message } => (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("{field}: {message}"), "field": field}),
            ),
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, json!({"error": message})),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, json!({"error": message})),
            Self::TooManyCalls(message) => {
                (StatusCode::TOO_MANY_REQUESTS, json!({"error": message}))
            }
            Self::Unavailable(message) => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({"error": message}))
            }
            Self::Store(error) => {
                tracing::error!(error = %error, "the store failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "the call store is unavailable"}),
                )
            }
            Self::Twilio(error) => twilio_parts(&error),
        }
    }
}

impl Reply for HttpError {
    fn into_response(self) -> Response {
        let unauthorized = matches!(self, Self::Unauthorized);
        let (status, body) = self.parts();
        let reply = warp::reply::with_status(warp::reply::json(&body), status);
        if unauthorized {
            return warp::reply::with_header(reply, "www-authenticate", "Bearer").into_response();
        }
        reply.into_response()
    }
}

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// A refused SIP webhook: the detail is logged by the route; the answer names
/// the kind (never the secret). A store failure is a 503, so OpenAI retries.
impl From<crate::sip::Refusal> for HttpError {
    fn from(refusal: crate::sip::Refusal) -> Self {
        use crate::sip::Refusal;
        match refusal {
            Refusal::Disabled => {
                Self::NotFound("SIP mode is off: set OPENAI_WEBHOOK_SECRET to turn it on".into())
            }
            Refusal::Signature(_) => Self::Forbidden("invalid webhook signature"),
            Refusal::Body(_) => Self::BadRequest("the body is not a webhook event".into()),
            Refusal::BadCallId => Self::BadRequest("the call id is not valid".into()),
            Refusal::LongId => Self::BadRequest("webhook-id is too long".into()),
            Refusal::Store(e) => Self::Store(e),
        }
    }
}

impl From<TwilioError> for HttpError {
    fn from(error: TwilioError) -> Self {
        Self::Twilio(error)
    }
}

/// Twilio's verdict on the request passes through (with its code); a problem with
/// our own credentials or with Twilio itself is a bad gateway, not the caller's.
fn twilio_parts(error: &TwilioError) -> (StatusCode, Value) {
    let message = json!({"error": error.to_string()});
    match error {
        TwilioError::NotConfigured => (StatusCode::SERVICE_UNAVAILABLE, message),
        TwilioError::Api {
            status,
            code,
            message,
            more_info,
        } => {
            let ours = match *status {
                400 | 404 | 409 | 422 | 429 => {
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
                }
                _ => StatusCode::BAD_GATEWAY,
            };
            let body = json!({
                "error": error.to_string(),
                "code": code,
                "message": message,
                "more_info": more_info,
                "twilio_status": status,
            });
            (ours, body)
        }
        TwilioError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, message),
        TwilioError::Network(_) | TwilioError::InvalidResponse(_) => {
            (StatusCode::BAD_GATEWAY, message)
        }
    }
}

/// A JSON object body read into `T`; a field of the wrong type (or an unknown one,
/// where `T` denies them) is a [`HttpError::BadField`] naming it.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(HttpError::BadRequest(
            "the body must be a JSON object".to_string(),
        ));
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let field = e.path().to_string();
        let message = e.inner().to_string();
        if field.is_empty() || field == "." {
            // Serde names an unknown field only in its message.
            match unknown_field(&message) {
                Some(name) => HttpError::BadField {
                    field: name.to_string(),
                    message: "unknown field; see the README for the accepted ones".into(),
                },
                None => HttpError::BadRequest(format!("the body must be a JSON object: {message}")),
            }
        } else {
            HttpError::BadField { field, message }
        }
    })
}

/// The name in serde's "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// The answer of a handler: a JSON body with its status, or the error's.
pub fn respond(result: Result<(StatusCode, Value), HttpError>) -> Response {
    match result {
        Ok((status, body)) => {
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        to: Option<String>,
        record: Option<bool>,
    }

    fn field_of(body: &str) -> Option<String> {
        match json_body::<Body>(body.as_bytes()) {
            Err(HttpError::BadField { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(field_of(r#"{"record": "yes"}"#).as_deref(), Some("record"));
        assert_eq!(field_of(r#"{"to": 5}"#).as_deref(), Some("to"));
        assert_eq!(
            field_of(r#"{"machineDetection": true}"#).as_deref(),
            Some("machineDetection")
        );
        assert!(json_body::<Body>(br#"{"to": "+55"}"#).is_ok());
        assert!(matches!(
            json_body::<Body>(b"to=+55"),
            Err(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            json_body::<Body>(b"[1]"),
            Err(HttpError::BadRequest(_))
        ));
    }

    #[test]
    fn store_failures_are_503_everywhere() {
        let (status, body) =
            HttpError::Store(StoreError::Database(sqlx::Error::PoolTimedOut)).parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!body.to_string().contains("timed out"), "{body}");
    }
}
