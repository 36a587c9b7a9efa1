//! Keeps `docs/hazard-controls.json` (and so `docs/hazard-controls.md`) true to the hazard log
//! and to the code: every design and testing control is mapped, every listed test and
//! implementation path exists, and — `hazard_controls_all_have_tests` — no control is left
//! without a test or still pending.

use std::process::Command;

use poolwarden_tests::hazard::{self, HazardLog, Mapping};

fn load() -> (Mapping, HazardLog) {
    let root = hazard::workspace_root();
    let mapping = hazard::load_mapping(&root).unwrap_or_else(|e| panic!("{e}"));
    let log = hazard::load_hazard_log(&root, &mapping).unwrap_or_else(|e| panic!("{e}"));
    (mapping, log)
}

fn fail_with(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what} ({}):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

#[test]
fn mapping_matches_the_hazard_log() {
    let (mapping, log) = load();
    // The log must still have what the mapping is about.
    assert!(
        log.controls.len() >= 2,
        "the hazard log parsed to too few controls: {:?}",
        log.controls
    );
    fail_with(
        "docs/hazard-controls.json does not match the hazard log",
        &hazard::check_against_log(&log, &mapping),
    );
}

#[test]
fn listed_tests_exist() {
    let (mapping, _) = load();
    fail_with(
        "tests listed in docs/hazard-controls.json that do not exist",
        &hazard::check_tests_exist(&hazard::workspace_root(), &mapping),
    );
}

#[test]
fn implementation_paths_exist() {
    let (mapping, _) = load();
    let (problems, expected) = hazard::check_paths(&hazard::workspace_root(), &mapping);
    if !expected.is_empty() {
        eprintln!(
            "expected locations of pending controls, not on this branch yet:\n  - {}",
            expected.join("\n  - ")
        );
    }
    fail_with(
        "implemented_in paths of finished controls that do not exist",
        &problems,
    );
}

/// Fails while any design or testing control has no test, or any entry is still `pending`:
/// the list in the message is what remains to be done before the evidence is complete.
#[test]
fn hazard_controls_all_have_tests() {
    let (mapping, log) = load();
    fail_with(
        "docs/hazard-controls.json does not match the hazard log",
        &hazard::check_against_log(&log, &mapping),
    );
    fail_with(
        "hazard controls without complete test evidence",
        &hazard::uncovered(&mapping),
    );
}

fn hazard_report(args: &[&str]) -> std::process::Output {
    let root = hazard::workspace_root();
    Command::new("python3")
        .arg(root.join("scripts/hazard-report"))
        .args(args)
        .current_dir(&root)
        .output()
        .expect("python3 runs scripts/hazard-report (python3 is required by scripts/test)")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn report_check_mode_accepts_the_mapping_and_refuses_a_broken_one() {
    let out = hazard_report(&["--check"]);
    assert!(
        out.status.success(),
        "scripts/hazard-report --check failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let dir = TempDir::new("check");
    let root = hazard::workspace_root();
    let json = std::fs::read_to_string(root.join(hazard::MAPPING_PATH)).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["controls"][0]["control"] = "Configure something else entirely.".into();
    let broken = dir.0.join("broken.json");
    std::fs::write(&broken, value.to_string()).unwrap();
    let out = hazard_report(&["--check", "--mapping", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("design-pool-limits") && err.contains("not a design control"),
        "{err}"
    );
}

/// The generator against a JUnit report shaped as nextest writes it.
#[test]
fn report_shows_each_tests_latest_result() {
    let (mapping, _) = load();
    let mut listed: Vec<&String> = mapping.controls.iter().flat_map(|c| &c.tests).collect();
    listed.sort();
    listed.dedup();
    assert!(listed.len() >= 2, "the mapping lists fewer than two tests");
    let passed = hazard::TestId::parse(listed[0]).unwrap();
    let failed = hazard::TestId::parse(listed[listed.len() - 1]).unwrap();
    let junit = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="2" failures="1" errors="0" timestamp="2026-11-28T04:31:24.907+00:00" time="1.0">
  <testsuite name="{pb}" tests="1" failures="0" errors="0">
    <testcase name="{pn}" classname="{pb}" timestamp="2026-11-28T04:31:24.908+00:00" time="0.006"/>
  </testsuite>
  <testsuite name="{fb}" tests="1" failures="1" errors="0">
    <testcase name="{fname}" classname="{fb}" timestamp="2026-11-28T04:31:24.913+00:00" time="0.004">
      <failure type="test failure">assertion failed</failure>
    </testcase>
  </testsuite>
</testsuites>
"#,
        pb = passed.binary_id,
        pn = passed.name,
        fb = failed.binary_id,
        fname = failed.name,
    );
    let dir = TempDir::new("report");
    let junit_path = dir.0.join("junit.xml");
    std::fs::write(&junit_path, junit).unwrap();
    let out_path = dir.0.join("hazard-controls.md");
    let out = hazard_report(&[
        "--junit",
        junit_path.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = std::fs::read_to_string(&out_path).unwrap();
    let line_of = |id: &hazard::TestId| line_of_in(&md, id);
    assert!(line_of(&passed).contains("passed"), "{}", line_of(&passed));
    assert!(line_of(&failed).contains("FAILED"), "{}", line_of(&failed));
    assert!(md.contains("2026-11-28 04:31 UTC"), "run date shown:\n{md}");
    let untested = mapping
        .controls
        .iter()
        .any(|c| c.kind.needs_test() && c.tests.is_empty());
    assert_eq!(
        md.contains("no test yet"),
        untested,
        "design/testing controls without a test are shown, and only those:\n{md}"
    );
    for c in &mapping.controls {
        assert!(md.contains(&format!("`{}`", c.id)), "{} missing", c.id);
    }

    // Without a JUnit report every test is "not run".
    let out = hazard_report(&[
        "--junit",
        dir.0.join("absent.xml").to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = std::fs::read_to_string(&out_path).unwrap();
    assert!(line_of_in(&md, &passed).contains("not run"), "{md}");
}

/// The report's line (a table cell part) that shows one test's result.
fn line_of_in(md: &str, id: &hazard::TestId) -> String {
    md.lines()
        .flat_map(|l| l.split("<br>"))
        .find(|l| l.contains(&format!("`{} {}`", id.binary_id, id.name)))
        .unwrap_or_else(|| panic!("{id:?} missing from the report:\n{md}"))
        .to_string()
}

/// A temp dir removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("poolwarden-hazard-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
