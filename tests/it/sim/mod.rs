//! `voxrelay call` and `voxrelay bench` (`src/sim`, `src/bench`) against the real server.

mod bench;
mod call;
mod media;
mod sip;
