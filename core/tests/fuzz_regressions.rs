//! Every saved fuzz case (`fuzz/regressions/<target>/*`: seeds, and each input a fuzzer ever found
//! failing) runs through its target's check on every `cargo test`, on stable Rust.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_core::fuzzing::TARGETS;

#[test]
fn saved_fuzz_cases_pass_their_checks() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut ran = 0;
    for (name, check) in TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{} fails its check", path.display());
            ran += 1;
        }
    }
    assert!(ran >= TARGETS.len(), "every target has saved cases");
}
