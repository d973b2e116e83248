//! `log list` (and `proxy logs`, which shares it).

use std::io::Write;
use std::time::{Duration, Instant};

use agentsecrets_core::audit::{AuditEntry, CallStatus};
use agentsecrets_core::identity::IdentityLevel;
use agentsecrets_core::names::escape_for_display;
use agentsecrets_store::fixture::synthetic_entry;
use agentsecrets_store::{AuditLog, AuditQuery};

use crate::UsageError;
use anyhow::Context as _;

use crate::cli::{
    EntryFilters, ExportArgs, ExportFormat, LogCommand, LogFilters, LogFormat, SummaryArgs,
    SummaryBy, SummaryFormat,
};
use crate::commands::home;
use crate::output::stdout_is_terminal;

/// Runs a `log` subcommand.
pub fn run(command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::List(filters) => list(&filters),
        LogCommand::Detail { id } => detail(&id),
        LogCommand::Verify => verify(),
        LogCommand::Prune { before } => prune(&before),
        LogCommand::Seed { count, days } => seed(count, days),
        LogCommand::Summary(args) => summary(&args),
        LogCommand::Export(args) => export(&args),
    }
}

fn prune(before: &str) -> anyhow::Result<()> {
    let cutoff = match before.parse::<jiff::civil::Date>() {
        Ok(date) => {
            let midnight = date.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp();
            agentsecrets_store::format_timestamp(midnight)
        }
        Err(_) => time_bound("--before", before)?,
    };
    let vault = std::sync::Arc::new(crate::commands::open_vault()?);
    let audit = AuditLog::open(vault.home())?;
    let signer = vault.clone();
    audit.set_signer(Box::new(move |message| signer.sign(message)));

    let removed = audit.prune(&cutoff)?;
    println!("pruned {removed} entries before {cutoff}; a signed checkpoint keeps the chain whole");
    Ok(())
}

fn seed(count: u64, days: u32) -> anyhow::Result<()> {
    const BATCH: u64 = 10_000;

    let vault = std::sync::Arc::new(crate::commands::open_vault()?);
    let audit = AuditLog::open(vault.home())?;
    let signer = vault.clone();
    audit.set_signer(Box::new(move |message| signer.sign(message)));
    let end = jiff::Timestamp::now();
    let progress = progress_bar(count);

    let mut done = 0;
    while done < count {
        let batch: Vec<_> = (done..(done + BATCH).min(count))
            .map(|i| synthetic_entry(i, count, end, days, vault.workspace_id()))
            .collect();
        audit.record_many(&batch)?;
        done += batch.len() as u64;
        progress.set_position(done);
    }
    progress.finish_and_clear();
    println!("seeded {count} synthetic entries");
    Ok(())
}

fn summary(args: &SummaryArgs) -> anyhow::Result<()> {
    let query = AuditQuery {
        since: args.since.as_deref().map(|s| time_bound("--since", s)).transpose()?,
        ..AuditQuery::default()
    };
    let audit = AuditLog::open(&home()?)?;
    if args.by == Some(SummaryBy::Session) {
        return session_summary(&audit, &query, args.format);
    }
    let summary = audit.summary(&query)?;
    let mut out = std::io::stdout().lock();
    if args.format == Some(SummaryFormat::Json) {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
        return Ok(());
    }

    let anonymous =
        summary.by_identity.iter().find(|c| c.name == "anonymous").map_or(0, |c| c.calls);
    let share =
        if summary.total == 0 { 0.0 } else { 100.0 * anonymous as f64 / summary.total as f64 };
    writeln!(out, "Calls: {}", summary.total)?;
    writeln!(out, "By identity:")?;
    for count in &summary.by_identity {
        writeln!(out, "  {:<12} {}", count.name, count.calls)?;
    }
    writeln!(out, "Anonymous share (coverage gap): {share:.1}%")?;
    for (title, rows) in [
        ("Top agents", &summary.top_agents),
        ("Top secrets", &summary.top_secrets),
        ("Top domains", &summary.top_domains),
        ("Blocked and failed, by reason", &summary.refusals),
    ] {
        writeln!(out, "{title}:")?;
        if rows.is_empty() {
            writeln!(out, "  -")?;
        }
        for count in rows.iter() {
            writeln!(out, "  {:<40} {}", count.name, count.calls)?;
        }
    }
    let ms = |v: Option<i64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
    writeln!(
        out,
        "Duration of successful calls: p50 {}, p95 {}",
        ms(summary.p50_ms),
        ms(summary.p95_ms)
    )?;
    Ok(())
}

/// `log summary --by session`: one row per agent run, the most recent first.
fn session_summary(
    audit: &AuditLog,
    query: &AuditQuery,
    format: Option<SummaryFormat>,
) -> anyhow::Result<()> {
    let sessions = audit.sessions(query)?;
    let mut out = std::io::stdout().lock();
    if format == Some(SummaryFormat::Json) {
        serde_json::to_writer_pretty(&mut out, &sessions)?;
        writeln!(out)?;
        return Ok(());
    }
    if sessions.is_empty() {
        writeln!(out, "No sessions: calls carry one with X-AS-Session-ID or --session-id")?;
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header([
        "SESSION",
        "FIRST CALL",
        "LAST CALL",
        "CALLS",
        "BLOCKED",
        "AGENTS",
        "SECRETS",
    ]);
    for s in &sessions {
        let clock = |at: &str| at.get(..19).unwrap_or(at).replace('T', " ");
        table.add_row([
            escape_for_display(&s.session_id),
            clock(&s.first_call),
            clock(&s.last_call),
            s.calls.to_string(),
            s.blocked.to_string(),
            escape_for_display(&s.agents.join(",")),
            s.secrets.join(","),
        ]);
    }
    writeln!(out, "{table}")?;
    Ok(())
}

/// Streams the matching entries to stdout or, through a temporary file renamed at the
/// end, to `--output`: an interrupted export never leaves a half-written file behind.
fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let query = query(&args.filters, None)?;
    let audit = AuditLog::open(&home()?)?;
    let total = audit.count(&query)?;
    let progress = progress_bar(total);

    let (mut sink, temp): (Box<dyn Write>, Option<std::path::PathBuf>) = match &args.output {
        None => (Box::new(std::io::BufWriter::new(std::io::stdout().lock())), None),
        Some(path) => {
            let temp = path.with_extension("partial");
            let file = std::fs::File::create(&temp)
                .with_context(|| format!("cannot create {}", temp.display()))?;
            (Box::new(std::io::BufWriter::new(file)), Some(temp))
        }
    };

    let written = write_export(&audit, &query, args.format, &mut sink, &progress);
    let finished = written.and_then(|n| sink.flush().map(|()| n).map_err(Into::into));
    drop(sink);
    progress.finish_and_clear();
    match (finished, temp, &args.output) {
        (Ok(n), Some(temp), Some(path)) => {
            std::fs::rename(&temp, path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("exported {n} entries to {}", path.display());
            Ok(())
        }
        (Ok(_), _, _) => Ok(()),
        (Err(err), temp, _) => {
            if let Some(temp) = temp {
                let _ = std::fs::remove_file(temp);
            }
            Err(err)
        }
    }
}

fn write_export(
    audit: &AuditLog,
    query: &AuditQuery,
    format: ExportFormat,
    out: &mut dyn Write,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    match format {
        ExportFormat::Csv => writeln!(out, "{CSV_HEADER}")?,
        ExportFormat::Json => write!(out, "[")?,
        ExportFormat::Jsonl => {}
    }
    let mut first = true;
    let count = audit.for_each(query, |entry| {
        match format {
            ExportFormat::Csv => writeln!(out, "{}", csv_row(&entry))?,
            ExportFormat::Jsonl => {
                serde_json::to_writer(&mut *out, &entry)?;
                writeln!(out)?;
            }
            ExportFormat::Json => {
                if !first {
                    write!(out, ",")?;
                }
                writeln!(out)?;
                serde_json::to_writer(&mut *out, &entry)?;
            }
        }
        first = false;
        progress.inc(1);
        Ok(())
    })?;
    if format == ExportFormat::Json {
        writeln!(out, "\n]")?;
    }
    Ok(count)
}

/// A progress bar on a terminal for exports large enough to wait for; hidden otherwise.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;

    if total < 10_000 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} entries ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

fn detail(id: &str) -> anyhow::Result<()> {
    let audit = AuditLog::open(&home()?)?;
    let entry = audit.entry(id)?.ok_or_else(|| {
        anyhow::anyhow!("no audit entry {id}; find ids with: agentsecrets log list --format json")
    })?;
    let snapshot = match &entry.policy_snapshot_id {
        Some(snapshot) => audit.snapshot(snapshot)?,
        None => None,
    };
    let policy: serde_json::Value = snapshot
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(serde_json::Value::Null);
    let last = audit.last_seq()?;

    let detail = serde_json::json!({
        "entry": entry,
        "policy": policy,
        "chain": { "seq": entry.seq, "of": last, "prev_hash": entry.prev_hash, "hash": entry.hash },
    });
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &detail)?;
    writeln!(out)?;
    Ok(())
}

fn verify() -> anyhow::Result<()> {
    let vault = crate::commands::open_vault()?;
    let audit = AuditLog::open(vault.home())?;
    let report = audit.verify(vault.verifying_key()?.as_ref())?;
    match report.first_problem {
        None => {
            let pending = match report.pending {
                0 => String::new(),
                n => format!(" ({n} still pending: in flight, or cut short by a crash)"),
            };
            println!(
                "audit log intact: {} entries and {} signed checkpoints verified{pending}",
                report.entries, report.checkpoints
            );
            Ok(())
        }
        Some(problem) => {
            println!(
                "audit log BROKEN at entry {} (seq {}): {}; {} entries before it verified",
                problem.id, problem.seq, problem.problem, report.entries
            );
            Err(crate::Reported.into())
        }
    }
}

/// Prints the entries that match the filters.
pub fn list(filters: &LogFilters) -> anyhow::Result<()> {
    let query = query(&filters.entries, Some(filters.last))?;
    let audit = AuditLog::open(&home()?)?;
    let entries = audit.query(&query)?;
    let format = filters.format.unwrap_or(if stdout_is_terminal() {
        LogFormat::Table
    } else {
        LogFormat::Jsonl
    });

    if filters.tail {
        return tail(&audit, &query, format, entries);
    }
    let mut out = std::io::stdout().lock();
    match format {
        LogFormat::Table | LogFormat::Jsonl => print_entries(&entries, format)?,
        LogFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &entries)?;
            writeln!(out)?;
        }
        LogFormat::Csv => write_csv(&mut out, &entries)?,
    }
    Ok(())
}

/// Prints the recent entries, then every new one as it is committed by any process,
/// until interrupted. An entry is printed once it is settled, so each call shows with its
/// outcome; one left pending by a crashed process is printed after a grace period.
fn tail(
    audit: &AuditLog,
    query: &AuditQuery,
    format: LogFormat,
    recent: Vec<AuditEntry>,
) -> anyhow::Result<()> {
    const PENDING_GRACE: Duration = Duration::from_secs(30);

    print_entries(&recent, format)?;
    let mut seen = recent.last().map_or(audit.last_seq()?, |e| e.seq);
    let mut waiting_since: Option<(i64, Instant)> = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let fresh = audit.after(seen, query)?;
        let mut ready = Vec::new();
        for entry in fresh {
            if entry.status == CallStatus::Pending {
                let since = match waiting_since {
                    Some((seq, at)) if seq == entry.seq => at,
                    _ => {
                        waiting_since = Some((entry.seq, Instant::now()));
                        break;
                    }
                };
                if since.elapsed() < PENDING_GRACE {
                    break;
                }
            }
            ready.push(entry);
        }
        if let Some(last) = ready.last() {
            seen = last.seq;
        }
        print_entries(&ready, format)?;
    }
}

fn print_entries(entries: &[AuditEntry], format: LogFormat) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for entry in entries {
        match format {
            LogFormat::Table => writeln!(out, "{}", terminal_safe(&entry.one_line()))?,
            _ => {
                serde_json::to_writer(&mut out, entry)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `line` with every control character (ESC of an ANSI sequence, CR, BEL, C1 codes)
/// written as an escape, so nothing a caller put in an entry can drive the terminal.
fn terminal_safe(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(line);
    }
    let escaped = line
        .chars()
        .flat_map(|c| {
            let shown: Vec<char> =
                if c.is_control() { c.escape_default().collect() } else { vec![c] };
            shown
        })
        .collect();
    std::borrow::Cow::Owned(escaped)
}

/// The store query for the command line's filters; `last` bounds it to the newest N.
fn query(filters: &EntryFilters, last: Option<usize>) -> anyhow::Result<AuditQuery> {
    let identity = filters
        .identity
        .iter()
        .map(|raw| {
            IdentityLevel::parse(&raw.to_ascii_lowercase()).ok_or_else(|| {
                UsageError(format!("--identity {raw:?}: use anonymous, declared or issued"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let status = filters
        .status
        .as_deref()
        .map(|raw| {
            CallStatus::parse(raw)
                .ok_or_else(|| UsageError(format!("--status {raw:?}: use OK, BLOCKED or ERROR")))
        })
        .transpose()?;

    let since = filters.since.as_deref().map(|s| time_bound("--since", s)).transpose()?;
    let until = filters.until.as_deref().map(|s| time_bound("--until", s)).transpose()?;
    if let (Some(since), Some(until)) = (&since, &until)
        && since > until
    {
        return Err(UsageError(format!(
            "--since {since} is after --until {until}: no entry can match; swap them"
        ))
        .into());
    }

    Ok(AuditQuery {
        last,
        secret: filters.secret.clone(),
        agent: filters.agent.clone(),
        token: filters.token.clone(),
        identity,
        status,
        domain: filters.domain.clone(),
        reason: filters.reason.clone(),
        session: filters.session.clone(),
        since,
        until,
    })
}

/// `15m`, `2h`, `7d`, `30s` ago, or an RFC 3339 time, as the log's timestamp form.
fn time_bound(flag: &str, raw: &str) -> anyhow::Result<String> {
    let bad = || UsageError(format!("{flag} {raw:?}: use 15m, 2h, 7d or an RFC 3339 time"));
    if let Ok(ts) = raw.parse::<jiff::Timestamp>() {
        return Ok(agentsecrets_store::format_timestamp(ts));
    }
    let (number, unit) = raw.split_at(raw.len().saturating_sub(1));
    let amount: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => amount,
        "m" => amount * 60,
        "h" => amount * 3600,
        "d" => amount * 86_400,
        _ => return Err(bad().into()),
    };
    let then = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(seconds))
        .map_err(|_| bad())?;
    Ok(agentsecrets_store::format_timestamp(then))
}

const CSV_HEADER: &str = "id,seq,timestamp,workspace,project,agent_id,identity_level,token_id,\
    token_fingerprint,session_id,transport,method,target_url,domain,secret_keys,auth_styles,\
    status,reason,status_code,duration_ms,redacted,policy_snapshot_id,prev_hash,hash";

fn write_csv(out: &mut impl Write, entries: &[AuditEntry]) -> std::io::Result<()> {
    writeln!(out, "{CSV_HEADER}")?;
    for entry in entries {
        writeln!(out, "{}", csv_row(entry))?;
    }
    Ok(())
}

fn csv_row(e: &AuditEntry) -> String {
    let fields = [
        e.id.clone(),
        e.seq.to_string(),
        e.timestamp.clone(),
        e.workspace.clone(),
        e.project.clone(),
        e.agent_id.clone().unwrap_or_default(),
        e.identity_level.as_str().to_owned(),
        e.token_id.clone().unwrap_or_default(),
        e.token_fingerprint.clone().unwrap_or_default(),
        e.session_id.clone().unwrap_or_default(),
        e.transport.as_str().to_owned(),
        e.method.clone(),
        e.target_url.clone(),
        e.domain.clone(),
        e.secret_keys.join(";"),
        e.auth_styles.join(";"),
        e.status.as_str().to_owned(),
        e.reason.clone(),
        e.status_code.map(|c| c.to_string()).unwrap_or_default(),
        e.duration_ms.to_string(),
        e.redacted.to_string(),
        e.policy_snapshot_id.clone().unwrap_or_default(),
        e.prev_hash.clone(),
        e.hash.clone(),
    ];
    fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",")
}

/// RFC 4180 quoting: quote fields holding a comma, quote or line break; double quotes.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}
