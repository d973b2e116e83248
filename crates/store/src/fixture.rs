//! Synthetic audit entries, for benchmarks and tests of large logs (`log seed`).
//!
//! Entries are deterministic in their index: a mix of identity levels, agents, secrets,
//! domains and outcomes close to what a team's proxy sees, spread over `days` before
//! `end`.

use agentsecrets_core::audit::{CallStatus, Transport};
use agentsecrets_core::identity::IdentityLevel;

use crate::audit::{NewAuditEntry, Outcome};

const AGENTS: &[&str] =
    &["billing-tool", "research-bot", "support-agent", "deploy-bot", "qa-runner"];
const SECRETS: &[&str] = &["STRIPE_KEY", "OPENAI_KEY", "GITHUB_TOKEN", "SLACK_TOKEN"];
const DOMAINS: &[&str] =
    &["api.stripe.com", "api.openai.com", "api.github.com", "slack.com", "evil.example"];

/// The `index`-th synthetic entry of a log ending at `end`, spread over `days`.
pub fn synthetic_entry(
    index: u64,
    total: u64,
    end: jiff::Timestamp,
    days: u32,
    workspace: &str,
) -> (NewAuditEntry, Outcome) {
    let spread = i64::from(days) * 86_400 * 1_000_000;
    let step = spread / total.max(1) as i64;
    let back = spread - step * index as i64;
    let at = end.checked_sub(jiff::SignedDuration::from_micros(back)).unwrap_or(end);

    let level = match index % 10 {
        0..=2 => IdentityLevel::Anonymous,
        3..=5 => IdentityLevel::Declared,
        _ => IdentityLevel::Issued,
    };
    let agent = (level != IdentityLevel::Anonymous)
        .then(|| AGENTS[(index / 10) as usize % AGENTS.len()].to_owned());
    let domain = DOMAINS[(index / 3) as usize % DOMAINS.len()];
    let secret = SECRETS[(index / 7) as usize % SECRETS.len()];
    let blocked = domain == "evil.example";

    let entry = NewAuditEntry {
        workspace: workspace.to_owned(),
        project: "default".to_owned(),
        agent_id: agent,
        identity_level: level,
        token_id: (level == IdentityLevel::Issued).then(|| format!("tok_seed{:08}", index % 97)),
        token_fingerprint: None,
        session_id: Some(format!("run-{}", index / 50)),
        transport: Transport::Http,
        method: if index.is_multiple_of(4) { "POST" } else { "GET" }.to_owned(),
        target_url: format!("https://{domain}/v1/resource/{}", index % 1000),
        domain: domain.to_owned(),
        secret_keys: vec![secret.to_owned()],
        auth_styles: vec!["bearer".to_owned()],
        policy_snapshot_id: None,
        at: Some(crate::format_timestamp(at)),
    };
    let outcome = Outcome {
        status: if blocked { CallStatus::Blocked } else { CallStatus::Ok },
        reason: if blocked { "domain_not_in_allowlist" } else { "-" }.to_owned(),
        status_code: Some(if blocked { 403 } else { 200 }),
        duration_ms: 20 + (index * 7919) % 400,
        redacted: index.is_multiple_of(50),
    };
    (entry, outcome)
}
