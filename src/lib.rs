//! voxrelay: puts AI agents on phone calls through Twilio.
//!
//! Module map (dependencies point down this list, never up):
//!
//! - [`server`]: `run`, which serves a bound listener through [`http`] and drains
//!   live calls on shutdown; the runtime and the listener.
//! - [`http`]: the warp edge (routes, TwiML webhooks, WebSocket upgrades); the only
//!   module that imports warp.
//! - [`state`]: [`AppState`], what every handler and session shares (`.ci/run`
//!   checks that the edge and the sessions import it, never [`server`]).
//! - [`relay`]: the ConversationRelay transport (protocol types and the call session).
//! - [`media`]: the Media Streams transport (raw μ-law call audio; protocol types).
//! - [`transport`]: the frame type every WebSocket transport reads.
//! - [`agent`]: the conversation core: history, streaming replies, interruptions,
//!   DTMF; independent of the transport.
//! - [`llm`]: the LLM trait and its providers (OpenAI and compatible, Azure, scripted).
//! - [`recorder`]: the call observer that queues each call's records for the store.
//! - [`store`]: durable call records (SQLite or PostgreSQL) and their migrations.
//! - [`speech`]: upstream speech clients (OpenAI Realtime, ElevenLabs TTS, agent and
//!   STT), transport-independent, for the Media Streams mode.
//! - [`tools`]: tools the model can call (built-in call actions, appointments, HTTP).
//! - [`twiml`]: TwiML documents with every value escaped.
//! - [`text`]: accent folding shared by the agent core.
//! - [`audio`]: μ-law, resampling, 20 ms framing and pacing, WAV files; pure code.
//! - [`twilio`]: Twilio's REST API client and the `X-Twilio-Signature` algorithm.
//! - [`metrics`]: process-wide counters and latency histograms (`GET /metrics`).
//! - [`bench`]: `voxrelay bench`, the loopback load benchmark (fake LLM, the server
//!   as a child process, simulated calls).
//! - [`sim`]: `voxrelay call`, a terminal softphone playing Twilio's side of a call.
//! - [`config`], [`telemetry`], [`shutdown`]: configuration read once, logging, signals.

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
