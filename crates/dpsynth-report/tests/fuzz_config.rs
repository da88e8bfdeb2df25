//! Bad input at volume (issue 13, item 10): generated `run.toml` files — every documented key
//! (and misspelled ones) with values of every TOML type, extreme numbers and odd strings, in
//! sections or dotted form, mixed with junk lines — through `dpsynth_report::resolve` for a
//! bounded, deterministic number of cases. No input may panic; every error names the file
//! (and, for a bad value, the key).

use dpsynth_report::{resolve, ConfigError, Override, KEYS};
use dpsynth_testkit::fuzz::runner;
use proptest::prelude::*;

const CASES: u32 = 512;

fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|x| x.to_string()),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(2), Just(1 << 40)]
            .prop_map(|x| x.to_string()),
        any::<f64>().prop_map(|x| format!("{x:?}")),
        prop_oneof![
            Just("inf"),
            Just("-inf"),
            Just("nan"),
            Just("0.0"),
            Just("1e-300"),
            Just("1e308"),
            Just("true"),
            Just("false"),
            Just("\"\""),
            Just("\"lora\""),
            Just("\"prompt\""),
            Just("\"full\""),
            Just("\"quick\""),
            Just("\"full\""),
            Just("\"../..\""),
            Just("\"/nonexistent/x.gguf\""),
            Just("\"{label}\""),
            Just("\"{\""),
            Just("1979-05-27T07:32:00Z"),
            Just("{}"),
            Just("[]"),
        ]
        .prop_map(String::from),
        "[a-zA-Z0-9_ ./{}-]{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec(("[a-z_]{1,6}", inner), 0..3).prop_map(|v| {
                let kv: Vec<String> = v.iter().map(|(k, x)| format!("{k} = {x}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

/// One line (or section) of a generated file.
fn line() -> impl Strategy<Value = String> {
    let key = (0..KEYS.len()).prop_map(|i| KEYS[i].key.to_string());
    prop_oneof![
        // A documented key, dotted, with any value.
        4 => (key.clone(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        // A documented key in its section.
        4 => (key.clone(), toml_value()).prop_map(|(k, v)| {
            let (sec, name) = k.split_once('.').unwrap();
            format!("[{sec}]\n{name} = {v}")
        }),
        // Misspelled or unknown keys and sections.
        1 => ("[a-z_]{1,10}", "[a-z_]{1,10}", toml_value()).prop_map(|(s, k, v)| format!("[{s}]\n{k} = {v}")),
        1 => (key, "[a-z]{1,3}", toml_value()).prop_map(|(k, x, v)| format!("{k}{x} = {v}")),
        // Junk.
        1 => "[\\[\\]=\"'#a-z0-9 .\\\\]{0,20}",
        1 => proptest::collection::vec(any::<u8>(), 0..16)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

#[test]
fn config_loader_never_panics_and_errors_name_the_file() {
    let root = tempfile::tempdir().unwrap();
    // Assets as the loader expects them, so that valid files resolve (model path exists, ...).
    let assets = root.path().join("assets");
    for r in dpsynth_report::config::RECIPES {
        std::fs::create_dir_all(assets.join("data").join(r)).unwrap();
    }
    std::fs::create_dir_all(assets.join("smollm2")).unwrap();
    std::fs::write(assets.join(dpsynth_report::defaults::MODEL), b"gguf").unwrap();
    std::fs::create_dir_all(assets.join("minilm")).unwrap();
    let with_assets = Override::new("data.assets", assets.to_str().unwrap());
    let (n, ok) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    runner(CASES)
        .run(&proptest::collection::vec(line(), 0..8), |lines| {
            n.set(n.get() + 1);
            let n = n.get();
            let name = format!("run-{n}.toml");
            let p = root.path().join(&name);
            std::fs::write(&p, lines.join("\n")).unwrap();
            match resolve(Some(&p), std::slice::from_ref(&with_assets)) {
                Ok(_) => ok.set(ok.get() + 1),
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.contains(&name), "error does not name the file: {msg}");
                    if let ConfigError::WrongType { key, .. } | ConfigError::Invalid { key, .. } =
                        &e
                    {
                        prop_assert!(
                            msg.contains(key.as_str()),
                            "error does not name the key: {msg}"
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz_config: {} generated run.toml files ({} resolved, the rest clear errors)",
        n.get(),
        ok.get()
    );
    assert_eq!(n.get(), CASES as usize);
}
