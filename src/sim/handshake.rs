//! How the simulator opens its WebSocket. Against a server that checks Twilio's
//! signatures (`--auth-token`), it first asks the server's voice webhook for the
//! call's TwiML, signed as Twilio signs it, and then opens the WebSocket URL that
//! TwiML names (with its per-call token), signing that URL: the same two steps a
//! real call takes. Without a token it connects to `--url` directly.

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

use super::{CallError, CallOptions};

/// Time allowed for the webhook request.
const WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The handshake request for `call_sid`; `media` picks `/twiml/stream` (Media
/// Streams) over `/incoming-call` (ConversationRelay).
pub async fn request(
    options: &CallOptions,
    call_sid: &str,
    media: bool,
) -> Result<Request, CallError> {
    let connect_error = |reason: String| CallError::Connect {
        url: options.url.clone(),
        reason,
    };
    let Some(token) = &options.auth_token else {
        return options
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| connect_error(e.to_string()));
    };
    let (origin, _) = split_origin(&options.url)
        .ok_or_else(|| connect_error("not a ws:// or wss:// URL".into()))?;
    let http_origin = origin.replacen("ws", "http", 1);
    let webhook = format!(
        "{http_origin}{}",
        if media {
            "/twiml/stream"
        } else {
            "/incoming-call"
        }
    );
    let form: Vec<(String, String)> = [
        ("CallSid", call_sid),
        ("From", options.from.as_str()),
        ("To", options.to.as_str()),
        ("Direction", "inbound"),
        ("CallStatus", "ringing"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let signature = crate::twilio::signature::sign(token, &webhook, &form);
    let twiml = reqwest::Client::new()
        .post(&webhook)
        .header("x-twilio-signature", signature)
        .form(&form)
        .timeout(WEBHOOK_TIMEOUT)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| connect_error(format!("the voice webhook {webhook} failed: {e}")))?
        .text()
        .await
        .map_err(|e| connect_error(e.to_string()))?;
    let tag = if media {
        "<Stream"
    } else {
        "<ConversationRelay"
    };
    let signed_url = url_attribute(&twiml, tag)
        .ok_or_else(|| connect_error(format!("the voice webhook's TwiML has no {tag} url")))?;
    // Twilio connects to the URL in the TwiML; we connect to the same path on the
    // server we were pointed at (the TwiML may name its public host).
    let (_, path) = split_origin(&signed_url)
        .ok_or_else(|| connect_error(format!("unexpected TwiML url {signed_url}")))?;
    let mut request = format!("{origin}{path}")
        .into_client_request()
        .map_err(|e| connect_error(e.to_string()))?;
    let signature = crate::twilio::signature::sign(token, &signed_url, &[]);
    let value = signature
        .parse()
        .map_err(|_| connect_error("bad signature header".into()))?;
    request.headers_mut().insert("x-twilio-signature", value);
    Ok(request)
}

/// `ws://host:port` and the rest (`/path?query`) of a WebSocket URL.
fn split_origin(url: &str) -> Option<(&str, &str)> {
    let after_scheme = url.find("://")? + 3;
    if !url.starts_with("ws") {
        return None;
    }
    let path_at = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| i + after_scheme);
    Some((&url[..path_at], &url[path_at..]))
}

/// The `url` attribute of the first `tag` element, XML-unescaped.
fn url_attribute(xml: &str, tag: &str) -> Option<String> {
    let element = &xml[xml.find(tag)?..];
    let element = &element[..element.find('>')?];
    let start = element.find(" url=\"")? + 6;
    let value = &element[start..];
    let value = &value[..value.find('"')?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_urls_are_read() {
        assert_eq!(
            split_origin("wss://voz.example.com/websocket/abc"),
            Some(("wss://voz.example.com", "/websocket/abc"))
        );
        assert_eq!(
            split_origin("ws://127.0.0.1:8080"),
            Some(("ws://127.0.0.1:8080", ""))
        );
        assert_eq!(split_origin("https://x/y"), None);
        let xml = r#"<Response><Connect action="a"><ConversationRelay url="wss://h/websocket/t.k?a=1&amp;b=2" language="pt-BR"/></Connect></Response>"#;
        assert_eq!(
            url_attribute(xml, "<ConversationRelay").as_deref(),
            Some("wss://h/websocket/t.k?a=1&b=2")
        );
    }
}
