//! `agent policy set|show|get|clear`: capability contracts of registered agents.
//!
//! `get` keeps the label lines the official SDK reads (`Allowed Secrets:`,
//! `Denied Secrets:`); `show` is the full view, with the change history.

use std::io::Write;

use agentsecrets_core::names::SecretKey;
use agentsecrets_core::policy::{self, Contract, ContractMode, domain_matches};
use agentsecrets_store::Vault;

use crate::UsageError;
use crate::cli::{CallOutput, PolicyCommand, PolicySetArgs};
use crate::commands::open_vault;
use crate::commands::workspace::{actor, warn_unknown_secrets};

/// Runs an `agent policy` subcommand.
pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Set(args) => set(&args),
        PolicyCommand::Show { name, output } => show(&name, output),
        PolicyCommand::Get { name } => get(&name),
        PolicyCommand::Clear { name, .. } => clear(&name),
    }
}

fn set(args: &PolicySetArgs) -> anyhow::Result<()> {
    let given = !args.allow_secret.is_empty()
        || !args.deny_secret.is_empty()
        || !args.allow_domain.is_empty()
        || !args.allow_method.is_empty()
        || args.rate.is_some()
        || args.mode.is_some()
        || args.replace;
    if !given {
        return Err(UsageError(
            "nothing to set: give --allow-secret, --deny-secret, --allow-domain, \
             --allow-method, --rate or --mode"
                .to_owned(),
        )
        .into());
    }
    // Every flag is parsed before the vault is touched, so a bad one changes nothing.
    let update = ContractUpdate::parse(args)?;

    let vault = open_vault()?;
    let agent = registered(&vault, &args.name)?;
    let mut contract = match args.replace {
        true => Contract::default(),
        false => vault.contract(&agent)?.unwrap_or_default(),
    };
    update.apply(&mut contract);
    vault.set_contract(&agent, &contract, &actor())?;

    println!(
        "Policy of agent {agent} set ({}); it applies from the next call",
        contract.mode.as_str()
    );
    warn_about(&vault, &contract)?;
    Ok(())
}

/// The rules a `set` names, already checked; each one given replaces the rule it names.
struct ContractUpdate {
    allow_secrets: Option<Vec<String>>,
    deny_secrets: Option<Vec<String>>,
    allow_domains: Option<Vec<String>>,
    allow_methods: Option<Vec<String>>,
    rate: Option<Option<u32>>,
    mode: Option<ContractMode>,
}

impl ContractUpdate {
    fn parse(args: &PolicySetArgs) -> anyhow::Result<ContractUpdate> {
        let keys = |flag: &str, raw: &[String]| -> anyhow::Result<Option<Vec<String>>> {
            if raw.is_empty() {
                return Ok(None);
            }
            let parsed = raw
                .iter()
                .map(|k| k.trim())
                .filter(|k| !k.is_empty())
                .map(|k| {
                    SecretKey::parse(k)
                        .map(|key| key.to_string())
                        .map_err(|e| UsageError(format!("--{flag}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(dedup(parsed)))
        };
        let domains = if args.allow_domain.is_empty() {
            None
        } else {
            let parsed = args
                .allow_domain
                .iter()
                .map(|d| policy::normalize_domain_pattern(d).map_err(|e| UsageError(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            Some(dedup(parsed))
        };
        let methods = if args.allow_method.is_empty() {
            None
        } else {
            Some(dedup(
                args.allow_method.iter().map(|m| parse_method(m)).collect::<Result<_, _>>()?,
            ))
        };
        let rate = match args.rate.as_deref() {
            None => None,
            Some(raw) if raw.eq_ignore_ascii_case("none") => Some(None),
            Some(raw) => {
                Some(Some(policy::parse_rate(raw).map_err(|e| UsageError(format!("--rate: {e}")))?))
            }
        };
        let mode = match args.mode.as_deref() {
            None => None,
            Some(raw) => Some(
                ContractMode::parse(raw)
                    .ok_or_else(|| UsageError(format!("--mode {raw:?}: use enforce or report")))?,
            ),
        };
        Ok(ContractUpdate {
            allow_secrets: keys("allow-secret", &args.allow_secret)?,
            deny_secrets: keys("deny-secret", &args.deny_secret)?,
            allow_domains: domains,
            allow_methods: methods,
            rate,
            mode,
        })
    }

    fn apply(self, contract: &mut Contract) {
        if let Some(keys) = self.allow_secrets {
            contract.allow_secrets = keys;
        }
        if let Some(keys) = self.deny_secrets {
            contract.deny_secrets = keys;
        }
        if let Some(domains) = self.allow_domains {
            contract.allow_domains = domains;
        }
        if let Some(methods) = self.allow_methods {
            contract.allow_methods = methods;
        }
        if let Some(rate) = self.rate {
            contract.rate_per_minute = rate;
        }
        if let Some(mode) = self.mode {
            contract.mode = mode;
        }
    }
}

/// An HTTP method token, upper-cased.
fn parse_method(raw: &str) -> Result<String, UsageError> {
    let method = raw.trim().to_ascii_uppercase();
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(UsageError(format!(
            "--allow-method {raw:?}: use an HTTP method such as GET, POST, PUT, PATCH or DELETE"
        )));
    }
    Ok(method)
}

/// Says, on stderr, what in a contract will not do what its author may think: a secret
/// the project lacks, a domain outside the workspace allowlist, a secret both allowed and
/// denied. None of these is an error: the contract is stored as given.
fn warn_about(vault: &Vault, contract: &Contract) -> anyhow::Result<()> {
    let mut named = contract.allow_secrets.clone();
    named.extend(contract.deny_secrets.iter().cloned());
    warn_unknown_secrets(vault, &dedup(named))?;

    for key in contract.contradictions() {
        eprintln!("warning: {key} is both allowed and denied: the deny rule wins");
    }

    let allowlist: Vec<String> = vault.allowlist()?.into_iter().map(|e| e.domain).collect();
    for pattern in &contract.allow_domains {
        let covered = allowlist.iter().any(|host| domain_matches(pattern, host));
        if !covered {
            eprintln!(
                "warning: no workspace allowlist entry matches {pattern}: calls there stay \
                 refused until it is added with: agentsecrets workspace allowlist add HOST"
            );
        }
    }
    Ok(())
}

fn show(name: &str, output: CallOutput) -> anyhow::Result<()> {
    let vault = open_vault()?;
    let agent = registered(&vault, name)?;
    let contract = vault.contract(&agent)?;
    let changes = vault.contract_log(Some(&agent))?;

    let mut out = std::io::stdout().lock();
    if output == CallOutput::Json {
        let json = serde_json::json!({ "agent": agent, "contract": contract, "changes": changes });
        serde_json::to_writer(&mut out, &json)?;
        writeln!(out)?;
        return Ok(());
    }

    let Some(contract) = contract else {
        writeln!(out, "Agent {agent} has no contract: it gets the workspace's rules only.")?;
        return Ok(());
    };
    writeln!(out, "Policy of agent {agent} ({})", contract.mode.as_str())?;
    writeln!(out, "  allow-secret  {}", list_or(&contract.allow_secrets, "any"))?;
    writeln!(out, "  deny-secret   {}", list_or(&contract.deny_secrets, "none"))?;
    writeln!(out, "  allow-domain  {}", list_or(&contract.allow_domains, "any allowlisted"))?;
    writeln!(out, "  allow-method  {}", list_or(&contract.allow_methods, "any"))?;
    let rate = contract.rate_per_minute.map_or("none".to_owned(), |n| format!("{n}/min"));
    writeln!(out, "  rate          {rate}")?;
    if !changes.is_empty() {
        writeln!(out, "Changes")?;
        for change in &changes {
            writeln!(out, "  {}  {:<5}  by {}", change.at, change.action, change.actor)?;
        }
    }
    Ok(())
}

/// The SDK's `agent.get_policy` reads the `Allowed Secrets:` and `Denied Secrets:` lines.
fn get(name: &str) -> anyhow::Result<()> {
    let vault = open_vault()?;
    let agent = registered(&vault, name)?;
    let contract = vault.contract(&agent)?.unwrap_or_default();

    let mut out = std::io::stdout().lock();
    writeln!(out, "\nAgent Policy for {agent}:")?;
    writeln!(out, "  Allowed Secrets: {}", list_or(&contract.allow_secrets, "(none)"))?;
    writeln!(out, "  Denied Secrets:  {}", list_or(&contract.deny_secrets, "(none)"))?;
    writeln!(out, "  Allowed Domains: {}", list_or(&contract.allow_domains, "(any)"))?;
    writeln!(out, "  Allowed Methods: {}", list_or(&contract.allow_methods, "(any)"))?;
    Ok(())
}

fn clear(name: &str) -> anyhow::Result<()> {
    let vault = open_vault()?;
    let agent = registered(&vault, name)?;
    if vault.clear_contract(&agent, &actor())? {
        println!("Policy of agent {agent} cleared; it gets the workspace's rules only");
    } else {
        println!("Agent {agent} had no policy");
    }
    Ok(())
}

/// The registered agent's name as stored (matched ignoring case, as the SDK upper-cases
/// names), or an error that says how to register it.
fn registered(vault: &Vault, name: &str) -> anyhow::Result<String> {
    vault.find_agent(name)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no agent named {}; register it first with: agentsecrets agent register NAME",
            agentsecrets_core::names::escape_for_display(name)
        )
    })
}

fn list_or(items: &[String], empty: &str) -> String {
    if items.is_empty() { empty.to_owned() } else { items.join(", ") }
}

fn dedup(mut items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
    items
}

#[cfg(test)]
mod tests {
    use agentsecrets_core::net::normalize_host;

    use super::*;

    #[test]
    fn methods_are_upper_cased_and_junk_refused() {
        assert_eq!(parse_method("post").unwrap(), "POST");
        assert!(parse_method("GE T").is_err());
        assert!(parse_method("").is_err());
    }

    #[test]
    fn allowlist_hosts_are_normalised_the_same_way_as_rules() {
        let host = normalize_host("API.Stripe.com.").unwrap();
        let rule = policy::normalize_domain_pattern("api.stripe.COM").unwrap();
        assert!(domain_matches(&rule, &host));
    }
}
