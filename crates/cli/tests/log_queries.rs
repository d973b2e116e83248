//! `log list`, `log export` and `log verify` against a known fixture log.
//!
//! The fixture is the one `log seed` writes: entry `i` of `N` is a pure function of `i`
//! (see `agentsecrets_store::fixture`), so each filter's expected entries are computed
//! here from that rule and compared with what the binary selects.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::TestHome;

/// Entries in the fixture, spread evenly over `DAYS` days before now.
const TOTAL: u64 = 200;
const DAYS: &str = "10";

const AGENTS: [&str; 5] =
    ["billing-tool", "research-bot", "support-agent", "deploy-bot", "qa-runner"];
const SECRETS: [&str; 4] = ["STRIPE_KEY", "OPENAI_KEY", "GITHUB_TOKEN", "SLACK_TOKEN"];
const DOMAINS: [&str; 5] =
    ["api.stripe.com", "api.openai.com", "api.github.com", "slack.com", "evil.example"];

/// What the fixture rule says of entry `i` (its seq is `i + 1` in a fresh log).
struct Expected {
    level: &'static str,
    agent: Option<&'static str>,
    token: Option<String>,
    secret: &'static str,
    domain: &'static str,
    session: String,
}

fn expected(i: u64) -> Expected {
    let level = match i % 10 {
        0..=2 => "anonymous",
        3..=5 => "declared",
        _ => "issued",
    };
    Expected {
        level,
        agent: (level != "anonymous").then(|| AGENTS[(i / 10) as usize % AGENTS.len()]),
        token: (level == "issued").then(|| format!("tok_seed{:08}", i % 97)),
        secret: SECRETS[(i / 7) as usize % SECRETS.len()],
        domain: DOMAINS[(i / 3) as usize % DOMAINS.len()],
        session: format!("run-{}", i / 50),
    }
}

/// The seqs of the fixture entries for which `keep` holds.
fn seqs_where(keep: impl Fn(&Expected) -> bool) -> BTreeSet<i64> {
    (0..TOTAL).filter(|&i| keep(&expected(i))).map(|i| i as i64 + 1).collect()
}

fn seeded() -> TestHome {
    let home = TestHome::new();
    home.run_ok(&["log", "seed", "--count", &TOTAL.to_string(), "--days", DAYS]);
    home
}

/// The entries `log list` selects with `filters`, as parsed JSON Lines.
fn list(home: &TestHome, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["log", "list", "--format", "jsonl"];
    if !filters.contains(&"--last") {
        args.extend_from_slice(&["--last", "100000"]);
    }
    args.extend_from_slice(filters);
    home.run_ok(&args)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON entry"))
        .collect()
}

fn seqs(entries: &[Value]) -> BTreeSet<i64> {
    entries.iter().map(|e| e["seq"].as_i64().expect("seq")).collect()
}

#[test]
fn every_filter_selects_exactly_the_matching_entries() {
    let home = seeded();
    let check = |filters: &[&str], keep: &dyn Fn(&Expected) -> bool| {
        let want = seqs_where(keep);
        assert!(!want.is_empty(), "the fixture has entries for {filters:?}");
        assert_eq!(seqs(&list(&home, filters)), want, "log list {filters:?}");
    };

    check(&["--identity", "anonymous"], &|e| e.level == "anonymous");
    check(&["--identity", "declared", "--identity", "ISSUED"], &|e| e.level != "anonymous");
    check(&["--agent", "billing-tool"], &|e| e.agent == Some("billing-tool"));
    check(&["--token", "tok_seed00000005"], &|e| e.token.as_deref() == Some("tok_seed00000005"));
    check(&["--secret", "GITHUB_TOKEN"], &|e| e.secret == "GITHUB_TOKEN");
    check(&["--domain", "api.github.com"], &|e| e.domain == "api.github.com");
    check(&["--status", "BLOCKED"], &|e| e.domain == "evil.example");
    check(&["--status", "ok"], &|e| e.domain != "evil.example");
    check(&["--reason", "domain_not_in_allowlist"], &|e| e.domain == "evil.example");
    check(&["--session", "run-2"], &|e| e.session == "run-2");
    check(
        &[
            "--identity",
            "issued",
            "--agent",
            "deploy-bot",
            "--status",
            "OK",
            "--secret",
            "STRIPE_KEY",
        ],
        &|e| {
            e.level == "issued"
                && e.agent == Some("deploy-bot")
                && e.domain != "evil.example"
                && e.secret == "STRIPE_KEY"
        },
    );
    assert!(list(&home, &["--agent", "nobody"]).is_empty());
}

#[test]
fn time_bounds_and_last_cut_the_log_where_asked() {
    let home = seeded();
    let all = list(&home, &[]);
    assert_eq!(all.len(), TOTAL as usize);

    // Entry i lies (TOTAL - i) * 1.2 h before the seed: the newest 1.2 h ago.
    assert_eq!(list(&home, &["--since", "11d"]).len(), TOTAL as usize);
    assert_eq!(list(&home, &["--since", "1h"]).len(), 0);
    assert_eq!(seqs(&list(&home, &["--since", "2h"])), BTreeSet::from([TOTAL as i64]));
    assert_eq!(list(&home, &["--until", "11d"]).len(), 0);

    // An absolute bound is inclusive at --since and exclusive at --until.
    let middle = all[100]["timestamp"].as_str().expect("timestamp").to_owned();
    let since = seqs(&list(&home, &["--since", &middle]));
    let until = seqs(&list(&home, &["--until", &middle]));
    assert_eq!(since, (101..=TOTAL as i64).collect());
    assert_eq!(until, (1..=100).collect());

    let last = list(&home, &["--identity", "anonymous", "--last", "3"]);
    let want: Vec<i64> = seqs_where(|e| e.level == "anonymous").into_iter().rev().take(3).collect();
    let mut got: Vec<i64> = last.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    got.reverse();
    assert_eq!(got, want, "the newest three, printed oldest first");
    assert_eq!(list(&home, &["--last", "0"]).len(), 0);
}

#[test]
fn every_format_carries_the_same_entries() {
    let home = seeded();
    let filters = ["--session", "run-1"];
    let want: Vec<Value> = list(&home, &filters);
    let ids: Vec<&str> = want.iter().map(|e| e["id"].as_str().unwrap()).collect();

    let json: Value = serde_json::from_str(&home.run_ok(&[
        "log",
        "list",
        "--format",
        "json",
        "--last",
        "1000",
        "--session",
        "run-1",
    ]))
    .expect("--format json is one JSON document");
    assert_eq!(json.as_array().expect("an array"), &want);

    let table =
        home.run_ok(&["log", "list", "--format", "table", "--last", "1000", "--session", "run-1"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), want.len());
    for (line, entry) in lines.iter().zip(&want) {
        let who = entry["agent_id"].as_str().unwrap_or("(anonymous)");
        assert!(line.contains(who) && line.contains(entry["domain"].as_str().unwrap()), "{line}");
    }

    let csv =
        home.run_ok(&["log", "list", "--format", "csv", "--last", "1000", "--session", "run-1"]);
    let rows = parse_csv(&csv);
    assert_eq!(rows.iter().map(|r| r["id"].as_str()).collect::<Vec<_>>(), ids);
}

/// CSV rows as maps from the header row's names, read by a real CSV parser.
fn parse_csv(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> =
        reader.headers().expect("a header row").iter().map(Into::into).collect();
    reader
        .records()
        .map(|record| {
            let record = record.expect("an RFC 4180 record");
            header.iter().cloned().zip(record.iter().map(str::to_owned)).collect()
        })
        .collect()
}

#[test]
fn an_export_round_trips_through_a_csv_parser_field_for_field() {
    let home = seeded();
    // A field with a comma, a quote and a line break needs every rule of RFC 4180.
    let conn = rusqlite::Connection::open(home.path().join("audit.db")).expect("audit.db");
    conn.execute(
        "UPDATE audit_log SET target_url = 'https://api.stripe.com/v1/a,b?q=\"x\"\n' WHERE seq = 7",
        [],
    )
    .expect("edit one row");

    let out = home.path().parent().unwrap().join("export.csv");
    let out_text = out.to_string_lossy().into_owned();
    home.run_ok(&["log", "export", "--format", "csv", "--output", &out_text]);
    let rows = parse_csv(&std::fs::read_to_string(&out).expect("the export"));
    let entries = list(&home, &[]);
    assert_eq!(rows.len(), entries.len());

    for (row, entry) in rows.iter().zip(&entries) {
        for field in ["id", "timestamp", "identity_level", "target_url", "domain", "status", "hash"]
        {
            assert_eq!(row[field], entry[field].as_str().unwrap(), "{field} of {}", entry["id"]);
        }
        assert_eq!(row["seq"], entry["seq"].to_string());
        let agent = entry["agent_id"].as_str().unwrap_or("");
        assert_eq!(row["agent_id"], agent);
    }
    assert_eq!(rows[6]["target_url"], "https://api.stripe.com/v1/a,b?q=\"x\"\n");

    let filtered =
        home.run_ok(&["log", "export", "--format", "jsonl", "--token", "tok_seed00000005"]);
    let want = seqs_where(|e| e.token.as_deref() == Some("tok_seed00000005"));
    let got: BTreeSet<i64> = filtered
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(got, want, "export takes the same filters as list");
}

#[test]
fn bad_filters_are_refused_with_the_rule() {
    let home = seeded();
    for (args, needle) in [
        (vec!["--identity", "robot"], "anonymous, declared or issued"),
        (vec!["--status", "FINE"], "OK, BLOCKED or ERROR"),
        (vec!["--since", "yesterday"], "15m, 2h, 7d"),
        (vec!["--until", "7x"], "15m, 2h, 7d"),
        (vec!["--since", "1d", "--until", "3d"], "swap them"),
    ] {
        let mut full = vec!["log", "list"];
        full.extend_from_slice(&args);
        let out = home.run(&full);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(out.stdout.is_empty(), "{args:?} prints no entries");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let unknown = home.run(&["log", "detail", "log_00000000000000000000000000"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("log_00000000000000000000000000"));
}

#[test]
fn table_output_escapes_control_characters_from_an_entry() {
    let home = seeded();
    let conn = rusqlite::Connection::open(home.path().join("audit.db")).expect("audit.db");
    conn.execute(
        "UPDATE audit_log SET agent_id = 'evil\u{1b}[2J\u{7}', reason = 'x\ry' WHERE seq = 4",
        [],
    )
    .expect("edit one row");

    let table = home.run_ok(&["log", "list", "--format", "table", "--last", "1000"]);
    assert!(!table.contains('\u{1b}') && !table.contains('\u{7}') && !table.contains('\r'));
    assert!(table.contains("evil\\u{1b}[2J"), "the name is shown, escaped: {table}");
}

#[test]
fn an_audit_log_from_a_newer_version_is_refused_untouched() {
    let home = seeded();
    let path = home.path().join("audit.db");
    rusqlite::Connection::open(&path)
        .and_then(|c| c.pragma_update(None, "user_version", 999))
        .expect("mark as newer");
    let before = std::fs::read(&path).unwrap();

    let out = home.run(&["log", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit.db") && err.contains("newer"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was rewritten");
}

/// Runs `log verify` and returns its exit code and stdout.
fn verify(home: &TestHome) -> (Option<i32>, String) {
    let out = home.run(&["log", "verify"]);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn verify_names_a_changed_a_deleted_an_inserted_and_a_reordered_entry() {
    let edits: [(&str, &str, &str); 4] = [
        ("changed", "UPDATE audit_log SET domain = 'tampered.example' WHERE seq = 50", "(seq 50)"),
        ("deleted", "DELETE FROM audit_log WHERE seq = 50", "(seq 51)"),
        (
            "inserted",
            "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 50;
             UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1050;
             INSERT INTO audit_log SELECT 50, 'log_forged', timestamp, workspace, project,
                agent_id, identity_level, token_id, token_fingerprint, session_id, transport,
                method, target_url, domain, secret_keys, auth_styles, status, reason,
                status_code, duration_ms, redacted, policy_snapshot_id, prev_hash, hash,
                outcome_hash FROM audit_log WHERE seq = 49;",
            "(seq 50)",
        ),
        (
            "reordered",
            "UPDATE audit_log SET seq = -1 WHERE seq = 50;
             UPDATE audit_log SET seq = 50 WHERE seq = 51;
             UPDATE audit_log SET seq = 51 WHERE seq = -1;",
            "(seq 50)",
        ),
    ];
    for (kind, sql, names) in edits {
        let home = seeded();
        let (code, intact) = verify(&home);
        assert_eq!(code, Some(0), "{intact}");
        assert!(intact.contains(&format!("{TOTAL} entries")), "{intact}");

        let conn = rusqlite::Connection::open(home.path().join("audit.db")).expect("audit.db");
        conn.execute_batch(sql).unwrap_or_else(|e| panic!("{kind}: {e}"));
        drop(conn);

        let (code, report) = verify(&home);
        assert_eq!(code, Some(1), "{kind}: {report}");
        assert!(report.contains("BROKEN") && report.contains(names), "{kind}: {report}");
    }
}
