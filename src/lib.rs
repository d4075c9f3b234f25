//! voxrelay: puts AI agents on phone calls through Twilio.
//!
//! Module map (dependencies point down this list, never up):
//!
//! - [`http`]: the warp edge (routes, TwiML webhooks, WebSocket upgrades); the only
//!   module that imports warp.
//! - [`server`]: shared state and `run`, which serves a bound listener and drains
//!   live calls on shutdown.
//! - [`relay`]: the ConversationRelay transport (protocol types and the call session).
//! - [`transport`]: the frame type every WebSocket transport reads.
//! - [`agent`]: the conversation core: history, streaming replies, interruptions,
//!   DTMF; independent of the transport.
//! - [`llm`]: the LLM trait and its providers (OpenAI and compatible, Azure, scripted).
//! - [`twiml`]: TwiML documents with every value escaped.
//! - [`metrics`]: process-wide counters and latency histograms (`GET /metrics`).
//! - [`bench`]: `voxrelay bench`, the loopback load benchmark (fake LLM, the server
//!   as a child process, simulated calls).
//! - [`sim`]: `voxrelay call`, a terminal softphone playing Twilio's side of a call.
//! - [`config`], [`telemetry`], [`shutdown`]: configuration read once, logging, signals.

pub mod agent;
pub mod bench;
pub mod config;
pub mod http;
pub mod llm;
pub mod metrics;
pub mod relay;
pub mod server;
pub mod shutdown;
pub mod sim;
pub mod telemetry;
pub mod transport;
pub mod twiml;

pub use config::Config;
pub use server::{AppState, run};
