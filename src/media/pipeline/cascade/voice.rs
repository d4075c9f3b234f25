//! The voice of a cascade call: the ElevenLabs TTS socket, the turns it speaks,
//! its failures, and the language switches that swap in another voice or
//! transcriber ([`Replacement`]). Part of the call's `Task`; may import what
//! `cascade` imports.

use super::*;

/// A socket that is to replace one in use (a language switch): it connects in the
/// background while the old one carries on, and is swapped in when the call allows,
/// by `deadline` at the latest (or given up if it is not connected by then).
pub(super) struct Replacement<T> {
    connecting: Option<JoinHandle<Result<T, SpeechError>>>,
    ready: Option<T>,
    pub(super) deadline: Instant,
}

impl<T: Send + 'static> Replacement<T> {
    pub(super) fn connect(
        work: impl Future<Output = Result<T, SpeechError>> + Send + 'static,
        wait: Duration,
    ) -> Self {
        Self {
            connecting: Some(tokio::spawn(work.in_current_span())),
            ready: None,
            deadline: Instant::now() + wait,
        }
    }

    /// Records the end of the connection attempt; `false` when it failed.
    pub(super) fn connected(&mut self, result: Result<T, String>, what: &str) -> bool {
        self.connecting = None;
        match result {
            Ok(socket) => {
                self.ready = Some(socket);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} for the new language could not be connected; keeping the current one");
                false
            }
        }
    }
}

impl<T> Drop for Replacement<T> {
    fn drop(&mut self) {
        if let Some(connecting) = self.connecting.take() {
            connecting.abort();
        }
    }
}

/// Resolves when the replacement's connection attempt ends; pending without one.
/// Cancel-safe.
pub(super) async fn replacement_connected<T>(
    replacement: Option<&mut Replacement<T>>,
) -> Result<T, String> {
    match replacement.and_then(|r| r.connecting.as_mut()) {
        Some(connecting) => match connecting.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the connecting task failed: {e}")),
        },
        None => std::future::pending().await,
    }
}

/// The ElevenLabs voice the agent file gives `language`, unless that voice belongs
/// to another TTS provider (ConversationRelay languages may use Google or Amazon).
pub(super) fn elevenlabs_voice(language: &LanguageConfig) -> Option<String> {
    let elevenlabs = language
        .tts_provider
        .as_deref()
        .is_none_or(|p| p.eq_ignore_ascii_case("elevenlabs"));
    language
        .voice
        .clone()
        .filter(|v| elevenlabs && !crate::speech::elevenlabs_tts::voice_id(v).is_empty())
}

impl Task {
    pub(super) async fn on_tts(&mut self, event: Result<TtsEvent, SpeechError>) {
        match event {
            Err(e) => self.tts_failed(e).await,
            Ok(TtsEvent::Audio {
                turn,
                audio,
                alignment,
            }) => {
                let turn = self.turn_number(turn);
                let mulaw = match BASE64.decode(audio.as_bytes()) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping TTS audio that is not base64");
                        return;
                    }
                };
                if mulaw.is_empty() {
                    return;
                }
                self.spoken.audio(turn, mulaw.len() as u64, alignment);
                self.push_audio(turn, mulaw);
            }
            Ok(TtsEvent::TurnDone { turn }) => {
                let turn = self.turn_number(turn);
                self.spoken.generated(turn);
                self.generating.remove(&turn);
                if self.spoken.audio_of(turn) == 0 {
                    // Nothing to play: never reported as played out.
                    self.unplayed.remove(&turn);
                }
                self.outbox.push_back(PipelineOutput::TurnDone { turn });
            }
            Ok(TtsEvent::Error { message }) => {
                self.errors += 1;
                tracing::debug!(message = %message, "TTS error message");
            }
        }
    }

    /// Moves the TTS and the transcriber to `code` (see the module docs).
    pub(super) async fn switch_language(&mut self, code: String) {
        if code.eq_ignore_ascii_case(&self.language) {
            tracing::debug!(language = %code, "already speaking this language");
            return;
        }
        let configured = self
            .config
            .relay
            .languages
            .iter()
            .find(|l| l.code.eq_ignore_ascii_case(&code));
        let voice = configured
            .and_then(elevenlabs_voice)
            .unwrap_or_else(|| self.base_tts.voice_id.clone());
        let options = self.base_tts.with_voice_and_language(&voice, &code);
        tracing::info!(
            language = %code,
            from = %self.language,
            voice = %options.voice_id,
            "switching language"
        );
        self.language = code;
        // A switch still under way is superseded.
        self.voice_switch = None;
        if !options.same_socket(&self.tts_options) {
            // What was said so far stays in the old voice.
            self.end_turn().await;
            let connect = options.clone();
            let replacement = Replacement::connect(
                async move { ElevenLabsTts::connect(&connect).await },
                TTS_SWITCH_WAIT,
            );
            self.voice_switch = Some((replacement, options));
        }
        self.stt_switch = None;
        if let Some(stt) = self.stt.as_mut() {
            match stt.set_language(&self.language).await {
                Ok(true) => tracing::debug!("the transcriber listens in the new language"),
                Ok(false) => {
                    let config = self.config.clone();
                    let language = self.language.clone();
                    self.stt_switch = Some(Replacement::connect(
                        async move { Stt::connect(&config, &language).await },
                        STT_SWITCH_WAIT,
                    ));
                }
                // A broken socket shows up on the read side.
                Err(e) => {
                    tracing::warn!(error = %e, "could not tell the transcriber the new language")
                }
            }
        }
    }

    /// Swaps in the sockets of a language switch once the call allows: the voice
    /// when the old socket has generated everything it owes, the transcriber between
    /// the caller's utterances; either at its deadline at the latest.
    pub(super) fn check_switches(&mut self) {
        let now = Instant::now();
        let voice_due = self.voice_switch.as_ref().is_some_and(|(r, _)| {
            (r.ready.is_some() && (self.generating.is_empty() || self.tts.is_none()))
                || now >= r.deadline
        });
        if voice_due && let Some((mut replacement, options)) = self.voice_switch.take() {
            match replacement.ready.take() {
                Some(tts) => self.swap_tts(tts, options),
                None => tracing::warn!(
                    "the new language's voice did not connect in time; keeping the current voice"
                ),
            }
        }
        let stt_due = self
            .stt_switch
            .as_ref()
            .is_some_and(|r| (r.ready.is_some() && !self.caller_talking) || now >= r.deadline);
        if stt_due && let Some(mut replacement) = self.stt_switch.take() {
            match replacement.ready.take() {
                Some(stt) => {
                    tracing::info!(language = %self.language, "the transcriber now listens in the new language");
                    self.caller_talking = false;
                    if let Some(old) = self.stt.replace(stt) {
                        tokio::spawn(old.close().in_current_span());
                    }
                }
                None => tracing::warn!(
                    "the new language's transcriber did not connect in time; keeping the current one"
                ),
            }
        }
    }

    /// The new voice's socket takes over; the old one is closed.
    pub(super) fn swap_tts(&mut self, tts: ElevenLabsTts, options: TtsOptions) {
        // Turns the old socket did not finish in time end here.
        for turn in std::mem::take(&mut self.generating) {
            self.spoken.generated(turn);
            self.outbox.push_back(PipelineOutput::TurnDone { turn });
        }
        self.agent_turn = None;
        if let Some(old) = self.tts.replace(tts) {
            tokio::spawn(old.close().in_current_span());
        }
        self.tts_generation += 1;
        self.tts_options = options;
        tracing::info!(voice = %self.tts_options.voice_id, "speaking with the new language's voice");
    }

    /// Queues agent audio for the session (dropped past [`MAX_HELD_AUDIO`]).
    pub(super) fn push_audio(&mut self, turn: u64, mulaw: Vec<u8>) {
        if self.held_audio + mulaw.len() > MAX_HELD_AUDIO {
            tracing::warn!("the session does not take the agent's audio; dropping some");
            return;
        }
        self.held_audio += mulaw.len();
        self.outbox.push_back(PipelineOutput::Audio { turn, mulaw });
    }

    /// The session's number for a TTS turn (unique across TTS reconnections).
    pub(super) fn turn_number(&self, turn: TurnId) -> u64 {
        (self.tts_generation << 32) | turn.0
    }

    pub(super) async fn begin_turn(&mut self) -> Option<u64> {
        let tts = self.tts.as_mut()?;
        match tts.begin_turn().await {
            Ok(turn) => {
                let turn = self.turn_number(turn);
                self.unplayed.insert(turn);
                self.generating.insert(turn);
                self.newest_turn = Some(turn);
                Some(turn)
            }
            Err(e) => {
                self.tts_failed(e).await;
                None
            }
        }
    }

    pub(super) async fn say(&mut self, turn: u64, text: &str) {
        let Some(tts) = self.tts.as_mut() else {
            return;
        };
        self.spoken.text_sent(turn, text);
        if let Err(e) = tts.push_text(text).await {
            self.tts_failed(e).await;
        }
    }

    pub(super) async fn end_turn(&mut self) {
        self.agent_turn = None;
        let Some(tts) = self.tts.as_mut() else {
            return;
        };
        if let Err(e) = tts.end_turn().await {
            self.tts_failed(e).await;
        }
    }

    /// The TTS broke: reconnect once to apologise, then end the call.
    pub(super) fn tts_failed(&mut self, error: SpeechError) -> BoxFuture<'_, ()> {
        async move {
            self.errors += 1;
            self.metrics.llm_error("upstream");
            tracing::warn!(error = %error, "the TTS failed; ending the call");
            self.tts = None;
            // A language switch under way: the apology uses its settings.
            if let Some((_, options)) = self.voice_switch.take() {
                self.tts_options = options;
            }
            self.agent_turn = None;
            self.generating.clear();
            if self.done {
                return;
            }
            if !self.tts_reconnected {
                self.tts_reconnected = true;
                match ElevenLabsTts::connect(&self.tts_options).await {
                    Ok(tts) => {
                        self.tts_generation += 1;
                        self.tts = Some(tts);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the TTS could not be reconnected to apologise");
                    }
                }
            }
            self.fail("the TTS failed").await;
        }
        .boxed()
    }
}
