//! The ready-to-paste TwiML Bin examples in `twiml/` are valid XML and use the same
//! `<ConversationRelay>` attributes the server emits.

use std::collections::BTreeSet;

use crate::support::spawn_app;

fn relay_attrs(xml: &str) -> BTreeSet<String> {
    let doc = roxmltree::Document::parse(xml).expect("valid XML");
    let relay = doc
        .descendants()
        .find(|n| n.has_tag_name("ConversationRelay"))
        .expect("a <ConversationRelay> element");
    let connect = relay.parent_element().expect("inside <Connect>");
    assert!(connect.has_tag_name("Connect"));
    assert!(
        connect
            .attribute("action")
            .unwrap()
            .ends_with("/twiml/action")
    );
    let url = relay.attribute("url").unwrap();
    let path = &url[url.find("/websocket").expect("a /websocket URL")..];
    // The examples are static (no per-call token); the server's own TwiML has one.
    assert!(
        path == "/websocket" || path.len() > "/websocket/".len() + 40,
        "{url}"
    );
    for child in relay.children().filter(|c| c.is_element()) {
        match child.tag_name().name() {
            "Language" => assert!(child.attribute("code").is_some()),
            "Parameter" => {
                assert!(child.attribute("name").is_some() && child.attribute("value").is_some())
            }
            other => panic!("unexpected element <{other}>"),
        }
    }
    relay.attributes().map(|a| a.name().to_string()).collect()
}

#[tokio::test]
async fn examples_are_valid_and_match_the_server() {
    let app = spawn_app(&[("PUBLIC_URL", "https://voz.example.com")]).await;
    let served = reqwest::get(app.url("/twiml"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let server_attrs = relay_attrs(&served);

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("twiml");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("xml") {
            continue;
        }
        seen += 1;
        let xml = std::fs::read_to_string(&path).unwrap();
        let attrs = relay_attrs(&xml);
        let missing: Vec<_> = server_attrs.difference(&attrs).collect();
        assert!(missing.is_empty(), "{} lacks {missing:?}", path.display());
        // Anything beyond the defaults must be an attribute the server can emit.
        for extra in attrs.difference(&server_attrs) {
            assert!(
                [
                    "hints",
                    "voice",
                    "speechModel",
                    "debug",
                    "events",
                    "welcomeGreetingInterruptible"
                ]
                .contains(&extra.as_str()),
                "{}: unknown attribute {extra}",
                path.display()
            );
        }
    }
    assert!(seen >= 3, "expected the three examples, found {seen}");
}
