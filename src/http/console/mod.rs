//! The call console: `GET /console`, a web page served from files embedded in the
//! binary (`assets/`: one HTML page, one script, one style sheet; no CDN, no build
//! step), and `GET /console/call`, its "Try it" WebSocket ([`socket`]).
//!
//! The page holds no data of its own: it asks for the API token, keeps it in the
//! browser's session storage, and reads everything through `/api/*` with it. Every
//! answer here carries a strict Content-Security-Policy (scripts and styles from
//! this origin only, no inline script, no framing), `nosniff` and no referrer.

mod socket;

use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::ws::upgrade;
use super::{public_base, with_state};
use crate::state::AppState;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// What the page may load: itself, its own API and socket, recordings as blobs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
     connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let page = warp::path!("console")
        .or(warp::path!("console" / "index.html"))
        .unify()
        .and(warp::get())
        .map(|| asset(INDEX, "text/html; charset=utf-8"));
    let script = warp::path!("console" / "app.js")
        .and(warp::get())
        .map(|| asset(SCRIPT, "text/javascript; charset=utf-8"));
    let style = warp::path!("console" / "app.css")
        .and(warp::get())
        .map(|| asset(STYLE, "text/css; charset=utf-8"));
    let call = warp::path!("console" / "call")
        .and(warp::get())
        .and(warp::header::optional::<String>("origin"))
        .and(public_base(state.clone()))
        .and(warp::header::optional::<String>("host"))
        .and(upgrade())
        .and(with_state(state))
        .then(
            |origin: Option<String>,
             base: super::PublicBase,
             host: Option<String>,
             upgrade,
             state| async move {
                if !same_origin(origin.as_deref(), &base.http, host.as_deref()) {
                    tracing::warn!("refusing a console socket opened from another site");
                    return super::error::HttpError::Forbidden("cross-site console socket")
                        .into_response();
                }
                socket::upgrade(upgrade, state).await
            },
        );
    page.or(script)
        .unify()
        .or(style)
        .unify()
        .or(call)
        .unify()
        .map(secure)
        .boxed()
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    // Small files that change with the binary: always revalidate.
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// The console's security headers, on every answer of its routes.
fn secure(mut response: Response) -> Response {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("microphone=(self), camera=(), geolocation=()"),
    );
    response
}

/// Whether a browser's `Origin` is this server: the public base, or the `Host`
/// the request came to. Clients that send no `Origin` (not a browser) pass; they
/// still need the token.
fn same_origin(origin: Option<&str>, base: &str, host: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if origin.eq_ignore_ascii_case(base) {
        return true;
    }
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    host.is_some_and(|h| origin_host.eq_ignore_ascii_case(h.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(same_origin(None, "https://voz.example.com", None));
        assert!(same_origin(
            Some("https://voz.example.com"),
            "https://voz.example.com",
            None
        ));
        assert!(same_origin(
            Some("http://127.0.0.1:8080"),
            "https://voz.example.com",
            Some("127.0.0.1:8080")
        ));
        assert!(!same_origin(
            Some("https://evil.example"),
            "https://voz.example.com",
            Some("voz.example.com")
        ));
    }

    #[test]
    fn the_page_has_no_inline_script_or_handlers() {
        let lower = INDEX.to_ascii_lowercase();
        for tag in lower.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline script: <script{open}>");
        }
        assert!(!lower.contains(" onload=") && !lower.contains(" onclick="));
        assert!(!lower.contains("<style"), "inline style sheet");
        assert!(
            !SCRIPT.contains("innerHTML"),
            "the script must build the DOM"
        );
        assert!(!SCRIPT.contains("eval("));
    }
}
