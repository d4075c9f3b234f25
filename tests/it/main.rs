//! Integration tests: the real server on `127.0.0.1:0`, real sockets, fake peers on
//! loopback (Twilio's side, an OpenAI-compatible LLM). One binary for all of them.

mod audio_sox;
mod bench;
mod common;
mod fake_http;
mod fake_llm;
mod fake_speech;
mod handoff;
mod http;
mod metrics;
mod relay;
mod shutdown;
mod sim;
mod speech_elevenlabs;
mod speech_realtime;
mod tools;
mod twiml_examples;
