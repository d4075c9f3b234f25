//! Integration tests: the real server on `127.0.0.1:0`, real sockets, fake peers on
//! loopback (Twilio's side, an OpenAI-compatible LLM). One binary for all of them.

mod bench;
mod common;
mod fake_llm;
mod http;
mod metrics;
mod relay;
mod shutdown;
mod sim;
mod twiml_examples;
