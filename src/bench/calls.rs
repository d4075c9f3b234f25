//! The benchmark's simulated Twilio calls: ConversationRelay clients on loopback
//! that measure what a caller would notice (first token, silence after barge-in)
//! and how much work the server gets through.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fake_llm::{LONG_MARKER, now_ns, stamped_ns};
use crate::relay::protocol::Outbound;
use crate::sim::peer::{Received, RelayPeer, inbound_setup};

type Ws = RelayPeer;

/// Longest wait for any one message before the call counts an error.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Silence that counts as "the reply stopped" after an interrupt.
const QUIET: Duration = Duration::from_millis(150);
/// Tokens of the long reply the caller hears before barging in.
const HEARD_TOKENS: usize = 5;
/// Turns per call before a saturating caller hangs up and calls again (keeps the
/// history, and so the request size, like a real call's).
const TURNS_PER_SATURATING_CALL: usize = 20;

/// How each call of the conversation phase behaves.
#[derive(Debug, Clone)]
pub struct LatencyPlan {
    pub turns: usize,
    /// Mean pause before each turn (uniformly 0.5x to 1.5x).
    pub think: Duration,
    /// This turn asks for a long reply and interrupts it.
    pub interrupt_turn: Option<usize>,
    /// Calls connect spread over this time.
    pub connect_spread: Duration,
}

impl LatencyPlan {
    /// Two quick turns, for warming up.
    pub fn quick() -> Self {
        Self {
            turns: 2,
            think: Duration::from_millis(10),
            interrupt_turn: Some(1),
            connect_spread: Duration::ZERO,
        }
    }
}

/// What the conversation phase measured.
#[derive(Debug, Default)]
pub struct Samples {
    /// LLM wrote the first token → the caller received it.
    pub added: Vec<Duration>,
    /// Prompt sent → first token received.
    pub ttft: Vec<Duration>,
    pub interrupt_to_silence: Vec<Duration>,
    pub tokens_after_interrupt: u64,
    pub errors: u64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.added.extend(other.added);
        self.ttft.extend(other.ttft);
        self.interrupt_to_silence.extend(other.interrupt_to_silence);
        self.tokens_after_interrupt += other.tokens_after_interrupt;
        self.errors += other.errors;
    }
}

/// What the saturation phase measured.
#[derive(Debug, Default)]
pub struct Saturated {
    /// Turns completed inside the measuring window.
    pub turns: u64,
    /// Turns completed in the whole phase (for CPU per turn).
    pub turns_total: u64,
    pub window: Duration,
    pub added: Vec<Duration>,
    pub errors: u64,
}

#[derive(Debug)]
enum Heard {
    Token(String),
    Last,
}

#[derive(Debug, thiserror::Error)]
enum CallFailure {
    #[error("connect: {0}")]
    Connect(String),
    #[error("socket: {0}")]
    Socket(String),
    #[error("no message within {0:?}")]
    Timeout(Duration),
    #[error("closed by the server")]
    Closed,
}

/// Calls this process has started: every call gets a SID of its own, as Twilio
/// gives, across phases and runs (a SID seen before is a resumed call to a server).
static CALLS_STARTED: AtomicU64 = AtomicU64::new(0);

async fn connect(url: &str) -> Result<Ws, CallFailure> {
    let mut peer = RelayPeer::connect(url)
        .await
        .map_err(|e| CallFailure::Connect(e.to_string()))?;
    let id = CALLS_STARTED.fetch_add(1, Ordering::Relaxed);
    let setup = inbound_setup(
        &format!("CAbench{id:026}"),
        &format!("VXbench{id:026}"),
        "+5511999990000",
        "+5511333330000",
        HashMap::new(),
    );
    peer.setup(setup)
        .await
        .map_err(|e| CallFailure::Socket(e.to_string()))?;
    Ok(peer)
}

async fn prompt(ws: &mut Ws, text: &str) -> Result<(), CallFailure> {
    ws.prompt(text, Some("pt-BR"))
        .await
        .map_err(|e| CallFailure::Socket(e.to_string()))
}

/// The next `text` message, or `None` after `wait` of silence.
async fn next_text(ws: &mut Ws, wait: Duration) -> Result<Option<Heard>, CallFailure> {
    let deadline = Instant::now() + wait;
    loop {
        let Ok(received) = tokio::time::timeout_at(deadline, ws.next()).await else {
            return Ok(None);
        };
        match received {
            Received::Closed(_) => return Err(CallFailure::Closed),
            Received::Message(Outbound::Text { last: true, .. }) => return Ok(Some(Heard::Last)),
            Received::Message(Outbound::Text { token, .. }) => {
                return Ok(Some(Heard::Token(token)));
            }
            Received::Message(_) | Received::Unreadable(_) => continue,
        }
    }
}

async fn must_text(ws: &mut Ws) -> Result<Heard, CallFailure> {
    next_text(ws, READ_TIMEOUT)
        .await?
        .ok_or(CallFailure::Timeout(READ_TIMEOUT))
}

/// One ordinary turn: the whole reply. Returns (server-added, time to first token).
async fn turn(
    ws: &mut Ws,
    text: &str,
) -> Result<(Option<Duration>, Option<Duration>), CallFailure> {
    prompt(ws, text).await?;
    let sent = Instant::now();
    let mut added = None;
    let mut ttft = None;
    loop {
        match must_text(ws).await? {
            Heard::Token(token) => {
                if ttft.is_none() {
                    let received = now_ns();
                    ttft = Some(sent.elapsed());
                    added = stamped_ns(&token)
                        .map(|at| Duration::from_nanos(received.saturating_sub(at)));
                }
            }
            Heard::Last => return Ok((added, ttft)),
        }
    }
}

/// A long reply interrupted after a few tokens. Returns (server-added,
/// interrupt-to-silence, tokens that arrived after the interrupt).
async fn interrupted_turn(
    ws: &mut Ws,
    text: &str,
) -> Result<(Option<Duration>, Duration, u64), CallFailure> {
    prompt(ws, text).await?;
    let mut heard = String::new();
    let mut added = None;
    for i in 0..HEARD_TOKENS {
        match must_text(ws).await? {
            Heard::Token(token) => {
                if i == 0 {
                    let received = now_ns();
                    added = stamped_ns(&token)
                        .map(|at| Duration::from_nanos(received.saturating_sub(at)));
                }
                heard.push_str(&token);
            }
            // The reply was shorter than expected: nothing to interrupt.
            Heard::Last => return Ok((added, Duration::ZERO, 0)),
        }
    }
    ws.interrupt(&heard, Duration::from_millis(300))
        .await
        .map_err(|e| CallFailure::Socket(e.to_string()))?;
    let interrupted_at = Instant::now();
    let mut last_heard = interrupted_at;
    let mut after = 0u64;
    while let Some(_late) = next_text(ws, QUIET).await? {
        after += 1;
        last_heard = Instant::now();
    }
    Ok((added, last_heard - interrupted_at, after))
}

/// A small deterministic generator, so every run paces its calls the same way.
struct Rng(u64);
impl Rng {
    fn new(seed: usize) -> Self {
        Self((seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// N calls talking at a conversational pace. When every call has finished its
/// turns (and is still connected), `all_live` runs; then they all hang up.
pub async fn conversation<F: FnMut(())>(
    url: &str,
    n: usize,
    plan: &LatencyPlan,
    mut all_live: F,
) -> Samples {
    let done = Arc::new(Barrier::new(n + 1));
    let hang_up = CancellationToken::new();
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n {
        let url = url.to_string();
        let plan = plan.clone();
        let done = done.clone();
        let hang_up = hang_up.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut rng = Rng::new(id + 1);
            if !plan.connect_spread.is_zero() {
                tokio::time::sleep(plan.connect_spread.mul_f64(id as f64 / n.max(1) as f64)).await;
            }
            let ws = match connect(&url).await {
                Ok(ws) => Some(ws),
                Err(e) => {
                    tracing::warn!(call = id, error = %e, "bench call failed");
                    samples.errors += 1;
                    None
                }
            };
            let mut ws = ws;
            if let Some(socket) = ws.as_mut() {
                for t in 0..plan.turns {
                    let factor = if t == 0 { rng.next() } else { 0.5 + rng.next() };
                    tokio::time::sleep(plan.think.mul_f64(factor)).await;
                    let result = if plan.interrupt_turn == Some(t) {
                        let text = format!(
                            "Cliente {id}, turno {t}: me conte tudo sobre os planos {LONG_MARKER}"
                        );
                        interrupted_turn(socket, &text)
                            .await
                            .map(|(added, silence, after)| {
                                samples.added.extend(added);
                                samples.interrupt_to_silence.push(silence);
                                samples.tokens_after_interrupt += after;
                            })
                    } else {
                        let text =
                            format!("Cliente {id}, turno {t}: qual é o horário de atendimento?");
                        turn(socket, &text).await.map(|(added, ttft)| {
                            samples.added.extend(added);
                            samples.ttft.extend(ttft);
                        })
                    };
                    if let Err(e) = result {
                        tracing::warn!(call = id, error = %e, "bench call failed");
                        samples.errors += 1;
                        break;
                    }
                }
            }
            done.wait().await;
            hang_up.cancelled().await;
            if let Some(mut socket) = ws {
                socket.hang_up(Duration::ZERO).await;
            }
            samples
        }));
    }
    done.wait().await;
    all_live(());
    hang_up.cancel();
    let mut all = Samples::default();
    for task in tasks {
        match task.await {
            Ok(samples) => all.merge(samples),
            Err(_) => all.errors += 1,
        }
    }
    all
}

/// N calls replying back to back for `duration` (after a one-second warm-up).
pub async fn saturate(url: &str, n: usize, duration: Duration) -> Saturated {
    let warm_up = Duration::from_secs(1);
    let start = Instant::now();
    let window_start = start + warm_up;
    let end = window_start + duration;
    let turns = Arc::new(AtomicU64::new(0));
    let turns_total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n {
        let url = url.to_string();
        let turns = turns.clone();
        let turns_total = turns_total.clone();
        tasks.push(tokio::spawn(async move {
            let mut added = Vec::new();
            let mut errors = 0u64;
            'calls: while Instant::now() < end {
                let mut ws = match connect(&url).await {
                    Ok(ws) => ws,
                    Err(_) => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                for t in 0..TURNS_PER_SATURATING_CALL {
                    let text = format!("Cliente {id}, turno {t}: qual é o horário de atendimento?");
                    match turn(&mut ws, &text).await {
                        Ok((sample, _)) => {
                            let now = Instant::now();
                            turns_total.fetch_add(1, Ordering::Relaxed);
                            if now >= window_start && now < end {
                                turns.fetch_add(1, Ordering::Relaxed);
                                added.extend(sample);
                            }
                            if now >= end {
                                ws.hang_up(Duration::ZERO).await;
                                break 'calls;
                            }
                        }
                        Err(_) => {
                            errors += 1;
                            continue 'calls;
                        }
                    }
                }
                ws.hang_up(Duration::ZERO).await;
            }
            (added, errors)
        }));
    }
    let mut result = Saturated {
        window: duration,
        ..Saturated::default()
    };
    for task in tasks {
        match task.await {
            Ok((added, errors)) => {
                result.added.extend(added);
                result.errors += errors;
            }
            Err(_) => result.errors += 1,
        }
    }
    result.turns = turns.load(Ordering::Relaxed);
    result.turns_total = turns_total.load(Ordering::Relaxed);
    result
}
