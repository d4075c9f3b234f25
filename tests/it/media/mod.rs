//! The Media Streams mode (`src/media`): the session with the bridging pipelines, and the cascade.

mod cascade;
pub(crate) mod session;
