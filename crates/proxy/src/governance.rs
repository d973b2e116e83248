//! Which capability rules bind a caller, and the per-agent rate limiter.
//!
//! An issued agent is bound by its own contract. Anonymous callers get what the
//! workspace allows anonymous callers. A declared name gets the anonymous rules and, when
//! the workspace honours declared contracts, its contract on top: a declared name can
//! only narrow what it gets, so declaring a made-up name never widens access.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentsecrets_core::identity::IdentityLevel;
use agentsecrets_core::policy::{Contract, ContractMode, Denial};
use agentsecrets_store::{AccessSettings, DeclaredContracts};

/// One set of rules a call must pass.
#[derive(Debug)]
pub(crate) enum Gate<'a> {
    /// The workspace's secrets for callers without a contract of their own.
    Anonymous {
        /// The secrets such callers may use (empty: none).
        allowed: &'a [String],
    },
    /// A registered agent's contract.
    Contract {
        /// The agent's name.
        agent: &'a str,
        /// Its contract.
        contract: &'a Contract,
    },
}

impl Gate<'_> {
    /// Whose rules these are, for the refusal's message.
    pub(crate) fn whose(&self) -> String {
        match self {
            Gate::Anonymous { .. } => {
                "the workspace's rules for callers without a contract (anonymous-secrets)"
                    .to_owned()
            }
            Gate::Contract { agent, .. } => format!("the contract of agent {agent}"),
        }
    }

    /// Whether a refusal is enforced or only reported.
    pub(crate) fn mode(&self) -> ContractMode {
        match self {
            Gate::Anonymous { .. } => ContractMode::Enforce,
            Gate::Contract { contract, .. } => contract.mode,
        }
    }

    /// Checks one secret.
    pub(crate) fn check_secret(&self, key: &str) -> Result<(), Denial> {
        match self {
            Gate::Anonymous { allowed } if allowed.iter().any(|k| k == key) => Ok(()),
            Gate::Anonymous { allowed: [] } => {
                Err(Denial { rule: "anonymous-secrets none".to_owned() })
            }
            Gate::Anonymous { .. } => {
                Err(Denial { rule: format!("anonymous-secrets (does not include {key})") })
            }
            Gate::Contract { contract, .. } => contract.check_secret(key),
        }
    }

    /// Checks a whole HTTP call: method, host, then every secret.
    pub(crate) fn check_call(
        &self,
        method: &str,
        host: &str,
        keys: &[String],
    ) -> Result<(), Denial> {
        match self {
            Gate::Anonymous { .. } => keys.iter().try_for_each(|key| self.check_secret(key)),
            Gate::Contract { contract, .. } => contract.check_call(method, host, keys),
        }
    }
}

/// The gates that bind a caller of `level` named `agent`, in the order they are checked.
pub(crate) fn gates<'a>(
    level: IdentityLevel,
    agent: Option<&'a str>,
    access: &'a AccessSettings,
    contracts: &'a std::collections::BTreeMap<String, Contract>,
) -> Vec<Gate<'a>> {
    let anonymous = access.anonymous_secrets.as_deref().map(|allowed| Gate::Anonymous { allowed });
    let own = agent.and_then(|name| {
        let (agent, contract) = contracts.get_key_value(name)?;
        Some(Gate::Contract { agent: agent.as_str(), contract })
    });
    match level {
        IdentityLevel::Anonymous => anonymous.into_iter().collect(),
        IdentityLevel::Declared => {
            let honoured = access.declared_contracts == DeclaredContracts::Enforce;
            anonymous.into_iter().chain(own.filter(|_| honoured)).collect()
        }
        IdentityLevel::Issued => own.into_iter().collect(),
    }
}

/// Calls per agent over the last minute, for contracts with a rate limit. The count lives
/// in the process that serves the calls (the proxy, or one `call`).
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl RateLimiter {
    /// Counts a call of `agent` unless it already made `limit` calls in the last minute;
    /// false when the call is over the limit. Check and count happen under one lock, so
    /// concurrent calls can never overshoot.
    pub(crate) fn admit(&self, agent: &str, limit: u32) -> bool {
        let now = Instant::now();
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let recent = calls.entry(agent.to_owned()).or_default();
        while recent.front().is_some_and(|at| now.duration_since(*at) >= WINDOW) {
            recent.pop_front();
        }
        if recent.len() >= limit as usize {
            return false;
        }
        recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn contracts() -> BTreeMap<String, Contract> {
        let contract = Contract { allow_secrets: vec!["STRIPE_KEY".into()], ..Contract::default() };
        BTreeMap::from([("billing".to_owned(), contract)])
    }

    #[test]
    fn a_declared_name_never_gets_more_than_an_anonymous_caller() {
        let access = AccessSettings {
            anonymous_secrets: Some(vec!["PUBLIC_KEY".into()]),
            ..AccessSettings::default()
        };
        let contracts = contracts();
        let declared = gates(IdentityLevel::Declared, Some("billing"), &access, &contracts);
        let refused = declared.iter().find(|g| g.check_secret("STRIPE_KEY").is_err());
        assert!(refused.is_some(), "the anonymous rules still bind a declared name");

        let made_up = gates(IdentityLevel::Declared, Some("made-up"), &access, &contracts);
        assert_eq!(made_up.len(), 1);
        assert!(made_up[0].check_secret("PUBLIC_KEY").is_ok());

        let issued = gates(IdentityLevel::Issued, Some("billing"), &access, &contracts);
        assert!(issued.iter().all(|g| g.check_secret("STRIPE_KEY").is_ok()));
    }

    #[test]
    fn ignoring_declared_contracts_leaves_the_anonymous_rules() {
        let access =
            AccessSettings { declared_contracts: DeclaredContracts::Ignore, ..Default::default() };
        let contracts = contracts();
        assert!(gates(IdentityLevel::Declared, Some("billing"), &access, &contracts).is_empty());
        let enforce = AccessSettings::default();
        assert_eq!(gates(IdentityLevel::Declared, Some("billing"), &enforce, &contracts).len(), 1);
    }

    #[test]
    fn the_rate_limiter_admits_exactly_the_limit() {
        let limiter = RateLimiter::default();
        let admitted = (0..10).filter(|_| limiter.admit("a", 3)).count();
        assert_eq!(admitted, 3);
        assert!(limiter.admit("b", 3), "each agent has its own window");
    }
}
