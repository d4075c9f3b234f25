//! What OpenAI's SIP flow says to us and what we say back, as serde types: the
//! webhook events (`realtime.call.incoming`, GPT-Live's `live.transport.incoming`),
//! the two call-control surfaces and their URLs, and the accept bodies. The
//! sideband itself speaks the Realtime protocol of `speech::realtime::protocol`.
//! Pure data; may import `config` and `speech`'s protocol types.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::SipConfig;
use crate::speech::realtime::FunctionTool;

/// One SIP header of the incoming INVITE. Untrusted: the caller chose it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SipHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RealtimeCall {
    pub call_id: String,
    pub sip_headers: Vec<SipHeader>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LiveTransport {
    pub session_id: String,
    pub sip_headers: Vec<SipHeader>,
}

/// A webhook delivery's event. Types we do not handle are logged and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type")]
pub enum WebhookEvent {
    #[serde(rename = "realtime.call.incoming")]
    RealtimeCallIncoming {
        #[serde(default)]
        data: RealtimeCall,
    },
    /// GPT-Live (`live.call.incoming` is its older, deprecated name).
    #[serde(rename = "live.transport.incoming", alias = "live.call.incoming")]
    LiveTransportIncoming {
        #[serde(default)]
        data: LiveTransport,
    },
    #[serde(other)]
    Other,
}

/// Which API a call is accepted on: the first successful accept picks it, so one
/// call is only ever handed to one of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Surface {
    /// `…/realtime/calls/{call_id}/…`, sideband `…/realtime?call_id=…`.
    Realtime { call_id: String },
    /// `…/live/sessions/{session_id}/…`, sideband `…/live/sessions/{id}/attach`.
    Live { session_id: String },
}

impl Surface {
    /// The id OpenAI gave the call (also its record's `call_sid`).
    pub fn id(&self) -> &str {
        match self {
            Self::Realtime { call_id } => call_id,
            Self::Live { session_id } => session_id,
        }
    }

    /// Whether the id is one OpenAI could have issued (it goes into URL paths).
    pub fn is_valid(&self) -> bool {
        let id = self.id();
        !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    /// `accept`, `reject`, `refer` or `hangup` of this call.
    pub fn control_url(&self, api_base: &str, action: &str) -> String {
        match self {
            Self::Realtime { call_id } => format!("{api_base}/realtime/calls/{call_id}/{action}"),
            Self::Live { session_id } => format!("{api_base}/live/sessions/{session_id}/{action}"),
        }
    }

    /// The sideband WebSocket of this call.
    pub fn sideband_url(&self, ws_base: &str) -> String {
        match self {
            Self::Realtime { call_id } => format!("{ws_base}/realtime?call_id={call_id}"),
            Self::Live { session_id } => format!("{ws_base}/live/sessions/{session_id}/attach"),
        }
    }

    /// The accept body: the session itself (Realtime), or `{"session": …}` (Live).
    /// `language` is the caller's ISO 639-1 code, for the transcription.
    /// GPT-Live takes no tools in its session (it delegates tool use to a backend of
    /// its own), so a Live call gets instructions and voice only.
    pub fn accept_body(
        &self,
        sip: &SipConfig,
        instructions: &str,
        language: &str,
        tools: &[FunctionTool],
    ) -> Value {
        match self {
            Self::Realtime { .. } => {
                let tools: Vec<Value> = tools
                    .iter()
                    .map(|t| {
                        json!({"type": "function", "name": t.name, "description": t.description,
                               "parameters": t.parameters})
                    })
                    .collect();
                json!({
                    "type": "realtime",
                    "model": sip.model,
                    "instructions": instructions,
                    "audio": {
                        "input": {"transcription": {"model": sip.transcription_model,
                                                    "language": language}},
                        "output": {"voice": sip.voice},
                    },
                    "tools": tools,
                    "tool_choice": "auto",
                })
            }
            Self::Live { .. } => json!({"session": {
                "type": "live",
                "model": sip.live_model,
                "instructions": instructions,
                "audio": {"output": {"voice": sip.voice}},
            }}),
        }
    }
}

/// Longest SIP header value kept as call data.
const MAX_HEADER_VALUE: usize = 200;

/// The caller's and the called number (from the `From` and `To` headers'
/// `sip:<user>@…` or `tel:<number>`), and the custom `X-…` headers as call data.
/// Everything is bounded and stripped of control characters.
pub fn call_parties(headers: &[SipHeader]) -> (String, String, HashMap<String, String>) {
    let user = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| sip_user(&h.value))
            .unwrap_or_default()
    };
    let mut data = HashMap::new();
    for header in headers.iter().filter(|h| {
        h.name.len() > 2 && h.name[..2].eq_ignore_ascii_case("x-") && h.name.len() <= 64
    }) {
        let name = header
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect::<String>()
            .to_ascii_lowercase();
        data.insert(format!("sip_{name}"), clean(&header.value));
    }
    (user("From"), user("To"), data)
}

/// `"Ana" <sip:+5511999990000@host;tag=x>` → `+5511999990000`.
fn sip_user(value: &str) -> String {
    let inner = match (value.find('<'), value.find('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value,
    };
    let inner = inner.trim();
    let rest = inner
        .strip_prefix("sips:")
        .or_else(|| inner.strip_prefix("sip:"))
        .or_else(|| inner.strip_prefix("tel:"))
        .unwrap_or(inner);
    let user = rest.split(['@', ';']).next().unwrap_or_default();
    clean(user)
}

fn clean(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_HEADER_VALUE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_events_from_the_docs() {
        let body = r#"{"object":"event","id":"evt_1","type":"realtime.call.incoming","created_at":1750287018,
            "data":{"call_id":"rtc_479a","sip_headers":[{"name":"From","value":"sip:+142555512112@sip.example.com"},
            {"name":"To","value":"sip:+18005551212@sip.example.com"},{"name":"Call-ID","value":"0378"}]}}"#;
        let WebhookEvent::RealtimeCallIncoming { data } = serde_json::from_str(body).unwrap()
        else {
            panic!("not a realtime call")
        };
        assert_eq!(data.call_id, "rtc_479a");
        let (from, to, extra) = call_parties(&data.sip_headers);
        assert_eq!(
            (from.as_str(), to.as_str()),
            ("+142555512112", "+18005551212")
        );
        assert!(extra.is_empty());
        for kind in ["live.transport.incoming", "live.call.incoming"] {
            let body = format!(
                r#"{{"type":"{kind}","data":{{"type":"sip","session_id":"live_1","sip_headers":[]}}}}"#
            );
            assert!(matches!(
                serde_json::from_str(&body).unwrap(),
                WebhookEvent::LiveTransportIncoming { data } if data.session_id == "live_1"
            ));
        }
        assert_eq!(
            serde_json::from_str::<WebhookEvent>(r#"{"type":"batch.completed","data":{}}"#)
                .unwrap(),
            WebhookEvent::Other
        );
    }

    #[test]
    fn surfaces_build_their_urls_and_refuse_odd_ids() {
        let call = Surface::Realtime {
            call_id: "rtc_1".into(),
        };
        assert_eq!(
            call.control_url("https://api.openai.com/v1", "accept"),
            "https://api.openai.com/v1/realtime/calls/rtc_1/accept"
        );
        assert_eq!(
            call.sideband_url("wss://api.openai.com/v1"),
            "wss://api.openai.com/v1/realtime?call_id=rtc_1"
        );
        let live = Surface::Live {
            session_id: "live_1".into(),
        };
        assert_eq!(
            live.control_url("https://x/v1", "hangup"),
            "https://x/v1/live/sessions/live_1/hangup"
        );
        assert_eq!(
            live.sideband_url("wss://x/v1"),
            "wss://x/v1/live/sessions/live_1/attach"
        );
        assert!(call.is_valid() && live.is_valid());
        for bad in ["", "../admin", "rtc_1?x=y", "rtc 1"] {
            assert!(
                !Surface::Realtime {
                    call_id: bad.into()
                }
                .is_valid(),
                "{bad}"
            );
        }
    }

    #[test]
    fn caller_data_is_cleaned() {
        let headers = [
            SipHeader {
                name: "From".into(),
                value: "\"Ana\" <sip:+5511999990000@pstn.twilio.com;tag=1>".into(),
            },
            SipHeader {
                name: "X-Lead\n".into(),
                value: format!("Ana\u{7}{}", "x".repeat(500)),
            },
        ];
        let (from, to, data) = call_parties(&headers);
        assert_eq!(from, "+5511999990000");
        assert_eq!(to, "");
        let lead = &data["sip_x-lead"];
        assert!(lead.starts_with("Anax") && lead.chars().count() == MAX_HEADER_VALUE);
    }
}
