//! The ConversationRelay wire protocol as typed serde enums: pure data, no I/O.
//!
//! [`Inbound`] is what Twilio sends us, [`Outbound`] what we send back; both
//! serialise both ways, so the simulated Twilio of `sim::peer` (used by
//! `voxrelay call`, `voxrelay bench` and the tests) speaks the same types. Parsing is
//! lenient where Twilio's docs and live traffic disagree (see
//! `docs/conversationrelay.md`): optional fields may be missing or `null`,
//! `durationUntilInterruptMs` may be a number or a numeric string, and any message
//! type we do not know parses to [`Inbound::Unknown`] instead of failing.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

/// A message from Twilio.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Inbound {
    Setup(Box<Setup>),
    Prompt(Prompt),
    Dtmf(Dtmf),
    Interrupt(Interrupt),
    Error(ErrorMessage),
    Info(Info),
    /// A type this version does not know yet: logged and ignored.
    #[serde(other, skip_serializing)]
    Unknown,
}

impl Inbound {
    /// The message as a JSON text frame (a peer playing Twilio sends these).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Sent once when the socket opens.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Setup {
    pub session_id: String,
    pub call_sid: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub account_sid: String,
    pub parent_call_sid: Option<String>,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub from: String,
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub to: String,
    pub forwarded_from: Option<String>,
    pub call_type: Option<String>,
    pub caller_name: Option<String>,
    pub direction: Option<String>,
    pub call_status: Option<String>,
    pub application_sid: Option<String>,
    #[serde(deserialize_with = "crate::transport::lenient::params_or_null")]
    pub custom_parameters: HashMap<String, String>,
}

/// Caller speech, transcribed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Prompt {
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub voice_prompt: String,
    pub lang: Option<String>,
    /// `None` when Twilio left it out; treated as final.
    pub last: Option<bool>,
    /// Only in Twilio Agent Connect's schema; kept for logging.
    pub agent_speaking: Option<serde_json::Value>,
}

impl Prompt {
    /// Whether this is the final transcript of an utterance.
    pub fn is_final(&self) -> bool {
        self.last.unwrap_or(true)
    }
}

/// One keypad press.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Dtmf {
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub digit: String,
}

/// The caller talked over the agent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Interrupt {
    /// What of our text had been spoken when the caller barged in.
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub utterance_until_interrupt: String,
    #[serde(deserialize_with = "number_or_string")]
    pub duration_until_interrupt_ms: Option<f64>,
}

/// Twilio reports a problem (often with something we sent). Never answered.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ErrorMessage {
    #[serde(deserialize_with = "crate::transport::lenient::null_default")]
    pub description: String,
}

/// Debug and event subscriptions (`agentSpeaking`, `tokensPlayed`, ...); the shape is
/// undocumented, so every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Info {
    pub name: Option<String>,
    pub value: Option<serde_json::Value>,
}

/// A message to Twilio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Outbound {
    /// Text to speak; a talk cycle ends with `last: true`.
    Text {
        token: String,
        last: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        lang: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        interruptible: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        preemptible: Option<bool>,
    },
    /// Play an audio URL.
    Play {
        source: String,
        #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
        loop_count: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        preemptible: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        interruptible: Option<bool>,
    },
    /// Press keys towards the far end (`0-9 * # w`).
    SendDigits { digits: String },
    /// Switch TTS and/or STT language.
    Language {
        #[serde(skip_serializing_if = "Option::is_none")]
        tts_language: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        transcription_language: Option<String>,
    },
    /// End the session; `handoff_data` is a JSON document serialised into a string.
    End {
        #[serde(skip_serializing_if = "Option::is_none")]
        handoff_data: Option<String>,
    },
    /// A type a peer does not know (never sent by us).
    #[serde(other, skip_serializing)]
    Unknown,
}

impl Outbound {
    /// A streamed token (`last: false`).
    pub fn token(token: impl Into<String>) -> Self {
        Self::Text {
            token: token.into(),
            last: false,
            lang: None,
            interruptible: None,
            preemptible: None,
        }
    }

    /// The empty token that closes a talk cycle.
    pub fn end_of_turn() -> Self {
        Self::Text {
            token: String::new(),
            last: true,
            lang: None,
            interruptible: None,
            preemptible: None,
        }
    }

    /// The message as a JSON text frame.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a text frame could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("JSON object without a string \"type\" field")]
    MissingType,
    #[error("fields do not fit a {kind:?} message: {source}")]
    Fields {
        kind: String,
        source: serde_json::Error,
    },
}

/// Parses one text frame from the server (what a peer playing Twilio reads).
pub fn parse_outbound(text: &str) -> Result<Outbound, serde_json::Error> {
    serde_json::from_str(text)
}

/// Parses one text frame from Twilio.
pub fn parse_inbound(text: &str) -> Result<Inbound, ParseError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(ParseError::Json)?;
    let kind = match value.get("type").and_then(|t| t.as_str()) {
        Some(kind) => kind.to_string(),
        None => return Err(ParseError::MissingType),
    };
    serde_json::from_value(value).map_err(|source| ParseError::Fields { kind, source })
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }
    Ok(match Option::<NumOrStr>::deserialize(d)? {
        None => None,
        Some(NumOrStr::Num(n)) => Some(n),
        // A non-numeric string is dropped rather than failing the whole message.
        Some(NumOrStr::Str(s)) => s.trim().parse().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_from_the_docs() {
        let msg = parse_inbound(
            r#"{"type":"setup","sessionId":"VX00000000000000000000000000000000","accountSid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "parentCallSid":"","callSid":"CA00000000000000000000000000000000","from":"+18005550100","to":"+18005550101",
            "forwardedFrom":"+18005550102","callType":"PSTN","callerName":"","direction":"inbound","callStatus":"RINGING",
            "customParameters":{"callReference":"bar"}}"#,
        )
        .unwrap();
        let Inbound::Setup(s) = msg else {
            panic!("not setup")
        };
        assert_eq!(s.call_sid, "CA00000000000000000000000000000000");
        assert_eq!(s.session_id, "VX00000000000000000000000000000000");
        assert_eq!(s.from, "+18005550100");
        assert_eq!(s.custom_parameters["callReference"], "bar");
    }

    #[test]
    fn setup_with_nulls_and_missing_fields() {
        let msg = parse_inbound(
            r#"{"type":"setup","callSid":"CA1","parentCallSid":null,"forwardedFrom":null,"customParameters":null,"applicationSid":"AP1","extra":1}"#,
        )
        .unwrap();
        let Inbound::Setup(s) = msg else {
            panic!("not setup")
        };
        assert_eq!(s.call_sid, "CA1");
        assert!(s.custom_parameters.is_empty());
        assert_eq!(s.application_sid.as_deref(), Some("AP1"));
    }

    #[test]
    fn interrupt_duration_as_number_or_string() {
        for raw in [
            r#"{"type":"interrupt","utteranceUntilInterrupt":"Life is","durationUntilInterruptMs":460}"#,
            r#"{"type":"interrupt","utteranceUntilInterrupt":"Life is","durationUntilInterruptMs":"460"}"#,
            r#"{"type":"interrupt","utteranceUntilInterrupt":"Life is","durationUntilInterruptMs":460.0}"#,
        ] {
            let Inbound::Interrupt(i) = parse_inbound(raw).unwrap() else {
                panic!("not interrupt")
            };
            assert_eq!(i.utterance_until_interrupt, "Life is");
            assert_eq!(i.duration_until_interrupt_ms, Some(460.0));
        }
        let Inbound::Interrupt(i) =
            parse_inbound(r#"{"type":"interrupt","utteranceUntilInterrupt":null}"#).unwrap()
        else {
            panic!("not interrupt")
        };
        assert_eq!(i.utterance_until_interrupt, "");
        assert_eq!(i.duration_until_interrupt_ms, None);
    }

    #[test]
    fn prompt_last_defaults_to_final() {
        let Inbound::Prompt(p) = parse_inbound(r#"{"type":"prompt","voicePrompt":"Olá"}"#).unwrap()
        else {
            panic!("not prompt")
        };
        assert!(p.is_final());
        let Inbound::Prompt(p) =
            parse_inbound(r#"{"type":"prompt","voicePrompt":"Ol","last":false,"lang":"pt-BR"}"#)
                .unwrap()
        else {
            panic!("not prompt")
        };
        assert!(!p.is_final());
        assert_eq!(p.lang.as_deref(), Some("pt-BR"));
    }

    #[test]
    fn info_error_dtmf_and_unknown() {
        assert_eq!(
            parse_inbound(r#"{"type":"info","name":"agentSpeaking","value":"on"}"#).unwrap(),
            Inbound::Info(Info {
                name: Some("agentSpeaking".into()),
                value: Some(serde_json::json!("on"))
            })
        );
        assert_eq!(
            parse_inbound(r#"{"type":"error","description":"Invalid message"}"#).unwrap(),
            Inbound::Error(ErrorMessage {
                description: "Invalid message".into()
            })
        );
        assert_eq!(
            parse_inbound(r#"{"type":"dtmf","digit":"5"}"#).unwrap(),
            Inbound::Dtmf(Dtmf { digit: "5".into() })
        );
        assert_eq!(
            parse_inbound(r#"{"type":"configUpdated","provider":"x"}"#).unwrap(),
            Inbound::Unknown
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert!(matches!(
            parse_inbound("{not json"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            parse_inbound("[1,2]"),
            Err(ParseError::MissingType)
        ));
        assert!(matches!(
            parse_inbound(r#"{"voicePrompt":"x"}"#),
            Err(ParseError::MissingType)
        ));
        assert!(matches!(
            parse_inbound(r#"{"type":"prompt","voicePrompt":42}"#),
            Err(ParseError::Fields { .. })
        ));
    }

    #[test]
    fn every_message_reads_back_as_written() {
        let inbound = [
            Inbound::Setup(Box::new(Setup {
                call_sid: "CA1".into(),
                custom_parameters: [("lead".to_string(), "Ana".to_string())].into(),
                ..Setup::default()
            })),
            Inbound::Prompt(Prompt {
                voice_prompt: "Olá".into(),
                lang: Some("pt-BR".into()),
                last: Some(true),
                agent_speaking: None,
            }),
            Inbound::Dtmf(Dtmf { digit: "5".into() }),
            Inbound::Interrupt(Interrupt {
                utterance_until_interrupt: "Um dois".into(),
                duration_until_interrupt_ms: Some(460.0),
            }),
        ];
        for message in inbound {
            assert_eq!(parse_inbound(&message.to_json()).unwrap(), message);
        }
        let outbound = [
            Outbound::token("Olá "),
            Outbound::end_of_turn(),
            Outbound::End {
                handoff_data: Some("{}".into()),
            },
        ];
        for message in outbound {
            assert_eq!(parse_outbound(&message.to_json()).unwrap(), message);
        }
        assert_eq!(
            parse_outbound(r#"{"type":"somethingNew"}"#).unwrap(),
            Outbound::Unknown
        );
    }

    #[test]
    fn outbound_shapes() {
        assert_eq!(
            Outbound::token("Olá ").to_json(),
            r#"{"type":"text","token":"Olá ","last":false}"#
        );
        assert_eq!(
            Outbound::end_of_turn().to_json(),
            r#"{"type":"text","token":"","last":true}"#
        );
        assert_eq!(
            Outbound::SendDigits {
                digits: "9w1#".into()
            }
            .to_json(),
            r#"{"type":"sendDigits","digits":"9w1#"}"#
        );
        assert_eq!(
            Outbound::Language {
                tts_language: Some("en-US".into()),
                transcription_language: Some("en-US".into())
            }
            .to_json(),
            r#"{"type":"language","ttsLanguage":"en-US","transcriptionLanguage":"en-US"}"#
        );
        assert_eq!(
            Outbound::End {
                handoff_data: Some(r#"{"reasonCode":"end-call"}"#.into())
            }
            .to_json(),
            r#"{"type":"end","handoffData":"{\"reasonCode\":\"end-call\"}"}"#
        );
        assert_eq!(
            Outbound::Play {
                source: "https://x/a.mp3".into(),
                loop_count: Some(1),
                preemptible: Some(true),
                interruptible: None
            }
            .to_json(),
            r#"{"type":"play","source":"https://x/a.mp3","loop":1,"preemptible":true}"#
        );
    }
}
