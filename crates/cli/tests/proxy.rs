//! The HTTP proxy (`agentsecrets proxy start`) driven from outside: the real binary, real
//! loopback upstreams, real sockets.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{
    DroppingUpstream, MARKER, ProxyOptions, ProxyProcess, Reply, TestHome, Upstream, b64,
    chunked_body, compressed_plain, contains, describe, free_port, json_escape, reflected_body,
    url_encode,
};

/// A home with the usual secrets, `127.0.0.1` allowed, an upstream and a proxy that may
/// call loopback over plain HTTP.
struct Setup {
    home: TestHome,
    upstream: Upstream,
    proxy: ProxyProcess,
}

const BEARER: &str = "tok-bearer-0001";
const BASIC: &str = "alice:pa55-w0rd-0002";
const HEADER: &str = "hdr-value-0003";
const QUERY: &str = "q v&=0004";
const BODY: &str = "body-value-0005";
const FORM: &str = "form value&0006";
/// A secret whose raw, base64, URL-encoded and JSON-escaped forms all differ.
const ECHOED: &str = r#"sk_live_Ab1/"q"+&=x\y~07"#;

fn setup() -> Setup {
    setup_with(ProxyOptions::local())
}

fn setup_with(options: ProxyOptions) -> Setup {
    let home = TestHome::new();
    home.set_secrets(&[
        ("BEARER_KEY", BEARER),
        ("BASIC_KEY", BASIC),
        ("HEADER_KEY", HEADER),
        ("QUERY_KEY", QUERY),
        ("BODY_KEY", BODY),
        ("FORM_KEY", FORM),
        ("ECHOED_KEY", ECHOED),
    ]);
    home.allow(&["127.0.0.1"]);
    let upstream = Upstream::start();
    let proxy = home.start_proxy(options);
    Setup { home, upstream, proxy }
}

impl Setup {
    /// A call to the echo upstream that must succeed.
    fn echo_ok(&self) {
        let reply = Reply::send(
            self.proxy
                .call(&self.upstream.url("/still-serving"))
                .header("X-AS-Inject-Bearer", "BEARER_KEY"),
        );
        assert_eq!(reply.status, 200, "the proxy still serves: {}", reply.text());
    }
}

#[test]
fn health_is_open_and_reveals_nothing_else() {
    let s = setup();
    let reply = s.proxy.health();

    assert_eq!(reply.status, 200);
    let json = reply.json();
    assert_eq!(json["status"], "ok");
    assert!(json["project"].is_string());
    assert!(json["version"].is_string());
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "health says only status, project and version: {json}");
    assert!(!reply.text().contains(&s.proxy.token));
}

#[test]
fn each_injection_style_reaches_the_upstream() {
    let s = setup();

    // bearer
    let reply = Reply::send(
        s.proxy.call(&s.upstream.url("/bearer")).header("X-AS-Inject-Bearer", "BEARER_KEY"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        s.upstream.last().header("authorization"),
        Some(format!("Bearer {BEARER}").as_str())
    );

    // basic: base64 of user:pass
    let reply = Reply::send(
        s.proxy.call(&s.upstream.url("/basic")).header("X-AS-Inject-Basic", "BASIC_KEY"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let expected = format!("Basic {}", b64(BASIC.as_bytes()));
    assert_eq!(s.upstream.last().header("authorization"), Some(expected.as_str()));

    // header
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/header"))
            .header("X-AS-Inject-Header-X-Api-Key", "HEADER_KEY"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(s.upstream.last().header("x-api-key"), Some(HEADER));

    // query, per-style header: other parameters kept, an existing value replaced
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/query?limit=5&api_key=old&Other=x"))
            .header("X-AS-Inject-Query-api_key", "QUERY_KEY"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let pairs = s.upstream.last().query_pairs();
    assert_eq!(
        pairs,
        vec![
            ("limit".to_owned(), "5".to_owned()),
            ("Other".to_owned(), "x".to_owned()),
            ("api_key".to_owned(), QUERY.to_owned()),
        ]
    );

    // query, case-preserving list form
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/query?limit=5&apiKey=old"))
            .header("X-AS-Inject", "query:apiKey=QUERY_KEY"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let pairs = s.upstream.last().query_pairs();
    assert_eq!(
        pairs,
        vec![("limit".to_owned(), "5".to_owned()), ("apiKey".to_owned(), QUERY.to_owned())]
    );

    // JSON body, nested path, other fields kept
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/body"))
            .header("X-AS-Inject-Body-auth-token", "BODY_KEY")
            .body(r#"{"amount":100,"auth":{"user":"bob"}}"#),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let last = s.upstream.last();
    let body: Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(body, json!({"amount": 100, "auth": {"user": "bob", "token": BODY}}));
    assert_eq!(last.header("content-type"), Some("application/json"));

    // JSON body through the list form, creating the objects on the way
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/body"))
            .header("X-AS-Inject", "body:data.creds.apiKey=BODY_KEY"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body: Value = serde_json::from_slice(&s.upstream.last().body).unwrap();
    assert_eq!(body, json!({"data": {"creds": {"apiKey": BODY}}}));

    // form field, other fields kept
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/form"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("X-AS-Inject-Form-client_secret", "FORM_KEY")
            .body("a=1&client_secret=old&b=2"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let last = s.upstream.last();
    let fields = support::url_decode_pairs(&String::from_utf8_lossy(&last.body));
    assert_eq!(
        fields,
        vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
            ("client_secret".to_owned(), FORM.to_owned()),
        ]
    );

    // the echo answers carried the injected values back: all scrubbed
    let audit = s.home.audit();
    assert_eq!(audit.len(), 8);
    for entry in &audit {
        assert_eq!(entry["status"], "OK", "{entry}");
        assert_eq!(entry["transport"], "http", "{entry}");
    }
}

#[test]
fn several_injections_in_one_call() {
    let s = setup();
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/many?keep=1"))
            .header("X-AS-Method", "PUT")
            .header(
                "X-AS-Inject",
                "bearer=BEARER_KEY, header:X-Api-Key=HEADER_KEY, query:apiKey=QUERY_KEY, \
                 body:auth.token=BODY_KEY",
            )
            .body(r#"{"keep":true}"#),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());

    let last = s.upstream.last();
    assert_eq!(last.method, "PUT");
    assert_eq!(last.header("authorization"), Some(format!("Bearer {BEARER}").as_str()));
    assert_eq!(last.header("x-api-key"), Some(HEADER));
    assert_eq!(
        last.query_pairs(),
        vec![("keep".to_owned(), "1".to_owned()), ("apiKey".to_owned(), QUERY.to_owned())]
    );
    let body: Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(body, json!({"keep": true, "auth": {"token": BODY}}));

    // The echo answer held every value; none reaches the caller.
    let text = reply.text();
    for value in [BEARER, HEADER, BODY] {
        assert!(!text.contains(value), "{value} leaked: {text}");
    }
    assert!(!text.contains(&url_encode(QUERY)));
    assert_eq!(reply.header("x-as-redacted").as_deref(), Some("true"));

    let audit = s.home.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        audit[0]["secret_keys"],
        json!(["BEARER_KEY", "HEADER_KEY", "QUERY_KEY", "BODY_KEY"])
    );
    assert_eq!(audit[0]["auth_styles"], json!(["bearer", "header", "query", "body"]));
    assert_eq!(audit[0]["method"], "PUT");
    assert_eq!(audit[0]["redacted"], true);
    assert!(!audit[0]["target_url"].as_str().unwrap().contains('?'), "no query in the log");
}

#[test]
fn only_the_callers_own_headers_go_upstream() {
    let s = setup();
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/headers"))
            .header("X-AS-Inject-Bearer", "BEARER_KEY")
            .header("X-AS-Agent-ID", "billing-tool")
            .header("X-AS-Session-ID", "run-42")
            .header("X-Custom", "passed")
            .header("Host", "evil.test")
            .header("Connection", "x-drop-me")
            .header("X-Drop-Me", "dropped")
            .header("Accept-Encoding", "gzip, br"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());

    let last = s.upstream.last();
    assert_eq!(last.header("x-custom"), Some("passed"));
    assert_eq!(last.header("x-drop-me"), None, "a header named by Connection is hop-by-hop");
    assert_eq!(last.header("host"), Some(format!("127.0.0.1:{}", s.upstream.port()).as_str()));
    assert_eq!(last.header("accept-encoding"), Some("identity"));
    for (name, value) in &last.headers {
        assert!(!name.starts_with("x-as-"), "control header {name} went upstream");
        assert!(!value.contains(&s.proxy.token), "the session token went upstream in {name}");
    }

    let audit = s.home.audit();
    assert_eq!(audit[0]["agent_id"], "billing-tool");
    assert_eq!(audit[0]["identity_level"], "declared");
    assert_eq!(audit[0]["session_id"], "run-42");
}

#[test]
fn bad_input_gets_its_slug_and_the_proxy_keeps_serving() {
    let s = setup();
    let target = s.upstream.url("/never");
    let mut requests = 0;
    let mut send = |request: reqwest::blocking::RequestBuilder| {
        requests += 1;
        Reply::send(request)
    };

    // missing X-AS-Target-URL
    let reply = send(
        support::client()
            .post(s.proxy.proxy_url())
            .header("X-AS-Session-Token", &s.proxy.token)
            .header("X-AS-Inject-Bearer", "BEARER_KEY"),
    );
    let json = reply.assert_refused(400, "bad_request");
    assert!(json["message"].as_str().unwrap().contains("X-AS-Target-URL"), "{json}");

    // malformed URL
    let reply = send(s.proxy.call("not a url").header("X-AS-Inject-Bearer", "BEARER_KEY"));
    reply.assert_refused(400, "bad_request");
    let reply = send(s.proxy.call("http://").header("X-AS-Inject-Bearer", "BEARER_KEY"));
    reply.assert_refused(400, "bad_request");

    // userinfo in the URL
    let reply = send(
        s.proxy
            .call(&target.replace("127.0.0.1", "u:p@127.0.0.1"))
            .header("X-AS-Inject-Bearer", "BEARER_KEY"),
    );
    reply.assert_refused(400, "bad_request");

    // a scheme that is not http(s)
    let reply =
        send(s.proxy.call("ftp://127.0.0.1/file").header("X-AS-Inject-Bearer", "BEARER_KEY"));
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.json()["error"], "insecure_scheme");

    // unknown injection style
    let reply = send(s.proxy.call(&target).header("X-AS-Inject-Cookie-session", "BEARER_KEY"));
    let json = reply.assert_refused(400, "bad_request");
    assert!(json["message"].as_str().unwrap().contains("unknown injection style"), "{json}");
    let reply = send(s.proxy.call(&target).header("X-AS-Inject", "cookie:x=BEARER_KEY"));
    reply.assert_refused(400, "bad_request");

    // a method that is not one
    let reply = send(
        s.proxy
            .call(&target)
            .header("X-AS-Inject-Bearer", "BEARER_KEY")
            .header("X-AS-Method", "G ET"),
    );
    reply.assert_refused(400, "bad_request");

    // no injection at all
    let reply = send(s.proxy.call(&target));
    reply.assert_refused(400, "bad_request");

    // a bad header name to inject into
    let reply = send(s.proxy.call(&target).header("X-AS-Inject", "header:Bad Name=HEADER_KEY"));
    reply.assert_refused(400, "bad_request");

    // unknown secret
    let reply = send(s.proxy.call(&target).header("X-AS-Inject-Bearer", "MISSING_KEY"));
    let json = reply.assert_refused(404, "secret_not_found");
    let message = json["message"].as_str().unwrap();
    assert!(message.starts_with("secret 'MISSING_KEY' not found"), "{message}");
    assert_eq!(json["key"], "MISSING_KEY");

    // body injection into a body that is not JSON names the path
    let reply =
        send(s.proxy.call(&target).header("X-AS-Inject-Body-auth-token", "BODY_KEY").body("a=b"));
    let json = reply.assert_refused(400, "bad_request");
    assert!(json["message"].as_str().unwrap().contains("auth.token"), "{json}");
    // ... and through a value that is not an object
    let reply = send(
        s.proxy
            .call(&target)
            .header("X-AS-Inject-Body-auth-token", "BODY_KEY")
            .body(r#"{"auth":5}"#),
    );
    let json = reply.assert_refused(400, "bad_request");
    assert!(json["message"].as_str().unwrap().contains("auth.token"), "{json}");

    // blocked domain: refused before any DNS lookup
    let reply = send(
        s.proxy.call("https://api.not-allowed.test/v1").header("X-AS-Inject-Bearer", "BEARER_KEY"),
    );
    let json = reply.assert_refused(403, "domain_not_in_allowlist");
    assert_eq!(json["domain"], "api.not-allowed.test");
    let message = json["message"].as_str().unwrap();
    assert_eq!(message.split('\'').nth(1), Some("api.not-allowed.test"), "{message}");

    // a suffix of an allowed name is not allowed
    let reply = send(
        s.proxy.call("https://127.0.0.1.evil.test/").header("X-AS-Inject-Bearer", "BEARER_KEY"),
    );
    reply.assert_refused(403, "domain_not_in_allowlist");

    // oversized headers
    let reply = send(
        s.proxy
            .call(&target)
            .header("X-AS-Inject-Bearer", "BEARER_KEY")
            .header("X-Pad", "p".repeat(70_000)),
    );
    reply.assert_refused(413, "payload_too_large");

    assert_eq!(s.upstream.count(), 0, "no bad request reached the upstream");
    s.echo_ok();
    requests += 1;

    // Exactly one audit entry per request, the refused ones included.
    let audit = s.home.audit();
    assert_eq!(audit.len(), requests, "{audit:#?}");
    assert_eq!(s.proxy.call_log_lines(requests), requests, "one log line per call");
    let refused = audit.iter().filter(|e| e["status"] != "OK").count();
    assert_eq!(refused, requests - 1);
    assert!(audit.iter().all(|e| e["status"] != "PENDING"));
    let reasons: Vec<&str> = audit.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"secret_not_found"));
    assert!(reasons.contains(&"domain_not_in_allowlist"));
    assert!(reasons.contains(&"bad_request"));
}

#[test]
fn an_empty_allowlist_refuses_every_target() {
    let home = TestHome::new();
    home.set_secrets(&[("BEARER_KEY", BEARER)]);
    let upstream = Upstream::start();
    let proxy = home.start_proxy(ProxyOptions::local());

    let reply =
        Reply::send(proxy.call(&upstream.url("/x")).header("X-AS-Inject-Bearer", "BEARER_KEY"));
    let json = reply.assert_refused(403, "domain_not_in_allowlist");
    assert_eq!(json["domain"], "127.0.0.1");
    assert!(json["message"].as_str().unwrap().contains("empty"), "{json}");
    assert_eq!(upstream.count(), 0);

    let audit = home.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["status"], "BLOCKED");
    assert_eq!(audit[0]["reason"], "domain_not_in_allowlist");
}

#[test]
fn line_breaks_and_nul_in_an_injected_value_are_refused_without_quoting_it() {
    let home = TestHome::new();
    home.allow(&["127.0.0.1"]);
    home.set_secret("CRLF_KEY", b"abc\r\nX-Evil: zq81-crlf");
    home.set_secret("CRLF_BASIC_KEY", b"user:abc\r\nX-Evil: zq81-basic");
    home.set_secret("NUL_KEY", b"abc\0X-Evil-zq81");
    let upstream = Upstream::start();
    let proxy = home.start_proxy(ProxyOptions::local());
    let target = upstream.url("/never");

    let cases = [
        ("X-AS-Inject-Bearer", "CRLF_KEY"),
        ("X-AS-Inject-Header-X-Api-Key", "CRLF_KEY"),
        ("X-AS-Inject-Basic", "CRLF_BASIC_KEY"),
        ("X-AS-Inject-Bearer", "NUL_KEY"),
        ("X-AS-Inject-Header-X-Api-Key", "NUL_KEY"),
    ];
    for (header, key) in cases {
        let reply = Reply::send(proxy.call(&target).header(header, key));
        let json = reply.assert_refused(400, "bad_request");
        let text = reply.text();
        assert!(!text.contains("X-Evil") && !text.contains("zq81"), "value quoted: {text}");
        assert!(json["message"].as_str().unwrap().contains(key), "names the key: {json}");
    }
    assert_eq!(upstream.count(), 0);

    let stderr = proxy.stderr_text();
    assert!(!stderr.contains("zq81"), "value in the proxy log: {stderr}");
    assert_eq!(home.audit().len(), cases.len());
}

#[test]
fn an_oversized_body_is_refused_with_413() {
    let s = setup();
    let body = vec![b'a'; 10 * 1024 * 1024 + 1];
    let result = s
        .proxy
        .call(&s.upstream.url("/big"))
        .header("X-AS-Inject-Bearer", "BEARER_KEY")
        .header("content-type", "application/octet-stream")
        .body(body)
        .send();
    let reply = Reply::read(result.expect("the proxy answers an oversized body"));
    reply.assert_refused(413, "payload_too_large");
    assert_eq!(s.upstream.count(), 0);

    s.echo_ok();
    let audit = s.home.audit();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["reason"], "payload_too_large");
}

/// Two `Content-Length`s that disagree are refused. A request with both `Content-Length`
/// and `Transfer-Encoding` is framed by `Transfer-Encoding` alone and the connection is
/// closed after it (RFC 9112 section 6.1), so bytes smuggled behind it are never read as a
/// request; the body goes upstream re-framed by the proxy.
#[test]
fn conflicting_framing_cannot_smuggle_a_request() {
    let s = setup();
    let head = |length_headers: &str| {
        format!(
            "POST /proxy HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-AS-Session-Token: {token}\r\n\
             X-AS-Target-URL: {target}\r\nX-AS-Inject-Bearer: BEARER_KEY\r\n{length_headers}\r\n",
            port = s.proxy.port,
            token = s.proxy.token,
            target = s.upstream.url("/framing"),
        )
    };

    let request = head("Content-Length: 4\r\nContent-Length: 5\r\nConnection: close\r\n") + "abcde";
    let answer = s.proxy.raw(request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "two lengths are refused: {answer}");
    assert_eq!(s.upstream.count(), 0);

    // By Content-Length the body would be "4\r\na" and the rest a second request.
    let smuggled = head("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n")
        + "4\r\nabcd\r\n0\r\n\r\n"
        + &head("Content-Length: 0\r\n");
    let answer = s.proxy.raw(smuggled.as_bytes());
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer only: {answer}");
    let received = s.upstream.received();
    assert!(received.len() <= 1, "nothing smuggled upstream: {received:?}");
    if let Some(request) = received.first() {
        assert_eq!(request.body, b"abcd");
        assert_eq!(request.header("content-length"), Some("4"));
        assert_eq!(request.header("transfer-encoding"), None);
    }
    s.echo_ok();
}

/// The SSRF matrix: every spelling of a non-public address, each allowlisted first, and
/// a proxy that does not allow local HTTP. Nothing reaches the upstream.
#[test]
fn ssrf_matrix_is_refused_without_local_http() {
    let home = TestHome::new();
    home.set_secrets(&[("BEARER_KEY", BEARER)]);
    home.allow(&[
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "169.254.169.254",
        "10.0.0.1",
        "0.0.0.0",
        "localhost",
    ]);
    let upstream = Upstream::start();
    let proxy = home.start_proxy(ProxyOptions::default());
    let port = upstream.port();

    // Safety net: the non-loopback targets below must be refused before any connection,
    // so this test never sends a packet off this machine. Check that the classifier the
    // proxy uses calls them non-public before asking the proxy at all.
    for ip in ["169.254.169.254", "10.0.0.1", "0.0.0.0"] {
        let class = agentsecrets_core::net::classify(ip.parse().unwrap());
        assert!(!class.is_public(), "{ip} must be non-public, is {class}");
    }

    let hosts = [
        format!("127.0.0.1:{port}"),
        format!("127.1:{port}"),
        format!("0x7f000001:{port}"),
        format!("2130706433:{port}"),
        format!("0177.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        "169.254.169.254".to_owned(),
        "10.0.0.1".to_owned(),
        format!("0.0.0.0:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST.:{port}"),
    ];
    let mut sent = 0;
    for host in &hosts {
        for scheme in ["http", "https"] {
            let target = format!("{scheme}://{host}/latest/meta-data?x=1");
            let reply = Reply::send(proxy.call(&target).header("X-AS-Inject-Bearer", "BEARER_KEY"));
            sent += 1;
            assert_eq!(reply.status, 403, "{target}: {}", reply.text());
            let slug = reply.json()["error"].as_str().unwrap_or_default().to_owned();
            assert!(
                slug == "ssrf_blocked" || slug == "insecure_scheme",
                "{target} refused as {slug}"
            );
        }
    }
    assert_eq!(upstream.count(), 0, "the upstream was never contacted");

    let audit = home.audit();
    assert_eq!(audit.len(), sent);
    for entry in &audit {
        assert_eq!(entry["status"], "BLOCKED", "{entry}");
        assert_eq!(entry["redacted"], false);
    }
    // Numeric spellings are logged as the address they are.
    assert!(audit.iter().filter(|e| e["domain"] == "127.0.0.1").count() >= 10);
}

#[test]
fn local_http_still_refuses_the_proxys_own_port_and_non_loopback() {
    let s = setup();
    s.home.allow(&["localhost", "169.254.169.254", "10.0.0.1", "::ffff:127.0.0.1"]);
    let own = s.proxy.port;
    for ip in ["169.254.169.254", "10.0.0.1"] {
        assert!(!agentsecrets_core::net::classify(ip.parse().unwrap()).is_public());
    }

    let targets = [
        format!("http://127.0.0.1:{own}/proxy"),
        format!("http://127.0.0.1:{own}/health"),
        format!("http://localhost:{own}/proxy"),
        format!("http://2130706433:{own}/proxy"),
        format!("http://[::ffff:127.0.0.1]:{own}/proxy"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ];
    for target in &targets {
        let reply = Reply::send(s.proxy.call(target).header("X-AS-Inject-Bearer", "BEARER_KEY"));
        reply.assert_refused(403, "ssrf_blocked");
    }
    s.echo_ok();
    let audit = s.home.audit();
    assert_eq!(audit.len(), targets.len() + 1);
    // Only the last call (the echo) was forwarded; the refusals never called the proxy
    // itself, so no nested entries appeared either.
    assert_eq!(audit.iter().filter(|e| e["status"] == "OK").count(), 1);
}

#[test]
fn the_session_token_is_required() {
    let s = setup();
    let target = s.upstream.url("/x");

    let reply = Reply::send(s.proxy.bare_call(&target).header("X-AS-Inject-Bearer", "BEARER_KEY"));
    reply.assert_refused(401, "session_token_required");
    let reply = Reply::send(
        s.proxy
            .bare_call(&target)
            .header("X-AS-Inject-Bearer", "BEARER_KEY")
            .header("X-AS-Session-Token", "as_sess_wrong"),
    );
    reply.assert_refused(401, "session_token_required");
    assert_eq!(s.upstream.count(), 0);
    s.echo_ok();

    let audit = s.home.audit();
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[0]["reason"], "session_token_required");
    assert_eq!(audit[0]["status"], "BLOCKED");
}

#[test]
fn no_session_token_mode_admits_callers_without_it() {
    let s = setup_with(ProxyOptions { no_session_token: true, ..ProxyOptions::local() });
    let reply = Reply::send(
        s.proxy.bare_call(&s.upstream.url("/x")).header("X-AS-Inject-Bearer", "BEARER_KEY"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(s.upstream.count(), 1);
}

#[test]
fn a_secret_changed_while_the_proxy_runs_is_used_and_scrubbed_at_the_next_call() {
    let s = setup();
    let call = || {
        Reply::send(
            s.proxy
                .call(&s.upstream.url("/reflect"))
                .header("X-AS-Inject", "header:X-Secret=ECHOED_KEY"),
        )
    };
    assert_eq!(call().status, 200);
    assert_eq!(s.upstream.last().header("x-secret"), Some(ECHOED));

    // The proxy keeps secrets and their redaction automaton between calls; a change made
    // by another process must replace both before the next call.
    let rotated = "sk_rotated_canary_7f3e9a";
    s.home.set_secrets(&[("ECHOED_KEY", rotated)]);
    let reply = call();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(s.upstream.last().header("x-secret"), Some(rotated));
    assert!(!contains(&reply.everything(), rotated.as_bytes()), "{}", reply.text());
    assert_eq!(reply.header("x-reflected").as_deref(), Some(MARKER));
}

#[test]
fn echoed_secrets_are_scrubbed_from_body_and_headers() {
    let s = setup();
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/reflect"))
            .header("X-AS-Inject", "header:X-Secret=ECHOED_KEY"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(s.upstream.last().header("x-secret"), Some(ECHOED));

    let text = reply.text();
    for form in [ECHOED.to_owned(), b64(ECHOED.as_bytes()), url_encode(ECHOED), json_escape(ECHOED)]
    {
        assert!(!contains(&reply.everything(), form.as_bytes()), "{form} leaked: {text}");
    }
    let expected = reflected_body(ECHOED)
        .replace(&format!("\"{ECHOED}\""), &format!("\"{MARKER}\""))
        .replace(&b64(ECHOED.as_bytes()), MARKER)
        .replace(&url_encode(ECHOED), MARKER)
        .replace(&json_escape(ECHOED), MARKER);
    assert_eq!(text, expected);
    assert_eq!(reply.header("x-reflected").as_deref(), Some(MARKER));
    assert_eq!(reply.header("x-reflected-b64").as_deref(), Some(MARKER));
    assert_eq!(reply.header("x-plain").as_deref(), Some("kept"));
    assert_eq!(reply.header("x-as-redacted").as_deref(), Some("true"));
    if let Some(length) = reply.header("content-length") {
        assert_eq!(length, reply.body.len().to_string(), "Content-Length matches the new body");
    }

    let audit = s.home.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["redacted"], true);
    assert_eq!(audit[0]["reason"], "credential_echo");
    assert_eq!(audit[0]["status"], "OK");
}

#[test]
fn a_secret_split_across_chunks_is_still_scrubbed() {
    let s = setup();
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/chunked"))
            .header("X-AS-Inject", "header:X-Secret=ECHOED_KEY"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let expected = chunked_body(ECHOED)
        .replace(&format!("raw={ECHOED} "), &format!("raw={MARKER} "))
        .replace(&b64(ECHOED.as_bytes()), MARKER)
        .replace(&url_encode(ECHOED), MARKER);
    assert_eq!(reply.text(), expected);

    // A body too large to be read whole streams through the same redaction.
    let reply = Reply::send(
        s.proxy.call(&s.upstream.url("/large")).header("X-AS-Inject", "header:X-Secret=ECHOED_KEY"),
    );
    assert_eq!(reply.status, 200);
    let expected = support::large_body(ECHOED)
        .replace(ECHOED, MARKER)
        .replace(&b64(ECHOED.as_bytes()), MARKER);
    assert!(reply.text() == expected, "the large body is scrubbed and otherwise intact");

    let audit = s.home.audit();
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().all(|e| e["redacted"] == true && e["status"] == "OK"), "{audit:#?}");
}

/// A streamed answer (server-sent events) reaches the caller while the upstream is still
/// sending, and a caller that leaves mid-stream gets its entry settled, not left pending.
#[test]
fn a_stream_passes_through_as_it_arrives_and_a_caller_leaving_settles_the_entry() {
    let s = setup();
    let mut response = s
        .proxy
        .call(&s.upstream.url("/stream"))
        .header("X-AS-Inject-Bearer", "BEARER_KEY")
        .send()
        .expect("the stream starts");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.to_str().unwrap()),
        Some("text/event-stream")
    );

    let first = support::stream_event(0);
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < first.len() {
        let n = std::io::Read::read(&mut response, &mut buf).expect("read the stream");
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(first.as_bytes()), "{}", String::from_utf8_lossy(&got));
    assert_eq!(s.upstream.streams_finished(), 0, "the first event came before the last was sent");
    drop(response);

    s.echo_ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let entry = loop {
        let audit = s.home.audit();
        if audit[0]["status"] != "PENDING" {
            break audit[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "the entry stays pending: {audit:#?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(entry["status"], "ERROR", "{entry}");
    assert_eq!(s.home.audit().len(), 2);
}

#[test]
fn compressed_answers_are_decompressed_then_scrubbed() {
    let s = setup();
    let expected = compressed_plain(ECHOED)
        .replace(&format!("raw={ECHOED} "), &format!("raw={MARKER} "))
        .replace(&b64(ECHOED.as_bytes()), MARKER);
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        let reply = Reply::send(
            s.proxy
                .call(&s.upstream.url(&format!("/{encoding}")))
                .header("X-AS-Inject", "header:X-Secret=ECHOED_KEY")
                .header("Accept-Encoding", encoding),
        );
        assert_eq!(reply.status, 200, "{encoding}: {}", reply.text());
        assert_eq!(reply.header("content-encoding"), None, "{encoding} is decoded");
        assert_eq!(reply.text(), expected, "{encoding}");
        assert_eq!(s.upstream.last().header("accept-encoding"), Some("identity"));
    }
    let audit = s.home.audit();
    assert_eq!(audit.len(), 4);
    assert!(audit.iter().all(|e| e["redacted"] == true && e["status"] == "OK"));
}

#[test]
fn a_redirect_is_passed_back_unfollowed_with_the_secret_scrubbed() {
    let s = setup();
    let reply = Reply::send(
        s.proxy
            .call(&s.upstream.url("/redirect"))
            .header("X-AS-Inject", "header:X-Secret=ECHOED_KEY"),
    );
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(reply.header("location"), Some(format!("/landing?token={MARKER}&x=1")));
    assert_eq!(reply.header("x-plain").as_deref(), Some("kept"));
    assert_eq!(reply.header("x-as-redacted").as_deref(), Some("true"));
    assert_eq!(s.upstream.count(), 1, "the redirect was not followed");

    let audit = s.home.audit();
    assert_eq!(audit[0]["status_code"], 302);
    assert_eq!(audit[0]["redacted"], true);
}

#[test]
fn upstream_failures_get_slugs_and_the_proxy_keeps_serving() {
    let s = setup();
    let dropping = DroppingUpstream::start();

    // closes the connection without answering
    let reply =
        Reply::send(s.proxy.call(&dropping.url("/x")).header("X-AS-Inject-Bearer", "BEARER_KEY"));
    reply.assert_refused(502, "upstream_error");
    assert!(dropping.accepted() >= 1);
    s.echo_ok();

    // nothing listens
    let closed = format!("http://127.0.0.1:{}/x", free_port());
    let reply = Reply::send(s.proxy.call(&closed).header("X-AS-Inject-Bearer", "BEARER_KEY"));
    reply.assert_refused(502, "upstream_error");
    s.echo_ok();

    // answers later than the proxy waits
    let reply = Reply::send(
        s.proxy.call(&s.upstream.url("/slow")).header("X-AS-Inject-Bearer", "BEARER_KEY"),
    );
    reply.assert_refused(504, "upstream_timeout");
    s.echo_ok();

    // breaks the body midway: the caller's stream ends in an error, never with the
    // unscrubbed tail
    let response = s
        .proxy
        .call(&s.upstream.url("/broken"))
        .header("X-AS-Inject", "header:X-Secret=ECHOED_KEY")
        .send()
        .expect("the answer starts");
    let body = response.bytes();
    if let Ok(body) = &body {
        assert!(!contains(body, ECHOED.as_bytes()), "{}", String::from_utf8_lossy(body));
    }
    s.echo_ok();

    // an upstream error status is the upstream's answer, passed back as is
    let reply = Reply::send(
        s.proxy.call(&s.upstream.url("/status/503")).header("X-AS-Inject-Bearer", "BEARER_KEY"),
    );
    assert_eq!(reply.status, 503);
    assert_eq!(reply.text(), "status as asked");
    assert_eq!(reply.header("x-as-refusal"), None);
    s.echo_ok();

    let audit = s.home.audit();
    assert_eq!(audit.len(), 10);
    let reasons: Vec<&str> = audit.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "upstream_error",
            "credential_echo",
            "upstream_error",
            "credential_echo",
            "upstream_timeout",
            "credential_echo",
            "upstream_error",
            "credential_echo",
            "-",
            "credential_echo"
        ]
    );
    assert_eq!(s.proxy.call_log_lines(10), 10, "one log line per call: {}", s.proxy.stderr_text());
    assert_eq!(audit[0]["status"], "ERROR");
    assert_eq!(audit[6]["status"], "ERROR");
    assert_eq!(audit[8]["status_code"], 503);
}

#[test]
fn concurrent_calls_all_succeed() {
    let s = setup();
    let results: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let proxy = &s.proxy;
                let url = s.upstream.url(&format!("/concurrent?n={i}"));
                scope.spawn(move || {
                    Reply::send(proxy.call(&url).header("X-AS-Inject-Bearer", "BEARER_KEY"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    for (i, reply) in results.iter().enumerate() {
        assert_eq!(reply.status, 200, "call {i}: {}", reply.text());
        assert_eq!(reply.json()["query"], format!("n={i}"));
        assert!(!reply.text().contains(BEARER));
    }
    assert_eq!(s.upstream.count(), 32);
    let audit = s.home.audit();
    assert_eq!(audit.len(), 32);
    assert!(audit.iter().all(|e| e["status"] == "OK"));
    // Records written together in one commit still form one unbroken chain.
    let verify = s.home.run_ok(&["log", "verify"]);
    assert!(verify.contains("intact: 32 entries"), "{verify}");
}

#[test]
fn proxy_status_stop_and_a_busy_port() {
    let s = setup();
    s.echo_ok();
    s.echo_ok();

    let out = s.home.run(&["proxy", "status"]);
    assert!(out.status.success(), "{}", describe(&out));
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("running"), "{status}");
    assert!(status.contains(&s.proxy.port.to_string()), "{status}");
    assert!(status.contains(&s.proxy.pid().to_string()), "{status}");
    assert!(
        status.lines().any(|l| l.contains("Calls served") && l.trim_end().ends_with(" 2")),
        "{status}"
    );

    // A second proxy on the same port says the port is busy and exits 1.
    let port = s.proxy.port.to_string();
    let out = s.home.run(&["proxy", "start", "--port", &port, "--allow-local-http"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&port) && stderr.contains("in use"), "{stderr}");
    assert_eq!(s.home.session().unwrap()["pid"], s.proxy.pid(), "the first proxy's session stays");
    s.echo_ok();

    let mut proxy = s.proxy;
    let out = s.home.run(&["proxy", "stop"]);
    assert!(out.status.success(), "{}", describe(&out));
    let exit = proxy.wait_exit();
    assert!(exit.success(), "the proxy exits cleanly: {exit}");
    assert!(s.home.session().is_none(), "session.json is removed at a clean stop");

    let out = s.home.run(&["proxy", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));
}

#[test]
fn session_file_is_private_and_rotated_at_every_start() {
    let home = TestHome::new();
    let first = home.start_proxy(ProxyOptions::local());
    let token = first.token.clone();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(home.path().join("session.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(token.starts_with("as_sess_"));
    drop(first);

    let second = home.start_proxy(ProxyOptions::local());
    assert_ne!(second.token, token, "a new start rotates the token");
}

#[test]
fn proxy_logs_prints_json_lines() {
    let s = setup();
    for _ in 0..4 {
        s.echo_ok();
    }
    let reply = Reply::send(
        s.proxy.call(&s.upstream.url("/h")).header("X-AS-Inject-Header-X-Api-Key", "HEADER_KEY"),
    );
    assert_eq!(reply.status, 200);

    let out = s.home.run_ok(&["proxy", "logs", "--last", "3"]);
    let lines: Vec<Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    for entry in &lines {
        let ts = entry["timestamp"].as_str().unwrap();
        assert!(ts.ends_with("+00:00"), "{ts}");
        let fraction = ts.split('.').nth(1).map(|f| f.trim_end_matches("+00:00").len());
        assert!(matches!(fraction, None | Some(6)), "0 or 6 fractional digits: {ts}");
        assert!(entry["id"].as_str().unwrap().starts_with("log_"));
    }
    assert_eq!(lines[2]["secret_keys"], json!(["HEADER_KEY"]), "the most recent entry is last");

    let out = s.home.run_ok(&["proxy", "logs", "--secret", "HEADER_KEY"]);
    assert_eq!(out.lines().count(), 1, "{out}");
}

/// A canary value goes through every style, over HTTP and through `call` with and
/// without a proxy, while the upstream echoes everything back. Afterwards the value (and
/// its encodings) is found in what the upstream received, and nowhere else: not in any
/// response, command output, log line or file under the home.
#[test]
fn canary_value_appears_only_upstream() {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let canary = format!("cnry-{nanos:x}-{}:pw{:x}", std::process::id(), nanos.rotate_left(17));
    let forms = [canary.clone(), b64(canary.as_bytes()), url_encode(&canary)];

    let home = TestHome::new();
    let mut visible: Vec<u8> = Vec::new();
    let assignment = format!("CANARY={canary}");
    for args in [&["secrets", "set", assignment.as_str()][..], &["secrets", "list"]] {
        let out = home.run(args);
        assert!(out.status.success(), "{}", describe(&out));
        visible.extend(&out.stdout);
        visible.extend(&out.stderr);
    }
    home.allow(&["127.0.0.1"]);
    let upstream = Upstream::start();
    let mut proxy = home.start_proxy(ProxyOptions::local());

    let calls = [
        (
            "/one?keep=1",
            "bearer=CANARY, header:X-Api-Key=CANARY, query:apiKey=CANARY, body:auth.token=CANARY",
            Some(r#"{"a":1}"#),
            None,
        ),
        (
            "/two",
            "basic=CANARY, form:client_secret=CANARY, query:k=CANARY",
            Some("x=1"),
            Some("application/x-www-form-urlencoded"),
        ),
        ("/reflect", "header:X-Secret=CANARY", None, None),
        ("/chunked", "header:X-Secret=CANARY", None, None),
        ("/gzip", "header:X-Secret=CANARY", None, None),
        ("/redirect", "header:X-Secret=CANARY", None, None),
    ];
    for (path, inject, body, content_type) in calls {
        let mut request = proxy.call(&upstream.url(path)).header("X-AS-Inject", inject);
        if let Some(body) = body {
            request = request.body(body);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let reply = Reply::send(request);
        assert!(reply.status == 200 || reply.status == 302, "{path}: {}", reply.text());
        visible.extend(reply.everything());
    }
    // a blocked call naming the canary's key
    let reply = Reply::send(
        proxy.call("https://api.not-allowed.test/").header("X-AS-Inject-Bearer", "CANARY"),
    );
    assert_eq!(reply.status, 403);
    visible.extend(reply.everything());

    // `call` through the running proxy, then in-process, in both output formats
    let url = upstream.url("/cli?keep=1");
    let flags = [
        "call",
        "--url",
        &url,
        "--method",
        "POST",
        "--body",
        r#"{"a":1}"#,
        "--bearer",
        "CANARY",
        "--header",
        "X-Api-Key=CANARY",
        "--query",
        "apiKey=CANARY",
        "--body-field",
        "auth.token=CANARY",
    ];
    let basic_flags = ["call", "--url", &url, "--basic", "CANARY", "--form-field", "f=CANARY"];
    let mut json_flags = flags.to_vec();
    json_flags.extend(["--output", "json"]);
    let runs: [&[&str]; 3] = [&flags, &json_flags, &basic_flags];
    for args in runs {
        let out = home.run(args);
        assert!(out.status.success(), "{}", describe(&out));
        visible.extend(&out.stdout);
        visible.extend(&out.stderr);
    }
    let out = home.run_ok(&["proxy", "stop"]);
    visible.extend(out.as_bytes());
    proxy.wait_exit();
    for args in runs {
        let out = home.run_env(args, &[("AGENTSECRETS_ALLOW_LOCAL_HTTP", "1")]);
        assert!(out.status.success(), "{}", describe(&out));
        visible.extend(&out.stdout);
        visible.extend(&out.stderr);
    }
    for args in [
        &["log", "list", "--format", "json"][..],
        &["log", "list", "--format", "csv"],
        &["proxy", "logs"],
    ] {
        visible.extend(home.run_ok(args).as_bytes());
    }
    let proxy_log = proxy.stderr_text();
    assert!(proxy_log.contains("call"), "the proxy logged its calls: {proxy_log}");

    // It went where it was meant to go.
    let received: Vec<u8> = upstream.received().iter().flat_map(|r| r.everything()).collect();
    assert!(contains(&received, canary.as_bytes()), "the upstream received the canary");
    assert!(contains(&received, b64(canary.as_bytes()).as_bytes()), "basic reached the upstream");
    assert_eq!(upstream.count(), calls.len() + 2 * runs.len());

    // And nowhere else.
    for form in &forms {
        assert!(!contains(&visible, form.as_bytes()), "{form} in what a caller saw");
        assert!(!proxy_log.contains(form.as_str()), "{form} in the proxy log");
        for file in home.files() {
            let bytes = std::fs::read(&file).unwrap();
            assert!(!contains(&bytes, form.as_bytes()), "{form} in {}", file.display());
        }
    }
    let files: Vec<String> = home.files().iter().map(|f| f.display().to_string()).collect();
    assert!(files.iter().any(|f| f.ends_with("audit.db")), "{files:?}");
    assert!(contains(&visible, MARKER.as_bytes()));

    let audit = home.audit();
    assert_eq!(audit.len(), calls.len() + 1 + 2 * runs.len());
    let transports: Vec<&str> = audit.iter().map(|e| e["transport"].as_str().unwrap()).collect();
    assert_eq!(transports.iter().filter(|t| **t == "cli").count(), runs.len());
}
