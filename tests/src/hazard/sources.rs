//! From a nextest test identifier to the source file that defines the test, and checks of
//! `implemented_in` paths.

use std::path::{Path, PathBuf};

use super::HazardError;

/// A nextest test identifier: binary id and test name, written `<binary-id> <test name>` as
/// nextest prints it (`poolwarden-crds capacity::tests::pool_size_formula_rounds_up`,
/// `poolwarden-tests::crd_apiserver defaults_are_applied_by_the_apiserver`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestId {
    /// `<package>` (library unit tests), `<package>::<integration test>` or
    /// `<package>::bin/<binary>`.
    pub binary_id: String,
    /// The test's path inside the binary: modules and function, `::`-separated.
    pub name: String,
}

impl TestId {
    /// Parses `<binary-id> <test name>`.
    pub fn parse(text: &str) -> Result<Self, HazardError> {
        let mut parts = text.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(bin), Some(name), None) if !name.ends_with("::") => Ok(TestId {
                binary_id: bin.to_string(),
                name: name.to_string(),
            }),
            _ => Err(HazardError(format!(
                "{text:?} is not `<binary-id> <test name>` (e.g. `poolwarden-tests::sidecar_pool \
                 heavy_exhaustion`)"
            ))),
        }
    }

    /// The package name: the binary id up to `::`.
    pub fn package(&self) -> &str {
        self.binary_id.split("::").next().unwrap_or_default()
    }

    /// The test function's own name: the last segment of the test name.
    pub fn function(&self) -> &str {
        self.name.rsplit("::").next().unwrap_or_default()
    }

    /// The module path inside the binary (every segment but the function).
    pub fn modules(&self) -> Vec<&str> {
        let mut segs: Vec<&str> = self.name.split("::").collect();
        segs.pop();
        segs
    }
}

/// The directory of each workspace package, read from the root and member `Cargo.toml`s.
pub fn package_dir(root: &Path, package: &str) -> Result<PathBuf, HazardError> {
    let manifest = read(&root.join("Cargo.toml"))?;
    for member in members(&manifest) {
        let dir = root.join(&member);
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        if package_name(&text).as_deref() == Some(package) {
            return Ok(dir);
        }
    }
    Err(HazardError(format!(
        "no workspace member is the package `{package}`"
    )))
}

/// The files a test can be defined in: the binary's root file and every module file on the
/// test's module path (a test may sit in an inline `mod tests {}` of any of them).
pub fn test_source_candidates(root: &Path, id: &TestId) -> Result<Vec<PathBuf>, HazardError> {
    let pkg = package_dir(root, id.package())?;
    let target = id.binary_id.split_once("::").map(|(_, t)| t);
    // (root files, directory the modules hang off)
    let (roots, module_dir) = match target {
        None => (vec![pkg.join("src/lib.rs")], pkg.join("src")),
        Some(t) if t.starts_with("bin/") => {
            let bin = &t["bin/".len()..];
            (
                vec![
                    pkg.join(format!("src/bin/{bin}.rs")),
                    pkg.join(format!("src/bin/{bin}/main.rs")),
                    pkg.join("src/main.rs"),
                ],
                pkg.join(format!("src/bin/{bin}")),
            )
        }
        Some(t) => (
            vec![
                pkg.join(format!("tests/{t}.rs")),
                pkg.join(format!("tests/{t}/main.rs")),
            ],
            pkg.join(format!("tests/{t}")),
        ),
    };
    let mut files: Vec<PathBuf> = roots.into_iter().filter(|p| p.is_file()).collect();
    if files.is_empty() {
        return Err(HazardError(format!(
            "binary `{}` has no source file in {}",
            id.binary_id,
            pkg.display()
        )));
    }
    let mut dir = module_dir;
    for seg in id.modules() {
        for f in [dir.join(format!("{seg}.rs")), dir.join(seg).join("mod.rs")] {
            if f.is_file() {
                files.push(f);
            }
        }
        dir = dir.join(seg);
    }
    Ok(files)
}

/// The file that defines the test function (`fn <name>(` on the test's module path).
pub fn find_test_fn(root: &Path, id: &TestId) -> Result<PathBuf, HazardError> {
    let candidates = test_source_candidates(root, id)?;
    let needle = format!("fn {}(", id.function());
    for f in &candidates {
        if read(f)?.contains(&needle) {
            return Ok(f.clone());
        }
    }
    Err(HazardError(format!(
        "no `{needle}` in {}",
        candidates
            .iter()
            .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Checks a `path` or `path#symbol`: the path exists under `root`; the symbol, if any, occurs
/// in the file as a whole word.
pub fn check_path_spec(root: &Path, spec: &str) -> Result<(), HazardError> {
    let (path, symbol) = match spec.split_once('#') {
        Some((p, s)) => (p, Some(s)),
        None => (spec, None),
    };
    let full = root.join(path);
    if !full.exists() {
        return Err(HazardError("no such file or directory".into()));
    }
    if let Some(sym) = symbol
        && !has_word(&read(&full)?, sym)
    {
        return Err(HazardError(format!("`{sym}` does not occur in the file")));
    }
    Ok(())
}

/// `word` occurs in `text` with no identifier character directly before or after it.
pub(crate) fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    !word.is_empty()
        && text.match_indices(word).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + word.len()..].chars().next();
            !before.is_some_and(ident) && !after.is_some_and(ident)
        })
}

fn read(path: &Path) -> Result<String, HazardError> {
    std::fs::read_to_string(path)
        .map_err(|e| HazardError(format!("cannot read {}: {e}", path.display())))
}

/// The `members = [...]` of a workspace manifest (plain strings, no globs).
pub(crate) fn members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("members") else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The `name` of a manifest's `[package]` table.
pub(crate) fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if in_package
            && let Some(v) = line.strip_prefix("name")
            && let Some(v) = v.trim_start().strip_prefix('=')
        {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}
