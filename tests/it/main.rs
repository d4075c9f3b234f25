//! Integration tests: the real server on `127.0.0.1:0`, real sockets, fake peers on
//! loopback (Twilio's side, an OpenAI-compatible LLM). One binary for all of them.

mod api;
mod audio_sox;
mod bench;
mod callbacks;
mod cascade;
mod cluster;
mod common;
mod db;
mod fake_http;
mod fake_llm;
mod fake_speech;
mod fake_twilio;
mod handoff;
mod http;
mod media;
mod metrics;
mod outbound;
mod recorder;
mod relay;
mod replicas;
mod security;
mod shutdown;
mod sim;
mod sim_media;
mod speech_elevenlabs;
mod speech_realtime;
mod store;
mod tools;
mod twilio_signature;
mod twilio_spec;
mod twiml_examples;
