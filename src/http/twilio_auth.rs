//! `X-Twilio-Signature` checks for every Twilio-facing route: the webhooks (URL plus
//! form parameters) and the WebSocket handshakes (the `wss://` URL, checked before
//! the upgrade). A request that fails is rejected with [`Forbidden`], which
//! `http::recover` answers with 403; the log line names the URL that was checked,
//! never the token.
//!
//! The URL is rebuilt from the public base (`PUBLIC_URL`, else the proxy headers; see
//! [`super::public_base`]) plus the request's path and raw query, because behind a
//! TLS-terminating proxy the server never sees the URL Twilio signed.

use warp::filters::path::FullPath;
use warp::{Filter, Rejection};

use super::twiml::form_body;
use super::{PublicBase, public_base};
use crate::config::TwilioConfig;
use crate::state::AppState;
use crate::twilio::signature::{self, RequestKind};

/// A Twilio-facing request without a valid `X-Twilio-Signature`.
#[derive(Debug)]
pub struct Forbidden;
impl warp::reject::Reject for Forbidden {}

/// Passes a signed (or, with validation off, any) webhook and extracts its
/// size-limited form parameters. Works for `GET` (no body, empty form) too.
pub fn webhook(
    state: AppState,
) -> impl Filter<Extract = (Vec<(String, String)>,), Error = Rejection> + Clone {
    signed_url(state.clone()).and(form_body()).and_then(
        move |request: SignedUrl, form: Vec<(String, String)>| {
            let outcome = check(&state.config.twilio, RequestKind::Webhook, &request, &form);
            async move { outcome.map(|()| form) }
        },
    )
}

/// Passes a signed (or, with validation off, any) WebSocket handshake. Put it before
/// the upgrade so a forged handshake is refused with 403 and never becomes a socket.
/// Usable for any WebSocket route (`/websocket`, `/media-stream`).
pub fn websocket(state: AppState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    signed_url(state.clone())
        .and_then(move |request: SignedUrl| {
            let outcome = check(&state.config.twilio, RequestKind::WebSocket, &request, &[]);
            async move { outcome }
        })
        .untuple_one()
}

/// What a signature is checked against: the public URL parts and the header.
#[derive(Debug, Clone)]
struct SignedUrl {
    signature: Option<String>,
    base: PublicBase,
    path: String,
    query: String,
}

impl SignedUrl {
    fn url(&self, kind: RequestKind) -> String {
        let base = match kind {
            RequestKind::Webhook => &self.base.http,
            RequestKind::WebSocket => &self.base.ws,
        };
        if self.query.is_empty() {
            format!("{base}{}", self.path)
        } else {
            format!("{base}{}?{}", self.path, self.query)
        }
    }
}

fn signed_url(state: AppState) -> impl Filter<Extract = (SignedUrl,), Error = Rejection> + Clone {
    warp::header::optional::<String>("x-twilio-signature")
        .and(public_base(state))
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(
            |signature: Option<String>, base: PublicBase, path: FullPath, query: String| {
                SignedUrl {
                    signature,
                    base,
                    path: path.as_str().to_string(),
                    query,
                }
            },
        )
}

fn check(
    twilio: &TwilioConfig,
    kind: RequestKind,
    request: &SignedUrl,
    params: &[(String, String)],
) -> Result<(), Rejection> {
    let Some(token) = twilio
        .auth_token
        .as_ref()
        .filter(|_| twilio.validate_signatures)
    else {
        return Ok(());
    };
    let url = request.url(kind);
    let kind_name = match kind {
        RequestKind::Webhook => "webhook",
        RequestKind::WebSocket => "websocket",
    };
    match &request.signature {
        Some(sig) if signature::verify(token.expose(), sig, kind, &url, params) => Ok(()),
        Some(_) => {
            tracing::warn!(
                %url,
                kind = kind_name,
                params = params.len(),
                "rejecting a Twilio request: X-Twilio-Signature does not match (check PUBLIC_URL and TWILIO_AUTH_TOKEN)"
            );
            Err(warp::reject::custom(Forbidden))
        }
        None => {
            tracing::warn!(
                %url,
                kind = kind_name,
                "rejecting a Twilio request without X-Twilio-Signature"
            );
            Err(warp::reject::custom(Forbidden))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::Config;

    /// Collects log output in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failures_log_the_checked_url_and_never_the_token() {
        let token = "super-secret-auth-token-123";
        let config = Config::from_vars(
            [
                ("TWILIO_AUTH_TOKEN".to_string(), token.to_string()),
                (
                    "PUBLIC_URL".to_string(),
                    "https://voz.example.com".to_string(),
                ),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
        let request = |signature: Option<&str>| SignedUrl {
            signature: signature.map(str::to_string),
            base: PublicBase::from_http("https://voz.example.com"),
            path: "/websocket".into(),
            query: "lead=42".into(),
        };
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(check(&config.twilio, RequestKind::WebSocket, &request(None), &[]).is_err());
            assert!(
                check(
                    &config.twilio,
                    RequestKind::WebSocket,
                    &request(Some("forged")),
                    &[]
                )
                .is_err()
            );
            let good = signature::sign(token, "wss://voz.example.com/websocket?lead=42", &[]);
            assert!(
                check(
                    &config.twilio,
                    RequestKind::WebSocket,
                    &request(Some(&good)),
                    &[]
                )
                .is_ok()
            );
        });
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            logs.matches("wss://voz.example.com/websocket?lead=42")
                .count(),
            2,
            "{logs}"
        );
        assert!(logs.contains("without X-Twilio-Signature"), "{logs}");
        assert!(logs.contains("does not match"), "{logs}");
        assert!(!logs.contains(token), "the token leaked: {logs}");
    }
}
