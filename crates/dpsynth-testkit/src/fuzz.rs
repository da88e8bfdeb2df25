//! Generated bad input for the loaders' fuzz tests (proptest, bounded and deterministic).

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A deterministic runner for `cases` cases that writes no regression files.
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

/// Overwrite bytes at `edits` (index modulo the length, optionally only within the first
/// `window` bytes, e.g. a header) and truncate to `cut` modulo the length + 1.
pub fn mutate(
    mut b: Vec<u8>,
    edits: &[(usize, u8)],
    window: Option<usize>,
    cut: Option<usize>,
) -> Vec<u8> {
    if !b.is_empty() {
        let n = window.map_or(b.len(), |w| w.clamp(1, b.len()));
        for &(i, x) in edits {
            b[i % n] = x;
        }
    }
    if let Some(c) = cut {
        let n = b.len();
        b.truncate(c % (n + 1));
    }
    b
}

/// Edits and an optional cut for [`mutate`].
pub fn edits() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>)> {
    (
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        proptest::option::of(any::<usize>()),
    )
}

/// JSON values that loaders trip on: wrong types, huge and negative numbers, empty and odd
/// strings, nested arrays and objects.
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|x| json!(x)),
        any::<u64>().prop_map(|x| json!(x)),
        prop_oneof![Just(0u64), Just(1), Just(2), Just(3), Just(u32::MAX as u64)]
            .prop_map(|x| json!(x)),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| json!(x)),
        Just(json!(-1)),
        Just(json!(1e300)),
        "[a-zA-Z_./0-9 ]{0,16}".prop_map(Value::String),
        prop_oneof![
            Just("LORA"),
            Just("PROMPT_TUNING"),
            Just("q_proj"),
            Just("v_proj"),
            Just("none"),
            Just("../state.json"),
            Just(""),
            Just("Os"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replace (`Some`) or delete (`None`) fields of a JSON object, by index modulo its keys.
pub fn mutate_json(
    mut v: serde_json::Value,
    changes: &[(usize, Option<serde_json::Value>)],
) -> serde_json::Value {
    if let Some(obj) = v.as_object_mut() {
        for (i, new) in changes {
            let keys: Vec<String> = obj.keys().cloned().collect();
            if keys.is_empty() {
                break;
            }
            let k = &keys[i % keys.len()];
            match new {
                Some(x) => {
                    obj.insert(k.clone(), x.clone());
                }
                None => {
                    obj.remove(k);
                }
            }
        }
    }
    v
}

/// Changes for [`mutate_json`].
pub fn json_changes() -> impl Strategy<Value = Vec<(usize, Option<serde_json::Value>)>> {
    proptest::collection::vec((any::<usize>(), proptest::option::of(json_value())), 0..4)
}

/// Copy the files of `from` (flat) into `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
