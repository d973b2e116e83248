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
