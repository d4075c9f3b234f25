//! Twilio's signatures on our requests and handshakes, computed here
//! independently of the server's code, and the signed WebSocket clients the
//! suites use to reach a server that checks them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{RelayClient, TestApp, spawn_app, twiml_url};

pub const TOKEN: &str = "twilio-test-auth-token";
pub const PUBLIC: &str = "https://voz.example.com";

/// Twilio's algorithm, written out here: HMAC-SHA1 over the URL and the form
/// parameters sorted by name, each name followed by its value; base64.
pub fn sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The server with validation on (auth token set) behind `PUBLIC_URL`.
pub async fn protected_app(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("TWILIO_AUTH_TOKEN", TOKEN), ("PUBLIC_URL", PUBLIC)];
    vars.extend_from_slice(extra);
    spawn_app(&vars).await
}

/// Opens `/websocket` (plus `query`) with the given signature header; the HTTP
/// status on refusal.
pub async fn ws_connect(
    app: &TestApp,
    path_and_query: &str,
    signature: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<RelayClient, u16> {
    ws_connect_to(&app.ws_url(path_and_query), signature, headers).await
}

/// Opens the WebSocket at `url` with the given signature header and `headers`.
async fn ws_connect_to(
    url: &str,
    signature: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<RelayClient, u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(sig) = signature {
        request
            .headers_mut()
            .insert("x-twilio-signature", sig.parse().unwrap());
    }
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(RelayClient {
            peer: voxrelay::sim::peer::RelayPeer::from_socket(ws),
        }),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// Opens the WebSocket at `url` with Twilio's signature header; the HTTP status on
/// refusal.
#[allow(dead_code)]
pub async fn ws_connect_url(url: &str, signature: &str) -> Result<RelayClient, u16> {
    ws_connect_to(url, Some(signature), &[]).await
}

/// Answers `call_sid` through the signed webhook `path` as Twilio would, and
/// returns the WebSocket path the TwiML's `<tag url>` names (with its per-call
/// token) and that URL as Twilio signs it.
pub async fn signed_socket_path(
    app: &TestApp,
    path: &str,
    tag: &str,
    call_sid: &str,
) -> (String, String) {
    signed_socket_path_with(app, path, tag, &[("CallSid", call_sid)]).await
}

/// [`signed_socket_path`] with the webhook's whole form (e.g. a 64105 report).
pub async fn signed_socket_path_with(
    app: &TestApp,
    path: &str,
    tag: &str,
    params: &[(&str, &str)],
) -> (String, String) {
    let signature = sign(TOKEN, &format!("{PUBLIC}{path}"), params);
    let res = post_form(app, path, params, Some(&signature)).await;
    assert_eq!(res.status(), 200, "{path}");
    let url = twiml_url(&res.text().await.unwrap(), tag);
    let path = url
        .strip_prefix("wss://voz.example.com:443")
        .or_else(|| url.strip_prefix("wss://voz.example.com"))
        .unwrap_or_else(|| panic!("{url} is not on {PUBLIC}"))
        .to_string();
    (path, url)
}

/// A signed ConversationRelay handshake for `call_sid`, as Twilio makes it.
pub async fn signed_relay(app: &TestApp, call_sid: &str) -> RelayClient {
    signed_relay_via(app, "/incoming-call", &[("CallSid", call_sid)]).await
}

/// The signed webhook `path` with `params` (e.g. a 64105 report to
/// `/twiml/action`), then the signed handshake to the socket its TwiML names.
pub async fn signed_relay_via(app: &TestApp, path: &str, params: &[(&str, &str)]) -> RelayClient {
    let (path, url) = signed_socket_path_with(app, path, "ConversationRelay", params).await;
    ws_connect(app, &path, Some(&sign(TOKEN, &url, &[])), &[])
        .await
        .expect("Twilio's own handshake is upgraded")
}

pub fn form_body(params: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(params).unwrap()
}

pub async fn post_form(
    app: &TestApp,
    path: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(params));
    if let Some(sig) = signature {
        request = request.header("x-twilio-signature", sig);
    }
    request.send().await.unwrap()
}
