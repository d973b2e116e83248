//! `agentsecrets call`: in-process without a proxy, and through a running one.

mod support;

use serde_json::{Value, json};
use support::{
    DroppingUpstream, MARKER, ProxyOptions, TestHome, Upstream, b64, describe, url_encode,
};

const BEARER: &str = "tok-bearer-call-01";
const BASIC: &str = "bob:s3cret-call-02";
const HEADER: &str = "hdr-call-03";
const QUERY: &str = "q/call 04";
const BODY: &str = "body-call-05";
const FORM: &str = "form&call 06";

/// Lets `call` reach loopback over plain HTTP without a proxy.
const LOCAL: (&str, &str) = ("AGENTSECRETS_ALLOW_LOCAL_HTTP", "1");

fn home() -> TestHome {
    let home = TestHome::new();
    home.set_secrets(&[
        ("BEARER_KEY", BEARER),
        ("BASIC_KEY", BASIC),
        ("HEADER_KEY", HEADER),
        ("QUERY_KEY", QUERY),
        ("BODY_KEY", BODY),
        ("FORM_KEY", FORM),
    ]);
    home.allow(&["127.0.0.1"]);
    home
}

/// Parses the `--output json` envelope: exactly one JSON object on stdout.
fn envelope(out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}): {}", describe(out)));
    assert!(value.is_object(), "{value}");
    value
}

#[test]
fn without_a_proxy_call_runs_in_process_and_prints_http_code_blank_line_body() {
    let home = home();
    let upstream = Upstream::start();
    let url = upstream.url("/v1/balance");

    let out = home.run_env(&["call", "--url", &url, "--bearer", "BEARER_KEY"], &[LOCAL]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let body = stdout.strip_prefix("HTTP 200\n\n").unwrap_or_else(|| panic!("{stdout}"));
    let echo: Value = serde_json::from_str(body.trim_end()).expect("the body is the echo");
    assert_eq!(echo["path"], "/v1/balance");
    assert_eq!(echo["headers"]["authorization"], json!([format!("Bearer {MARKER}")]));
    assert!(!stdout.contains(BEARER));

    assert_eq!(upstream.last().header("authorization"), Some(format!("Bearer {BEARER}").as_str()));
    let audit = home.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["transport"], "cli");
    assert_eq!(audit[0]["status"], "OK");
    assert_eq!(audit[0]["redacted"], true);
}

#[test]
fn json_output_is_the_sdk_envelope() {
    let home = home();
    let upstream = Upstream::start();
    let url = upstream.url("/json");

    let out = home
        .run_env(&["call", "--url", &url, "--bearer", "BEARER_KEY", "--output", "json"], &[LOCAL]);
    assert!(out.status.success(), "{}", describe(&out));
    let env = envelope(&out);
    assert_eq!(env["status"], 200);
    assert_eq!(env["headers"]["Content-Type"], json!(["application/json"]));
    assert!(env["headers"].as_object().unwrap().values().all(Value::is_array));
    let body = env["body"].as_str().expect("body is a string");
    assert!(body.contains(MARKER) && !body.contains(BEARER), "{body}");
    assert_eq!(env["redacted"], true);
    assert!(env["duration_ms"].is_u64());
    assert!(env.get("error").is_none_or(|e| e == ""), "{env}");
}

#[test]
fn every_flag_style_reaches_the_upstream() {
    let home = home();
    let upstream = Upstream::start();
    let url = upstream.url("/all?keep=1&apiKey=old");

    let out = home.run_env(
        &[
            "call",
            "--url",
            &url,
            "--method",
            "post",
            "--body",
            r#"{"amount":1}"#,
            "--bearer",
            "BEARER_KEY",
            "--header",
            "X-Api-Key=HEADER_KEY",
            "--query",
            "apiKey=QUERY_KEY",
            "--body-field",
            "auth.token=BODY_KEY",
            "--output",
            "json",
        ],
        &[LOCAL],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let last = upstream.last();
    assert_eq!(last.method, "POST");
    assert_eq!(last.header("authorization"), Some(format!("Bearer {BEARER}").as_str()));
    assert_eq!(last.header("x-api-key"), Some(HEADER));
    assert_eq!(
        last.query_pairs(),
        vec![("keep".to_owned(), "1".to_owned()), ("apiKey".to_owned(), QUERY.to_owned())]
    );
    let body: Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(body, json!({"amount": 1, "auth": {"token": BODY}}));
    assert_eq!(last.header("content-type"), Some("application/json"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for value in [BEARER, HEADER, BODY, &url_encode(QUERY)] {
        assert!(!stdout.contains(value), "{value} leaked: {stdout}");
    }

    let out = home.run_env(
        &[
            "call",
            "--url",
            &upstream.url("/form"),
            "--method",
            "POST",
            "--body",
            "x=1",
            "--basic",
            "BASIC_KEY",
            "--form-field",
            "client_secret=FORM_KEY",
        ],
        &[LOCAL],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let last = upstream.last();
    let expected = format!("Basic {}", b64(BASIC.as_bytes()));
    assert_eq!(last.header("authorization"), Some(expected.as_str()));
    assert_eq!(
        support::url_decode_pairs(&String::from_utf8_lossy(&last.body)),
        vec![("x".to_owned(), "1".to_owned()), ("client_secret".to_owned(), FORM.to_owned())]
    );
    assert_eq!(last.header("content-type"), Some("application/x-www-form-urlencoded"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(&b64(BASIC.as_bytes())) && !stdout.contains("s3cret-call-02"));

    let audit = home.audit();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["auth_styles"], json!(["bearer", "header", "query", "body"]));
    assert_eq!(audit[1]["auth_styles"], json!(["basic", "form"]));
}

#[test]
fn a_refused_call_exits_1_with_a_403_envelope() {
    let home = home();
    let upstream = Upstream::start();
    let url = upstream.url("/x");

    // Plain HTTP to loopback without AGENTSECRETS_ALLOW_LOCAL_HTTP.
    let out = home.run(&["call", "--url", &url, "--bearer", "BEARER_KEY", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let env = envelope(&out);
    assert_eq!(env["status"], 403);
    assert!(env["error"].as_str().is_some_and(|e| !e.is_empty()), "{env}");
    let body: Value = serde_json::from_str(env["body"].as_str().unwrap()).unwrap();
    assert!(body["error"] == "ssrf_blocked" || body["error"] == "insecure_scheme", "{body}");
    assert_eq!(upstream.count(), 0);

    // A domain that is not allowed, in both output forms.
    let blocked = "https://api.not-allowed.test/v1/charges";
    let out = home.run(&["call", "--url", blocked, "--bearer", "BEARER_KEY", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let env = envelope(&out);
    assert_eq!(env["status"], 403);
    assert_eq!(env["headers"]["Content-Type"], json!(["application/json"]));
    let body: Value = serde_json::from_str(env["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "domain_not_in_allowlist");
    assert_eq!(body["domain"], "api.not-allowed.test");
    let error = env["error"].as_str().unwrap();
    assert_eq!(error.split('\'').nth(1), Some("api.not-allowed.test"), "{error}");

    let out = home.run(&["call", "--url", blocked, "--bearer", "BEARER_KEY"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "nothing on stdout for a refusal: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("domain 'api.not-allowed.test'"), "{stderr}");
    assert!(stderr.contains("domain_not_in_allowlist"), "{stderr}");

    let audit = home.audit();
    assert_eq!(audit.len(), 3);
    assert!(audit.iter().all(|e| e["status"] == "BLOCKED" && e["transport"] == "cli"));
}

#[test]
fn an_unknown_secret_names_the_key() {
    let home = home();
    let upstream = Upstream::start();
    let url = upstream.url("/x");

    let out = home
        .run_env(&["call", "--url", &url, "--bearer", "NOPE_KEY", "--output", "json"], &[LOCAL]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let env = envelope(&out);
    assert_eq!(env["status"], 404);
    let error = env["error"].as_str().unwrap();
    assert!(error.contains("secret 'NOPE_KEY' not found"), "{error}");

    let out = home.run_env(&["call", "--url", &url, "--bearer", "NOPE_KEY"], &[LOCAL]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret 'NOPE_KEY' not found"));
    assert_eq!(upstream.count(), 0);
    assert_eq!(home.audit().len(), 2);
}

#[test]
fn a_call_without_injection_is_a_usage_error() {
    let home = home();
    let out = home.run_env(&["call", "--url", "https://127.0.0.1/"], &[LOCAL]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn an_upstream_error_status_exits_1_with_the_answer() {
    let home = home();
    let upstream = Upstream::start();
    let url = upstream.url("/status/404");

    let out = home.run_env(&["call", "--url", &url, "--bearer", "BEARER_KEY"], &[LOCAL]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HTTP 404\n\nstatus as asked\n");

    let out = home
        .run_env(&["call", "--url", &url, "--bearer", "BEARER_KEY", "--output", "json"], &[LOCAL]);
    assert_eq!(out.status.code(), Some(1));
    let env = envelope(&out);
    assert_eq!(env["status"], 404);
    assert_eq!(env["body"], "status as asked");
    assert!(env["error"].as_str().is_some_and(|e| !e.is_empty()));

    let audit = home.audit();
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().all(|e| e["status"] == "OK" && e["status_code"] == 404));
}

#[test]
fn upstream_failures_in_process_get_502_and_504() {
    let home = home();
    let upstream = Upstream::start();
    let dropping = DroppingUpstream::start();

    let out = home.run_env(
        &["call", "--url", &dropping.url("/x"), "--bearer", "BEARER_KEY", "--output", "json"],
        &[LOCAL],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let env = envelope(&out);
    assert_eq!(env["status"], 502);
    assert!(env["error"].as_str().unwrap().contains("upstream_error"), "{env}");

    let out = home.run_env(
        &[
            "call",
            "--url",
            &upstream.url("/slow"),
            "--bearer",
            "BEARER_KEY",
            "--timeout",
            "1",
            "--output",
            "json",
        ],
        &[LOCAL],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let env = envelope(&out);
    assert_eq!(env["status"], 504);
    assert!(env["error"].as_str().unwrap().contains("upstream_timeout"), "{env}");

    // A body broken midway, after a query injection: the message quotes no URL.
    let out = home.run_env(
        &[
            "call",
            "--url",
            &upstream.url("/broken?x=1"),
            "--bearer",
            "BEARER_KEY",
            "--query",
            "apiKey=QUERY_KEY",
            "--output",
            "json",
        ],
        &[LOCAL],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let env = envelope(&out);
    assert_eq!(env["status"], 502);
    let all = format!("{}{}", describe(&out), env);
    for value in [BEARER, QUERY, &url_encode(QUERY), "q%2Fcall", "q/call+04"] {
        assert!(!all.contains(value), "{value} in {all}");
    }
    assert_eq!(upstream.last().query_pairs()[1], ("apiKey".to_owned(), QUERY.to_owned()));

    let audit = home.audit();
    assert_eq!(audit.len(), 3);
    let reasons: Vec<&str> = audit.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["upstream_error", "upstream_timeout", "upstream_error"]);
}

#[test]
fn with_a_running_proxy_call_goes_through_it() {
    let home = home();
    let upstream = Upstream::start();
    let proxy = home.start_proxy(ProxyOptions::local());

    // No AGENTSECRETS_ALLOW_LOCAL_HTTP: the proxy's --allow-local-http is what admits it.
    let url = upstream.url("/via-proxy");
    let out = home.run(&[
        "call",
        "--url",
        &url,
        "--bearer",
        "BEARER_KEY",
        "--query",
        "apiKey=QUERY_KEY",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let env = envelope(&out);
    assert_eq!(env["status"], 200);
    assert_eq!(env["redacted"], true);
    let body = env["body"].as_str().unwrap();
    assert!(!body.contains(BEARER) && !body.contains(&url_encode(QUERY)), "{body}");
    let last = upstream.last();
    assert_eq!(last.header("authorization"), Some(format!("Bearer {BEARER}").as_str()));
    assert_eq!(last.query_pairs(), vec![("apiKey".to_owned(), QUERY.to_owned())]);
    assert!(last.headers.iter().all(|(n, _)| !n.starts_with("x-as-")));

    // A refusal by the proxy is still exit 1 and a 403 envelope.
    let out = home.run(&[
        "call",
        "--url",
        "https://api.not-allowed.test/",
        "--bearer",
        "BEARER_KEY",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let env = envelope(&out);
    assert_eq!(env["status"], 403);
    assert!(env["error"].as_str().unwrap().contains("api.not-allowed.test"), "{env}");
    let body: Value = serde_json::from_str(env["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "domain_not_in_allowlist");

    // An upstream timeout at the proxy comes back as 504.
    let out = home.run(&[
        "call",
        "--url",
        &upstream.url("/slow"),
        "--bearer",
        "BEARER_KEY",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(envelope(&out)["status"], 504);

    let audit = home.audit();
    assert_eq!(audit.len(), 3, "one entry per call, written by the proxy");
    assert!(audit.iter().all(|e| e["transport"] == "http"), "{audit:#?}");

    let status = home.run_ok(&["proxy", "status"]);
    assert!(
        status.lines().any(|l| l.contains("Calls served") && l.trim_end().ends_with(" 3")),
        "{status}"
    );
    drop(proxy);
}

#[test]
fn text_output_carries_the_redaction_marker() {
    let home = home();
    home.set_secrets(&[("ECHOED_KEY", r#"sk_live_Ab1/"q"+&=x\y~07"#)]);
    let upstream = Upstream::start();

    let out = home.run_env(
        &["call", "--url", &upstream.url("/reflect"), "--header", "X-Secret=ECHOED_KEY"],
        &[LOCAL],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("HTTP 200\n\n"), "{stdout}");
    assert!(stdout.contains(MARKER), "{stdout}");
    assert!(!stdout.contains("sk_live_Ab1"), "{stdout}");
}
