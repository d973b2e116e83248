//! `secrets set|get|list|delete|import|export-names`.

use std::io::{Read, Write};
use std::path::PathBuf;

use agentsecrets_core::dotenv;
use agentsecrets_core::names::SecretKey;
use agentsecrets_core::secret::SecretValue;
use anyhow::Context as _;
use zeroize::Zeroizing;

use crate::UsageError;
use crate::cli::SecretsCommand;
use crate::commands::{current_project, open_vault};
use crate::output::{stdin_is_terminal, stdout_is_terminal};

/// Runs a `secrets` subcommand.
pub fn run(command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::Set { entries } => set(&entries),
        SecretsCommand::Get { key } => get(&key),
        SecretsCommand::List => list(),
        SecretsCommand::Delete { key } => delete(&key),
        SecretsCommand::Import { file } => import(file),
        SecretsCommand::ExportNames => export_names(),
    }
}

fn set(entries: &[String]) -> anyhow::Result<()> {
    // Parse and validate everything before opening the vault: a bad entry stores nothing.
    let bare = entries.iter().filter(|e| !e.contains('=')).count();
    if bare > 1 {
        return Err(UsageError(
            "only one KEY without a value can be read from stdin or a prompt at a time; \
             give the others as KEY=value"
                .to_owned(),
        )
        .into());
    }
    // Every name first, so that a bad one is refused before anyone types a value for it.
    let keys = entries
        .iter()
        .map(|entry| parse_key(entry.split_once('=').map_or(entry.as_str(), |(name, _)| name)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut values = Vec::with_capacity(entries.len());
    for (entry, key) in entries.iter().zip(keys) {
        let value = match entry.split_once('=') {
            Some((_, value)) => SecretValue::from_str_value(value),
            None => read_value(key.as_str())?,
        };
        values.push((key, value));
    }

    let vault = open_vault()?;
    let project = current_project(&vault)?;
    vault.set_secrets(&project, &values)?;
    let names: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
    println!("Stored {} in project '{}'", names.join(", "), project.name);
    Ok(())
}

/// Reads a value from piped stdin, or from a hidden prompt on a terminal.
fn read_value(name: &str) -> anyhow::Result<SecretValue> {
    if !stdin_is_terminal() {
        let mut raw = Zeroizing::new(Vec::new());
        std::io::stdin().read_to_end(&mut raw).context("cannot read the value from stdin")?;
        let end = raw.strip_suffix(b"\n").map_or(raw.len(), |s| s.len());
        let end = raw[..end].strip_suffix(b"\r").map_or(end, |s| s.len());
        return Ok(SecretValue::new(raw[..end].to_vec()));
    }
    if !stdout_is_terminal() {
        return Err(UsageError(format!(
            "no value for {name}: pipe it on stdin or write {name}=value"
        ))
        .into());
    }
    let typed = Zeroizing::new(
        rpassword::prompt_password(format!("Value for {name} (hidden): "))
            .context("cannot read the value from the terminal")?,
    );
    Ok(SecretValue::from_str_value(&typed))
}

fn get(key: &str) -> anyhow::Result<()> {
    let key = parse_key(key)?;
    let vault = open_vault()?;
    let project = current_project(&vault)?;
    let value = vault
        .secret(&project, key.as_str())?
        .ok_or_else(|| anyhow::anyhow!("secret '{key}' not found in project '{}'", project.name))?;

    let mut out = std::io::stdout().lock();
    out.write_all(value.expose())?;
    out.write_all(b"\n")?;
    Ok(())
}

fn list() -> anyhow::Result<()> {
    let vault = open_vault()?;
    let project = current_project(&vault)?;
    let names = vault.secret_names(&project)?;

    // The SDK takes the first word of every line that is not the header or the rule.
    let mut out = std::io::stdout().lock();
    if names.is_empty() {
        eprintln!("No secrets in project '{}'", project.name);
        return Ok(());
    }
    writeln!(out, "Key")?;
    writeln!(out, "{}", "─".repeat(40))?;
    for name in names {
        writeln!(out, "{name}")?;
    }
    Ok(())
}

fn delete(key: &str) -> anyhow::Result<()> {
    let key = parse_key(key)?;
    let vault = open_vault()?;
    let project = current_project(&vault)?;
    if !vault.delete_secret(&project, key.as_str())? {
        anyhow::bail!("secret '{key}' not found in project '{}'", project.name);
    }
    println!("Deleted {key} from project '{}'", project.name);
    Ok(())
}

fn import(file: Option<PathBuf>) -> anyhow::Result<()> {
    let text = Zeroizing::new(match file.as_deref() {
        None => read_stdin()?,
        Some(path) if path.as_os_str() == "-" => read_stdin()?,
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    });
    let entries = dotenv::parse(&text).map_err(|e| UsageError(format!("dotenv: {e}")))?;

    let mut values = Vec::with_capacity(entries.len());
    for entry in &entries {
        let key = SecretKey::parse(&entry.key)
            .map_err(|e| UsageError(format!("dotenv line {}: {e}", entry.line)))?;
        values.retain(|(k, _): &(SecretKey, SecretValue)| k != &key);
        values.push((key, SecretValue::from_str_value(&entry.value)));
    }
    if values.is_empty() {
        anyhow::bail!("no KEY=value lines found; nothing imported");
    }

    let vault = open_vault()?;
    let project = current_project(&vault)?;
    vault.set_secrets(&project, &values)?;
    println!("Imported {} secrets into project '{}'", values.len(), project.name);
    Ok(())
}

fn read_stdin() -> anyhow::Result<String> {
    if stdin_is_terminal() {
        return Err(UsageError("give a file to import, or pipe one on stdin".to_owned()).into());
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("cannot read stdin")?;
    Ok(text)
}

fn export_names() -> anyhow::Result<()> {
    let vault = open_vault()?;
    let project = current_project(&vault)?;
    let mut out = std::io::stdout().lock();
    for name in vault.secret_names(&project)? {
        writeln!(out, "{name}=")?;
    }
    Ok(())
}

/// Validates a key name; a bad one is a usage error.
pub fn parse_key(raw: &str) -> anyhow::Result<SecretKey> {
    SecretKey::parse(raw).map_err(|e| UsageError(e.to_string()).into())
}
