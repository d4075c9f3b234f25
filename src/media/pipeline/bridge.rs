//! What the two bridging pipelines ([`super::openai_realtime`], [`super::elevenlabs_agent`])
//! share about their upstream: a bounded queue of control messages waiting to be
//! sent, and the upstream's death — it is marked once, the queue is dropped, and the
//! apology is synthesised elsewhere (ElevenLabs TTS, [`super::apology_audio`]) since
//! the upstream's own voice is gone.
//!
//! The pipelines keep their own clients and counters and send each message in
//! their own protocol: [`Upstream::next_to_send`], then [`Upstream::sent`]. What
//! they have to say to the session waits in [`Outputs`], which also numbers their
//! turns.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{PipelineOutput, apology_audio};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::speech::SpeechError;

/// What a bridging pipeline has to say to the session, in order, and its turn
/// numbers. Once `End` or `Failed` has been taken, nothing more is said.
pub struct Outputs {
    queue: VecDeque<PipelineOutput>,
    finished: bool,
    next_turn: u64,
}

impl Default for Outputs {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            finished: false,
            next_turn: 1,
        }
    }
}

impl Outputs {
    pub fn push(&mut self, output: PipelineOutput) {
        self.queue.push_back(output);
    }

    /// A new turn number.
    pub fn new_turn(&mut self) -> u64 {
        let turn = self.next_turn;
        self.next_turn += 1;
        turn
    }

    /// Whether `End` or `Failed` has been taken.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The oldest output waiting, if any; pending forever once the pipeline has
    /// finished (a pipeline with nothing left to say stays quiet).
    pub async fn next_queued(&mut self) -> Option<PipelineOutput> {
        if let Some(output) = self.queue.pop_front() {
            if matches!(output, PipelineOutput::End(_) | PipelineOutput::Failed(_)) {
                self.finished = true;
            }
            return Some(output);
        }
        if self.finished {
            std::future::pending::<()>().await;
        }
        None
    }
}

/// Control messages waiting to go upstream, at most.
const MAX_SENDS: usize = 64;

/// A bridged upstream's send queue and liveness.
pub struct Upstream<M> {
    /// For logs: "OpenAI Realtime", "the ElevenLabs agent".
    name: &'static str,
    sends: VecDeque<M>,
    dead: bool,
    apology: Option<JoinHandle<Option<Vec<u8>>>>,
    /// What its death needs: the configuration (for the TTS), the words of the
    /// apology, and the metrics that count it.
    fallback: Option<(Arc<Config>, String, Arc<Metrics>)>,
}

impl<M> Upstream<M> {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            sends: VecDeque::new(),
            dead: false,
            apology: None,
            fallback: None,
        }
    }

    /// When it dies, `apology` is synthesised through ElevenLabs TTS (as
    /// `config` sets it up) and the death is counted in `metrics`.
    pub fn apologising(
        mut self,
        config: Arc<Config>,
        apology: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        self.fallback = Some((config, apology.to_string(), metrics));
        self
    }

    /// Queues a control message; drops it (logged) when the queue is full.
    pub fn queue(&mut self, message: M) {
        if self.dead {
            return;
        }
        if self.sends.len() >= MAX_SENDS {
            tracing::warn!(
                upstream = self.name,
                "control queue full; dropping a message"
            );
            return;
        }
        self.sends.push_back(message);
    }

    /// The upstream failed: nothing more is sent or read.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The next message to send: the oldest queued while the upstream is alive. It
    /// leaves the queue through [`Self::sent`], once handed to the socket, so a
    /// flush cancelled mid-send loses nothing.
    pub fn next_to_send(&self) -> Option<&M> {
        if self.dead {
            return None;
        }
        self.sends.front()
    }

    /// How sending [`Self::next_to_send`] went. Sent, or refused without breaking
    /// the connection (logged): it leaves the queue. A fatal error is returned, for
    /// [`Self::failed`].
    pub fn sent(&mut self, result: Result<(), SpeechError>) -> Result<(), SpeechError> {
        match result {
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, upstream = self.name, "dropping a message to the upstream")
            }
            Ok(()) => {}
        }
        self.sends.pop_front();
        Ok(())
    }

    /// Marks the upstream dead (once: `false` when it already was), drops what was
    /// queued, counts it and starts synthesising the apology.
    pub fn failed(&mut self, error: &SpeechError) -> bool {
        if self.dead {
            return false;
        }
        tracing::warn!(error = %error, upstream = self.name, "the upstream is gone mid-call");
        self.dead = true;
        self.sends.clear();
        if let Some((config, apology, metrics)) = &self.fallback {
            metrics.llm_error("upstream");
            self.apology = Some(tokio::spawn(apology_audio(config.clone(), apology.clone())));
        }
        true
    }

    /// What a call whose upstream died says last: the apology as a turn of its own
    /// (when it could be synthesised), then [`PipelineOutput::Failed`]. Cancel-safe: the
    /// synthesis is kept until it has been awaited to the end.
    pub async fn say_last(&mut self, outputs: &mut Outputs) {
        if let Some(handle) = self.apology.as_mut() {
            let audio = handle.await.ok().flatten();
            self.apology = None;
            if let Some(mulaw) = audio {
                let turn = outputs.new_turn();
                outputs.push(PipelineOutput::Audio { turn, mulaw });
                outputs.push(PipelineOutput::TurnDone { turn });
            }
        }
        outputs.push(PipelineOutput::Failed(format!("{} is gone", self.name)));
    }

    /// The call is over: an apology still being synthesised is abandoned.
    pub fn abandon(&mut self) {
        if let Some(handle) = self.apology.take() {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends like a pipeline's flush, with `send` as the socket.
    fn flush(
        upstream: &mut Upstream<i32>,
        mut send: impl FnMut(i32) -> Result<(), SpeechError>,
    ) -> Result<(), SpeechError> {
        while let Some(n) = upstream.next_to_send() {
            let result = send(*n);
            upstream.sent(result)?;
        }
        Ok(())
    }

    use crate::speech::Service;

    fn fatal() -> SpeechError {
        SpeechError::Gone {
            service: Service::OpenAiRealtime,
        }
    }

    #[tokio::test]
    async fn a_flush_sends_in_order_and_stops_at_a_fatal_error() {
        let mut upstream = Upstream::new("test");
        for n in 0..3 {
            upstream.queue(n);
        }
        let mut sent = Vec::new();
        let result = flush(&mut upstream, |n| match n {
            // Refused without breaking the connection: dropped.
            0 => Err(SpeechError::QueueFull {
                service: Service::OpenAiRealtime,
            }),
            2 => Err(fatal()),
            _ => {
                sent.push(n);
                Ok(())
            }
        });
        assert!(result.is_err());
        assert_eq!(sent, [1]);
        // The message that met the fatal error is still queued (cancel-safe order).
        let mut rest = Vec::new();
        flush(&mut upstream, |n| {
            rest.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(rest, [2]);
    }

    #[tokio::test]
    async fn a_dead_upstream_sends_nothing_and_dies_once() {
        let config = Arc::new(Config::from_vars(Default::default()).unwrap());
        let metrics = Arc::new(Metrics::default());
        let mut upstream = Upstream::new("test").apologising(config, "sorry", metrics.clone());
        upstream.queue(1);
        assert!(upstream.failed(&fatal()));
        assert!(!upstream.failed(&fatal()));
        assert_eq!(metrics.llm_errors("upstream"), 1, "counted once");
        assert!(upstream.is_dead());
        upstream.queue(2); // Not kept: nothing goes to a dead upstream.
        assert!(upstream.sends.is_empty());
        let mut sent = 0;
        flush(&mut upstream, |_| {
            sent += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(sent, 0);
        // No ElevenLabs key in this configuration: no apology audio, only the end.
        let mut outputs = Outputs::default();
        upstream.say_last(&mut outputs).await;
        let last = outputs.next_queued().await;
        assert!(
            matches!(&last, Some(PipelineOutput::Failed(why)) if why == "test is gone"),
            "{last:?}"
        );
        assert!(outputs.is_finished());
        assert_eq!(outputs.queue.len(), 0);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut upstream = Upstream::new("test");
        for n in 0..MAX_SENDS + 10 {
            upstream.queue(n);
        }
        assert_eq!(upstream.sends.len(), MAX_SENDS);
    }
}
