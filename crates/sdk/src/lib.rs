//! Rust client library for programs that call APIs through agentsecrets.
//!
//! Not built yet: the client library is tracked by the agent identity issue. The crate
//! exists so that the workspace layout matches the design from the first commit.
