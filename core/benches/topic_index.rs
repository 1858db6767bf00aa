//! Benchmarks for topic matching: `SubscriptionIndex` lookups with 100 000 installed filters, and
//! single `matches` calls.
//!
//! Run with `cargo bench -p sealbus --bench topic_index -- --warm-up-time 1 --measurement-time 3`.
// `criterion_group!` defines an undocumented `pub fn benches`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sealbus::topic::{SubscriptionIndex, matches};

const TENANTS: u32 = 1_000;

/// 100 000 filters, each with its own value (think: one subscription per client):
///
/// * 40 000 `tenant{i}/device{j}/+/temp` (40 devices per tenant);
/// * 40 000 exact `tenant{i}/device{j}/status`;
/// * 18 000 `tenant{i}/device{j}/alerts/#` (18 devices per tenant);
/// * 1 000 `tenant{i}/#`;
/// * 1 000 `+/x{k}/#` (cross-tenant wildcards under the root `+`).
fn build_index() -> SubscriptionIndex<u32> {
    let mut index = SubscriptionIndex::new();
    let mut next = 0u32;
    let mut add = |index: &mut SubscriptionIndex<u32>, filter: String| {
        assert!(index.insert(&filter, next).unwrap(), "{filter}");
        next += 1;
    };
    for i in 0..TENANTS {
        for j in 0..40 {
            add(&mut index, format!("tenant{i}/device{j}/+/temp"));
            add(&mut index, format!("tenant{i}/device{j}/status"));
        }
        for j in 0..18 {
            add(&mut index, format!("tenant{i}/device{j}/alerts/#"));
        }
        add(&mut index, format!("tenant{i}/#"));
        add(&mut index, format!("+/x{i}/#"));
    }
    assert_eq!(index.len(), 100_000);
    index
}

/// (name, topic, expected number of matching filters)
const TOPICS: &[(&str, &str, usize)] = &[
    ("plus_and_hash_2", "tenant42/device7/sensor3/temp", 2),
    ("three_filters_3", "tenant42/device7/alerts/temp", 3),
    ("exact_and_hash_2", "tenant42/device7/status", 2),
    ("deep_10_levels_1", "tenant42/device7/a/b/c/d/e/f/g/h", 1),
    ("root_plus_1", "nobody/x42/y", 1),
    ("no_match_0", "nobody/device7/sensor3/temp", 0),
    ("reserved_0", "$SYS/broker/load", 0),
];

fn bench_index(c: &mut Criterion) {
    let index = build_index();
    let mut group = c.benchmark_group("index_for_each_match");
    for &(name, topic, expected) in TOPICS {
        let mut count = 0;
        index.for_each_match(topic, |_| count += 1);
        assert_eq!(count, expected, "{topic}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut count = 0usize;
                index.for_each_match(black_box(topic), |value| count += *value as usize);
                count
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("index_matching_values");
    for &(name, topic, expected) in TOPICS {
        assert_eq!(index.matching_values(topic).len(), expected, "{topic}");
        group.bench_function(name, |b| b.iter(|| index.matching_values(black_box(topic))));
    }
    group.finish();

    let mut group = c.benchmark_group("index_update");
    group.bench_function("insert_then_remove", |b| {
        let mut index = build_index();
        b.iter(|| {
            assert!(
                index
                    .insert(black_box("tenant7/device99/+/humidity"), 7)
                    .unwrap()
            );
            assert!(index.remove(black_box("tenant7/device99/+/humidity"), &7));
        })
    });
    group.finish();
}

fn bench_matches(c: &mut Criterion) {
    let mut group = c.benchmark_group("matches");
    for (name, filter, topic) in [
        (
            "exact_hit",
            "tenant42/device7/status",
            "tenant42/device7/status",
        ),
        (
            "plus_hit",
            "tenant42/device7/+/temp",
            "tenant42/device7/sensor3/temp",
        ),
        ("hash_hit", "tenant42/#", "tenant42/device7/a/b/c/d/e/f/g/h"),
        ("early_miss", "tenant43/#", "tenant42/device7/sensor3/temp"),
        ("reserved_miss", "#", "$SYS/broker/load"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| matches(black_box(filter), black_box(topic)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_index, bench_matches);
criterion_main!(benches);
