//! `X-Twilio-Signature` on every Twilio-facing route: signatures computed here,
//! independently of the server's code, for our own public URLs (https webhooks, wss
//! handshakes, behind a proxy with `PUBLIC_URL` or forwarded headers); 403 for
//! missing or wrong signatures on each route, before any WebSocket upgrade.

use crate::support::{spawn_app, twiml_url};

use crate::support::signed::*;

const CALL: &[(&str, &str)] = &[
    ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
    ("CallSid", "CA0123456789abcdef0123456789abcdef"),
    ("CallStatus", "ringing"),
    ("From", "+5511999990000"),
    ("To", "+5511333330000"),
    ("Direction", "inbound"),
];

const FORM_ROUTES: &[&str] = &[
    "/twiml",
    "/incoming-call",
    "/twiml/action",
    "/twilio/status",
    "/twilio/recording",
];

#[tokio::test]
async fn every_webhook_accepts_twilios_signature_and_refuses_others() {
    let app = protected_app(&[]).await;
    for path in FORM_ROUTES {
        let url = format!("{PUBLIC}{path}");
        let good = sign(TOKEN, &url, CALL);
        let res = post_form(&app, path, CALL, Some(&good)).await;
        assert!(res.status().is_success(), "{path}: {}", res.status());

        let res = post_form(&app, path, CALL, None).await;
        assert_eq!(res.status(), 403, "{path} without a signature");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid Twilio signature");

        let wrong_token = sign("another-token", &url, CALL);
        let res = post_form(&app, path, CALL, Some(&wrong_token)).await;
        assert_eq!(res.status(), 403, "{path} signed with another token");

        // A forged parameter breaks the signature.
        let mut forged = CALL.to_vec();
        forged[3] = ("From", "+5511000000000");
        let res = post_form(&app, path, &forged, Some(&good)).await;
        assert_eq!(res.status(), 403, "{path} with a changed parameter");

        // The loopback URL the server sees is not what Twilio signed: PUBLIC_URL is.
        let loopback = sign(TOKEN, &app.url(path), CALL);
        let res = post_form(&app, path, CALL, Some(&loopback)).await;
        assert_eq!(res.status(), 403, "{path} signed for the internal URL");
    }
}

#[tokio::test]
async fn get_twiml_signs_the_url_with_its_query() {
    let app = protected_app(&[]).await;
    let path = "/twiml?CallSid=CA1&From=%2B5511999990000";
    let client = reqwest::Client::new();
    let good = sign(TOKEN, &format!("{PUBLIC}{path}"), &[]);
    let res = client
        .get(app.url(path))
        .header("x-twilio-signature", &good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 403);
    // Without the query, the signature is for another URL.
    let res = client
        .get(app.url("/twiml"))
        .header("x-twilio-signature", &good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn the_default_port_is_accepted_either_way() {
    let app = protected_app(&[]).await;
    let with_port = sign(TOKEN, "https://voz.example.com:443/incoming-call", CALL);
    let res = post_form(&app, "/incoming-call", CALL, Some(&with_port)).await;
    assert_eq!(res.status(), 200);
    let other_port = sign(TOKEN, "https://voz.example.com:8443/incoming-call", CALL);
    let res = post_form(&app, "/incoming-call", CALL, Some(&other_port)).await;
    assert_eq!(res.status(), 403);

    // PUBLIC_URL with the port written out: Twilio may have signed it without.
    let app = protected_app(&[("PUBLIC_URL", "https://voz.example.com:443")]).await;
    let without = sign(TOKEN, "https://voz.example.com/incoming-call", CALL);
    let res = post_form(&app, "/incoming-call", CALL, Some(&without)).await;
    assert_eq!(res.status(), 200);
    let (path, url) = signed_socket_path(&app, "/incoming-call", "ConversationRelay", "CA1").await;
    assert!(
        url.starts_with("wss://voz.example.com:443/websocket/"),
        "{url}"
    );
    let without = url.replace(":443", "");
    let ws = sign(TOKEN, &without, &[]);
    assert!(ws_connect(&app, &path, Some(&ws), &[]).await.is_ok());
}

#[tokio::test]
async fn websocket_handshake_is_checked_before_the_upgrade() {
    let app = protected_app(&[]).await;
    let (path, url) =
        signed_socket_path(&app, "/incoming-call", "ConversationRelay", "CA_signed").await;
    assert_eq!(ws_connect(&app, &path, None, &[]).await.err(), Some(403));
    let https = sign(TOKEN, &url.replace("wss://", "https://"), &[]);
    assert_eq!(
        ws_connect(&app, &path, Some(&https), &[]).await.err(),
        Some(403),
        "Twilio signs wss://, so an https:// signature is not Twilio's"
    );
    let other = sign("another-token", &url, &[]);
    assert_eq!(
        ws_connect(&app, &path, Some(&other), &[]).await.err(),
        Some(403)
    );
    assert_eq!(
        app.state.metrics.total_calls(),
        0,
        "no refused handshake became a call"
    );

    let good = sign(TOKEN, &url, &[]);
    let mut call = ws_connect(&app, &path, Some(&good), &[])
        .await
        .expect("a signed handshake is upgraded");
    call.setup("CA_signed").await;
    call.prompt("Oi").await;
    assert!(!call.reply().await.text.is_empty());
}

#[tokio::test]
async fn static_twiml_with_a_query_may_be_signed_in_the_url_or_as_parameters() {
    // TwiML Bins cannot mint per-call tokens: only with ALLOW_STATIC_TWIML.
    let app = protected_app(&[("ALLOW_STATIC_TWIML", "true")]).await;
    let path = "/websocket?lead=42&campaign=nov";
    let in_url = sign(TOKEN, &format!("wss://voz.example.com{path}"), &[]);
    assert!(ws_connect(&app, path, Some(&in_url), &[]).await.is_ok());
    let as_params = sign(
        TOKEN,
        "wss://voz.example.com/websocket",
        &[("lead", "42"), ("campaign", "nov")],
    );
    assert!(ws_connect(&app, path, Some(&as_params), &[]).await.is_ok());
    let tampered = "/websocket?lead=43&campaign=nov";
    assert_eq!(
        ws_connect(&app, tampered, Some(&in_url), &[]).await.err(),
        Some(403)
    );
    assert_eq!(
        ws_connect(&app, tampered, Some(&as_params), &[])
            .await
            .err(),
        Some(403)
    );
    // Without the setting, the same signed static URL is refused.
    let strict = protected_app(&[]).await;
    assert_eq!(
        ws_connect(&strict, path, Some(&in_url), &[]).await.err(),
        Some(403)
    );
}

#[tokio::test]
async fn behind_trusted_proxies_the_forwarded_headers_count_from_the_right() {
    let app = spawn_app(&[("TWILIO_AUTH_TOKEN", TOKEN), ("TRUSTED_PROXIES", "1")]).await;
    // The client wrote the first value; our one proxy appended the last.
    let proxy = [
        ("x-forwarded-proto", "http, https"),
        (
            "x-forwarded-host",
            "other-app.example.com, voz.up.railway.app",
        ),
    ];
    let sig = sign(TOKEN, "https://voz.up.railway.app/incoming-call", CALL);
    let post = |sig: String, headers: [(&'static str, &'static str); 2]| {
        let mut request = reqwest::Client::new()
            .post(app.url("/incoming-call"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.body(form_body(CALL)).send()
    };
    let res = post(sig, proxy).await.unwrap();
    assert_eq!(res.status(), 200);
    let url = twiml_url(&res.text().await.unwrap(), "ConversationRelay");
    assert!(
        url.starts_with("wss://voz.up.railway.app/websocket/"),
        "{url}"
    );
    let path = url.strip_prefix("wss://voz.up.railway.app").unwrap();
    let ws = sign(TOKEN, &url, &[]);
    assert!(ws_connect(&app, path, Some(&ws), &proxy).await.is_ok());
    // Another app's signature, with its host spoofed by the client: refused.
    let spoofed = sign(TOKEN, "https://other-app.example.com/incoming-call", CALL);
    let res = post(spoofed, proxy).await.unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn a_spoofed_forwarded_host_cannot_borrow_another_apps_signature() {
    let app = protected_app(&[]).await;
    let spoof = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "other-app.example.com"),
    ];
    let theirs = sign(TOKEN, "https://other-app.example.com/incoming-call", CALL);
    let mut request = reqwest::Client::new()
        .post(app.url("/incoming-call"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", theirs);
    for (name, value) in spoof {
        request = request.header(name, value);
    }
    let res = request.body(form_body(CALL)).send().await.unwrap();
    assert_eq!(res.status(), 403, "PUBLIC_URL wins over forwarded headers");
    let ws = sign(TOKEN, "wss://other-app.example.com/websocket", &[]);
    assert_eq!(
        ws_connect(&app, "/websocket", Some(&ws), &spoof)
            .await
            .err(),
        Some(403)
    );
}

#[tokio::test]
async fn validation_can_be_turned_off_and_is_off_without_a_token() {
    for vars in [
        vec![
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("TWILIO_VALIDATE_SIGNATURES", "false"),
        ],
        vec![],
    ] {
        let app = spawn_app(&vars).await;
        for path in FORM_ROUTES {
            let res = post_form(&app, path, CALL, None).await;
            assert!(res.status().is_success(), "{path}: {}", res.status());
        }
        assert!(ws_connect(&app, "/websocket", None, &[]).await.is_ok());
    }
}
