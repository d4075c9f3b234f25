//! The built-in tools. Their names ([`BuiltinTool`], the one list of them) and
//! parameter names are part of voxrelay's interface (prompts and tests rely on
//! them): `end_call`, `transfer_to_human`, `send_dtmf`, `switch_language`,
//! `schedule_appointment`.
//!
//! Each validates its arguments and returns a [`ToolEffect`]; the agent carries it
//! out. Validation problems go back to the model as errors so it can ask again.
//! May import `tools` and `config`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::dates::{self, Date};
use super::{Appointment, Tool, ToolContext, ToolEffect, ToolError, ToolOutput, string_arg};
use crate::config::{BuiltinTool, Config};
use crate::llm::ToolSpec;
use crate::text::SharedJson;

/// The built-in tools the configuration turns on.
pub fn enabled(config: &Config) -> Vec<Arc<dyn Tool>> {
    config
        .tools
        .enabled
        .iter()
        .map(|&kind| Arc::new(Builtin::new(kind, config)) as Arc<dyn Tool>)
        .collect()
}

/// One built-in tool: what it tells the model, and what its arguments do.
pub struct Builtin {
    kind: BuiltinTool,
    schema: SharedJson,
    timeout: Duration,
    /// The language codes `switch_language` may move to.
    languages: Vec<String>,
    /// The business's offset from UTC, for "today" in `schedule_appointment`.
    utc_offset_minutes: i32,
}

impl Builtin {
    pub fn new(kind: BuiltinTool, config: &Config) -> Self {
        let languages: Vec<String> = config
            .relay
            .languages
            .iter()
            .map(|l| l.code.clone())
            .collect();
        let schema = match kind {
            BuiltinTool::EndCall => END_CALL_SCHEMA.clone(),
            BuiltinTool::TransferToHuman => TRANSFER_SCHEMA.clone(),
            BuiltinTool::SendDtmf => SEND_DTMF_SCHEMA.clone(),
            BuiltinTool::ScheduleAppointment => APPOINTMENT_SCHEMA.clone(),
            BuiltinTool::SwitchLanguage => json!({"type": "object", "properties": {
                "language": {"type": "string", "enum": languages, "description": "The language code."}
            }, "required": ["language"]})
            .into(),
        };
        Self {
            kind,
            schema,
            timeout: config.tools.timeout,
            languages,
            utc_offset_minutes: config.tools.utc_offset_minutes,
        }
    }

    fn description(&self, ctx: &ToolContext) -> String {
        match self.kind {
            BuiltinTool::EndCall => "End the phone call. Use it when the caller says goodbye or the conversation is over. Say a short goodbye in the same reply.".into(),
            BuiltinTool::TransferToHuman => "Transfer the caller to a human attendant. Use it when the caller asks for a person or you cannot help. Tell the caller you are transferring them.".into(),
            BuiltinTool::SendDtmf => "Press keypad keys on the call, e.g. to navigate a phone menu. Digits 0-9, * and #; w waits half a second.".into(),
            BuiltinTool::SwitchLanguage => "Switch the language you speak and listen in, when the caller prefers another language. Then continue in that language.".into(),
            BuiltinTool::ScheduleAppointment => {
                let today = Date::today(ctx.now, self.utc_offset_minutes);
                format!(
                    "Book an appointment for the caller once you know their name and the day (and preferably the time). Today is {}, {today}. Confirm the booking out loud afterwards.",
                    today.weekday_pt()
                )
            }
        }
    }
}

impl Tool for Builtin {
    fn name(&self) -> &str {
        self.kind.name()
    }
    fn spec(&self, ctx: &ToolContext) -> ToolSpec {
        ToolSpec {
            name: self.kind.name().to_string(),
            description: self.description(ctx),
            parameters: self.schema.clone(),
        }
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn call(
        &self,
        args: Map<String, Value>,
        ctx: &ToolContext,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let result = match self.kind {
            BuiltinTool::EndCall => end_call(&args),
            BuiltinTool::TransferToHuman => transfer(&args),
            BuiltinTool::SendDtmf => send_dtmf(&args),
            BuiltinTool::SwitchLanguage => switch_language(&args, &self.languages),
            BuiltinTool::ScheduleAppointment => {
                schedule(&args, Date::today(ctx.now, self.utc_offset_minutes))
            }
        };
        futures::future::ready(result).boxed()
    }
}

/// A parameter schema built and serialised once, on first use, and shared by every
/// request.
type Schema = LazyLock<SharedJson>;

static END_CALL_SCHEMA: Schema = LazyLock::new(|| {
    SharedJson::new(json!({"type": "object", "properties": {
        "reason": {"type": "string", "description": "Why the call ends, in a few words."}
    }}))
});

static TRANSFER_SCHEMA: Schema = LazyLock::new(|| {
    SharedJson::new(json!({"type": "object", "properties": {
        "reason": {"type": "string", "description": "Why the caller needs a person."},
        "summary": {"type": "string", "description": "A short summary of the conversation for the attendant."}
    }}))
});

static SEND_DTMF_SCHEMA: Schema = LazyLock::new(|| {
    SharedJson::new(json!({"type": "object", "properties": {
        "digits": {"type": "string", "description": "Keys to press, e.g. \"1\" or \"123#\"; only 0-9 * # w.", "pattern": "^[0-9*#w]+$"}
    }, "required": ["digits"]}))
});

static APPOINTMENT_SCHEMA: Schema = LazyLock::new(|| {
    SharedJson::new(json!({"type": "object", "properties": {
        "name": {"type": "string", "description": "The caller's name."},
        "email": {"type": "string"},
        "preferred_day": {"type": "string", "description": "The day as the caller said it (amanhã, segunda-feira, 24/11) or YYYY-MM-DD."},
        "preferred_time": {"type": "string", "description": "The time, e.g. 15:00."},
        "phone": {"type": "string", "description": "A phone number, if different from the one calling."},
        "notes": {"type": "string"}
    }, "required": ["name", "preferred_day"]}))
});

/// Says goodbye and hangs up.
fn end_call(args: &Map<String, Value>) -> Result<ToolOutput, ToolError> {
    let reason = string_arg(args, "reason");
    Ok(
        ToolOutput::json(json!({"ok": true, "status": "the call ends after your goodbye"}))
            .with_effect(ToolEffect::EndCall { reason }),
    )
}

/// Hands the caller to a person (ConversationRelay `end` with `live-agent-handoff`).
fn transfer(args: &Map<String, Value>) -> Result<ToolOutput, ToolError> {
    let reason =
        string_arg(args, "reason").unwrap_or_else(|| "the caller asked for a person".into());
    let summary = string_arg(args, "summary");
    Ok(
        ToolOutput::json(json!({"ok": true, "status": "transferring the caller to a person"}))
            .with_effect(ToolEffect::Handoff { reason, summary }),
    )
}

/// The longest digit string one call may send.
const MAX_DIGITS: usize = 64;

/// Presses keys towards the far end (an IVR menu on an outbound call).
fn send_dtmf(args: &Map<String, Value>) -> Result<ToolOutput, ToolError> {
    let digits: String = string_arg(args, "digits")
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if digits.is_empty() {
        Err(ToolError::InvalidArguments("digits is required".into()))
    } else if let Some(bad) = digits
        .chars()
        .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'w'))
    {
        Err(ToolError::InvalidArguments(format!(
            "digits may only contain 0-9, *, # and w; got {bad:?}"
        )))
    } else if digits.len() > MAX_DIGITS {
        Err(ToolError::InvalidArguments(format!(
            "at most {MAX_DIGITS} digits at once"
        )))
    } else {
        Ok(ToolOutput::json(json!({"ok": true, "sent": digits}))
            .with_effect(ToolEffect::SendDigits(digits)))
    }
}

/// Moves speech and transcription to another configured language.
fn switch_language(args: &Map<String, Value>, codes: &[String]) -> Result<ToolOutput, ToolError> {
    let asked = string_arg(args, "language").unwrap_or_default();
    match codes.iter().find(|c| c.eq_ignore_ascii_case(&asked)) {
        Some(code) => Ok(ToolOutput::json(
            json!({"ok": true, "language": code, "status": format!("now speaking {code}; continue in that language")}),
        )
        .with_effect(ToolEffect::SwitchLanguage(code.clone()))),
        None => Err(ToolError::InvalidArguments(format!(
            "language must be one of {}; got {asked:?}",
            codes.join(", ")
        ))),
    }
}

/// Books an appointment for the caller.
fn schedule(args: &Map<String, Value>, today: Date) -> Result<ToolOutput, ToolError> {
    let Some(name) = string_arg(args, "name") else {
        return Err(ToolError::InvalidArguments(
            "name is missing; ask the caller for their name".into(),
        ));
    };
    let Some(day_text) = string_arg(args, "preferred_day") else {
        return Err(ToolError::InvalidArguments(
            "preferred_day is missing; ask the caller which day they prefer".into(),
        ));
    };
    let day = dates::parse_day(&day_text, today)
        .map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
    let time = string_arg(args, "preferred_time").map(|t| dates::parse_time(&t).unwrap_or(t));
    let email = string_arg(args, "email");
    if let Some(email) = &email
        && !(email.contains('@') && email.contains('.'))
    {
        return Err(ToolError::InvalidArguments(format!(
            "email {email:?} does not look like an e-mail address; ask the caller to spell it"
        )));
    }
    let appointment = Appointment {
        name: name.clone(),
        email,
        day: day.to_string(),
        time: time.clone(),
        phone: string_arg(args, "phone"),
        notes: string_arg(args, "notes"),
    };
    Ok(ToolOutput::json(json!({
        "ok": true,
        "booked": {
            "name": name,
            "day": day.to_string(),
            "day_spoken": day.spoken_pt(),
            "time": time,
        },
        "status": "booked; confirm the day and time to the caller"
    }))
    .with_effect(ToolEffect::Appointment(appointment)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn schedule_validates_and_normalises() {
        let today = Date::new(2025, 11, 24).unwrap();
        let out = schedule(
            &args(json!({"name": "Ana", "preferred_day": "amanhã", "preferred_time": "15h"})),
            today,
        )
        .unwrap();
        let Some(ToolEffect::Appointment(a)) = out.effect else {
            panic!("no appointment")
        };
        assert_eq!(a.day, "2025-11-25");
        assert_eq!(a.time.as_deref(), Some("15:00"));
        assert!(out.content.contains("terça-feira, 25 de novembro"));

        let missing = schedule(&args(json!({"preferred_day": "amanhã"})), today).unwrap_err();
        assert!(missing.to_string().contains("name is missing"));
        let bad = schedule(
            &args(json!({"name": "Ana", "preferred_day": "logo"})),
            today,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("could not understand the day"));
        let email = schedule(
            &args(json!({"name": "Ana", "preferred_day": "amanhã", "email": "ana"})),
            today,
        )
        .unwrap_err();
        assert!(email.to_string().contains("e-mail"));
    }
}
