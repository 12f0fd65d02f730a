//! Replays every committed input (seed corpus and regressions) through the fuzz target bodies
//! on stable Rust: `cargo test --manifest-path fuzz/Cargo.toml`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let mut count = 0;
    for sub in ["corpus", "regressions"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(sub).join(target);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            let result = std::panic::catch_unwind(|| run(&bytes));
            assert!(result.is_ok(), "{} fails", entry.path().display());
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
    eprintln!("{target}: {count} inputs");
}

#[test]
fn uri_corpus() {
    replay("uri", broked_fuzz::uri);
}

#[test]
fn sealed_blob_corpus() {
    replay("sealed_blob", broked_fuzz::sealed_blob);
}

#[test]
fn keyring_file_corpus() {
    replay("keyring_file", broked_fuzz::keyring_file);
}

#[test]
fn pipeline_def_corpus() {
    replay("pipeline_def", broked_fuzz::pipeline_def);
}
