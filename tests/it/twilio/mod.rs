//! Twilio (`src/twilio`): signatures on every route, our REST requests checked against Twilio's OpenAPI description.

mod signature;
mod spec;
