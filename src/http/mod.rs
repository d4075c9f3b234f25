//! The HTTP edge, and the only module that imports warp: routes, the public base
//! URL of each request, and the one `recover` that turns rejections into JSON.
//!
//! Once a route matches, its handler answers by itself (never rejects), so a bad
//! body cannot make warp fall through to a misleading 405 from another route.

pub mod api;
pub mod auth;
pub mod callbacks;
pub mod console;
pub mod error;
pub mod health;
pub mod metrics;
pub mod outbound;
pub mod serve;
pub mod sip;
pub mod twilio_auth;
pub mod twiml;
pub mod ws;

use std::convert::Infallible;

use bytes::{Buf, Bytes, BytesMut};

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::state::AppState;
use error::HttpError;

/// Largest webhook body we read (Twilio's are a few KiB).
pub const MAX_BODY_BYTES: u64 = 64 * 1024;

/// All routes of the server.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    health::routes(state.clone())
        .or(twiml::routes(state.clone()))
        .unify()
        .or(metrics::routes(state.clone()))
        .unify()
        .or(ws::routes(state.clone()))
        .unify()
        .or(api::routes(state.clone()))
        .unify()
        .or(outbound::routes(state.clone()))
        .unify()
        .or(callbacks::routes(state.clone()))
        .unify()
        .or(sip::routes(state.clone()))
        .unify()
        .or(console::routes(state))
        .unify()
        .recover(recover)
        .unify()
        .with(warp::trace::request())
        .map(Reply::into_response)
        .boxed()
}

/// A request body of at most [`MAX_BODY_BYTES`], with or without `Content-Length`
/// (a chunked body is cut off as soon as it grows past the limit).
pub fn limited_body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(read_limited)
}

async fn read_limited<S, B>(length: Option<u64>, body: S) -> Result<Bytes, Rejection>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if length.is_some_and(|l| l > MAX_BODY_BYTES) {
        return Err(warp::reject::custom(BodyTooLarge));
    }
    let mut body = std::pin::pin!(body);
    let mut out = BytesMut::new();
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        let Ok(chunk) = chunk else {
            return Err(warp::reject::custom(BodyTooLarge));
        };
        let bytes = chunk.chunk();
        if out.len() + bytes.len() > MAX_BODY_BYTES as usize {
            return Err(warp::reject::custom(BodyTooLarge));
        }
        out.extend_from_slice(bytes);
    }
    Ok(out.freeze())
}

/// A body over [`MAX_BODY_BYTES`] (or one that broke off while being read).
#[derive(Debug)]
pub struct BodyTooLarge;
impl warp::reject::Reject for BodyTooLarge {}

/// Hands the shared state to a handler.
pub fn with_state(
    state: AppState,
) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The public base URLs of this server, as Twilio reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicBase {
    /// `https://host` (no trailing slash).
    pub http: String,
    /// `wss://host`.
    pub ws: String,
}

impl PublicBase {
    pub fn from_http(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            format!("wss://{base}")
        };
        Self {
            http: base.to_string(),
            ws,
        }
    }
}

/// The public base: `PUBLIC_URL` (or Railway's domain) when configured, else rebuilt
/// from `X-Forwarded-Proto`/`X-Forwarded-Host`/`Host`.
///
/// Forwarded headers are whatever the client wrote unless a proxy we trust set
/// them. With `TRUSTED_PROXIES=n`, the n-th value from the right is used (the one
/// the outermost of our n proxies appended). Without it, forwarded headers only
/// count when Twilio's signatures are not checked (local development): with
/// them checked, the configuration insists on `PUBLIC_URL` or `TRUSTED_PROXIES`,
/// because a spoofed host would let signatures Twilio made for another app on
/// the same account pass here.
pub fn public_base(
    state: AppState,
) -> impl Filter<Extract = (PublicBase,), Error = Rejection> + Clone {
    warp::header::optional::<String>("x-forwarded-proto")
        .and(warp::header::optional::<String>("x-forwarded-host"))
        .and(warp::header::optional::<String>("host"))
        .map(
            move |proto: Option<String>, fwd_host: Option<String>, host: Option<String>| {
                if let Some(url) = &state.config.public_url {
                    return PublicBase::from_http(url);
                }
                let pick = |v: Option<String>| {
                    let v = v?;
                    let values: Vec<&str> = v.split(',').map(str::trim).collect();
                    let index = match state.config.security.trusted_proxies {
                        Some(hops) => values.len().saturating_sub(hops),
                        None => 0,
                    };
                    values
                        .get(index)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.to_string())
                };
                let forwarded = state.config.security.trusted_proxies.is_some()
                    || !state.config.twilio.validate_signatures;
                let (proto, fwd_host) = if forwarded {
                    (pick(proto), pick(fwd_host))
                } else {
                    (None, None)
                };
                // A proxy may report the WebSocket scheme; the base is the HTTP one.
                let proto = match proto.map(|p| p.to_ascii_lowercase()).as_deref() {
                    Some("https" | "wss") => "https",
                    _ => "http",
                };
                let host = fwd_host
                    .or_else(|| host.map(|h| h.trim().to_string()).filter(|h| !h.is_empty()))
                    .unwrap_or_else(|| format!("localhost:{}", state.config.port));
                PublicBase::from_http(&format!("{proto}://{host}"))
            },
        )
}

/// The single place where unmatched requests get their answer.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.find::<twilio_auth::Forbidden>().is_some() {
        HttpError::Forbidden("invalid Twilio signature")
    } else if rejection.find::<auth::Unauthorized>().is_some() {
        HttpError::Unauthorized
    } else if rejection.is_not_found() {
        HttpError::NotFound("not found".into())
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some()
        || rejection.find::<BodyTooLarge>().is_some()
    {
        HttpError::PayloadTooLarge
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        HttpError::MethodNotAllowed
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        HttpError::LengthRequired
    } else if rejection.find::<warp::reject::MissingHeader>().is_some()
        || rejection.find::<warp::reject::InvalidHeader>().is_some()
    {
        HttpError::BadRequest("missing or invalid header".into())
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        HttpError::BadRequest("bad request".into())
    };
    Ok(error.into_response())
}
