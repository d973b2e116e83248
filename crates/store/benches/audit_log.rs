//! Audit log at scale: append throughput, and the queries a team runs after an incident,
//! on a log of one million synthetic entries (`AUDIT_BENCH_ENTRIES` to change the size).
//!
//! Run: `cargo bench -p agentsecrets-store --bench audit_log`

// criterion_group! and criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use agentsecrets_core::identity::IdentityLevel;
use agentsecrets_store::fixture::synthetic_entry;
use agentsecrets_store::{AuditLog, AuditQuery, Home};
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};

fn entries() -> u64 {
    std::env::var("AUDIT_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn open_log(dir: &std::path::Path) -> AuditLog {
    let home = Home::at(dir.join("home"));
    let log = AuditLog::open(&home).expect("open the audit log");
    let key = SigningKey::from_bytes(&[7u8; 32]);
    log.set_signer(Box::new(move |message| Ok(key.sign(message).to_bytes().to_vec())));
    log
}

/// Fills the log in batches of 1000 (one commit each) and prints the rate.
fn seed(log: &AuditLog, total: u64) {
    let end = jiff::Timestamp::now();
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let batch: Vec<_> = (done..(done + 1000).min(total))
            .map(|i| synthetic_entry(i, total, end, 30, "benchws"))
            .collect();
        log.record_many(&batch).expect("append a batch");
        done += batch.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("seeded {total} entries in {secs:.1} s: {:.0} entries/s", total as f64 / secs);
}

fn audit_log(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open_log(dir.path());
    let total = entries();
    seed(&log, total);

    let mut group = c.benchmark_group("audit_log");
    group.sample_size(10).measurement_time(Duration::from_secs(10));

    let anonymous = AuditQuery {
        identity: vec![IdentityLevel::Anonymous],
        last: Some(100),
        ..AuditQuery::default()
    };
    group.bench_function("list_identity_anonymous_last_100", |b| {
        b.iter(|| black_box(log.query(&anonymous).expect("query")))
    });
    let end = jiff::Timestamp::now();
    let week_ago = end.checked_sub(jiff::SignedDuration::from_hours(24 * 7)).expect("time");
    let agent = AuditQuery {
        agent: Some("billing-tool".to_owned()),
        since: Some(agentsecrets_store::format_timestamp(week_ago)),
        last: Some(50),
        ..AuditQuery::default()
    };
    group.bench_function("list_agent_since_7d", |b| {
        b.iter(|| black_box(log.query(&agent).expect("query")))
    });
    group.bench_function("summary_whole_log", |b| {
        b.iter(|| black_box(log.summary(&AuditQuery::default()).expect("summary")))
    });
    group.bench_function("verify_whole_log", |b| {
        b.iter(|| {
            let report = log.verify(None).expect("verify");
            assert!(report.first_problem.is_none());
        })
    });
    let out = dir.path().join("export.jsonl");
    group.bench_function("export_jsonl_whole_log", |b| {
        b.iter(|| {
            let file = std::fs::File::create(&out).expect("create");
            let mut writer = std::io::BufWriter::new(file);
            let count = log
                .for_each(&AuditQuery::default(), |entry| {
                    serde_json::to_writer(&mut writer, &entry)?;
                    writer.write_all(b"\n")
                })
                .expect("export");
            writer.flush().expect("flush");
            black_box(count)
        })
    });
    // Appends last: they grow the log the queries above measured.
    let mut next = total;
    group.bench_function("append_single", |b| {
        b.iter(|| {
            let (entry, outcome) = synthetic_entry(next, total, end, 30, "benchws");
            next += 1;
            log.record_many(&[(entry, outcome)]).expect("append")
        })
    });
    group.bench_function("append_batch_1000", |b| {
        b.iter(|| {
            let batch: Vec<_> = (next..next + 1000)
                .map(|i| synthetic_entry(i, total, end, 30, "benchws"))
                .collect();
            next += 1000;
            log.record_many(&batch).expect("append")
        })
    });

    group.finish();
}

criterion_group!(benches, audit_log);
criterion_main!(benches);
