//! The record side of one call, the same for every transport and pipeline: numbers
//! the transcript turns, reports them (whole or as they stand while a reply is
//! spoken), interruptions, tool runs and appointments to the [`CallObserver`], and
//! turns a tool's effect into what the call must do next ([`ToolFollowUp`]).
//!
//! The [`super::Agent`] keeps one; so do the pipelines that let a speech-to-speech
//! model hold the conversation (OpenAI Realtime, the ElevenLabs agent), and so can
//! any later bridge. May import `agent::event`, `tools` and `llm` types; no I/O.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::event::{
    AppointmentRecord, CallInfo, CallObserver, CallSummary, Handoff, Latency, NoObserver,
    REASON_END_CALL, REASON_LIVE_AGENT, Speaker, ToolCallRecord, TurnRecord,
};
use crate::llm::ToolCall;
use crate::tools::{ToolEffect, ToolRun};

/// What a tool run asks of the call beyond its record ([`CallLog::tool_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolFollowUp {
    /// End the call (hang up or hand it to a person) once the goodbye has played.
    End(Handoff),
    /// Speak and listen in this configured language from now on.
    SwitchLanguage(String),
    /// Press these keys towards the far end.
    SendDigits(String),
}

/// One call's transcript numbering and its reports to the observer. Before the
/// call is known ([`CallLog::started`] or [`CallLog::for_call`]) nothing is reported.
pub struct CallLog {
    call: Option<CallInfo>,
    observer: Arc<dyn CallObserver>,
    next_seq: u32,
    /// The newest agent turn recorded, which an interruption refers to.
    last_agent_seq: Option<u32>,
}

impl Default for CallLog {
    fn default() -> Self {
        Self::new(Arc::new(NoObserver))
    }
}

impl CallLog {
    /// A log for a call not known yet (the agent's, until `CallStarted`).
    pub fn new(observer: Arc<dyn CallObserver>) -> Self {
        Self {
            call: None,
            observer,
            next_seq: 0,
            last_agent_seq: None,
        }
    }

    /// A log for a call whose start someone else reports (a media pipeline: the
    /// session records `call_started` and `call_ended`).
    pub fn for_call(call: CallInfo, observer: Arc<dyn CallObserver>) -> Self {
        Self {
            call: Some(call),
            ..Self::new(observer)
        }
    }

    /// The call is connected: remembers it and reports it.
    pub fn started(&mut self, call: &CallInfo) {
        self.observer.call_started(call);
        self.call = Some(call.clone());
    }

    /// The call is over.
    pub fn ended(&self, summary: &CallSummary) {
        if let Some(call) = &self.call {
            self.observer.call_ended(&call.call_sid, summary);
        }
    }

    /// Who answered the call (`voicemail`, `screening`) and by which signal.
    pub fn answered_by(&self, what: &str, signal: &str) {
        if let Some(call) = &self.call {
            self.observer.answered_by(&call.call_sid, what, signal);
        }
    }

    pub fn call(&self) -> Option<&CallInfo> {
        self.call.as_ref()
    }

    /// The number the next turn will take.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Goes on numbering from `next_seq` (a resumed conversation).
    pub fn resume_at(&mut self, next_seq: u32) {
        self.next_seq = next_seq;
    }

    /// Takes the next turn number (for a reply recorded while it is spoken).
    pub fn reserve(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The newest agent turn recorded.
    pub fn last_agent_seq(&self) -> Option<u32> {
        self.last_agent_seq
    }

    /// Records a finished turn under the next number; returns that number.
    pub fn turn(
        &mut self,
        speaker: Speaker,
        text: &str,
        started_at: SystemTime,
        latency: Latency,
    ) -> u32 {
        let seq = self.reserve();
        self.record(seq, speaker, text, started_at, latency, false);
        seq
    }

    /// Records turn `seq` as it stands: `partial` while it is still being spoken
    /// (a later record of the same number completes it).
    pub fn record(
        &mut self,
        seq: u32,
        speaker: Speaker,
        text: &str,
        started_at: SystemTime,
        latency: Latency,
        partial: bool,
    ) {
        if speaker == Speaker::Agent {
            self.last_agent_seq = Some(seq);
        }
        if let Some(call) = &self.call {
            let record = TurnRecord::now(seq, speaker, text, started_at, latency, partial);
            self.observer.turn(&call.call_sid, &record);
        }
    }

    /// Agent turn `seq` was cut short; the caller heard `heard`.
    pub fn interrupted(&self, seq: u32, heard: &str) {
        if let Some(call) = &self.call {
            self.observer.turn_interrupted(&call.call_sid, seq, heard);
        }
    }

    /// Reports a tool call that did not run to completion (cancelled, refused).
    pub fn tool_call(
        &self,
        call: &ToolCall,
        result: &str,
        ok: bool,
        started_at: SystemTime,
        duration: Duration,
    ) {
        if let Some(info) = &self.call {
            self.observer.tool_call(
                &info.call_sid,
                &ToolCallRecord {
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                    result: result.to_string(),
                    ok,
                    started_at,
                    duration_ms: duration.as_millis() as u64,
                },
            );
        }
    }

    /// How this call ends, for `reason_code`: the call's SID and the caller's
    /// number go with it when known.
    pub fn handoff(
        &self,
        reason_code: &str,
        reason: Option<String>,
        summary: Option<String>,
    ) -> Handoff {
        let call = self.call.as_ref();
        Handoff {
            reason_code: reason_code.into(),
            reason,
            summary,
            call_sid: call.map(|c| c.call_sid.clone()).filter(|s| !s.is_empty()),
            from: call.map(|c| c.from.clone()).filter(|s| !s.is_empty()),
        }
    }

    /// Reports a tool run and its effect: an appointment is recorded here; the end
    /// of the call, a transfer, a language switch and keypad digits are returned
    /// for the caller of this method to carry out.
    pub fn tool_run(&self, run: &ToolRun) -> Option<ToolFollowUp> {
        self.tool_call(
            &run.call,
            &run.content(),
            run.result.is_ok(),
            run.started_at,
            run.duration,
        );
        let call = self.call.clone().unwrap_or_default();
        match run.effect()?.clone() {
            ToolEffect::EndCall { reason } => Some(ToolFollowUp::End(self.handoff(
                REASON_END_CALL,
                reason,
                None,
            ))),
            ToolEffect::Handoff { reason, summary } => Some(ToolFollowUp::End(self.handoff(
                REASON_LIVE_AGENT,
                Some(reason),
                summary,
            ))),
            ToolEffect::SwitchLanguage(code) => Some(ToolFollowUp::SwitchLanguage(code)),
            ToolEffect::SendDigits(digits) => Some(ToolFollowUp::SendDigits(digits)),
            ToolEffect::Appointment(a) => {
                tracing::info!(day = %a.day, "appointment booked");
                self.observer
                    .appointment(&call.call_sid, &AppointmentRecord::booked(a, &call.from));
                None
            }
        }
    }
}
