//! voxrelay: puts AI agents on phone calls through Twilio.
//!
//! Module map. Each module may import only the modules listed after it;
//! `.ci/layers` checks the order on every CI run, and the README's
//! "Architecture" section draws it.
//!
//! - [`bench`]: `voxrelay bench`, the loopback load benchmark (fake LLM, the server
//!   as a child process, simulated calls).
//! - [`server`]: `run`, which serves a bound listener through [`http`] and drains
//!   live calls on shutdown; the runtime and the listener.
//! - [`sim`]: `voxrelay call`, a terminal softphone playing Twilio's side of a
//!   call, and the typed Twilio peers (`sim::peer`) the benchmark and the tests use.
//! - [`http`]: the warp edge (routes, TwiML webhooks, WebSocket upgrades, the one
//!   place errors become statuses); the only module that imports warp.
//! - [`state`]: [`AppState`], what every handler and session shares.
//! - [`replica`]: this process among several replicas (heartbeat, closing the calls
//!   of a replica that died).
//! - [`relay`]: the ConversationRelay transport (protocol types and the call session).
//! - [`media`]: the Media Streams transport (raw μ-law call audio, protocol types,
//!   the speech pipelines that bridge it to an upstream or to our agent).
//! - [`sip`]: SIP mode (OpenAI answers a SIP trunk; we accept the call from its
//!   signed webhook and drive it over a sideband WebSocket).
//! - [`recorder`]: the call observer that queues each call's records for the store.
//! - [`agent`]: the conversation core shared by every transport: history, streaming
//!   replies, tools, interruptions, DTMF, the call log and the prompt.
//! - [`tools`]: tools the model can call (built-in call actions, appointments, HTTP).
//! - [`llm`]: the LLM trait and its providers (OpenAI and compatible, Azure, scripted).
//! - [`speech`]: upstream speech clients (OpenAI Realtime, ElevenLabs TTS, agent and
//!   STT), transport-independent, for the Media Streams mode.
//! - [`twilio`]: Twilio's REST API client, the `X-Twilio-Signature` algorithm and
//!   the per-call WebSocket tokens.
//! - [`twiml`]: TwiML documents with every value escaped.
//! - [`store`]: durable call records (SQLite or PostgreSQL) and their migrations.
//! - [`transport`]: the frame type every WebSocket transport reads.
//! - [`text`]: accent folding, cutting text on character boundaries, and JSON
//!   written without a serializer or serialised once ([`text::SharedJson`]).
//! - [`audio`]: μ-law, resampling, 20 ms framing and pacing, WAV files; pure code.
//! - [`metrics`]: process-wide counters and latency histograms (`GET /metrics`).
//! - [`telemetry`], [`shutdown`], [`config`]: logging, signals, configuration read
//!   once.

pub mod agent;
pub mod audio;
pub mod bench;
pub mod config;
pub mod http;
pub mod llm;
pub mod media;
pub mod metrics;
pub mod recorder;
pub mod relay;
pub mod replica;
pub mod server;
pub mod shutdown;
pub mod sim;
pub mod sip;
pub mod speech;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tools;
pub mod transport;
pub mod twilio;
pub mod twiml;

pub use config::Config;
pub use server::{AppState, run};
