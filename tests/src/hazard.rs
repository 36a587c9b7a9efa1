//! The hazard log's controls and the evidence map that ties each one to code, tests and
//! deployment notes.
//!
//! ```text
//! ../shared/hazard-log/*.txt ──parse_hazard_log──► HazardLog { controls }
//!                                                        │ matched by quoted text
//! docs/hazard-controls.json ───Mapping::from_json──► Mapping { controls }
//!                                                        │
//!        check_against_log / check_tests_exist / check_paths / uncovered
//! ```
//!
//! `tests/tests/hazard_controls.rs` runs the checks; `scripts/hazard-report` turns the same
//! mapping and nextest's JUnit report into `docs/hazard-controls.md`.

mod mapping;
mod parse;
mod sources;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use mapping::{MappedControl, Mapping};
pub use parse::{Control, ControlKind, HazardLog, parse_hazard_log};
pub use sources::{TestId, find_test_fn, test_source_candidates};

/// Where the mapping lives, relative to the workspace root.
pub const MAPPING_PATH: &str = "docs/hazard-controls.json";
/// Overrides the hazard log's location (otherwise the mapping's `hazard_log`, relative to the
/// workspace root).
pub const HAZARD_LOG_VAR: &str = "POOLWARDEN_HAZARD_LOG";

/// A problem reading or parsing the hazard log or the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HazardError(pub String);

impl fmt::Display for HazardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HazardError {}

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits inside the workspace")
        .to_path_buf()
}

/// Reads and parses `docs/hazard-controls.json` under `root`.
pub fn load_mapping(root: &Path) -> Result<Mapping, HazardError> {
    let path = root.join(MAPPING_PATH);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| HazardError(format!("cannot read {}: {e}", path.display())))?;
    Mapping::from_json(&text).map_err(|e| HazardError(format!("{}: {e}", path.display())))
}

/// The hazard log's path: `$POOLWARDEN_HAZARD_LOG`, else the mapping's `hazard_log` relative
/// to `root`.
pub fn hazard_log_path(root: &Path, mapping: &Mapping) -> PathBuf {
    match std::env::var_os(HAZARD_LOG_VAR) {
        Some(p) => PathBuf::from(p),
        None => root.join(&mapping.hazard_log),
    }
}

/// Reads and parses the hazard log; a missing file is an error that says where it was looked
/// for and how to point elsewhere.
pub fn load_hazard_log(root: &Path, mapping: &Mapping) -> Result<HazardLog, HazardError> {
    let path = hazard_log_path(root, mapping);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        HazardError(format!(
            "hazard log not found at {} ({e}); it is expected at `{}` relative to the \
             workspace root {} (the mapping's hazard_log field), or set {HAZARD_LOG_VAR}",
            path.display(),
            mapping.hazard_log,
            root.display()
        ))
    })?;
    parse_hazard_log(&text).map_err(|e| HazardError(format!("{}: {e}", path.display())))
}

/// Collapses runs of whitespace, so a re-wrapped quote still matches.
pub fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Problems between the hazard log and the mapping: every control of the log has exactly one
/// entry of the same kind quoting it, every entry quotes a control of the log, ids are unique,
/// and a design or testing entry without tests says why in `pending`.
pub fn check_against_log(log: &HazardLog, mapping: &Mapping) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen_ids = std::collections::BTreeSet::new();
    for entry in &mapping.controls {
        if !seen_ids.insert(entry.id.as_str()) {
            problems.push(format!("{}: duplicate id", entry.id));
        }
        let quoted = normalise(&entry.control);
        match log.controls.iter().find(|c| normalise(&c.text) == quoted) {
            None => problems.push(format!(
                "{}: its control text is not a {} control of the hazard log (quote the bullet \
                 exactly): {:?}",
                entry.id,
                entry.kind.as_str(),
                short(&entry.control)
            )),
            Some(c) if c.kind != entry.kind => problems.push(format!(
                "{}: kind is {} but the hazard log lists it under {} controls",
                entry.id,
                entry.kind.as_str(),
                c.kind.as_str()
            )),
            Some(_) => {}
        }
        if entry.kind.needs_test() && entry.tests.is_empty() && entry.pending.is_none() {
            problems.push(format!(
                "{}: a {} control with no test must say why in `pending`",
                entry.id,
                entry.kind.as_str()
            ));
        }
    }
    for control in &log.controls {
        let text = normalise(&control.text);
        let n = mapping
            .controls
            .iter()
            .filter(|e| normalise(&e.control) == text)
            .count();
        if n != 1 {
            problems.push(format!(
                "{} control {:?} has {n} mapping entries (want exactly 1)",
                control.kind.as_str(),
                short(&control.text)
            ));
        }
    }
    problems
}

/// Entries that keep the evidence incomplete: design and testing controls with no test
/// ("no test yet") and every entry still marked `pending`, each with its reason.
pub fn uncovered(mapping: &Mapping) -> Vec<String> {
    let mut out = Vec::new();
    for e in &mapping.controls {
        let reason = e.pending.as_deref().unwrap_or("no reason given");
        if e.kind.needs_test() && e.tests.is_empty() {
            out.push(format!(
                "{} ({}): no test yet — {reason}",
                e.id,
                e.kind.as_str()
            ));
        } else if e.pending.is_some() {
            out.push(format!(
                "{} ({}): pending — {reason}",
                e.id,
                e.kind.as_str()
            ));
        }
    }
    out
}

/// Listed tests whose function cannot be found in the sources nextest builds that binary
/// from.
pub fn check_tests_exist(root: &Path, mapping: &Mapping) -> Vec<String> {
    let mut problems = Vec::new();
    for e in &mapping.controls {
        for t in &e.tests {
            let found = TestId::parse(t).and_then(|id| find_test_fn(root, &id).map(|_| ()));
            if let Err(err) = found {
                problems.push(format!("{}: test `{t}`: {err}", e.id));
            }
        }
    }
    problems
}

/// `implemented_in` paths (and `#symbol`s) that do not exist. Paths of entries still marked
/// `pending` may be expected locations: a missing file there comes back in the second list,
/// not as a problem (a missing symbol in an existing file is always a problem).
pub fn check_paths(root: &Path, mapping: &Mapping) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut expected = Vec::new();
    for e in &mapping.controls {
        for spec in &e.implemented_in {
            if let Err(err) = sources::check_path_spec(root, spec) {
                let line = format!("{}: {spec}: {err}", e.id);
                let file = spec.split('#').next().unwrap_or_default();
                if e.pending.is_some() && !root.join(file).exists() {
                    expected.push(line);
                } else {
                    problems.push(line);
                }
            }
        }
    }
    (problems, expected)
}

fn short(text: &str) -> String {
    let t: String = text.chars().take(70).collect();
    if t.len() < text.len() {
        format!("{t}…")
    } else {
        t
    }
}
