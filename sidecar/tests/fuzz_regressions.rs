//! Replays every committed fuzz seed (`fuzz/seeds/<target>/`) and crash reproducer
//! (`fuzz/regressions/<target>/`) through the same harnesses the `cargo fuzz` targets run
//! (`protocol::fuzz_input`), on stable, in normal CI: no panic, the result does not depend on
//! how the bytes were split, and every refusal carries a clear message.

use std::path::{Path, PathBuf};

use poolwarden_sidecar::protocol::fuzz_input::{self, Outcome};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read fuzz dir").path();
            let data = std::fs::read(&path).expect("read fuzz input");
            out.push((path, data));
        }
    }
    out.sort();
    out
}

/// The fuzz targets' shape: the first byte picks the chunk size, the rest is the stream.
fn replay(target: &str, run: impl Fn(&[u8], usize) -> Outcome) -> usize {
    let all = inputs(target);
    assert!(!all.is_empty(), "no seeds for {target}");
    for (path, data) in &all {
        let Some((&chunk, rest)) = data.split_first() else {
            continue;
        };
        let whole = run(rest, 0);
        for size in [1, usize::from(chunk % 16) + 1] {
            assert_eq!(
                whole,
                run(rest, size),
                "{}: chunking changed the result",
                path.display()
            );
        }
        if let Some(e) = &whole.error {
            assert!(e.len() > 10, "{}: unclear error {e:?}", path.display());
        }
    }
    all.len()
}

#[test]
fn frontend_frame_seeds_decode_or_fail_clearly() {
    replay("frame_frontend", |d, c| fuzz_input::frames(d, true, c));
}

#[test]
fn backend_frame_seeds_decode_or_fail_clearly() {
    replay("frame_backend", |d, c| fuzz_input::frames(d, false, c));
}

#[test]
fn startup_seeds_decode_or_fail_clearly() {
    replay("startup", fuzz_input::startup_packets);
}

#[test]
fn sql_seeds_scan_without_panic() {
    for (_, data) in inputs("sql") {
        fuzz_input::sql(&data);
    }
    assert!(fuzz_input::sql(b"SET x = 1"), "SET changes session state");
    assert!(!fuzz_input::sql(b"SELECT 'set'"), "a literal does not");
}

#[test]
fn seeds_cover_the_refusals() {
    // The seeds are meant to reach each refusal; if the parsers stop refusing these, the
    // corpus no longer exercises the error paths.
    let errors: Vec<String> = inputs("startup")
        .iter()
        .chain(inputs("frame_frontend").iter())
        .filter_map(|(_, d)| {
            let (_, rest) = d.split_first()?;
            fuzz_input::frames(rest, true, 0)
                .error
                .or_else(|| fuzz_input::startup_packets(rest, 0).error)
        })
        .collect();
    for needle in [
        "over the limit",
        "invalid message length",
        "unknown message type",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "no seed reaches {needle:?}: {errors:?}"
        );
    }
}
