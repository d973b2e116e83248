//! Governance from a program: the decision the proxy would make ([`Explanation`]), and
//! capability contracts of registered agents.
//!
//! Contracts are workspace administration, not something an agent asks the proxy for: a
//! proxy that let its callers rewrite their own contracts would be no limit at all. So
//! these calls run the `agentsecrets` binary against the client's home, as a person at
//! the command line would, and only work where that binary and home are at hand.

use std::process::Stdio;

pub use agentsecrets_core::policy::{Contract, ContractMode};
use serde::Deserialize;

use crate::client::AgentSecrets;
use crate::error::Error;

/// What the proxy would decide about a call; see [`AgentSecrets::explain`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Explanation {
    /// `allow` or `deny`.
    pub decision: String,
    /// The refusal's slug, when denied (`capability_denied`, `domain_not_in_allowlist`..).
    pub error: Option<String>,
    /// Why, when denied.
    pub message: Option<String>,
    /// The rule that refuses the call, for capability refusals.
    pub rule: Option<String>,
    /// A rule in report mode that the call breaks: it would be served and flagged.
    pub report: Option<String>,
    /// The caller's identity level: `anonymous`, `declared` or `issued`.
    pub identity_level: String,
    /// The caller's agent name.
    pub agent_id: Option<String>,
    /// The verified token's id, for issued callers.
    pub token_id: Option<String>,
    /// The target's host.
    pub domain: String,
    /// The secrets the call names.
    pub secret_keys: Vec<String>,
    /// The policy snapshot the decision was taken under.
    pub policy_snapshot_id: Option<String>,
}

impl Explanation {
    /// Whether the call would be allowed.
    pub fn allowed(&self) -> bool {
        self.decision == "allow"
    }
}

/// `agent policy show --output json`, as far as the client reads it.
#[derive(Deserialize)]
struct Shown {
    contract: Option<Contract>,
}

impl AgentSecrets {
    /// The capability contract of the registered agent `agent`, if it has one.
    pub async fn policy(&self, agent: &str) -> Result<Option<Contract>, Error> {
        let out = self
            .admin("agent policy show", &["agent", "policy", "show", agent, "--output", "json"])
            .await?;
        let shown: Shown = serde_json::from_slice(&out)?;
        Ok(shown.contract)
    }

    /// Replaces the contract of the registered agent `agent` with `contract`, in one
    /// change that applies from the proxy's next call.
    pub async fn set_policy(&self, agent: &str, contract: &Contract) -> Result<(), Error> {
        let mut args: Vec<String> = ["agent", "policy", "set", agent, "--replace", "--mode"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.push(contract.mode.as_str().to_owned());
        let rules = [
            ("--allow-secret", &contract.allow_secrets),
            ("--deny-secret", &contract.deny_secrets),
            ("--allow-domain", &contract.allow_domains),
            ("--allow-method", &contract.allow_methods),
        ];
        for (flag, values) in rules {
            for value in values {
                args.push(flag.to_owned());
                args.push(value.clone());
            }
        }
        if let Some(rate) = contract.rate_per_minute {
            args.push("--rate".to_owned());
            args.push(format!("{rate}/min"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.admin("agent policy set", &args).await.map(drop)
    }

    /// Removes the contract of `agent`: it then gets the workspace's rules only.
    pub async fn clear_policy(&self, agent: &str) -> Result<(), Error> {
        self.admin("agent policy clear", &["agent", "policy", "clear", agent]).await.map(drop)
    }

    /// Runs `agentsecrets ARGS` against this client's home; its stdout on success.
    async fn admin(&self, command: &str, args: &[&str]) -> Result<Vec<u8>, Error> {
        let output = tokio::process::Command::new(self.binary())
            .args(args)
            .env("AGENTSECRETS_HOME", self.home())
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|err| Error::Command {
                command: command.to_owned(),
                message: format!(
                    "cannot run {}: {err}; set AGENTSECRETS_BIN or put agentsecrets on PATH",
                    self.binary().display()
                ),
            })?;
        if !output.status.success() {
            let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(Error::Command { command: command.to_owned(), message });
        }
        Ok(output.stdout)
    }
}
