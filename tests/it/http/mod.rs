//! The HTTP edge (`src/http`): routes, the records API, call control, callbacks, security, metrics, the TwiML we answer.

mod admission;
mod agents;
mod api;
mod callbacks;
mod console_api;
mod metrics;
mod outbound;
mod routes;
mod security;
mod twiml;
