//! The agentsecrets engine and the HTTP proxy around it.
//!
//! [`engine::Engine`] is the one path every call takes, from the proxy, `call`, `env`
//! and MCP alike: identify the caller, check the target against the allowlist and the
//! SSRF rules, write the audit record ahead, and only then read secrets, inject them,
//! forward, and stream the answer back with every echoed secret scrubbed.
//! [`server`] puts the engine behind `127.0.0.1:8765`; [`remote`] lets a command reuse
//! a proxy that is already running.

pub mod audit_writer;
pub mod engine;
pub mod forward;
mod governance;
pub mod identity;
pub mod remote;
mod resolver;
mod secret_cache;
pub mod server;
pub mod session;

pub use engine::{CallSpec, Engine, EngineConfig, EngineError, Explanation};
pub use forward::Forwarded;
