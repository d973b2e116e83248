//! The pure pieces of a proxied call, one by one: reading the injection headers, parsing
//! the target and deciding allowlist and SSRF class, applying an injection, and scrubbing
//! a response body of echoed secrets (throughput for 1, 10 and 100 secrets, on a body
//! without any match and one with a match every 4 KiB).
//!
//! Run: `cargo bench -p agentsecrets-core --bench hot_path`

// criterion_group! and criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use agentsecrets_core::inject::{self, Injection};
use agentsecrets_core::net::{self, Target};
use agentsecrets_core::redact::{RedactionSet, StreamRedactor};
use agentsecrets_core::secret::SecretValue;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// 1 MiB bodies are scanned in 16 KiB chunks, as a streamed response arrives.
const BODY_BYTES: usize = 1024 * 1024;
const CHUNK_BYTES: usize = 16 * 1024;

fn bench_requests(c: &mut Criterion) {
    let list = "query:apiKey=QUERY_KEY, header:X-Api-Key=HEADER_KEY, bearer=STRIPE_KEY";
    c.bench_function("request/parse X-AS-Inject list", |b| {
        b.iter(|| Injection::parse_list(black_box(list)))
    });
    c.bench_function("request/parse X-AS-Inject-Bearer", |b| {
        b.iter(|| Injection::from_header(black_box("bearer"), black_box("STRIPE_KEY")))
    });

    let allowlist: Vec<String> =
        (0..50).map(|i| format!("api{i}.example.com")).chain(["api.stripe.com".into()]).collect();
    c.bench_function("target/parse + allowlist", |b| {
        b.iter(|| {
            let target = Target::parse(black_box("https://api.stripe.com/v1/charges?limit=3"));
            target.map(|t| net::host_allowed(t.host(), &allowlist))
        })
    });
    let v4 = "93.184.216.34".parse().expect("an address");
    let mapped = "::ffff:10.0.0.1".parse().expect("an address");
    c.bench_function("ssrf/classify v4 + mapped v6", |b| {
        b.iter(|| (net::classify(black_box(v4)), net::classify(black_box(mapped))))
    });

    let value = SecretValue::from_str_value("sk_live_0123456789abcdefghijklmnop");
    let key = agentsecrets_core::names::SecretKey::parse("STRIPE_KEY").expect("a key");
    let body = br#"{"amount": 2000, "currency": "usd", "metadata": {"order": "42"}}"#;
    c.bench_function("inject/bearer value", |b| {
        b.iter(|| inject::bearer_value(black_box(&key), black_box(&value)))
    });
    let path = ["metadata".to_owned(), "token".to_owned()];
    c.bench_function("inject/json body path", |b| {
        b.iter(|| inject::apply_json_body(black_box(body), &path, &key, &value))
    });
}

fn secrets(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("sk_live_{i:04}_abcdefghijklmnopqrstuvwx").into_bytes()).collect()
}

/// A text body of `BODY_BYTES`; with `echo`, the first secret appears every 4 KiB.
fn body(echo: Option<&[u8]>) -> Vec<u8> {
    let line = b"the quick brown fox jumps over the lazy dog 0123456789 lorem ipsum dolor\n";
    let mut out = Vec::with_capacity(BODY_BYTES + 4096);
    while out.len() < BODY_BYTES {
        if let Some(secret) = echo.filter(|_| out.len() % 4096 < line.len()) {
            out.extend_from_slice(secret);
        }
        out.extend_from_slice(line);
    }
    out.truncate(BODY_BYTES);
    out
}

fn bench_redaction(c: &mut Criterion) {
    let mut group = c.benchmark_group("redact 1 MiB");
    group.throughput(Throughput::Bytes(BODY_BYTES as u64));
    for n in [1, 10, 100] {
        let values = secrets(n);
        let set = Arc::new(RedactionSet::new(values.iter().map(Vec::as_slice)));
        for (label, body) in [("no match", body(None)), ("match / 4 KiB", body(Some(&values[0])))] {
            group.bench_function(format!("{n} secrets, {label}"), |b| {
                b.iter(|| {
                    let mut scanner = StreamRedactor::new(set.clone());
                    let mut out = 0;
                    for chunk in body.chunks(CHUNK_BYTES) {
                        out += scanner.push(black_box(chunk)).len();
                    }
                    out + scanner.finish().len()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_requests, bench_redaction);
criterion_main!(benches);
