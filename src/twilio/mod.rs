//! Twilio itself: the REST API client ([`client`]) used for outbound calls and call
//! control, the webhook signature algorithm ([`signature`]), and the per-call
//! WebSocket tokens ([`call_token`]) with their admission ([`admission`]). No warp here.
//!
//! May import `store` (the shared token ledger) and `config` (the order is checked
//! by `.ci/layers`).

pub mod admission;
pub mod call_token;
pub mod client;
pub mod signature;
