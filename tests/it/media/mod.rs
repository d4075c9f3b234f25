//! The Media Streams mode (`src/media`): the session with the bridging pipelines, and the cascade.

mod cascade;
mod endings;
mod pacing;
pub(crate) mod session;
