//! The ConversationRelay mode (`src/relay`, `src/agent`, `src/tools`): a call over `/websocket`, tools, handoffs.

mod endings;
mod handoff;
mod session;
mod tools;
mod voicemail;
