//! MCP stdio server over the agentsecrets engine, and the installer that registers it
//! with MCP clients.
//!
//! [`McpServer`] speaks the Model Context Protocol over the process's stdin and stdout.
//! **stdout is the protocol channel**: nothing but JSON-RPC messages may ever be written
//! to it, so every diagnostic of this crate goes through `tracing`, which the binary
//! sends to stderr.
//!
//! The server offers two tools. `list_secrets` names the current project's secrets
//! (never their values). `api_call` makes one HTTP call with secrets injected by name;
//! it runs through [`agentsecrets_proxy::Engine`], the same path as the HTTP proxy,
//! `call` and `env`, so the allowlist, the SSRF rules, redaction of echoed values and
//! the audit log (transport `mcp`, one session id per server run) all apply unchanged.
//! A refusal by the engine comes back as an MCP tool error carrying the DESIGN.md slug;
//! a request the server cannot make sense of (unknown tool, missing or malformed
//! arguments, an oversized body) is a JSON-RPC protocol error, and the server keeps
//! serving.
//!
//! [`install`] writes or merges an MCP client's JSON configuration so that the client
//! starts `agentsecrets mcp serve` itself.

pub mod install;
pub mod server;
mod stdio;
pub mod tools;

pub use server::{McpServer, ServeOptions};

use std::path::PathBuf;

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine's HTTP client could not be built.
    #[error("cannot build the engine: {0}")]
    Engine(Box<dyn std::error::Error + Send + Sync>),
    /// The MCP session failed before or while serving.
    #[error("mcp session: {0}")]
    Session(String),
    /// No home directory is known, so no client configuration path can be derived.
    #[error("cannot find the home directory: set HOME or pass --config PATH")]
    NoHome,
    /// A client configuration file could not be read.
    #[error("{path}: {error}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A client configuration file is not valid JSON; it is left untouched.
    #[error("{path}: not valid JSON ({error}); the file was left untouched")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Where the JSON breaks.
        error: serde_json::Error,
    },
    /// A client configuration file is JSON, but not of the shape MCP clients use.
    #[error("{path}: {what}; the file was left untouched")]
    ConfigShape {
        /// The file.
        path: PathBuf,
        /// What is out of shape.
        what: &'static str,
    },
    /// A client configuration file, its backup or its temporary copy could not be written.
    #[error("{path}: {error}")]
    ConfigWrite {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}
