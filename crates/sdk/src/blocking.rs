//! A blocking client for programs without an async runtime.
//!
//! [`AgentSecrets`] owns a current-thread tokio runtime and runs the async client on it,
//! one call at a time. Do not use it from inside an async runtime (tokio panics when a
//! runtime is blocked on from within another); use [`crate::AgentSecrets`] there.
//!
//! ```no_run
//! use agentsecrets_sdk::Request;
//! use agentsecrets_sdk::blocking::AgentSecrets;
//!
//! let client = AgentSecrets::builder().agent_id("billing-tool").build()?;
//! let request = Request::get("https://api.stripe.com/v1/balance").bearer("STRIPE_KEY");
//! let response = client.call(request)?;
//! println!("{} {}", response.status, response.text());
//! # Ok::<(), agentsecrets_sdk::Error>(())
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::client::Health;
use crate::error::Error;
use crate::policy::{Contract, Explanation};
use crate::request::Request;
use crate::response::Response;

/// A blocking client of the local agentsecrets proxy.
#[derive(Debug)]
pub struct AgentSecrets {
    inner: crate::AgentSecrets,
    runtime: tokio::runtime::Runtime,
}

impl AgentSecrets {
    /// A builder with every setting at its default.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Makes one call through the proxy; see [`crate::AgentSecrets::call`].
    pub fn call(&self, request: Request) -> Result<Response, Error> {
        self.runtime.block_on(self.inner.call(request))
    }

    /// Asks the proxy whether it is up; see [`crate::AgentSecrets::health`].
    pub fn health(&self) -> Result<Health, Error> {
        self.runtime.block_on(self.inner.health())
    }

    /// Starts a proxy if none answers; see [`crate::AgentSecrets::ensure_proxy`].
    pub fn ensure_proxy(&self) -> Result<Health, Error> {
        self.runtime.block_on(self.inner.ensure_proxy())
    }

    /// What the proxy would decide; see [`crate::AgentSecrets::explain`].
    pub fn explain(&self, request: Request) -> Result<Explanation, Error> {
        self.runtime.block_on(self.inner.explain(request))
    }

    /// An agent's contract; see [`crate::AgentSecrets::policy`].
    pub fn policy(&self, agent: &str) -> Result<Option<Contract>, Error> {
        self.runtime.block_on(self.inner.policy(agent))
    }

    /// Replaces an agent's contract; see [`crate::AgentSecrets::set_policy`].
    pub fn set_policy(&self, agent: &str, contract: &Contract) -> Result<(), Error> {
        self.runtime.block_on(self.inner.set_policy(agent, contract))
    }

    /// Removes an agent's contract; see [`crate::AgentSecrets::clear_policy`].
    pub fn clear_policy(&self, agent: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.clear_policy(agent))
    }

    /// The async client inside.
    pub fn as_async(&self) -> &crate::AgentSecrets {
        &self.inner
    }
}

/// Configures a blocking [`AgentSecrets`]; each setting is that of [`crate::Builder`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    inner: crate::Builder,
}

impl Builder {
    /// See [`crate::Builder::agent_id`].
    pub fn agent_id(self, name: impl Into<String>) -> Builder {
        Builder { inner: self.inner.agent_id(name) }
    }

    /// See [`crate::Builder::agent_token`].
    pub fn agent_token(self, token: impl Into<String>) -> Builder {
        Builder { inner: self.inner.agent_token(token) }
    }

    /// See [`crate::Builder::session_id`].
    pub fn session_id(self, id: impl Into<String>) -> Builder {
        Builder { inner: self.inner.session_id(id) }
    }

    /// See [`crate::Builder::home`].
    pub fn home(self, path: impl Into<PathBuf>) -> Builder {
        Builder { inner: self.inner.home(path) }
    }

    /// See [`crate::Builder::port`].
    pub fn port(self, port: u16) -> Builder {
        Builder { inner: self.inner.port(port) }
    }

    /// See [`crate::Builder::timeout`].
    pub fn timeout(self, timeout: Duration) -> Builder {
        Builder { inner: self.inner.timeout(timeout) }
    }

    /// See [`crate::Builder::binary`].
    pub fn binary(self, path: impl Into<PathBuf>) -> Builder {
        Builder { inner: self.inner.binary(path) }
    }

    /// See [`crate::Builder::start_args`].
    pub fn start_args<I, S>(self, args: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Builder { inner: self.inner.start_args(args) }
    }

    /// See [`crate::Builder::start_timeout`].
    pub fn start_timeout(self, timeout: Duration) -> Builder {
        Builder { inner: self.inner.start_timeout(timeout) }
    }

    /// Builds the client and its runtime.
    pub fn build(self) -> Result<AgentSecrets, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let inner = self.inner.build()?;
        Ok(AgentSecrets { inner, runtime })
    }
}
