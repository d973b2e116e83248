//! Governance through the real binary: capability contracts of issued and declared
//! agents, the workspace's rules for anonymous callers, rate limits under concurrency,
//! report mode, explain, and sessions that group the calls of one agent run.

mod support;

use serde_json::Value;
use support::{ProxyOptions, ProxyProcess, Reply, TestHome, Upstream, describe};

const STRIPE: &str = "sk_governance_canary_stripe_01";
const GITHUB: &str = "ghp_governance_canary_github_02";
const PUBLIC: &str = "pk_governance_canary_public_03";

struct Setup {
    home: TestHome,
    upstream: Upstream,
    proxy: ProxyProcess,
}

impl Setup {
    /// Three secrets; two local hosts stand for two APIs (127.0.0.1 for api.stripe.com,
    /// localhost for another one), both on the workspace allowlist.
    fn new() -> Setup {
        let home = TestHome::new();
        home.set_secrets(&[("STRIPE_KEY", STRIPE), ("GITHUB_KEY", GITHUB), ("PUBLIC_KEY", PUBLIC)]);
        home.allow(&["127.0.0.1", "localhost"]);
        let upstream = Upstream::start();
        let proxy = home.start_proxy(ProxyOptions::local());
        Setup { home, upstream, proxy }
    }

    fn token(&self, agent: &str) -> String {
        let out = self.home.run_ok(&["agent", "token", "issue", agent, "--output", "json"]);
        let json: Value = serde_json::from_str(out.trim()).expect("issue prints JSON");
        json["token"].as_str().expect("token").to_owned()
    }

    /// A call to `host` injecting `key` as a bearer token, with extra headers.
    fn call(&self, host: &str, key: &str, headers: &[(&str, &str)]) -> Reply {
        let target = format!("http://{host}:{}/v1/charges", self.upstream.port());
        let mut request = self.proxy.call(&target).header("X-AS-Inject-Bearer", key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::send(request)
    }

    fn entries(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["log", "list", "--format", "jsonl", "--last", "1000"];
        args.extend_from_slice(filters);
        let out = self.home.run_ok(&args);
        out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
    }
}

#[test]
fn a_contract_limits_its_agent_and_leaves_another_agent_alone() {
    let s = Setup::new();
    let billing = s.token("billing");
    let ops = s.token("ops");
    s.home.run_ok(&[
        "agent",
        "policy",
        "set",
        "billing",
        "--allow-secret",
        "STRIPE_KEY",
        "--allow-domain",
        "127.0.0.1",
    ]);
    let as_billing = [("X-AS-Agent-Token", billing.as_str())];

    assert_eq!(s.call("127.0.0.1", "STRIPE_KEY", &as_billing).status, 200);
    let other_key = s.call("127.0.0.1", "GITHUB_KEY", &as_billing);
    let json = other_key.assert_refused(403, "capability_denied");
    assert_eq!(json["rule"], "allow-secret (does not include GITHUB_KEY)");
    assert!(!other_key.text().contains("STRIPE_KEY"), "a refusal never lists the contract");
    let other_host = s.call("localhost", "STRIPE_KEY", &as_billing);
    assert_eq!(
        other_host.assert_refused(403, "capability_denied")["rule"],
        "allow-domain (does not include localhost)"
    );

    let as_ops = [("X-AS-Agent-Token", ops.as_str())];
    assert_eq!(s.call("127.0.0.1", "GITHUB_KEY", &as_ops).status, 200);
    assert_eq!(s.call("localhost", "STRIPE_KEY", &as_ops).status, 200);

    // Only the allowed calls reached the upstream, and every refusal is in the log.
    assert_eq!(s.upstream.count(), 3);
    let blocked = s.entries(&["--reason", "capability_denied"]);
    assert_eq!(blocked.len(), 2, "{blocked:?}");
    assert!(blocked.iter().all(|e| e["status"] == "BLOCKED" && e["agent_id"] == "billing"));
}

#[test]
fn a_policy_change_applies_to_the_next_call_of_a_running_proxy_and_is_recorded() {
    let s = Setup::new();
    let billing = s.token("billing");
    let as_billing = [("X-AS-Agent-Token", billing.as_str())];
    assert_eq!(s.call("127.0.0.1", "STRIPE_KEY", &as_billing).status, 200);

    s.home.run_ok(&["agent", "policy", "set", "billing", "--deny-secret", "STRIPE_KEY"]);
    let refused = s.call("127.0.0.1", "STRIPE_KEY", &as_billing);
    assert_eq!(refused.assert_refused(403, "capability_denied")["rule"], "deny-secret STRIPE_KEY");

    // log detail shows the contract that applied to the refused call.
    let entry = s.entries(&["--reason", "capability_denied"]).pop().expect("the refusal");
    let detail = s.home.run_ok(&["log", "detail", entry["id"].as_str().unwrap()]);
    let detail: Value = serde_json::from_str(&detail).expect("detail is JSON");
    let contract = &detail["policy"]["contracts"]["billing"];
    assert_eq!(contract["deny_secrets"], serde_json::json!(["STRIPE_KEY"]), "{detail:#}");

    s.home.run_ok(&["agent", "policy", "clear", "billing"]);
    assert_eq!(s.call("127.0.0.1", "STRIPE_KEY", &as_billing).status, 200);

    let shown = s.home.run_ok(&["agent", "policy", "show", "billing", "--output", "json"]);
    let shown: Value = serde_json::from_str(&shown).expect("show is JSON");
    assert!(shown["contract"].is_null());
    let actions: Vec<&str> = shown["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["set", "clear"]);
}

#[test]
fn a_rate_limit_holds_under_concurrent_calls() {
    let s = Setup::new();
    let billing = s.token("billing");
    s.home.run_ok(&["agent", "policy", "set", "billing", "--rate", "5/min"]);

    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..12)
            .map(|_| {
                scope.spawn(|| {
                    s.call("127.0.0.1", "STRIPE_KEY", &[("X-AS-Agent-Token", &billing)]).status
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().expect("call thread")).collect()
    });

    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 7, "{statuses:?}");
    assert_eq!(s.upstream.count(), 5);
    let rate = s.entries(&["--reason", "capability_denied"]);
    assert_eq!(rate.len(), 7);
}

#[test]
fn report_mode_serves_what_the_contract_would_refuse_and_flags_it() {
    let s = Setup::new();
    let billing = s.token("billing");
    s.home.run_ok(&[
        "agent",
        "policy",
        "set",
        "billing",
        "--allow-secret",
        "STRIPE_KEY",
        "--mode",
        "report",
    ]);

    let reply = s.call("127.0.0.1", "GITHUB_KEY", &[("X-AS-Agent-Token", &billing)]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let flagged = s.entries(&["--reason", "capability_denied_report"]);
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0]["status"], "OK");
}

#[test]
fn anonymous_and_declared_callers_get_only_what_the_workspace_allows() {
    let s = Setup::new();
    s.home.run_ok(&["workspace", "update", "--anonymous-secrets", "PUBLIC_KEY"]);

    assert_eq!(s.call("127.0.0.1", "PUBLIC_KEY", &[]).status, 200);
    s.call("127.0.0.1", "STRIPE_KEY", &[]).assert_refused(403, "capability_denied");
    // A made-up declared name gets exactly what an anonymous caller gets.
    let made_up = [("X-AS-Agent-ID", "made-up-bot")];
    assert_eq!(s.call("127.0.0.1", "PUBLIC_KEY", &made_up).status, 200);
    s.call("127.0.0.1", "STRIPE_KEY", &made_up).assert_refused(403, "capability_denied");

    // A declared name's contract can only narrow, never widen, what it gets.
    s.home.run_ok(&["agent", "register", "billing"]);
    s.home.run_ok(&["agent", "policy", "set", "billing", "--allow-secret", "STRIPE_KEY"]);
    let declared = [("X-AS-Agent-ID", "billing")];
    s.call("127.0.0.1", "STRIPE_KEY", &declared).assert_refused(403, "capability_denied");
    s.call("127.0.0.1", "PUBLIC_KEY", &declared).assert_refused(403, "capability_denied");

    s.home.run_ok(&["workspace", "update", "--declared-contracts", "ignore"]);
    assert_eq!(s.call("127.0.0.1", "PUBLIC_KEY", &declared).status, 200);

    s.home.run_ok(&["workspace", "update", "--anonymous-secrets", "none"]);
    s.call("127.0.0.1", "PUBLIC_KEY", &[]).assert_refused(403, "capability_denied");
    s.home.run_ok(&["workspace", "update", "--anonymous-secrets", "all"]);
    assert_eq!(s.call("127.0.0.1", "GITHUB_KEY", &[]).status, 200);
}

#[test]
fn explain_decides_without_reading_a_secret_or_calling_the_upstream() {
    let s = Setup::new();
    let billing = s.token("billing");
    s.home.run_ok(&["agent", "policy", "set", "billing", "--deny-secret", "GITHUB_KEY"]);
    let explain = |key: &str| {
        s.call("127.0.0.1", key, &[("X-AS-Agent-Token", &billing), ("X-AS-Explain", "1")])
    };

    let allowed = explain("STRIPE_KEY").json();
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert_eq!(allowed["agent_id"], "billing");
    assert_eq!(allowed["identity_level"], "issued");
    let denied = explain("GITHUB_KEY").json();
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["error"], "capability_denied");
    assert_eq!(denied["rule"], "deny-secret GITHUB_KEY");
    assert_eq!(explain("NO_SUCH_KEY").json()["error"], "secret_not_found");

    // The command line asks the running proxy, and says so through its exit status.
    let url = s.upstream.url("/v1/charges");
    let args = ["call", "--url", url.as_str(), "--bearer", "GITHUB_KEY", "--explain"];
    let out = s.home.run_env(&args, &[("AGENTSECRETS_TOKEN", &billing)]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("denied: capability_denied"), "{text}");
    assert!(text.contains("deny-secret GITHUB_KEY"), "{text}");

    assert_eq!(s.upstream.count(), 0, "an explain never reaches the upstream");
    let logged = s.entries(&[]);
    assert_eq!(logged.len(), 4);
    assert!(logged.iter().all(|e| e["reason"] == "explain"), "{logged:?}");
    let text = std::fs::read(s.home.path().join("audit.db")).expect("audit db");
    assert!(!support::contains(&text, GITHUB.as_bytes()));
}

#[test]
fn sessions_group_the_calls_of_one_run() {
    let s = Setup::new();
    let run_a = [("X-AS-Session-ID", "run-a"), ("X-AS-Agent-ID", "research")];
    assert_eq!(s.call("127.0.0.1", "STRIPE_KEY", &run_a).status, 200);
    assert_eq!(s.call("127.0.0.1", "GITHUB_KEY", &run_a).status, 200);
    s.call("127.0.0.1", "NO_SUCH_KEY", &run_a).assert_refused(404, "secret_not_found");
    s.home.run_ok(&["workspace", "allowlist", "remove", "localhost"]);
    s.call("localhost", "STRIPE_KEY", &run_a).assert_refused(403, "domain_not_in_allowlist");
    assert_eq!(s.call("127.0.0.1", "STRIPE_KEY", &[("X-AS-Session-ID", "run-b")]).status, 200);

    let bad = s.call("127.0.0.1", "STRIPE_KEY", &[("X-AS-Session-ID", &"x".repeat(200))]);
    bad.assert_refused(400, "bad_request");

    assert_eq!(s.entries(&["--session", "run-a"]).len(), 4);
    let out = s.home.run_ok(&["log", "summary", "--by", "session", "--format", "json"]);
    let sessions: Value = serde_json::from_str(&out).expect("summary is JSON");
    let run = sessions.as_array().unwrap().iter().find(|r| r["session_id"] == "run-a").unwrap();
    assert_eq!(run["calls"], 4);
    assert_eq!(run["blocked"], 1);
    assert_eq!(run["agents"], serde_json::json!(["research"]));
    assert_eq!(run["secrets"], serde_json::json!(["STRIPE_KEY", "GITHUB_KEY", "NO_SUCH_KEY"]));
    let table = s.home.run_ok(&["log", "summary", "--by", "session"]);
    assert!(table.contains("run-a") && table.contains("run-b"), "{table}");
}

#[test]
fn env_runs_in_one_session_and_injects_only_what_the_contract_allows() {
    let s = Setup::new();
    let billing = s.token("billing");
    s.home.run_ok(&["agent", "policy", "set", "billing", "--allow-secret", "STRIPE_KEY"]);

    let script = "echo \"$AGENTSECRETS_SESSION_ID ${STRIPE_KEY:+stripe} ${GITHUB_KEY:-no-github}\"";
    let out =
        s.home.run_env(&["env", "--", "sh", "-c", script], &[("AGENTSECRETS_TOKEN", &billing)]);
    assert!(out.status.success(), "{}", describe(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(fields[1..], ["stripe", "no-github"], "{printed}");
    assert!(fields[0].starts_with("env_"), "{printed}");

    let entry = s.entries(&["--session", fields[0]]);
    assert_eq!(entry.len(), 1);
    assert_eq!(entry[0]["secret_keys"], serde_json::json!(["STRIPE_KEY"]));

    let out = s.home.run_env(
        &["env", "--only", "GITHUB_KEY", "--", "true"],
        &[("AGENTSECRETS_TOKEN", &billing)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("capability_denied"),
        "{}",
        describe(&out)
    );
}

#[test]
fn policy_commands_check_their_input_and_warn_about_what_will_not_work() {
    let s = Setup::new();
    let unknown = s.home.run(&["agent", "policy", "set", "ghost", "--allow-secret", "STRIPE_KEY"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("agent register"));

    s.home.run_ok(&["agent", "register", "billing"]);
    for bad in [["--rate", "fast"], ["--allow-domain", "https://x.io"], ["--mode", "maybe"]] {
        let mut args = vec!["agent", "policy", "set", "billing"];
        args.extend_from_slice(&bad);
        let out = s.home.run(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", describe(&out));
    }
    let nothing = s.home.run(&["agent", "policy", "show", "billing", "--output", "json"]);
    let nothing: Value = serde_json::from_slice(&nothing.stdout).expect("JSON");
    assert!(nothing["contract"].is_null(), "a refused set stores nothing");

    // The SDK's shape: comma lists; a key both allowed and denied is a warning, deny wins.
    let out = s.home.run(&[
        "agent",
        "policy",
        "set",
        "billing",
        "--allow",
        "STRIPE_KEY,MISSING_KEY",
        "--deny",
        "STRIPE_KEY",
        "--allow-domain",
        "*.example.com",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.contains("STRIPE_KEY is both allowed and denied: the deny rule wins"));
    assert!(warnings.contains("no secret named MISSING_KEY"), "{warnings}");
    assert!(warnings.contains("no workspace allowlist entry matches *.example.com"));

    let got = s.home.run_ok(&["agent", "policy", "get", "BILLING"]);
    let line = |label: &str| {
        got.lines().map(str::trim).find_map(|l| l.strip_prefix(label)).map(str::trim).unwrap()
    };
    assert_eq!(line("Allowed Secrets:"), "STRIPE_KEY, MISSING_KEY");
    assert_eq!(line("Denied Secrets:"), "STRIPE_KEY");
}
