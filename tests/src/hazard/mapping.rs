//! `docs/hazard-controls.json`: one entry per hazard-log control.
//!
//! ```json
//! {"hazard_log": "../shared/hazard-log/<hazard>.txt",
//!  "controls": [{"id": "design-pool-limits", "kind": "design",
//!                "control": "<the bullet, quoted exactly>",
//!                "implemented_in": ["sidecar/src/config/model.rs#PoolConfig"],
//!                "tests": ["poolwarden-crds::crd defaults_are_the_hazard_logs_production_values"],
//!                "deployment": ["docs/runbook.md#escalation", "PoolwardenPoolTimeouts"],
//!                "pending": "what is still missing (optional)", "notes": "optional"}]}
//! ```

use serde_json::{Map, Value};

use super::{ControlKind, HazardError};

/// The whole mapping file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The hazard log's path relative to the workspace root.
    pub hazard_log: String,
    /// One entry per control.
    pub controls: Vec<MappedControl>,
}

/// One control's evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedControl {
    /// A short stable name, e.g. `design-circuit-breaker`.
    pub id: String,
    /// Which list of the hazard log it belongs to.
    pub kind: ControlKind,
    /// The hazard log's bullet, quoted exactly.
    pub control: String,
    /// Workspace-relative paths, optionally `path#symbol`.
    pub implemented_in: Vec<String>,
    /// nextest identifiers: `<binary-id> <test name>`.
    pub tests: Vec<String>,
    /// Runbook anchors (`docs/runbook.md#...`), alert names or notes.
    pub deployment: Vec<String>,
    /// Set while the evidence is incomplete: what is missing and where it is expected.
    pub pending: Option<String>,
    /// Free text for the report.
    pub notes: Option<String>,
}

const TOP_KEYS: &[&str] = &["about", "hazard_log", "controls"];
const ENTRY_KEYS: &[&str] = &[
    "id",
    "kind",
    "control",
    "implemented_in",
    "tests",
    "deployment",
    "pending",
    "notes",
];

impl Mapping {
    /// Parses the mapping, naming the entry and field of any error.
    pub fn from_json(text: &str) -> Result<Self, HazardError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| HazardError(format!("invalid JSON: {e}")))?;
        let top = value
            .as_object()
            .ok_or_else(|| HazardError("the top level must be an object".into()))?;
        unknown_keys("the top level", top, TOP_KEYS)?;
        let hazard_log = string(top, "hazard_log", "the top level")?;
        let list = top
            .get("controls")
            .and_then(Value::as_array)
            .ok_or_else(|| HazardError("`controls` must be a list".into()))?;
        let controls = list
            .iter()
            .enumerate()
            .map(|(i, v)| entry(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Mapping {
            hazard_log,
            controls,
        })
    }
}

fn entry(i: usize, v: &Value) -> Result<MappedControl, HazardError> {
    let at = format!("controls[{i}]");
    let obj = v
        .as_object()
        .ok_or_else(|| HazardError(format!("{at} must be an object")))?;
    unknown_keys(&at, obj, ENTRY_KEYS)?;
    let id = string(obj, "id", &at)?;
    let at = format!("{at} ({id})");
    let kind_name = string(obj, "kind", &at)?;
    let kind = ControlKind::from_name(&kind_name).ok_or_else(|| {
        HazardError(format!(
            "{at}: kind {kind_name:?} is not one of design, testing, training, business-process"
        ))
    })?;
    let pending = optional_string(obj, "pending", &at)?;
    if pending.as_deref().is_some_and(|p| p.trim().is_empty()) {
        return Err(HazardError(format!(
            "{at}: `pending` must give a reason (remove it when done)"
        )));
    }
    Ok(MappedControl {
        kind,
        control: string(obj, "control", &at)?,
        implemented_in: strings(obj, "implemented_in", &at)?,
        tests: strings(obj, "tests", &at)?,
        deployment: strings(obj, "deployment", &at)?,
        pending,
        notes: optional_string(obj, "notes", &at)?,
        id,
    })
}

fn unknown_keys(at: &str, obj: &Map<String, Value>, known: &[&str]) -> Result<(), HazardError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(HazardError(format!(
            "{at}: unknown field {k:?} (known: {})",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

fn string(obj: &Map<String, Value>, key: &str, at: &str) -> Result<String, HazardError> {
    match obj.get(key).and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
        _ => Err(HazardError(format!(
            "{at}: `{key}` must be a non-empty string"
        ))),
    }
}

fn optional_string(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<String>, HazardError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HazardError(format!("{at}: `{key}` must be a string"))),
    }
}

/// A list of non-empty strings; a missing key is an empty list only for `deployment`.
fn strings(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<String>, HazardError> {
    let bad = || HazardError(format!("{at}: `{key}` must be a list of non-empty strings"));
    match obj.get(key) {
        None if key == "deployment" => Ok(Vec::new()),
        None => Err(HazardError(format!(
            "{at}: `{key}` is missing (use [] for none)"
        ))),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v.as_str() {
                Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}
