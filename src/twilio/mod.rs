//! Twilio itself: the REST API client ([`client`]) used for outbound calls and call
//! control, and the webhook signature algorithm ([`signature`]). No warp here.

pub mod client;
pub mod signature;
