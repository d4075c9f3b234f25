//! Records (`src/store`, `src/recorder`, `src/replica.rs`): both databases, the writer, several replicas, a cluster behind HAProxy.

mod cluster;
mod recorder;
mod records;
mod replicas;
