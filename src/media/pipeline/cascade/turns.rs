//! Turn-taking and barge-in of a cascade call: caller audio and events from the
//! session, transcripts from the transcriber, the agent's outputs, and the
//! `clear` → interrupt exchange when the caller talks over the agent (see the
//! module docs of `cascade`). Part of the call's `Task`; may import what
//! `cascade` imports.

use super::*;

impl Task {
    pub(super) fn caller_audio(&mut self, payload: Base64Str<'_>) {
        let Some(stt) = &self.stt else {
            return;
        };
        match stt.send_audio(payload) {
            Ok(()) => {}
            Err(SpeechError::QueueFull { .. }) => {
                self.dropped_frames += 1;
                if self.dropped_frames.is_power_of_two() {
                    tracing::warn!(
                        dropped = self.dropped_frames,
                        "the transcriber lags; caller frames dropped"
                    );
                }
            }
            // A broken socket shows up on the read side.
            Err(_) => {}
        }
    }

    pub(super) async fn on_call_event(&mut self, event: CallEvent) {
        match event {
            CallEvent::Dtmf(digit) => {
                if !self.done && self.ending.is_none() {
                    self.agent.handle(AgentInput::Digit(digit));
                }
            }
            CallEvent::Played { turn, played } => self.last_played = Some((turn, played)),
            CallEvent::PlayedOut { turn } => {
                self.unplayed.remove(&turn);
            }
            CallEvent::Cleared { turn, played } => {
                if self.clearing.is_some() {
                    self.finish_clear(Some((turn, played)));
                }
            }
            // The agent keeps the count: still there?, then goodbye and end.
            CallEvent::Silence { .. } => {
                if !self.done && self.ending.is_none() && !self.caller_talking {
                    self.agent.handle(AgentInput::Silence);
                }
            }
            CallEvent::Voicemail => self.voicemail().await,
        }
    }

    /// Twilio's detection heard a voicemail: what is being said stops (TTS and
    /// Twilio's buffer), and the agent leaves its message and ends.
    async fn voicemail(&mut self) {
        if self.done || self.ending.is_some() {
            return;
        }
        // The session answers the clear with `Cleared`, which nothing waits for here.
        if self.agent_speaking() && !self.silence_agent().await {
            return;
        }
        self.agent.handle(AgentInput::Voicemail { signal: "amd" });
    }

    /// Whether the caller talking now would talk over the agent.
    pub(super) fn agent_speaking(&self) -> bool {
        self.agent.is_replying() || self.agent_turn.is_some() || !self.unplayed.is_empty()
    }

    pub(super) async fn on_heard(&mut self, heard: Result<Heard, SpeechError>) {
        match heard {
            Err(e) => {
                self.errors += 1;
                self.metrics.llm_error("upstream");
                tracing::warn!(error = %e, "the transcriber failed; apologising and ending the call");
                self.stt_switch = None;
                if let Some(stt) = self.stt.take() {
                    stt.close().await;
                }
                self.fail("the transcriber failed").await;
            }
            Ok(Heard::SpeechStarted) => {
                self.caller_talking = true;
                self.outbox.push_back(PipelineOutput::CallerActive);
                if self.agent_speaking() {
                    self.barge_in("speech started").await;
                }
            }
            Ok(Heard::Partial(text)) => {
                if !stt::has_words(&text) {
                    return;
                }
                self.caller_talking = true;
                self.outbox.push_back(PipelineOutput::CallerActive);
                if self.agent_speaking() {
                    self.barge_in("partial transcript").await;
                }
            }
            Ok(Heard::Final(text)) => {
                self.caller_talking = false;
                self.outbox.push_back(PipelineOutput::CallerActive);
                let text = text.trim().to_string();
                if text.is_empty() {
                    return;
                }
                tracing::debug!(chars = text.len(), "caller spoke");
                if self.clearing.is_none() && self.agent_speaking() {
                    self.barge_in("final transcript").await;
                }
                if self.done || self.ending.is_some() {
                    // The barge-in found the TTS broken: the call is ending.
                    return;
                }
                if self.clearing.is_some() {
                    if self.after_clear.len() < 8 {
                        self.after_clear.push(text);
                    }
                } else {
                    self.agent.handle(AgentInput::UserText { text, lang: None });
                }
            }
            Ok(Heard::Nothing) => {}
        }
    }

    /// The caller talks over the agent: stop the TTS, clear Twilio, and wait for the
    /// session to say how much was heard.
    pub(super) async fn barge_in(&mut self, why: &'static str) {
        if self.clearing.is_some() {
            return;
        }
        tracing::info!(trigger = why, "caller barged in");
        if self.silence_agent().await {
            self.clearing = Some(Instant::now() + CLEAR_WAIT);
        }
    }

    /// Stops the agent's voice: the TTS context is cancelled, audio not yet handed
    /// to the session is dropped, and the session is told to `clear` Twilio.
    /// False when the TTS failed (its failure path has taken over).
    async fn silence_agent(&mut self) -> bool {
        if let Some(tts) = &mut self.tts
            && let Err(e) = tts.cancel().await
        {
            self.tts_failed(e).await;
            return false;
        }
        self.agent_turn = None;
        self.generating.clear();
        self.outbox.retain(|o| {
            !matches!(
                o,
                PipelineOutput::Audio { .. } | PipelineOutput::TurnDone { .. }
            )
        });
        self.held_audio = 0;
        self.outbox.push_back(PipelineOutput::Clear);
        true
    }

    /// The session cleared Twilio (or did not answer in time): tell the agent what
    /// the caller heard of the newest turn.
    pub(super) fn finish_clear(&mut self, answer: Option<(Option<u64>, Duration)>) {
        self.clearing = None;
        let heard = match self.newest_turn {
            None => String::new(),
            Some(newest) => {
                let played = match answer {
                    Some((Some(turn), played)) if turn == newest => Some(played),
                    Some(_) => None,
                    None => self
                        .last_played
                        .filter(|(turn, _)| *turn == newest)
                        .map(|(_, played)| played),
                };
                match played {
                    Some(played) => self.spoken.heard(newest, played.as_millis() as u64),
                    // Heard in full already, or not started.
                    None if !self.unplayed.contains(&newest) => {
                        self.spoken.heard(newest, u64::MAX / 16)
                    }
                    None => String::new(),
                }
            }
        };
        tracing::info!(heard_chars = heard.len(), "interrupting the agent");
        self.unplayed.clear();
        self.agent.handle(AgentInput::Interrupt { heard });
        for text in std::mem::take(&mut self.after_clear) {
            self.agent.handle(AgentInput::UserText { text, lang: None });
        }
    }

    pub(super) async fn on_agent(&mut self, output: AgentOutput) {
        match output {
            AgentOutput::Token(text) => {
                let turn = match self.agent_turn {
                    Some(turn) => Some(turn),
                    None => self.begin_turn().await,
                };
                if let Some(turn) = turn {
                    self.agent_turn = Some(turn);
                    self.say(turn, &text).await;
                }
            }
            AgentOutput::TurnEnd => self.end_turn().await,
            AgentOutput::End(handoff) => {
                tracing::info!(reason_code = %handoff.reason_code, "the agent ends the call");
                self.end_turn().await;
                self.ending = Some(Ending {
                    output: PipelineOutput::End(*handoff),
                    deadline: Instant::now() + END_WAIT,
                });
            }
            AgentOutput::SendDigits(digits) => {
                let tones = dtmf::tones(&digits);
                tracing::info!(digits = digits.len(), "pressing keys as tones");
                if !tones.is_empty() {
                    self.tones += 1;
                    let turn = TONE_TURNS + self.tones;
                    self.push_audio(turn, tones);
                    self.outbox.push_back(PipelineOutput::TurnDone { turn });
                }
            }
            AgentOutput::SwitchLanguage(code) => self.switch_language(code).await,
        }
    }
}
