//! The control headers of a `/proxy` request (`agentsecrets_proxy::server::call_spec`), the
//! `X-AS-Inject` list form (`Injection::parse_list`) and the per-style inject headers
//! (`Injection::from_header`), and the forwarding filter (`forward::outbound_headers`).
//!
//! Asserted: no panic; a spec that parses carries the trimmed target, agent and session
//! headers; no injection targets a header the proxy owns; injections written back in the
//! list form (`remote::inject_list`, what the SDK sends) parse to the same injections; the
//! headers sent upstream hold no `X-AS-*`, hop-by-hop, `Host` or `Content-Length` header,
//! nothing the caller's `Connection` header names, and ask for an uncompressed answer.
#![no_main]

use agentsecrets_core::inject::{InjectStyle, Injection};
use agentsecrets_proxy::forward::{is_hop_by_hop, outbound_headers};
use agentsecrets_proxy::remote::inject_list;
use agentsecrets_proxy::server::call_spec;
use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    method: String,
    list: String,
    headers: Vec<(u8, String, Vec<u8>)>,
}

const NAMES: &[&str] = &[
    "x-as-inject",
    "x-as-inject-bearer",
    "x-as-inject-basic",
    "x-as-inject-header-",
    "x-as-inject-query-",
    "x-as-inject-body-",
    "x-as-inject-form-",
    "x-as-inject-",
    "x-as-inject",
    "x-as-target-url",
    "x-as-method",
    "x-as-agent-id",
    "x-as-agent-token",
    "x-as-session-id",
    "x-as-explain",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "host",
    "content-length",
    "accept-encoding",
    "",
];

fuzz_target!(|input: Input| {
    // The list form on its own, with any text (the header path below only sees ASCII).
    if let Ok(list) = Injection::parse_list(&input.list) {
        assert_round_trip(&list);
    }

    let mut headers = HeaderMap::new();
    for (kind, suffix, value) in input.headers.into_iter().take(32) {
        let prefix = NAMES[usize::from(kind) % NAMES.len()];
        let name = if prefix.ends_with('-') || prefix.is_empty() {
            format!("{prefix}{suffix}")
        } else {
            prefix.to_owned()
        };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value))
        else {
            continue;
        };
        headers.append(name, value);
    }

    let text =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned());
    if let Ok(spec) = call_spec(&headers, &input.method) {
        assert!(!spec.target.is_empty());
        assert_eq!(Some(&spec.target), text("x-as-target-url").as_ref());
        assert_eq!(spec.agent_id, text("x-as-agent-id"));
        assert_eq!(spec.agent_token, text("x-as-agent-token"));
        assert_eq!(spec.session_id, text("x-as-session-id"));
        for injection in &spec.injections {
            if let InjectStyle::Header(name) = &injection.style {
                let lower = name.to_ascii_lowercase();
                assert!(!lower.starts_with("x-as-"), "injection may set a control header");
                assert!(!matches!(lower.as_str(), "host" | "content-length" | "transfer-encoding"));
                assert!(
                    HeaderName::from_bytes(name.as_bytes()).is_ok(),
                    "injected header name invalid"
                );
            }
        }
        assert_round_trip(&spec.injections);
    }

    let named: Vec<String> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let out = outbound_headers(&headers);
    for (name, _) in &out {
        let lower = name.as_str();
        assert!(!lower.starts_with("x-as-"), "a control header would go upstream");
        assert!(!is_hop_by_hop(name), "a hop-by-hop header would go upstream");
        assert!(!matches!(lower, "host" | "content-length"));
        assert!(
            !named.iter().any(|n| n == lower),
            "a header named by Connection would go upstream"
        );
    }
    let encodings: Vec<_> = out.get_all("accept-encoding").iter().collect();
    assert_eq!(encodings, [HeaderValue::from_static("identity")]);
});

fn assert_round_trip(injections: &[Injection]) {
    let written = inject_list(injections);
    let again = Injection::parse_list(&written).expect("written-back list parses");
    assert_eq!(again, injections, "the X-AS-Inject list form does not round-trip");
}
