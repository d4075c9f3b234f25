//! The server (`src/server.rs`): drains and shutdown.

mod shutdown;
