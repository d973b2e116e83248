//! `agent register|list|delete` and `agent token issue|list|revoke`.
//!
//! The tables keep the fixed widths the official SDK slices (`%-20s %-15s ...`), and the
//! issue output keeps its label lines with the `Token` line last.

use std::collections::BTreeMap;
use std::io::Write;

use agentsecrets_core::names::AgentName;
use agentsecrets_core::token;
use agentsecrets_store::{AuditLog, TokenRecord, Vault};

use crate::UsageError;
use crate::cli::{AgentCommand, CallOutput, IssueArgs, TokenCommand};
use crate::commands::open_vault;
use crate::output::stdout_is_terminal;

/// Runs an `agent` subcommand.
pub fn run(command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Register(args) => issue(&args, true),
        AgentCommand::Token(TokenCommand::Issue(args)) => issue(&args, false),
        AgentCommand::Token(TokenCommand::List { name }) => list_tokens(name.as_deref()),
        AgentCommand::Token(TokenCommand::Revoke { targets, agent, all, .. }) => {
            revoke(&targets, agent.as_deref(), all)
        }
        AgentCommand::Policy(command) => crate::commands::policy::run(command),
        AgentCommand::List { .. } => list_agents(),
        AgentCommand::Delete { name, .. } => delete(&name),
    }
}

fn issue(args: &IssueArgs, register: bool) -> anyhow::Result<()> {
    let name = AgentName::parse(&args.name).map_err(|e| UsageError(e.to_string()))?;
    let label = args.label.clone().unwrap_or_default();
    if label.len() > 64 || label.chars().any(char::is_control) {
        return Err(UsageError("--label: at most 64 printable characters".to_owned()).into());
    }
    let expires_at = expiry(args)?;

    let vault = open_vault()?;
    let issued = vault.issue_token(&name, &label, expires_at)?;
    if args.save_token {
        vault.save_token(name.as_str(), &issued.value)?;
    }
    let value = issued.value.expose_str().unwrap_or_default();
    let record = &issued.record;
    let expires = record.expires_at.as_deref().map(|e| e.get(..10).unwrap_or(e));

    let mut out = std::io::stdout().lock();
    if args.output == CallOutput::Json {
        let json = serde_json::json!({
            "agent": record.agent,
            "token_id": record.id,
            "label": record.label,
            "expires_at": record.expires_at,
            "fingerprint": record.fingerprint,
            "token": value,
        });
        serde_json::to_writer(&mut out, &json)?;
        writeln!(out)?;
    } else {
        // The SDK reads label lines, a later line winning: the `Token` value goes last.
        let heading = if register { "Agent registered" } else { "Token issued" };
        writeln!(out, "\n{heading}")?;
        writeln!(out, "  Name     {}", record.agent)?;
        writeln!(out, "  Scope    workspace")?;
        writeln!(out, "  Agent    {}", record.agent)?;
        writeln!(out, "  Token ID {}", record.id)?;
        if !record.label.is_empty() {
            writeln!(out, "  Label    {}", record.label)?;
        }
        if let Some(expires) = expires {
            writeln!(out, "  Expires  {expires}")?;
        }
        writeln!(out, "  Token    {value}")?;
    }
    out.flush()?;
    eprintln!("Store this token securely: it is shown once and cannot be shown again.");
    Ok(())
}

/// `--ttl 30d|12h|90m` or `--expires YYYY-MM-DD|RFC3339`.
fn expiry(args: &IssueArgs) -> anyhow::Result<Option<jiff::Timestamp>> {
    if let Some(ttl) = &args.ttl {
        let bad = || UsageError(format!("--ttl {ttl:?}: use a number and a unit: 90m, 12h, 30d"));
        let (number, unit) = ttl.split_at(ttl.len().saturating_sub(1));
        let amount: i64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "m" => amount * 60,
            "h" => amount * 3600,
            "d" => amount * 86_400,
            _ => return Err(bad().into()),
        };
        if seconds <= 0 {
            return Err(bad().into());
        }
        let at = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(seconds));
        return Ok(Some(at.map_err(|_| bad())?));
    }
    let Some(raw) = &args.expires else { return Ok(None) };
    let bad = || UsageError(format!("--expires {raw:?}: use YYYY-MM-DD or an RFC 3339 time"));
    let at = match raw.parse::<jiff::Timestamp>() {
        Ok(at) => at,
        Err(_) => {
            let date: jiff::civil::Date = raw.parse().map_err(|_| bad())?;
            date.to_zoned(jiff::tz::TimeZone::UTC).map_err(|_| bad())?.timestamp()
        }
    };
    if at <= jiff::Timestamp::now() {
        return Err(UsageError(format!("--expires {raw:?} is in the past")).into());
    }
    Ok(Some(at))
}

fn list_tokens(agent: Option<&str>) -> anyhow::Result<()> {
    let vault = open_vault()?;
    let tokens = vault.tokens(agent)?;
    let mut out = std::io::stdout().lock();
    if tokens.is_empty() {
        writeln!(out, "No tokens found")?;
        return Ok(());
    }

    // With a name this is exactly the SDK's table; without one, the agent and creation
    // time come first so a person can tell tokens of different agents apart.
    if agent.is_some() {
        writeln!(
            out,
            "{:<20} {:<15} {:<15} {:<25} STATUS",
            "TOKEN ID", "LABEL", "EXPIRES", "LAST USED"
        )?;
    } else {
        writeln!(
            out,
            "{:<20} {:<20} {:<15} {:<12} {:<15} {:<25} STATUS",
            "TOKEN ID", "AGENT", "LABEL", "CREATED", "EXPIRES", "LAST USED"
        )?;
    }
    for token in &tokens {
        writeln!(out, "{}", token_row(token, agent.is_none()))?;
    }
    Ok(())
}

fn token_row(token: &TokenRecord, with_agent: bool) -> String {
    let label = fit(if token.label.is_empty() { "(none)" } else { &token.label }, 15);
    let expires = token.expires_at.as_deref().map_or("(none)", |e| e.get(..10).unwrap_or(e));
    let last_used = token.last_used_at.as_deref().map_or("never".to_owned(), short_time);
    if with_agent {
        let created = token.created_at.get(..10).unwrap_or(&token.created_at);
        return format!(
            "{:<20} {:<20} {:<15} {:<12} {:<15} {:<25} {}",
            token.id,
            fit(&token.agent, 20),
            label,
            created,
            expires,
            last_used,
            token.status()
        );
    }
    format!("{:<20} {:<15} {:<15} {:<25} {}", token.id, label, expires, last_used, token.status())
}

fn revoke(targets: &[String], agent: Option<&str>, all: bool) -> anyhow::Result<()> {
    let vault = open_vault()?;
    if all {
        let name = agent.or(targets.first().map(String::as_str)).ok_or_else(|| {
            UsageError("revoke --all needs the agent: --all --agent NAME".to_owned())
        })?;
        let count = vault.revoke_all(name)?;
        println!("Revoked {count} tokens of {name}");
        return Ok(());
    }

    let (agent, target) = match targets {
        [target] => (agent, target.as_str()),
        [name, target] => (Some(name.as_str()), target.as_str()),
        _ => {
            return Err(UsageError(
                "name the token: revoke TOKEN_ID [--agent NAME], or revoke --all --agent NAME"
                    .to_owned(),
            )
            .into());
        }
    };
    let id = token_id_of(&vault, target)?;
    if vault.revoke_token(&id, agent)? {
        println!("Revoked {id}");
    } else {
        println!("{id} was already revoked");
    }
    Ok(())
}

/// A token id as given, or the id of a token given by its value (a leaked token can be
/// revoked by whoever holds it).
fn token_id_of(vault: &Vault, target: &str) -> anyhow::Result<String> {
    if !target.starts_with(token::TOKEN_PREFIX) {
        return Ok(target.to_owned());
    }
    let record = vault.token_by_hash(&token::token_hash(target))?;
    record
        .map(|r| r.id)
        .ok_or_else(|| anyhow::anyhow!("that token was not issued by this workspace"))
}

fn list_agents() -> anyhow::Result<()> {
    let vault = open_vault()?;
    let audit = AuditLog::open(vault.home())?;
    let registered = vault.agents()?;
    let activity: BTreeMap<String, _> =
        audit.agent_activity()?.into_iter().map(|a| (a.agent.clone(), a)).collect();

    let mut names: Vec<String> = registered
        .iter()
        .filter(|a| a.deleted_at.is_none())
        .map(|a| a.name.clone())
        .chain(activity.keys().cloned())
        .collect();
    names.sort();
    names.dedup();

    let mut out = std::io::stdout().lock();
    if names.is_empty() {
        writeln!(out, "No agents found")?;
        return Ok(());
    }
    // The SDK slices five columns and reads everything after the fourth as the
    // registration date: the identity levels and call counts are for people only.
    let wide = stdout_is_terminal();
    if wide {
        writeln!(
            out,
            "{:<20} {:<15} {:<8} {:<25} {:<12} {:<17} CALLS",
            "AGENT", "SCOPE", "TOKENS", "LAST USED", "REGISTERED", "LEVELS"
        )?;
    } else {
        writeln!(
            out,
            "{:<20} {:<15} {:<8} {:<25} REGISTERED",
            "AGENT", "SCOPE", "TOKENS", "LAST USED"
        )?;
    }
    for name in names {
        let record = registered.iter().find(|a| a.name == name && a.deleted_at.is_none());
        let seen = activity.get(&name);
        let tokens = record.map_or(0, |r| r.active_tokens);
        let last = seen
            .map(|s| s.last_call.clone())
            .or_else(|| record.and_then(|r| r.last_used_at.clone()))
            .map_or("never".to_owned(), |t| short_time(&t));
        let registered_at = record.map_or("(declared)", |r| r.created_at.get(..10).unwrap_or(""));
        let name = fit(&name, 20);
        if !wide {
            writeln!(out, "{name:<20} {:<15} {tokens:<8} {last:<25} {registered_at}", "workspace")?;
            continue;
        }
        let levels = seen.map_or("-".to_owned(), |s| s.levels.join(","));
        let calls = seen.map_or(0, |s| s.calls);
        writeln!(
            out,
            "{name:<20} {:<15} {tokens:<8} {last:<25} {registered_at:<12} {levels:<17} {calls}",
            "workspace",
        )?;
    }
    Ok(())
}

fn delete(name: &str) -> anyhow::Result<()> {
    let vault = open_vault()?;
    let revoked = vault.delete_agent(name)?;
    println!("Deleted agent {name} ({revoked} tokens revoked; its log entries stay)");
    Ok(())
}

/// `2026-06-11 15:00 UTC` from an RFC 3339 time.
fn short_time(at: &str) -> String {
    match (at.get(..10), at.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => at.to_owned(),
    }
}

/// Cuts text to a column width so fixed-width columns never shift.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('~');
    cut
}
