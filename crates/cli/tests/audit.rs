//! The audit log's guarantees: the record of a call is committed before the credential
//! leaves, and no credential is used when its record cannot be written.

mod support;

use std::time::{Duration, Instant};

use support::{ProxyOptions, Reply, TestHome, Upstream};

fn home_with_secret() -> TestHome {
    let home = TestHome::new();
    home.set_secrets(&[("STRIPE_KEY", "sk_audit_canary_0001")]);
    home.allow(&["127.0.0.1"]);
    home
}

/// Rows of the audit database read directly, as `(status, reason)`.
fn rows(home: &TestHome) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(home.path().join("audit.db")).expect("open audit.db");
    let mut stmt = conn.prepare("SELECT status, reason FROM audit_log ORDER BY seq").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn the_record_is_committed_before_the_upstream_sees_the_credential() {
    let home = home_with_secret();
    let upstream = Upstream::start();
    let options = ProxyOptions { upstream_timeout_secs: Some(5), ..ProxyOptions::local() };
    let proxy = home.start_proxy(options);

    let request = proxy.call(&upstream.url("/slow")).header("X-AS-Inject-Bearer", "STRIPE_KEY");
    let in_flight = std::thread::spawn(move || Reply::send(request));

    // The moment the upstream holds the credential, the log must already hold the call.
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstream.received().is_empty() {
        assert!(Instant::now() < deadline, "the upstream never received the call");
        std::thread::sleep(Duration::from_millis(10));
    }
    let during = rows(&home);
    assert_eq!(during.len(), 1, "{during:?}");
    assert_eq!(during[0].0, "PENDING");

    let reply = in_flight.join().expect("caller thread");
    reply.assert_refused(504, "upstream_timeout");
    assert_eq!(rows(&home), vec![("ERROR".to_owned(), "upstream_timeout".to_owned())]);
}

#[test]
fn a_locked_audit_log_refuses_the_call_before_any_secret_is_used() {
    let home = home_with_secret();
    let upstream = Upstream::start();
    let proxy = home.start_proxy(ProxyOptions::local());
    let call =
        || Reply::send(proxy.call(&upstream.url("/")).header("X-AS-Inject-Bearer", "STRIPE_KEY"));
    assert_eq!(call().status, 200);

    // Another process holds the log's write lock for longer than a call may wait.
    let blocker = rusqlite::Connection::open(home.path().join("audit.db")).expect("open");
    blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock the audit log");
    call().assert_refused(503, "audit_unavailable");
    let cli = home.run_env(
        &["call", "--url", &upstream.url("/"), "--bearer", "STRIPE_KEY", "--output", "json"],
        &[],
    );
    blocker.execute_batch("COMMIT").expect("unlock");

    assert_eq!(cli.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&cli.stdout).contains("audit_unavailable"));
    assert_eq!(upstream.received().len(), 1, "no call went out while the log was locked");
    assert_eq!(call().status, 200, "the proxy serves again once the log is writable");
    assert_eq!(rows(&home).len(), 2);
}

/// A home where a few calls went through `call` without a proxy: allowed, blocked, failed.
fn home_with_calls(upstream: &Upstream) -> TestHome {
    let home = home_with_secret();
    let env = [("AGENTSECRETS_ALLOW_LOCAL_HTTP", "1")];
    let allowed = upstream.url("/v1/a,b");
    for args in [
        vec!["call", "--url", allowed.as_str(), "--bearer", "STRIPE_KEY", "--agent-id", "bot-1"],
        vec!["call", "--url", allowed.as_str(), "--bearer", "STRIPE_KEY"],
        vec!["call", "--url", "https://blocked.example/", "--bearer", "STRIPE_KEY"],
        vec!["call", "--url", allowed.as_str(), "--bearer", "MISSING"],
    ] {
        home.run_env(&args, &env);
    }
    home
}

#[test]
fn log_verify_finds_an_edited_outcome_and_a_removed_entry() {
    let upstream = Upstream::start();
    let home = home_with_calls(&upstream);
    let verify = || home.run(&["log", "verify"]);

    let intact = verify();
    assert!(intact.status.success(), "{}", support::describe(&intact));
    assert!(String::from_utf8_lossy(&intact.stdout).contains("4 entries and"));

    let conn = rusqlite::Connection::open(home.path().join("audit.db")).unwrap();
    conn.execute("UPDATE audit_log SET status = 'OK', reason = '-' WHERE seq = 3", []).unwrap();
    let edited = verify();
    assert_eq!(edited.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&edited.stdout).contains("(seq 3)"),
        "{}",
        support::describe(&edited)
    );

    conn.execute(
        "UPDATE audit_log SET status = 'BLOCKED', reason = 'domain_not_in_allowlist' \
                  WHERE seq = 3",
        [],
    )
    .unwrap();
    assert!(verify().status.success(), "restoring the fields restores the chain");
    conn.execute("DELETE FROM audit_log WHERE seq = 2", []).unwrap();
    let removed = verify();
    assert_eq!(removed.status.code(), Some(1));
    let text = String::from_utf8_lossy(&removed.stdout).into_owned();
    assert!(text.contains("(seq 3)") && text.contains("missing"), "{text}");
}

#[test]
fn log_detail_shows_the_policy_that_was_in_force_at_the_time() {
    let upstream = Upstream::start();
    let home = home_with_calls(&upstream);
    home.allow(&["api.example.com"]);
    let env = [("AGENTSECRETS_ALLOW_LOCAL_HTTP", "1")];
    home.run_env(&["call", "--url", &upstream.url("/"), "--bearer", "STRIPE_KEY"], &env);

    let entries = home.audit();
    let detail = |id: &str| -> serde_json::Value {
        serde_json::from_str(&home.run_ok(&["log", "detail", id])).expect("detail is JSON")
    };
    let first = detail(entries[0]["id"].as_str().unwrap());
    let last = detail(entries[4]["id"].as_str().unwrap());

    assert_eq!(first["policy"]["allowlist"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(last["policy"]["allowlist"], serde_json::json!(["127.0.0.1", "api.example.com"]));
    assert_eq!(first["chain"]["seq"], 1);
    assert_eq!(first["entry"]["agent_id"], "bot-1");
    assert_eq!(home.run(&["log", "detail", "log_nope"]).status.code(), Some(1));
}

#[test]
fn log_summary_counts_identities_secrets_and_refusals() {
    let upstream = Upstream::start();
    let home = home_with_calls(&upstream);

    let summary: serde_json::Value =
        serde_json::from_str(&home.run_ok(&["log", "summary", "--format", "json"])).unwrap();

    assert_eq!(summary["total"], 4);
    let count = |list: &str, name: &str| {
        summary[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["calls"].clone())
    };
    assert_eq!(count("by_identity", "anonymous"), Some(3.into()));
    assert_eq!(count("top_agents", "bot-1"), Some(1.into()));
    assert_eq!(count("top_secrets", "STRIPE_KEY"), Some(3.into()));
    assert_eq!(count("refusals", "BLOCKED domain_not_in_allowlist"), Some(1.into()));
    assert_eq!(count("refusals", "ERROR secret_not_found"), Some(1.into()));
    assert!(summary["p50_ms"].is_number());
    let text = home.run_ok(&["log", "summary"]);
    assert!(text.contains("Anonymous share (coverage gap): 75.0%"), "{text}");
}

#[test]
fn log_export_writes_rfc4180_csv_and_whole_json() {
    let upstream = Upstream::start();
    let home = home_with_calls(&upstream);

    let csv = home.run_ok(&["log", "export", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four rows: {csv}");
    assert!(lines[0].starts_with("id,seq,timestamp,"));
    assert!(lines[1].contains("\"http://127.0.0.1:"), "a URL with a comma is quoted: {}", lines[1]);

    let out = home.path().parent().unwrap().join("export.json");
    let out_text = out.to_string_lossy().into_owned();
    home.run_ok(&["log", "export", "--format", "json", "--status", "OK", "--output", &out_text]);
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("one JSON document");
    assert_eq!(exported.as_array().map(Vec::len), Some(2));
    assert!(!out.with_extension("partial").exists());
}

#[test]
fn log_tail_follows_entries_written_by_another_process() {
    use std::io::BufRead;

    let upstream = Upstream::start();
    let home = home_with_calls(&upstream);
    let mut tail = home
        .command(&["log", "list", "--tail", "--last", "0", "--format", "jsonl"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start log list --tail");
    let stdout = tail.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    std::thread::sleep(Duration::from_millis(500));
    let env = [("AGENTSECRETS_ALLOW_LOCAL_HTTP", "1")];
    home.run_env(
        &["call", "--url", &upstream.url("/"), "--bearer", "STRIPE_KEY", "--agent-id", "late"],
        &env,
    );
    let line = lines_rx.recv_timeout(Duration::from_secs(20));
    let _ = tail.kill();
    let _ = tail.wait();

    let entry: serde_json::Value = serde_json::from_str(&line.expect("a tailed line")).unwrap();
    assert_eq!(entry["agent_id"], "late");
    assert_eq!(entry["status"], "OK");
}

#[test]
fn checkpoints_are_signed_and_a_pruned_log_still_verifies() {
    let home = home_with_secret();
    home.run_ok(&["log", "seed", "--count", "2500", "--days", "30"]);
    let verified = home.run_ok(&["log", "verify"]);
    assert!(verified.contains("2500 entries and 2 signed checkpoints"), "{verified}");

    let pruned = home.run_ok(&["log", "prune", "--before", "15d"]);
    assert!(pruned.starts_with("pruned "), "{pruned}");
    let remaining = home.audit().len();
    assert!(remaining > 1000 && remaining < 1500, "{remaining} entries left");
    let after = home.run(&["log", "verify"]);
    assert!(after.status.success(), "a pruned log verifies: {}", support::describe(&after));

    // The first entry after the cut cannot be removed unnoticed.
    let conn = rusqlite::Connection::open(home.path().join("audit.db")).unwrap();
    conn.execute("DELETE FROM audit_log WHERE seq = (SELECT min(seq) FROM audit_log)", []).unwrap();
    assert_eq!(home.run(&["log", "verify"]).status.code(), Some(1));

    // Nor can a checkpoint be forged without the workspace key.
    conn.execute("UPDATE audit_checkpoints SET hash = 'forged' WHERE kind = 'interval'", [])
        .unwrap();
    let forged = home.run(&["log", "verify"]);
    assert_eq!(forged.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&forged.stdout).contains("checkpoint"));
}

#[test]
fn a_proxy_killed_under_load_loses_no_committed_entry() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let home = home_with_secret();
    let upstream = Arc::new(Upstream::start());
    let mut proxy = home.start_proxy(ProxyOptions::local());
    let stop = Arc::new(AtomicBool::new(false));

    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (upstream, stop) = (upstream.clone(), stop.clone());
            let (url, token) = (proxy.proxy_url(), proxy.token.clone());
            std::thread::spawn(move || {
                let client = support::client();
                while !stop.load(Ordering::Relaxed) {
                    let request = client
                        .post(&url)
                        .header("X-AS-Session-Token", &token)
                        .header("X-AS-Target-URL", upstream.url("/"))
                        .header("X-AS-Inject-Bearer", "STRIPE_KEY");
                    if request.send().is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while upstream.received().len() < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    proxy.kill();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let _ = caller.join();
    }

    let received = upstream.received().len();
    let logged = rows(&home);
    assert!(received >= 50, "the load ran ({received} calls)");
    assert!(
        logged.len() >= received,
        "every call the upstream saw has an entry: {received} received, {} logged",
        logged.len()
    );
    let verify = home.run(&["log", "verify"]);
    assert!(verify.status.success(), "{}", support::describe(&verify));
}
