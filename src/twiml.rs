//! TwiML documents, built as elements and rendered with every attribute value and
//! text XML-escaped (greetings and hints routinely contain `&`, quotes and accents).
//! Pure: no I/O, no HTTP; used by the webhook routes and by outbound calls.
//!
//! May import `config` only (the order is checked by `.ci/layers`).

use std::fmt::Write;

use crate::config::{HandoffConfig, RelayConfig};

/// One XML element.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: &'static str,
    pub attrs: Vec<(&'static str, String)>,
    pub children: Vec<Element>,
    pub text: Option<String>,
}

impl Element {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    pub fn attr(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attrs.push((name, value.into()));
        self
    }

    /// Adds the attribute only when there is a value.
    pub fn attr_opt(self, name: &'static str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    pub fn child(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    fn render_into(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        for (name, value) in &self.attrs {
            let _ = write!(out, " {name}=\"{}\"", escape(value));
        }
        if self.children.is_empty() && self.text.is_none() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        if let Some(text) = &self.text {
            out.push_str(&escape(text));
        }
        for child in &self.children {
            child.render_into(out);
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

/// A whole TwiML document: `<?xml …?><Response>…</Response>`.
pub fn response(verbs: Vec<Element>) -> String {
    let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let mut root = Element::new("Response");
    root.children = verbs;
    root.render_into(&mut out);
    out
}

/// Escapes text for an XML attribute value or text node.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0; drop them.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// The `<ConversationRelay>` element for our configuration.
pub fn conversation_relay(
    relay: &RelayConfig,
    ws_url: &str,
    parameters: &[(String, String)],
) -> Element {
    let greeting = (!relay.welcome_greeting.is_empty()).then(|| relay.welcome_greeting.clone());
    let mut element = Element::new("ConversationRelay")
        .attr("url", ws_url)
        .attr_opt("welcomeGreeting", greeting)
        .attr_opt(
            "welcomeGreetingInterruptible",
            relay.welcome_greeting_interruptible.clone(),
        )
        .attr("language", relay.language.clone())
        .attr("ttsProvider", relay.tts_provider.clone())
        .attr_opt("voice", relay.tts_voice.clone())
        .attr(
            "transcriptionProvider",
            relay.transcription_provider.clone(),
        )
        .attr_opt("speechModel", relay.speech_model.clone())
        .attr("interruptible", relay.interruptible.clone())
        .attr("dtmfDetection", "true")
        .attr(
            "reportInputDuringAgentSpeech",
            relay.report_input_during_agent_speech.clone(),
        )
        .attr_opt("hints", relay.hints.clone())
        .attr_opt("debug", relay.debug.clone())
        .attr_opt("events", relay.events.clone())
        .attr_opt(
            "applicationReconnect",
            relay.application_reconnect.then(|| "true".to_string()),
        );
    // One <Language> per configured language, so `switch_language` can move to it.
    for language in &relay.languages {
        element = element.child(
            Element::new("Language")
                .attr("code", language.code.clone())
                .attr_opt("ttsProvider", language.tts_provider.clone())
                .attr_opt("voice", language.voice.clone())
                .attr_opt(
                    "transcriptionProvider",
                    language.transcription_provider.clone(),
                )
                .attr_opt("speechModel", language.speech_model.clone()),
        );
    }
    for (name, value) in parameters {
        element = element.child(
            Element::new("Parameter")
                .attr("name", name.clone())
                .attr("value", value.clone()),
        );
    }
    element
}

/// `<Connect action=…><ConversationRelay …/></Connect>`: the answer to an incoming call.
pub fn connect_relay(
    relay: &RelayConfig,
    ws_url: &str,
    action_url: &str,
    parameters: &[(String, String)],
) -> String {
    response(vec![
        Element::new("Connect")
            .attr("action", action_url)
            .child(conversation_relay(relay, ws_url, parameters)),
    ])
}

/// `<Connect><ConversationRelay>` for a call whose socket dropped: the same session
/// settings without the welcome greeting (the caller already heard it).
pub fn reconnect_relay(relay: &RelayConfig, ws_url: &str, action_url: &str) -> String {
    let relay = RelayConfig {
        welcome_greeting: String::new(),
        ..relay.clone()
    };
    connect_relay(&relay, ws_url, action_url, &[])
}

/// `<Connect><Stream url=…>` with `<Parameter>`s (Twilio refuses query strings on
/// `<Stream>`), followed by `<Redirect>` to `next_url`: a bidirectional stream
/// blocks until our server closes the socket, then Twilio runs the next verb, which
/// asks us how the call goes on (hang up or transfer).
pub fn connect_stream(ws_url: &str, next_url: &str, parameters: &[(String, String)]) -> String {
    let mut stream = Element::new("Stream").attr("url", ws_url);
    for (name, value) in parameters {
        stream = stream.child(
            Element::new("Parameter")
                .attr("name", name.clone())
                .attr("value", value.clone()),
        );
    }
    response(vec![
        Element::new("Connect").child(stream),
        Element::new("Redirect")
            .attr("method", "POST")
            .text(next_url),
    ])
}

/// A call turned away: `<Reject reason="busy"/>` (never answered), or `message`
/// said in `language` and `<Hangup/>`.
pub fn busy(message: Option<&str>, language: &str) -> String {
    match message {
        None => response(vec![Element::new("Reject").attr("reason", "busy")]),
        Some(message) => response(vec![
            Element::new("Say").attr("language", language).text(message),
            Element::new("Hangup"),
        ]),
    }
}

/// `<Hangup/>`.
pub fn hangup() -> String {
    response(vec![Element::new("Hangup")])
}

/// `<Dial>number</Dial><Hangup/>`: hands the caller to a person at this number or
/// SIP URI; when the person hangs up or never answers, the call ends.
pub fn dial(number: &str) -> String {
    let target = if number.starts_with("sip:") {
        Element::new("Sip").text(number)
    } else {
        Element::new("Number").text(number)
    };
    response(vec![
        Element::new("Dial").child(target),
        Element::new("Hangup"),
    ])
}

/// `<Enqueue workflowSid=…><Task>…</Task></Enqueue>`: hands the caller to a
/// TaskRouter (Flex) workflow with `task` (a JSON document) as the task's attributes.
/// A caller who leaves the queue unanswered (Flex cancelled the task) is hung up.
pub fn enqueue(workflow_sid: &str, task: &str) -> String {
    response(vec![
        Element::new("Enqueue")
            .attr("workflowSid", workflow_sid)
            .child(Element::new("Task").text(task)),
        Element::new("Hangup"),
    ])
}

/// The TwiML that hands the caller to a person as configured: `<Enqueue>` into the
/// TaskRouter workflow (with `handoff_data`, the agent's JSON, as the task), else
/// `<Dial>` to the handoff number; `None` when neither is set.
pub fn handoff(config: &HandoffConfig, handoff_data: &str) -> Option<String> {
    if let Some(workflow) = &config.taskrouter_workflow_sid {
        return Some(enqueue(workflow, handoff_data));
    }
    config.number.as_deref().map(dial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_value_is_escaped() {
        assert_eq!(
            escape(r#"Tom & "Jerry" <3 'x'"#),
            "Tom &amp; &quot;Jerry&quot; &lt;3 &apos;x&apos;"
        );
        let el = Element::new("Say").attr("voice", "a\"b").text("1 < 2 & ok");
        let mut out = String::new();
        el.render_into(&mut out);
        assert_eq!(out, r#"<Say voice="a&quot;b">1 &lt; 2 &amp; ok</Say>"#);
    }

    #[test]
    fn connect_relay_has_the_configured_attributes() {
        let mut config = Config::from_vars(Default::default()).unwrap();
        config.relay.welcome_greeting = "Olá & bem-vindo".into();
        let xml = connect_relay(
            &config.relay,
            "wss://h/websocket",
            "https://h/twiml/action",
            &[("lead".into(), "Ana \"A\"".into())],
        );
        assert!(xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect action="https://h/twiml/action"><ConversationRelay url="wss://h/websocket" welcomeGreeting="Olá &amp; bem-vindo" language="pt-BR""#), "{xml}");
        assert!(xml.contains(r#"dtmfDetection="true""#));
        assert!(xml.contains(r#"<Parameter name="lead" value="Ana &quot;A&quot;"/>"#));
        assert!(xml.ends_with("</ConversationRelay></Connect></Response>"));
        assert!(xml.contains(r#"<Language code="pt-BR" ttsProvider="ElevenLabs" transcriptionProvider="Deepgram"/>"#), "{xml}");
    }

    #[test]
    fn connect_stream_has_parameters_and_a_redirect() {
        let xml = connect_stream(
            "wss://h/media-stream",
            "https://h/twiml/stream/next",
            &[
                ("pipeline".into(), "cascade".into()),
                ("lead".into(), "A & B".into()),
            ],
        );
        assert!(xml.ends_with(r#"<Response><Connect><Stream url="wss://h/media-stream"><Parameter name="pipeline" value="cascade"/><Parameter name="lead" value="A &amp; B"/></Stream></Connect><Redirect method="POST">https://h/twiml/stream/next</Redirect></Response>"#), "{xml}");
    }

    #[test]
    fn busy_rejects_or_says_and_hangs_up() {
        assert_eq!(
            busy(None, "pt-BR"),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>"#
        );
        let said = busy(Some("Linhas ocupadas & volte"), "pt-BR");
        assert!(
            said.contains(r#"<Say language="pt-BR">Linhas ocupadas &amp; volte</Say><Hangup/>"#),
            "{said}"
        );
    }

    #[test]
    fn handoff_verbs() {
        assert!(dial("+5511988887777").ends_with(
            "<Response><Dial><Number>+5511988887777</Number></Dial><Hangup/></Response>"
        ));
        assert!(dial("sip:fila@pbx.example.com").contains("<Sip>sip:fila@pbx.example.com</Sip>"));
        assert!(
            enqueue("WW123", r#"{"reasonCode":"live-agent-handoff"}"#).ends_with(
                r#"<Enqueue workflowSid="WW123"><Task>{&quot;reasonCode&quot;:&quot;live-agent-handoff&quot;}</Task></Enqueue><Hangup/></Response>"#
            )
        );
    }

    /// No document we serve can leave a call hanging: each ends with `<Hangup/>`,
    /// or its last verb hands the call on to a webhook of ours (`<Connect action>`,
    /// `<Redirect>`) or refuses it (`<Reject>`).
    #[test]
    fn no_document_falls_through() {
        let config = Config::from_vars(Default::default()).unwrap();
        let documents = [
            connect_relay(&config.relay, "wss://h/ws", "https://h/twiml/action", &[]),
            reconnect_relay(&config.relay, "wss://h/ws", "https://h/twiml/action"),
            connect_stream("wss://h/media-stream", "https://h/twiml/stream/next", &[]),
            busy(None, "pt-BR"),
            busy(Some("Ocupado."), "pt-BR"),
            hangup(),
            dial("+5511988887777"),
            dial("sip:fila@pbx.example.com"),
            enqueue("WW1", "{}"),
        ];
        for xml in documents {
            let doc = roxmltree::Document::parse(&xml).expect("TwiML is XML");
            let last = doc
                .root_element()
                .children()
                .rfind(|n| n.is_element())
                .expect("a verb");
            let handed_on = match last.tag_name().name() {
                "Hangup" | "Redirect" | "Reject" => true,
                "Connect" => last.attribute("action").is_some(),
                _ => false,
            };
            assert!(handed_on, "a call could fall through: {xml}");
        }
    }

    #[test]
    fn handoff_prefers_taskrouter_then_the_number() {
        let mut config = HandoffConfig::default();
        assert_eq!(handoff(&config, "{}"), None);
        config.number = Some("+5511988887777".into());
        assert_eq!(handoff(&config, "{}"), Some(dial("+5511988887777")));
        config.taskrouter_workflow_sid = Some("WW1".into());
        assert_eq!(handoff(&config, "{}"), Some(enqueue("WW1", "{}")));
    }
}
