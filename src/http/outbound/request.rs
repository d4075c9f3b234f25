//! The bodies the call-placing routes accept, as serde structs, and their checks:
//! [`parse_call_request`] reads one route's shape into a [`CallRequest`], naming
//! the field at fault in every refusal. May import `http::error` and `config`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::agent::prompt::RESERVED_PREFIX;
use crate::config::E164;
use crate::http::error::{HttpError, json_body};

/// Longest per-call greeting accepted.
pub const MAX_GREETING_CHARS: usize = 1000;
/// Most `<Parameter>`s accepted on one call.
pub const MAX_PARAMETERS: usize = 20;
const MAX_PARAMETER_NAME: usize = 64;
const MAX_PARAMETER_VALUE: usize = 500;

/// Which route's body shape (and answer shape) a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `POST /api/calls`: strict, documented fields.
    Api,
    /// `POST /make-call` `{to, message?}` (and `/api/end-call`): answers carry `success`.
    MakeCall,
    /// `POST /api/call` `{number, fromNumber?}`.
    ApiCall,
}

/// A validated request to place a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallRequest {
    pub to: String,
    pub from: Option<String>,
    /// `None`: the configured greeting. `Some("")`: no greeting.
    pub greeting: Option<String>,
    pub parameters: Vec<(String, String)>,
    pub record: bool,
    pub machine_detection: bool,
    /// Media Streams (`mode: "stream"`) instead of ConversationRelay.
    pub stream: bool,
    /// The agent to place the call (else the one of `from`, else the default).
    pub agent: Option<String>,
}

/// `POST /api/calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiBody {
    to: Option<String>,
    from: Option<String>,
    mode: Option<Mode>,
    greeting: Option<String>,
    parameters: Option<Map<String, Value>>,
    record: Option<bool>,
    machine_detection: Option<Detection>,
    agent: Option<String>,
}

/// `machine_detection`: `"detect"` / `"off"` (or `true` / `false`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum Detection {
    On(bool),
    Named(DetectionName),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DetectionName {
    Detect,
    Off,
}

impl Detection {
    fn is_on(self) -> bool {
        matches!(self, Self::On(true) | Self::Named(DetectionName::Detect))
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Relay,
    Stream,
}

/// `POST /make-call` (other fields are ignored, as the bridges it replaces did).
#[derive(Debug, Deserialize)]
struct MakeCallBody {
    to: Option<String>,
    message: Option<String>,
}

/// `POST /api/call`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiCallBody {
    number: Option<String>,
    from_number: Option<String>,
}

/// `POST /api/end-call`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndCallBody {
    call_sid: Option<String>,
}

/// Reads and validates a call request in the given route's body shape.
pub fn parse_call_request(body: &[u8], style: Style) -> Result<CallRequest, HttpError> {
    match style {
        Style::MakeCall => {
            let body: MakeCallBody = json_body(body)?;
            Ok(CallRequest {
                to: required_e164("to", body.to)?,
                greeting: body.message,
                ..CallRequest::default()
            })
        }
        Style::ApiCall => {
            let body: ApiCallBody = json_body(body)?;
            Ok(CallRequest {
                to: required_e164("number", body.number)?,
                from: e164("fromNumber", body.from_number)?,
                ..CallRequest::default()
            })
        }
        Style::Api => {
            let body: ApiBody = json_body(body)?;
            if let Some(g) = &body.greeting
                && g.chars().count() > MAX_GREETING_CHARS
            {
                return Err(HttpError::field(
                    "greeting",
                    format!("is longer than {MAX_GREETING_CHARS} characters"),
                ));
            }
            Ok(CallRequest {
                to: required_e164("to", body.to)?,
                from: e164("from", body.from)?,
                greeting: body.greeting,
                parameters: parameters(body.parameters)?,
                record: body.record.unwrap_or(false),
                machine_detection: body.machine_detection.is_some_and(Detection::is_on),
                stream: matches!(body.mode, Some(Mode::Stream)),
                agent: agent_id(body.agent)?,
            })
        }
    }
}

/// An agent's id, if given (whether it exists is the roster's to say).
fn agent_id(value: Option<String>) -> Result<Option<String>, HttpError> {
    match value.map(|v| v.trim().to_string()) {
        Some(id) if !crate::config::valid_agent_id(&id) => Err(HttpError::field(
            "agent",
            "must be an agent's name: letters, digits, '-' or '_' (at most 40)",
        )),
        other => Ok(other),
    }
}

/// The `callSid` of `POST /api/end-call`.
pub fn parse_end_call(body: &[u8]) -> Result<String, HttpError> {
    let body: EndCallBody = json_body(body)?;
    required("callSid", body.call_sid)
}

fn required(name: &str, value: Option<String>) -> Result<String, HttpError> {
    value
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| HttpError::field(name, "is required"))
}

fn required_e164(name: &str, value: Option<String>) -> Result<String, HttpError> {
    let value = required(name, value)?;
    Ok(e164(name, Some(value))?.unwrap_or_default())
}

/// A phone number in E.164, if given.
fn e164(name: &str, value: Option<String>) -> Result<Option<String>, HttpError> {
    match value.map(|v| v.trim().to_string()) {
        Some(number) if E164::parse(&number).is_none() => Err(HttpError::field(
            name,
            format!("{number:?} is not an E.164 phone number (like +5511999990000)"),
        )),
        other => Ok(other),
    }
}

/// `parameters`: names to strings (numbers and booleans are written out).
fn parameters(map: Option<Map<String, Value>>) -> Result<Vec<(String, String)>, HttpError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    if map.len() > MAX_PARAMETERS {
        return Err(HttpError::field(
            "parameters",
            format!("at most {MAX_PARAMETERS} parameters are accepted"),
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let field = format!("parameters.{name}");
        if name.is_empty()
            || name.len() > MAX_PARAMETER_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(HttpError::field(
                &field,
                format!("names must be 1 to {MAX_PARAMETER_NAME} letters, digits, '_', '-' or '.'"),
            ));
        }
        if name.starts_with(RESERVED_PREFIX) {
            return Err(HttpError::field(
                &field,
                format!("names starting with {RESERVED_PREFIX:?} are reserved"),
            ));
        }
        let value = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(HttpError::field(
                    &field,
                    "must be a string, number or boolean",
                ));
            }
        };
        if value.chars().count() > MAX_PARAMETER_VALUE {
            return Err(HttpError::field(
                &field,
                format!("is longer than {MAX_PARAMETER_VALUE} characters"),
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn machine_detection_is_detect_or_off() {
        let parse = |value: &str| {
            let body = format!(r#"{{"to":"+5511999990000","machine_detection":{value}}}"#);
            super::parse_call_request(body.as_bytes(), super::Style::Api)
        };
        assert!(parse(r#""detect""#).unwrap().machine_detection);
        assert!(parse("true").unwrap().machine_detection);
        assert!(!parse(r#""off""#).unwrap().machine_detection);
        assert!(!parse("false").unwrap().machine_detection);
        assert!(parse(r#""sometimes""#).is_err());
    }

    use super::*;

    fn error_field(result: Result<CallRequest, HttpError>) -> String {
        match result.expect_err("must be refused") {
            HttpError::BadField { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn a_full_request_is_read() {
        let request = parse_call_request(
            br#"{"to":"+5511999990000","from":"+5511333330000","mode":"relay","greeting":"Oi Ana!",
                "parameters":{"lead":"Ana","score":7,"vip":true},"record":true,"machine_detection":true}"#,
            Style::Api,
        )
        .unwrap();
        assert_eq!(request.to, "+5511999990000");
        assert_eq!(request.from.as_deref(), Some("+5511333330000"));
        assert_eq!(request.greeting.as_deref(), Some("Oi Ana!"));
        assert!(request.parameters.contains(&("score".into(), "7".into())));
        assert!(request.parameters.contains(&("vip".into(), "true".into())));
        assert!(request.record && request.machine_detection);
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, field) in [
            (r#"{}"#, "to"),
            (r#"{"to":"11999990000"}"#, "to"),
            (r#"{"to":5511999990000}"#, "to"),
            (r#"{"to":"+5511999990000","from":"abc"}"#, "from"),
            (r#"{"to":"+5511999990000","mode":"video"}"#, "mode"),
            (r#"{"to":"+5511999990000","record":"yes"}"#, "record"),
            (r#"{"to":"+5511999990000","parameters":[1]}"#, "parameters"),
            (
                r#"{"to":"+5511999990000","parameters":{"a b":"x"}}"#,
                "parameters.a b",
            ),
            (
                r#"{"to":"+5511999990000","parameters":{"voxrelay_greeting":"x"}}"#,
                "parameters.voxrelay_greeting",
            ),
            (
                r#"{"to":"+5511999990000","parameters":{"x":{"y":1}}}"#,
                "parameters.x",
            ),
            (
                r#"{"to":"+5511999990000","machineDetection":true}"#,
                "machineDetection",
            ),
        ] {
            assert_eq!(
                error_field(parse_call_request(body.as_bytes(), Style::Api)),
                field,
                "{body}"
            );
        }
        let long = format!(
            r#"{{"to":"+5511999990000","greeting":"{}"}}"#,
            "a".repeat(1001)
        );
        assert_eq!(
            error_field(parse_call_request(long.as_bytes(), Style::Api)),
            "greeting"
        );
        assert!(matches!(
            parse_call_request(b"[1]", Style::Api),
            Err(HttpError::BadRequest(message)) if message.contains("JSON object")
        ));
    }

    #[test]
    fn stream_mode_is_accepted() {
        let request =
            parse_call_request(br#"{"to":"+5511999990000","mode":"stream"}"#, Style::Api).unwrap();
        assert!(request.stream);
        let request = parse_call_request(br#"{"to":"+5511999990000"}"#, Style::Api).unwrap();
        assert!(!request.stream);
    }

    #[test]
    fn compatibility_shapes() {
        let r = parse_call_request(
            br#"{"to":"+5511999990000","message":"Oi","extra":1}"#,
            Style::MakeCall,
        )
        .unwrap();
        assert_eq!(r.greeting.as_deref(), Some("Oi"));
        let r = parse_call_request(
            br#"{"number":"+5511999990000","fromNumber":"+5511333330000"}"#,
            Style::ApiCall,
        )
        .unwrap();
        assert_eq!(r.from.as_deref(), Some("+5511333330000"));
        assert_eq!(
            error_field(parse_call_request(
                br#"{"to":"+5511999990000"}"#,
                Style::ApiCall
            )),
            "number"
        );
        assert_eq!(
            parse_end_call(br#"{"callSid":"CA1"}"#).unwrap(),
            "CA1".to_string()
        );
        assert!(parse_end_call(br#"{}"#).is_err());
    }
}
