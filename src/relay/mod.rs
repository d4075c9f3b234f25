//! The ConversationRelay transport: Twilio does speech-to-text and text-to-speech
//! and exchanges small JSON messages with us over `/websocket`.
//!
//! - [`protocol`]: the wire messages as serde enums (pure data).
//! - [`session`]: one call's loop, translating between the wire and the agent.
//!
//! May import `agent`, `recorder`, `store`, `twilio` (admission), `transport`,
//! `metrics` and `config`; never `http`, `state` or `server` (the order is checked
//! by `.ci/layers`).

pub mod protocol;
pub mod session;
