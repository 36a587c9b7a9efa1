//! Parsing the hazard log's text export: headings end with `¶`, controls are `- ` bullets
//! under the four "… controls (…)" headings of "Hazard controls".

use super::HazardError;

/// The four kinds of control a hazard log lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ControlKind {
    /// Design controls (manufacturer).
    Design,
    /// Testing controls (manufacturer).
    Testing,
    /// Training controls (deployment).
    Training,
    /// Business process controls (deployment).
    BusinessProcess,
}

impl ControlKind {
    /// Every kind, in the hazard log's order.
    pub const ALL: [ControlKind; 4] = [
        ControlKind::Design,
        ControlKind::Testing,
        ControlKind::Training,
        ControlKind::BusinessProcess,
    ];

    /// The name used in the mapping: `design`, `testing`, `training`, `business-process`.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::Design => "design",
            ControlKind::Testing => "testing",
            ControlKind::Training => "training",
            ControlKind::BusinessProcess => "business-process",
        }
    }

    /// Parses the mapping's name for a kind.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind a hazard-log heading (without `¶`) introduces, if any:
    /// "Design controls (manufacturer)", "Business process controls (deployment)", ...
    pub fn from_heading(heading: &str) -> Option<Self> {
        let h = heading.trim().to_ascii_lowercase();
        let prefix = h.split(" controls").next()?;
        if !h.contains(" controls") {
            return None;
        }
        match prefix {
            "design" => Some(ControlKind::Design),
            "testing" => Some(ControlKind::Testing),
            "training" => Some(ControlKind::Training),
            "business process" => Some(ControlKind::BusinessProcess),
            _ => None,
        }
    }

    /// Design and testing controls are the manufacturer's: each needs a test as evidence.
    pub fn needs_test(self) -> bool {
        matches!(self, ControlKind::Design | ControlKind::Testing)
    }
}

/// One control bullet of the hazard log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The heading it stands under.
    pub kind: ControlKind,
    /// The bullet's text without the leading `- `.
    pub text: String,
}

/// What the checks need from a hazard log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HazardLog {
    /// The "Hazard name" section's text.
    pub name: String,
    /// Every control, in the log's order.
    pub controls: Vec<Control>,
    /// Single-word bullets found among the controls (hazard-type labels such as
    /// `SystemUnavailable` that the export placed there); they are not controls.
    pub labels: Vec<String>,
}

impl HazardLog {
    /// The controls of one kind.
    pub fn of_kind(&self, kind: ControlKind) -> impl Iterator<Item = &Control> {
        self.controls.iter().filter(move |c| c.kind == kind)
    }
}

const MARK: char = '¶';

/// Parses a hazard log. Fails when there is no "Hazard controls" section or no design or
/// testing control in it, so a changed export cannot silently empty the checks.
pub fn parse_hazard_log(text: &str) -> Result<HazardLog, HazardError> {
    let mut log = HazardLog::default();
    let mut heading: Option<String> = None;
    let mut in_controls = false;
    let mut kind: Option<ControlKind> = None;
    let mut seen_controls_heading = false;
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(h) = line.strip_suffix(MARK) {
            let h = h.trim();
            if h.eq_ignore_ascii_case("Hazard controls") {
                in_controls = true;
                seen_controls_heading = true;
                kind = None;
            } else if in_controls {
                kind = ControlKind::from_heading(h);
                if kind.is_none() {
                    in_controls = false;
                }
            }
            heading = Some(h.to_string());
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if heading.as_deref() == Some("Hazard name") && log.name.is_empty() {
            log.name = line.to_string();
            continue;
        }
        let Some(kind) = kind else { continue };
        if let Some(bullet) = line.strip_prefix("- ") {
            let bullet = bullet.trim();
            if bullet.split_whitespace().count() == 1 {
                log.labels.push(bullet.to_string());
            } else {
                log.controls.push(Control {
                    kind,
                    text: bullet.to_string(),
                });
            }
        } else if let Some(last) = log.controls.last_mut().filter(|c| c.kind == kind) {
            // A wrapped bullet: the line continues the previous control.
            last.text.push(' ');
            last.text.push_str(line);
        } else {
            return Err(HazardError(format!(
                "text under \"{}\" is not a `- ` bullet: {line:?}",
                heading.as_deref().unwrap_or_default()
            )));
        }
    }
    if !seen_controls_heading {
        return Err(HazardError("no \"Hazard controls¶\" section".into()));
    }
    for k in [ControlKind::Design, ControlKind::Testing] {
        if log.of_kind(k).next().is_none() {
            return Err(HazardError(format!(
                "no {} control under \"Hazard controls¶\"",
                k.as_str()
            )));
        }
    }
    Ok(log)
}
