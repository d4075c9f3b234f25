//! Integration tests: the real server on `127.0.0.1:0`, real sockets, fake peers on
//! loopback (Twilio's side, an OpenAI-compatible LLM, speech servers). One binary
//! for all of them; `support/` holds the shared set-up, and each suite mirrors the
//! part of `src/` it tests.

mod audio;
mod build_script;
mod console;
mod http;
mod media;
mod relay;
mod server;
mod sim;
mod sip;
mod speech;
mod store;
mod support;
mod twilio;
