//! Agent identity end to end: anonymous, declared and issued callers through the real
//! proxy, token lifecycle (issue, list, revoke, delete), strict modes and the audit log.

mod support;

use serde_json::Value;
use support::{ProxyOptions, ProxyProcess, Reply, TestHome, Upstream};

const SECRET: &str = "sk_identity_canary_0001";

struct Setup {
    home: TestHome,
    upstream: Upstream,
    proxy: ProxyProcess,
}

impl Setup {
    fn new() -> Setup {
        let home = TestHome::new();
        home.set_secrets(&[("STRIPE_KEY", SECRET)]);
        home.allow(&["127.0.0.1"]);
        let upstream = Upstream::start();
        let proxy = home.start_proxy(ProxyOptions::local());
        Setup { home, upstream, proxy }
    }

    /// One proxied call with the given identity headers.
    fn call(&self, headers: &[(&str, &str)]) -> Reply {
        let mut request = self
            .proxy
            .call(&self.upstream.url("/v1/charges"))
            .header("X-AS-Inject-Bearer", "STRIPE_KEY");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::send(request)
    }

    /// Issues a token and returns `(token id, value)`.
    fn issue(&self, agent: &str, label: &str) -> (String, String) {
        let out = self
            .home
            .run_ok(&["agent", "token", "issue", agent, "--label", label, "--output", "json"]);
        let json: Value = serde_json::from_str(out.trim()).expect("issue prints JSON");
        let id = json["token_id"].as_str().expect("token_id").to_owned();
        let value = json["token"].as_str().expect("token").to_owned();
        (id, value)
    }

    fn entries(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["log", "list", "--format", "jsonl", "--last", "1000"];
        args.extend_from_slice(filters);
        let out = self.home.run_ok(&args);
        out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
    }
}

#[test]
fn three_agents_are_told_apart_and_revocation_cuts_one_token_at_once() {
    let s = Setup::new();
    let (prod_id, prod) = s.issue("billing", "production");
    let (staging_id, staging) = s.issue("billing", "staging");

    assert_eq!(s.call(&[]).status, 200);
    assert_eq!(s.call(&[("X-AS-Agent-ID", "research-bot")]).status, 200);
    assert_eq!(s.call(&[("X-AS-Agent-Token", &prod)]).status, 200);
    assert_eq!(s.call(&[("X-AS-Agent-Token", &staging)]).status, 200);

    let anonymous = s.entries(&["--identity", "anonymous"]);
    assert_eq!(anonymous.len(), 1, "{anonymous:?}");
    assert!(anonymous[0]["agent_id"].is_null());
    let declared = s.entries(&["--identity", "declared"]);
    assert_eq!(declared.len(), 1);
    assert_eq!(declared[0]["agent_id"], "research-bot");
    let issued = s.entries(&["--agent", "billing"]);
    assert_eq!(issued.len(), 2);
    assert!(issued.iter().all(|e| e["identity_level"] == "issued"));
    assert_eq!(issued[0]["token_id"], prod_id.as_str());
    assert_eq!(issued[1]["token_id"], staging_id.as_str());
    assert!(issued[0]["token_fingerprint"].as_str().is_some_and(|f| f.starts_with("fp_")));

    // Revocation by another process reaches the running proxy on its very next request.
    s.home.run_ok(&["agent", "token", "revoke", &prod_id, "--agent", "billing", "--confirm"]);
    s.call(&[("X-AS-Agent-Token", &prod)]).assert_refused(401, "agent_unauthorized");
    assert_eq!(s.call(&[("X-AS-Agent-Token", &staging)]).status, 200);

    let after = s.entries(&["--agent", "billing"]);
    assert_eq!(after[0]["token_id"], prod_id.as_str(), "old entries keep their token");
    let refused = s.entries(&["--reason", "agent_unauthorized"]);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["token_id"], prod_id.as_str(), "a refused attempt names the token");
    assert!(refused[0]["agent_id"].is_null(), "an unverified claim names no agent");

    // Deleting the agent cuts every token it had.
    s.home.run_ok(&["agent", "delete", "billing", "--confirm"]);
    s.call(&[("X-AS-Agent-Token", &staging)]).assert_refused(401, "agent_unauthorized");
    assert_eq!(s.entries(&["--agent", "billing"]).len(), 3, "log entries keep the name");

    let upstream_hits = s.upstream.received().len();
    assert_eq!(upstream_hits, 5, "refused calls never reach the upstream");
}

#[test]
fn token_list_shows_metadata_in_the_sdk_columns_and_never_a_value() {
    let s = Setup::new();
    let (prod_id, prod) = s.issue("billing", "production");
    let (_, staging) = s.issue("billing", "staging");
    s.home.run_ok(&["agent", "token", "revoke", &prod_id]);

    let list = s.home.run_ok(&["agent", "token", "list", "billing"]);
    assert!(!list.contains(&prod) && !list.contains(&staging), "{list}");
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{list}");
    // The official SDK slices these columns at fixed offsets.
    let revoked = rows.iter().find(|r| r.starts_with(&prod_id)).expect("production row");
    assert_eq!(revoked[20..36].trim(), "production");
    assert_eq!(revoked[52..78].trim(), "never");
    assert_eq!(revoked[78..].trim(), "revoked");

    let all = s.home.run_ok(&["agent", "token", "list"]);
    assert!(all.lines().next().unwrap_or_default().contains("AGENT"), "{all}");
}

#[test]
fn a_leaked_token_can_be_revoked_by_its_value() {
    let s = Setup::new();
    let (_, value) = s.issue("billing", "leaky");

    s.home.run_ok(&["agent", "token", "revoke", &value]);

    s.call(&[("X-AS-Agent-Token", &value)]).assert_refused(401, "agent_unauthorized");
}

#[test]
fn bad_tokens_are_all_unauthorized_and_the_proxy_keeps_serving() {
    let s = Setup::new();
    let (_, good) = s.issue("billing", "production");
    let other = TestHome::new();
    other.set_secrets(&[("X", "y")]);
    let foreign: Value = serde_json::from_str(
        other.run_ok(&["agent", "token", "issue", "billing", "--output", "json"]).trim(),
    )
    .expect("JSON");
    let foreign = foreign["token"].as_str().expect("token").to_owned();

    let mut forged = good.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let relabelled = foreign.replacen(
        foreign.split('_').nth(1).expect("ws"),
        good.split('_').nth(1).expect("ws"),
        1,
    );
    let huge = format!("agt_{}", "x".repeat(8000));
    let bad = [
        forged.as_str(),
        foreign.as_str(),
        relabelled.as_str(),
        &good[..good.len() - 5],
        &format!("{good}00"),
        &good.replacen("agt_", "agx_", 1),
        huge.as_str(),
        "agt_",
    ];
    for token in bad {
        s.call(&[("X-AS-Agent-Token", token)]).assert_refused(401, "agent_unauthorized");
    }
    // A valid token with a different declared name is refused too.
    s.call(&[("X-AS-Agent-Token", &good), ("X-AS-Agent-ID", "someone-else")])
        .assert_refused(401, "agent_unauthorized");

    assert_eq!(s.call(&[("X-AS-Agent-Token", &good)]).status, 200);
    assert_eq!(s.entries(&["--reason", "agent_unauthorized"]).len(), bad.len() + 1);
    assert!(s.upstream.received().len() == 1);
}

#[test]
fn a_revoked_token_stays_revoked_after_a_proxy_restart() {
    let s = Setup::new();
    let (id, value) = s.issue("billing", "production");
    s.home.run_ok(&["agent", "token", "revoke", &id]);
    drop(s.proxy);

    let proxy = s.home.start_proxy(ProxyOptions::local());
    let request = proxy
        .call(&s.upstream.url("/"))
        .header("X-AS-Inject-Bearer", "STRIPE_KEY")
        .header("X-AS-Agent-Token", &value);
    Reply::send(request).assert_refused(401, "agent_unauthorized");
}

#[test]
fn invalid_agent_names_are_refused_with_the_rule() {
    let s = Setup::new();
    for name in ["has space", "-dash-first", "semi;colon", &"a".repeat(65)] {
        let json = s.call(&[("X-AS-Agent-ID", name)]).assert_refused(400, "bad_request");
        assert!(json["message"].as_str().unwrap_or_default().contains("agent names are"));
    }
    assert!(s.upstream.received().is_empty());
}

#[test]
fn control_characters_in_a_name_never_reach_output_raw() {
    let s = Setup::new();
    let url = s.upstream.url("/");
    let evil = "evil\u{1b}[2J\nname";
    let out = s.home.run_env(
        &["call", "--url", &url, "--bearer", "STRIPE_KEY", "--agent-id", evil],
        &[("AGENTSECRETS_ALLOW_LOCAL_HTTP", "1")],
    );

    assert_eq!(out.status.code(), Some(2), "a bad --agent-id is a usage error");
    let all =
        [out.stdout.as_slice(), out.stderr.as_slice(), s.proxy.stderr_text().as_bytes()].concat();
    assert!(!all.contains(&0x1b), "a raw escape byte reached the output");
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent names are"));
}

#[test]
fn strict_identity_refuses_reports_and_requires_issued() {
    let s = Setup::new();
    let (_, token) = s.issue("billing", "production");

    s.home.run_ok(&["workspace", "update", "--strict-identity=true"]);
    s.call(&[]).assert_refused(403, "identity_required");
    assert_eq!(s.call(&[("X-AS-Agent-ID", "research-bot")]).status, 200);

    s.home.run_ok(&["workspace", "update", "--min-identity", "issued"]);
    s.call(&[("X-AS-Agent-ID", "research-bot")]).assert_refused(403, "identity_required");
    assert_eq!(s.call(&[("X-AS-Agent-Token", &token)]).status, 200);

    s.home.run_ok(&["workspace", "update", "--strict-identity=report"]);
    assert_eq!(s.call(&[]).status, 200, "report mode refuses nothing");

    let blocked = s.entries(&["--reason", "identity_required"]);
    assert_eq!(blocked.len(), 2);
    assert!(blocked.iter().all(|e| e["status"] == "BLOCKED"));
    let reported = s.entries(&["--reason", "identity_required_report"]);
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0]["status"], "OK");
}

#[test]
fn call_accepts_tokens_saved_by_name_and_declares_unknown_references() {
    let home = TestHome::new();
    home.set_secrets(&[("STRIPE_KEY", SECRET)]);
    home.allow(&["127.0.0.1"]);
    let upstream = Upstream::start();
    home.run_ok(&["agent", "token", "issue", "Billing", "--save-token"]);
    let env = [("AGENTSECRETS_ALLOW_LOCAL_HTTP", "1")];
    let url = upstream.url("/");

    for reference in ["BILLING_TOKEN", "NEWCOMER_TOKEN"] {
        let out = home.run_env(
            &["call", "--url", &url, "--bearer", "STRIPE_KEY", "--token", reference],
            &env,
        );
        assert!(out.status.success(), "{}", support::describe(&out));
    }

    let entries = home.audit();
    assert_eq!(entries[0]["identity_level"], "issued");
    assert_eq!(entries[0]["agent_id"], "Billing");
    assert_eq!(entries[1]["identity_level"], "declared");
    assert_eq!(entries[1]["agent_id"], "newcomer");

    let agents = home.run_ok(&["agent", "list"]);
    assert!(agents.lines().any(|l| l.starts_with("Billing ")), "{agents}");
    assert!(agents.lines().any(|l| l.starts_with("newcomer ")), "{agents}");
}

#[test]
fn an_expired_token_is_refused_and_its_attempt_logged() {
    let s = Setup::new();
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let out = s.home.run_ok(&[
        "agent",
        "token",
        "issue",
        "short-lived",
        "--expires",
        &soon.to_string(),
        "--output",
        "json",
    ]);
    let issued: Value = serde_json::from_str(out.trim()).expect("issue prints JSON");
    let token = issued["token"].as_str().expect("token").to_owned();
    assert_eq!(s.call(&[("X-AS-Agent-Token", &token)]).status, 200, "valid before expiry");

    // Expiry is checked to the second; wait until it has certainly passed.
    while jiff::Timestamp::now() <= soon + jiff::SignedDuration::from_secs(1) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let before = s.upstream.count();
    s.call(&[("X-AS-Agent-Token", &token)]).assert_refused(401, "agent_unauthorized");
    assert_eq!(s.upstream.count(), before, "an expired token never reaches the upstream");

    let refused = s.entries(&["--status", "BLOCKED"]);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["token_id"], issued["token_id"], "the attempt names its token");
    assert_eq!(refused[0]["reason"], "agent_unauthorized");
}
