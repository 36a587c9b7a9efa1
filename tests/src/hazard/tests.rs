use std::path::{Path, PathBuf};

use super::sources::{has_word, members, package_name};
use super::*;

const LOG: &str = "Hazard¶
Hazard name¶
Pool exhaustion
Hazard type¶
- WrongPatientContext
Hazard controls¶
Design controls (manufacturer)¶
- Configure the pool: size 20.
- Add a breaker: after 5 failures,
  open for 30 seconds.
Testing controls (manufacturer)¶
- Load test: 50 clients.
Training controls (deployment)¶
- Train the team.
Business process controls (deployment)¶
- Review monthly.
- SystemUnavailable
Residual hazard risk assessment¶
TBC
Code associated with hazard¶
- backend/app/db/auth_db.py
";

fn log() -> HazardLog {
    parse_hazard_log(LOG).unwrap()
}

#[test]
fn parses_controls_by_heading_and_sets_labels_apart() {
    let log = log();
    assert_eq!(log.name, "Pool exhaustion");
    let got: Vec<(ControlKind, &str)> = log
        .controls
        .iter()
        .map(|c| (c.kind, c.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (ControlKind::Design, "Configure the pool: size 20."),
            (
                ControlKind::Design,
                "Add a breaker: after 5 failures, open for 30 seconds."
            ),
            (ControlKind::Testing, "Load test: 50 clients."),
            (ControlKind::Training, "Train the team."),
            (ControlKind::BusinessProcess, "Review monthly."),
        ]
    );
    assert_eq!(log.labels, ["SystemUnavailable"]);
}

#[test]
fn headings_name_the_kinds() {
    let table = [
        ("Design controls (manufacturer)", Some(ControlKind::Design)),
        (
            "Testing controls (manufacturer)",
            Some(ControlKind::Testing),
        ),
        (
            "Training controls (deployment)",
            Some(ControlKind::Training),
        ),
        (
            "Business process controls (deployment)",
            Some(ControlKind::BusinessProcess),
        ),
        ("  design CONTROLS ", Some(ControlKind::Design)),
        ("Existing controls", None),
        ("Design", None),
        ("Residual hazard risk assessment", None),
    ];
    for (heading, want) in table {
        assert_eq!(ControlKind::from_heading(heading), want, "{heading:?}");
    }
    for k in ControlKind::ALL {
        assert_eq!(ControlKind::from_name(k.as_str()), Some(k));
    }
    assert_eq!(ControlKind::from_name("Design"), None);
}

#[test]
fn a_log_without_controls_is_an_error() {
    let table = [
        ("Hazard¶\n- a b\n", "no \"Hazard controls¶\" section"),
        (
            "Hazard controls¶\nTesting controls (manufacturer)¶\n- a b\n",
            "no design control",
        ),
        (
            "Hazard controls¶\nDesign controls (manufacturer)¶\n- a b\n",
            "no testing control",
        ),
        (
            "Hazard controls¶\nDesign controls (manufacturer)¶\nloose text\n",
            "not a `- ` bullet",
        ),
    ];
    for (text, want) in table {
        let err = parse_hazard_log(text).unwrap_err().0;
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

fn entry(id: &str, kind: &str, control: &str, tests: &[&str], pending: Option<&str>) -> String {
    serde_json::json!({
        "id": id, "kind": kind, "control": control, "implemented_in": [],
        "tests": tests, "pending": pending,
    })
    .to_string()
}

fn mapping(entries: &[String]) -> Mapping {
    Mapping::from_json(&format!(
        r#"{{"hazard_log": "log.txt", "controls": [{}]}}"#,
        entries.join(",")
    ))
    .unwrap()
}

fn complete() -> Vec<String> {
    vec![
        entry(
            "d1",
            "design",
            "Configure the pool: size 20.",
            &["p t"],
            None,
        ),
        entry(
            "d2",
            "design",
            "Add a breaker: after 5 failures, open for 30 seconds.",
            &["p u"],
            None,
        ),
        entry("t1", "testing", "Load test: 50 clients.", &["p v"], None),
        entry("tr1", "training", "Train the team.", &[], None),
        entry("bp1", "business-process", "Review monthly.", &[], None),
    ]
}

#[test]
fn a_complete_mapping_has_no_problems() {
    let m = mapping(&complete());
    assert_eq!(check_against_log(&log(), &m), Vec::<String>::new());
    assert_eq!(uncovered(&m), Vec::<String>::new());
}

#[test]
fn mismatches_with_the_log_are_named() {
    type Edit = fn(&mut Vec<String>);
    let table: [(Edit, &[&str]); 6] = [
        (
            |e| {
                e.remove(2);
            },
            &["testing control \"Load test: 50 clients.\" has 0 mapping entries"],
        ),
        (
            |e| {
                e[0] = entry(
                    "d1",
                    "design",
                    "Configure the pool: size 30.",
                    &["p t"],
                    None,
                )
            },
            &[
                "d1: its control text is not a design control",
                "\"Configure the pool: size 20.\" has 0 mapping entries",
            ],
        ),
        (
            |e| e[2] = entry("t1", "design", "Load test: 50 clients.", &["p v"], None),
            &["t1: kind is design but the hazard log lists it under testing"],
        ),
        (
            |e| e.push(entry("d1", "training", "Train the team.", &[], None)),
            &[
                "d1: duplicate id",
                "\"Train the team.\" has 2 mapping entries",
            ],
        ),
        (
            |e| {
                e[1] = entry(
                    "d2",
                    "design",
                    "Add a breaker: after 5 failures, open for 30 seconds.",
                    &[],
                    None,
                )
            },
            &["d2: a design control with no test must say why in `pending`"],
        ),
        (
            // Re-wrapped whitespace still matches.
            |e| e[2] = entry("t1", "testing", "Load  test:\n50 clients.", &["p v"], None),
            &[],
        ),
    ];
    for (edit, want) in table {
        let mut entries = complete();
        edit(&mut entries);
        let got = check_against_log(&log(), &mapping(&entries));
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.contains(w), "{g:?} should contain {w:?}");
        }
    }
}

#[test]
fn uncovered_lists_missing_tests_and_pending_entries() {
    let mut entries = complete();
    entries[1] = entry(
        "d2",
        "design",
        "Add a breaker: after 5 failures, open for 30 seconds.",
        &[],
        Some("breaker in flight"),
    );
    entries[3] = entry("tr1", "training", "Train the team.", &[], Some("runbook"));
    entries[0] = entry(
        "d1",
        "design",
        "Configure the pool: size 20.",
        &["p t"],
        Some("pool in flight"),
    );
    let m = mapping(&entries);
    assert_eq!(check_against_log(&log(), &m), Vec::<String>::new());
    assert_eq!(
        uncovered(&m),
        [
            "d1 (design): pending — pool in flight",
            "d2 (design): no test yet — breaker in flight",
            "tr1 (training): pending — runbook",
        ]
    );
}

#[test]
fn mapping_errors_name_the_entry_and_field() {
    let ok = r#""id": "x", "kind": "design", "control": "c", "implemented_in": [], "tests": []"#;
    let table = [
        ("[]".to_string(), "top level must be an object"),
        (
            r#"{"hazard_log": "l", "controls": [], "extra": 1}"#.to_string(),
            "unknown field \"extra\"",
        ),
        (r#"{"controls": []}"#.to_string(), "`hazard_log` must be"),
        (
            format!(r#"{{"hazard_log": "l", "controls": [{{{ok}, "test": []}}]}}"#),
            "controls[0]: unknown field \"test\"",
        ),
        (
            r#"{"hazard_log": "l", "controls": [{"id": "x", "kind": "design", "control": "c", "implemented_in": []}]}"#.to_string(),
            "controls[0] (x): `tests` is missing",
        ),
        (
            format!(r#"{{"hazard_log": "l", "controls": [{{{}}}]}}"#, ok.replace("design", "manual")),
            "kind \"manual\" is not one of",
        ),
        (
            format!(r#"{{"hazard_log": "l", "controls": [{{{}}}]}}"#, ok.replace("[]", "[\"\"]")),
            "`implemented_in` must be a list of non-empty strings",
        ),
        (
            format!(r#"{{"hazard_log": "l", "controls": [{{{ok}, "pending": " "}}]}}"#),
            "`pending` must give a reason",
        ),
    ];
    for (text, want) in table {
        let err = Mapping::from_json(&text).unwrap_err().0;
        assert!(err.contains(want), "{text}: {err}");
    }
    let m =
        Mapping::from_json(&format!(r#"{{"hazard_log": "l", "controls": [{{{ok}}}]}}"#)).unwrap();
    assert_eq!(m.controls[0].deployment, Vec::<String>::new());
    assert_eq!(m.controls[0].pending, None);
}

#[test]
fn test_ids_split_into_binary_package_modules_and_function() {
    let id = TestId::parse("poolwarden-crds capacity::tests::pool_size_formula_rounds_up").unwrap();
    assert_eq!(id.binary_id, "poolwarden-crds");
    assert_eq!(id.package(), "poolwarden-crds");
    assert_eq!(id.modules(), ["capacity", "tests"]);
    assert_eq!(id.function(), "pool_size_formula_rounds_up");
    let id = TestId::parse("poolwarden-tests::sidecar_pool heavy_exhaustion").unwrap();
    assert_eq!(id.package(), "poolwarden-tests");
    assert_eq!(id.modules(), Vec::<&str>::new());
    for bad in ["heavy_exhaustion", "a b c", "", "pkg mod::"] {
        assert!(TestId::parse(bad).is_err(), "{bad:?}");
    }
}

/// A throwaway workspace in a temp dir, removed on drop.
struct Workspace(PathBuf);

impl Workspace {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hazard-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = [
            ("Cargo.toml", "[workspace]\nmembers = [\"one\", \"two\"]\n"),
            ("one/Cargo.toml", "[package]\nname = \"pkg-one\"\n"),
            ("one/src/lib.rs", "mod a;\nfn in_lib() {}\n"),
            (
                "one/src/a.rs",
                "mod b;\nmod tests { fn inline_test() {} }\n",
            ),
            ("one/src/a/b/mod.rs", "fn deep() {}\n"),
            ("one/src/other.rs", "fn elsewhere() {}\n"),
            ("one/tests/it.rs", "#[test]\nfn integration() {}\n"),
            ("one/src/bin/tool.rs", "fn main() {}\nfn tool_test() {}\n"),
            (
                "two/Cargo.toml",
                "[dependencies]\nname = \"no\"\n[package]\nname = \"pkg-two\"\n",
            ),
            ("two/src/lib.rs", "pub struct PoolConfig;\n"),
        ];
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Workspace(dir)
    }

    fn root(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tests_are_found_on_their_module_path_only() {
    let ws = Workspace::new("find");
    let table = [
        ("pkg-one in_lib", Ok("one/src/lib.rs")),
        ("pkg-one a::tests::inline_test", Ok("one/src/a.rs")),
        ("pkg-one a::b::deep", Ok("one/src/a/b/mod.rs")),
        ("pkg-one a::b::tests::deep", Ok("one/src/a/b/mod.rs")),
        ("pkg-one a::elsewhere", Err("no `fn elsewhere(`")),
        ("pkg-one::it integration", Ok("one/tests/it.rs")),
        (
            "pkg-one::it in_lib",
            Err("no `fn in_lib(` in one/tests/it.rs"),
        ),
        ("pkg-one::bin/tool tool_test", Ok("one/src/bin/tool.rs")),
        (
            "pkg-one::missing integration",
            Err("binary `pkg-one::missing` has no source"),
        ),
        ("pkg-two x", Err("no `fn x(`")),
        (
            "pkg-three x",
            Err("no workspace member is the package `pkg-three`"),
        ),
    ];
    for (text, want) in table {
        let got = find_test_fn(ws.root(), &TestId::parse(text).unwrap());
        match (got, want) {
            (Ok(p), Ok(w)) => assert_eq!(p, ws.root().join(w), "{text}"),
            (Err(e), Err(w)) => assert!(e.0.contains(w), "{text}: {e}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn path_specs_need_the_file_and_the_symbol() {
    let ws = Workspace::new("paths");
    let table = [
        ("two/src/lib.rs", Ok(())),
        ("two/src", Ok(())),
        ("two/src/lib.rs#PoolConfig", Ok(())),
        ("two/src/lib.rs#Pool", Err("`Pool` does not occur")),
        ("two/src/nope.rs", Err("no such file")),
    ];
    for (spec, want) in table {
        match (sources::check_path_spec(ws.root(), spec), want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(w)) => assert!(e.0.contains(w), "{spec}: {e}"),
            (got, want) => panic!("{spec}: got {got:?}, want {want:?}"),
        }
    }
    let m = Mapping::from_json(
        r#"{"hazard_log": "l", "controls": [
            {"id": "done", "kind": "design", "control": "c", "implemented_in": ["two/src/lib.rs", "gone.rs"], "tests": []},
            {"id": "wip", "kind": "design", "control": "d", "implemented_in": ["later.rs", "two/src/lib.rs#Later"], "tests": [], "pending": "in flight"}]}"#,
    )
    .unwrap();
    let (problems, expected) = check_paths(ws.root(), &m);
    assert_eq!(
        problems,
        [
            "done: gone.rs: no such file or directory",
            "wip: two/src/lib.rs#Later: `Later` does not occur in the file"
        ]
    );
    assert_eq!(expected, ["wip: later.rs: no such file or directory"]);
}

#[test]
fn words_and_manifests() {
    let table = [
        ("pub struct PoolConfig {", "PoolConfig", true),
        ("PoolConfigs", "PoolConfig", false),
        ("MyPoolConfig", "PoolConfig", false),
        ("x.pool_size)", "pool_size", true),
        ("fn é_pool()", "pool", false),
        ("anything", "", false),
    ];
    for (text, word, want) in table {
        assert_eq!(has_word(text, word), want, "{text:?} {word:?}");
    }
    assert_eq!(
        members("[workspace]\nresolver = \"3\"\nmembers = [\"crds\", \"sidecar\",\n \"tests\"]\n"),
        ["crds", "sidecar", "tests"]
    );
    assert_eq!(
        package_name("[package]\nname = \"poolwarden-tests\"\n"),
        Some("poolwarden-tests".into())
    );
    assert_eq!(package_name("[lib]\nname = \"x\"\n"), None);
}
