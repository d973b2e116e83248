//! Rust client for programs that call APIs through the agentsecrets proxy.
//!
//! A program names the secret a call needs ("`STRIPE_KEY` as a bearer token") and the
//! local proxy makes the call: it resolves the value from the vault, injects it, enforces
//! the workspace's policy, scrubs any echo of the value from the response and records the
//! call in the audit log. The program sees the response, never the value.
//!
//! ```no_run
//! use agentsecrets_sdk::{AgentSecrets, Error, Request};
//!
//! # async fn run() -> Result<(), Error> {
//! let client = AgentSecrets::builder()
//!     .agent_id("billing-tool")
//!     .session_id("run-42")
//!     .build()?;
//! client.ensure_proxy().await?;
//!
//! let request = Request::get("https://api.stripe.com/v1/balance").bearer("STRIPE_KEY");
//! match client.call(request).await {
//!     Ok(response) => println!("{} {}", response.status, response.text()),
//!     Err(Error::DomainNotAllowed { domain, .. }) => eprintln!("allowlist {domain} first"),
//!     Err(err) => return Err(err),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The client finds the proxy through `$AGENTSECRETS_HOME/session.json` (default home
//! `~/.agentsecrets`), which holds its port and the session token every call presents.
//! The caller's identity is anonymous, declared ([`Builder::agent_id`]) or issued
//! ([`Builder::agent_token`]); `$AGENTSECRETS_AGENT_ID` and `$AGENTSECRETS_TOKEN` stand in
//! when neither is set. [`blocking`] wraps the client for programs without an async
//! runtime.
//!
//! Invariants: no secret value passes through this crate, and the agent and session
//! tokens it does hold never appear in `Debug` output.

mod client;
mod error;
mod launch;
mod policy;
mod request;
mod response;

pub mod blocking;

pub use client::{AgentSecrets, Builder, DEFAULT_PORT, Health};
pub use error::Error;
pub use http::{HeaderMap, Method};
pub use policy::{Contract, ContractMode, Explanation};
pub use request::Request;
pub use response::Response;
