//! What identifying a caller costs on the proxy's hot path, against a real vault: an
//! issued token verified cold (signature check and registry read), the same token again
//! (cached: the change counter, one hash and a map lookup), and a declared name.
//!
//! Run: `AGENTSECRETS_KEYCHAIN=off cargo bench -p agentsecrets-proxy --bench identity`
//! (without the variable, a desktop keychain would get an entry for the bench's
//! temporary vault).

// criterion_group! and criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use agentsecrets_core::names::AgentName;
use agentsecrets_proxy::identity::TokenVerifier;
use agentsecrets_store::{Home, Vault};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_identify(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(&Home::at(dir.path().join("home"))).expect("open the vault");
    let agent = AgentName::parse("billing-tool").expect("a valid name");
    let issued = vault.issue_token(&agent, "production", None).expect("issue a token");
    let token = issued.value.expose_str().expect("tokens are text").to_owned();

    // A bench of a failing path would report a misleadingly cheap number.
    let warm = TokenVerifier::default();
    assert!(warm.identify(&vault, Some(&token), None).identity.is_ok());

    c.bench_function("identify/issued cold", |b| {
        b.iter(|| TokenVerifier::default().identify(&vault, Some(black_box(&token)), None))
    });
    c.bench_function("identify/issued cached", |b| {
        b.iter(|| warm.identify(&vault, Some(black_box(&token)), None))
    });
    c.bench_function("identify/declared", |b| {
        b.iter(|| warm.identify(&vault, None, Some(black_box("billing-tool"))))
    });
}

criterion_group!(benches, bench_identify);
criterion_main!(benches);
