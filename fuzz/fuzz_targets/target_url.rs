//! Target URLs and host normalisation (`agentsecrets_core::net`, `policy`).
//!
//! - `Target::parse` on any text: no panic; an accepted target is http(s), has a non-zero
//!   port, a host that passes its own allowlist entry (`normalize_host` of its `domain()`
//!   is the same text, and `host_allowed` admits it), a loggable form without query or
//!   fragment, and re-parsing its normalised URL gives the same host and port.
//! - `normalize_host` on any text: idempotent, and a target spelled with the normalised
//!   entry has exactly that host (an entry and a target spelled alike compare equal).
//! - `normalize_domain_pattern`: idempotent; a `*.` pattern never matches its parent.
//! - `classify`: an IPv4 address and its IPv4-mapped IPv6 form are in the same class.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use agentsecrets_core::net::{Target, TargetHost, classify, host_allowed, normalize_host};
use agentsecrets_core::policy::{domain_matches, normalize_domain_pattern};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    url: String,
    entry: String,
    v4: [u8; 4],
}

fuzz_target!(|input: Input| {
    if let Ok(target) = Target::parse(&input.url) {
        assert!(matches!(target.url().scheme(), "http" | "https"));
        assert_eq!(target.is_https(), target.url().scheme() == "https");
        assert_ne!(target.port(), 0);
        let domain = target.domain();
        let entry = normalize_host(&domain).expect("a target's host is a valid allowlist entry");
        assert_eq!(entry, domain, "allowlist entry and target host normalise differently");
        assert!(host_allowed(target.host(), &[entry]));
        let shown = target.display_without_query();
        assert!(!shown.contains('?') && !shown.contains('#'), "query or fragment in log form");
        let _ = format!("{target:?}");
        if let TargetHost::Ip(ip) = target.host() {
            let _ = classify(*ip);
        }
        let again = Target::parse(target.url().as_str()).expect("a normalised target re-parses");
        assert_eq!(again.host(), target.host());
        assert_eq!(again.port(), target.port());
        assert_eq!(again.url(), target.url());
    }

    if let Ok(entry) = normalize_host(&input.entry) {
        assert_eq!(normalize_host(&entry).as_ref(), Ok(&entry), "normalize_host is not idempotent");
        let host = if entry.contains(':') { format!("[{entry}]") } else { entry.clone() };
        let target = Target::parse(&format!("https://{host}/")).expect("an entry is a valid host");
        assert_eq!(target.domain(), entry, "entry and target spelled alike differ");
        assert!(host_allowed(target.host(), &[entry.clone()]));
    }
    if let Ok(pattern) = normalize_domain_pattern(&input.entry) {
        assert_eq!(normalize_domain_pattern(&pattern).as_ref(), Ok(&pattern));
        if let Some(parent) = pattern.strip_prefix("*.") {
            assert!(!domain_matches(&pattern, parent), "*.x matches x");
            assert!(domain_matches(&pattern, &format!("a.{parent}")));
        } else {
            assert!(domain_matches(&pattern, &pattern));
        }
    }

    let v4 = Ipv4Addr::from(input.v4);
    assert_eq!(classify(IpAddr::V4(v4)), classify(IpAddr::V6(v4.to_ipv6_mapped())));
});
