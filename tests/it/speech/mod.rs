//! The upstream speech clients (`src/speech`) against fake OpenAI Realtime and ElevenLabs servers.

mod elevenlabs;
mod realtime;
