//! What checking an agent token costs: the cold path (parse and full signature check), the
//! parse alone, and the warm path (hashing the value to look it up among tokens already
//! verified).

use std::hint::black_box;

use agentsecrets_core::token::{self, TokenClaims};
use criterion::{Criterion, criterion_main};
use ed25519_dalek::SigningKey;

/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;

fn typical_token() -> (String, ed25519_dalek::VerifyingKey) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let claims = TokenClaims {
        token_id: "tok_abcdefgh2345".to_owned(),
        agent: "billing-tool".to_owned(),
        issued_at: NOW,
        expires_at: Some(NOW + 30 * 86_400),
    };
    (token::issue("acme42", &claims, &key), key.verifying_key())
}

fn bench_token(c: &mut Criterion) {
    let (value, verifying_key) = typical_token();
    // A bench that measured a failing path would report a misleadingly cheap number.
    assert_eq!(token::parse(&value).and_then(|p| p.verify(&verifying_key, NOW + 1)), Ok(()));

    c.bench_function("token/parse+verify", |b| {
        b.iter(|| token::parse(black_box(&value)).and_then(|p| p.verify(&verifying_key, NOW + 1)))
    });
    c.bench_function("token/parse", |b| b.iter(|| token::parse(black_box(&value))));
    c.bench_function("token/token_hash", |b| b.iter(|| token::token_hash(black_box(&value))));
}

// In a private module because the macro defines an undocumented `pub fn`.
mod group {
    criterion::criterion_group!(benches, super::bench_token);
}
criterion_main!(group::benches);
