//! `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + sorted form params)),
//! compared in constant time against every URL form Twilio is known to sign.
//!
//! Pure: no I/O and no HTTP types. The warp filter that applies it to webhooks and
//! WebSocket handshakes is `http::twilio_auth`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// What kind of request is being checked: it decides which URLs Twilio may have signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// An HTTP webhook: the URL (with its query) plus the POST form parameters.
    Webhook,
    /// A WebSocket handshake (a GET without body). Twilio signs the `wss://` URL; with a
    /// query string it is unclear whether the query is part of the URL or passed as
    /// parameters (`docs/twilio-signatures.md`), so both forms are accepted.
    WebSocket,
}

/// The signature Twilio computes for `url` and `params`.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` matches one of the URL forms Twilio may have signed.
///
/// `url` is the public URL of the request (scheme, host, path and query as Twilio
/// requested them); `params` the POST form parameters (empty for GET and handshakes).
pub fn verify(
    auth_token: &str,
    signature: &str,
    kind: RequestKind,
    url: &str,
    params: &[(String, String)],
) -> bool {
    let given = signature.trim().as_bytes();
    let mut matched = false;
    // Every candidate is computed and compared, so timing does not reveal which one
    // (or whether any) matched.
    for (candidate_url, candidate_params) in candidates(kind, url, params) {
        let expected = sign(auth_token, &candidate_url, &candidate_params);
        matched |= bool::from(expected.as_bytes().ct_eq(given));
    }
    matched
}

/// The (URL, params) pairs Twilio may have signed for a request to `url`.
pub fn candidates(
    kind: RequestKind,
    url: &str,
    params: &[(String, String)],
) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for variant in port_variants(url) {
        out.push((variant, params.to_vec()));
    }
    if kind == RequestKind::WebSocket
        && let Some((without_query, query)) = url.split_once('?')
    {
        // TAC style: the query stripped from the URL and passed as parameters.
        let mut query_params: Vec<(String, String)> =
            serde_urlencoded::from_str(query).unwrap_or_default();
        query_params.extend(params.iter().cloned());
        for variant in port_variants(without_query) {
            out.push((variant, query_params.clone()));
        }
    }
    out
}

/// `url` as given, and with the scheme's default port added (or removed when present).
fn port_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return out,
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The port follows the last ':' unless that ':' is inside an IPv6 literal.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    match port {
        None => out.push(format!("{scheme}://{host}:{default_port}{tail}")),
        Some(p) if p == default_port => out.push(format!("{scheme}://{host}{tail}")),
        Some(_) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn vector_params() -> Vec<(String, String)> {
        // Deliberately not sorted: signing sorts them.
        pairs(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("From", "+14158675309"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
        ])
    }

    // Published vectors (twilio-node spec/validation.spec.js; `docs/twilio-signatures.md`).
    #[test]
    fn published_form_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            sign("12345", url, &vector_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            "12345",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            RequestKind::Webhook,
            url,
            &vector_params()
        ));
    }

    #[test]
    fn published_body_sha256_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        assert_eq!(sign("12345", url, &[]), "a9nBmqA0ju/hNViExpshrM61xv4=");
    }

    #[test]
    fn websocket_vector() {
        assert_eq!(
            sign("12345", "wss://example.com/ws", &[]),
            "HXrgvHt0qTHu33oSxSjpOvWtO60="
        );
        assert!(verify(
            "12345",
            "HXrgvHt0qTHu33oSxSjpOvWtO60=",
            RequestKind::WebSocket,
            "wss://example.com/ws",
            &[]
        ));
    }

    #[test]
    fn a_wrong_token_param_or_url_fails() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert!(!verify(
            "12346",
            good,
            RequestKind::Webhook,
            url,
            &vector_params()
        ));
        let mut params = vector_params();
        params[4].1 = "1235".into();
        assert!(!verify("12345", good, RequestKind::Webhook, url, &params));
        assert!(!verify(
            "12345",
            good,
            RequestKind::Webhook,
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &vector_params()
        ));
        assert!(!verify(
            "12345",
            "",
            RequestKind::Webhook,
            url,
            &vector_params()
        ));
        // Twilio signs wss://, never https://, for a handshake.
        let https_sig = sign("12345", "https://example.com/ws", &[]);
        assert!(!verify(
            "12345",
            &https_sig,
            RequestKind::WebSocket,
            "wss://example.com/ws",
            &[]
        ));
    }

    #[test]
    fn default_ports_are_tried_both_ways() {
        let with_port = sign(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &vector_params(),
        );
        assert!(verify(
            "12345",
            &with_port,
            RequestKind::Webhook,
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &vector_params()
        ));
        assert!(verify(
            "12345",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            RequestKind::Webhook,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &vector_params()
        ));
        let ws_with_port = sign("12345", "wss://example.com:443/ws", &[]);
        assert!(verify(
            "12345",
            &ws_with_port,
            RequestKind::WebSocket,
            "wss://example.com/ws",
            &[]
        ));
        // A non-default port is part of the URL and never dropped or swapped.
        assert_eq!(
            port_variants("https://h:8443/x"),
            vec!["https://h:8443/x".to_string()]
        );
        let other_port = sign(
            "12345",
            "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
            &vector_params(),
        );
        assert!(!verify(
            "12345",
            &other_port,
            RequestKind::Webhook,
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &vector_params()
        ));
    }

    #[test]
    fn port_variants_cover_schemes_and_ipv6() {
        assert_eq!(
            port_variants("http://h/x?a=1"),
            vec![
                "http://h/x?a=1".to_string(),
                "http://h:80/x?a=1".to_string()
            ]
        );
        assert_eq!(
            port_variants("ws://h:80"),
            vec!["ws://h:80".to_string(), "ws://h".to_string()]
        );
        assert_eq!(
            port_variants("wss://[::1]/ws"),
            vec![
                "wss://[::1]/ws".to_string(),
                "wss://[::1]:443/ws".to_string()
            ]
        );
    }

    #[test]
    fn websocket_query_is_accepted_in_the_url_or_as_params() {
        let url = "wss://example.com/websocket?lead=42&lang=pt";
        let in_url = sign("12345", url, &[]);
        let as_params = sign(
            "12345",
            "wss://example.com/websocket",
            &pairs(&[("lead", "42"), ("lang", "pt")]),
        );
        assert_ne!(in_url, as_params);
        for sig in [&in_url, &as_params] {
            assert!(verify("12345", sig, RequestKind::WebSocket, url, &[]));
        }
        // For a plain webhook the query belongs to the URL only.
        assert!(!verify("12345", &as_params, RequestKind::Webhook, url, &[]));
    }

    #[test]
    fn signing_is_independent_of_parameter_order() {
        let mut reversed = vector_params();
        reversed.reverse();
        assert_eq!(
            sign("t", "https://h/x", &vector_params()),
            sign("t", "https://h/x", &reversed)
        );
    }
}
