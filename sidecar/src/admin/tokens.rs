//! Admin bearer tokens: the tokens file (`<role> <token>` lines, re-read when it changes) plus
//! `POOLWARDEN_ADMIN_TOKEN`. Tokens are kept only as SHA-256 digests and compared in constant
//! time; they never reach a log line.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::Secret;
use crate::file_stamp::FileStamp;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `GET /api/pool` only.
    Viewer = 1,
    /// Everything.
    Admin = 2,
}

impl Role {
    /// `admin` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
    /// Whether this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// One token, as a digest.
#[derive(Clone)]
struct Entry {
    role: Role,
    digest: [u8; 32],
}

/// A malformed line of the tokens file (the content is never shown: it may hold a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tokens file line {line}: {problem}")]
pub struct TokenLineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, without the line's content.
    pub problem: &'static str,
}

/// Parse a tokens file: `<role> <token>` per line, role `admin` or `viewer`; blank lines and
/// `#` comments are ignored. Good lines are returned with the problems of the bad ones.
pub fn parse_tokens(text: &str) -> (Vec<(Role, Secret)>, Vec<TokenLineError>) {
    let mut tokens = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(role), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            problems.push(TokenLineError {
                line: i + 1,
                problem: "expected `<role> <token>`",
            });
            continue;
        };
        let role = match role {
            "admin" => Role::Admin,
            "viewer" => Role::Viewer,
            _ => {
                problems.push(TokenLineError {
                    line: i + 1,
                    problem: "role is not admin or viewer",
                });
                continue;
            }
        };
        tokens.push((role, Secret::new(token)));
    }
    (tokens, problems)
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

struct Cache {
    stamp: Option<FileStamp>,
    loaded: bool,
    file_tokens: Vec<Entry>,
}

/// The known tokens. The file is re-read when its metadata changes (checked on every
/// authentication: one `stat`).
pub struct TokenStore {
    file: Option<PathBuf>,
    env_token: Option<Entry>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl TokenStore {
    /// Tokens from `file` (if any) plus `env_token` (`POOLWARDEN_ADMIN_TOKEN`) as an admin token.
    pub fn new(file: Option<PathBuf>, env_token: Option<&Secret>) -> Self {
        let env_token = env_token
            .filter(|t| !t.expose().trim().is_empty())
            .map(|t| Entry {
                role: Role::Admin,
                digest: digest(t.expose().trim().as_bytes()),
            });
        Self {
            file,
            env_token,
            cache: Mutex::new(Cache {
                stamp: None,
                loaded: false,
                file_tokens: Vec::new(),
            }),
        }
    }

    /// From the config's `admin` section.
    pub fn from_config(cfg: &crate::config::AdminConfig) -> Self {
        Self::new(cfg.tokens_file.clone(), cfg.token.as_ref())
    }

    fn file_tokens(&self) -> Vec<Entry> {
        let Some(path) = &self.file else {
            return Vec::new();
        };
        let now = FileStamp::of(path);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.loaded || cache.stamp != now {
            cache.file_tokens = load_file(path);
            cache.stamp = now;
            cache.loaded = true;
        }
        cache.file_tokens.clone()
    }

    /// The role of `presented`, or `None` for an unknown token. Every known token is compared
    /// (constant time, no early exit).
    pub fn authenticate(&self, presented: &str) -> Option<Role> {
        let d = digest(presented.as_bytes());
        let mut best = 0u8;
        let entries = self.file_tokens();
        for e in entries.iter().chain(self.env_token.iter()) {
            let hit = d.ct_eq(&e.digest);
            let role = e.role as u8;
            // Keep the highest role among the matches, without branching on the secret.
            let higher = subtle::Choice::from(u8::from(role > best));
            best = u8::conditional_select(&best, &role, hit & higher);
        }
        match best {
            2 => Some(Role::Admin),
            1 => Some(Role::Viewer),
            _ => None,
        }
    }
}

fn load_file(path: &Path) -> Vec<Entry> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the admin tokens file");
            return Vec::new();
        }
    };
    let (tokens, problems) = parse_tokens(&text);
    for p in problems {
        tracing::warn!(path = %path.display(), "{p}");
    }
    tokens
        .into_iter()
        .map(|(role, t)| Entry {
            role,
            digest: digest(t.expose().as_bytes()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_comments_and_reports_bad_lines_without_content() {
        let text =
            "# tokens\n\nadmin  a1\nviewer\tv1\n  # indented comment\nroot r1\nadmin\nadmin x y\n";
        let (tokens, problems) = parse_tokens(text);
        let got: Vec<_> = tokens
            .iter()
            .map(|(r, t)| (*r, t.expose().to_string()))
            .collect();
        assert_eq!(
            got,
            vec![(Role::Admin, "a1".into()), (Role::Viewer, "v1".into())]
        );
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![6, 7, 8]);
        for p in problems {
            let shown = p.to_string();
            assert!(!shown.contains("r1") && !shown.contains("root"), "{shown}");
        }
    }

    #[test]
    fn roles_allow_table() {
        let table = [
            (Role::Admin, Role::Admin, true),
            (Role::Admin, Role::Viewer, true),
            (Role::Viewer, Role::Viewer, true),
            (Role::Viewer, Role::Admin, false),
        ];
        for (have, need, ok) in table {
            assert_eq!(have.allows(need), ok, "{have:?} {need:?}");
        }
    }

    #[test]
    fn authenticates_file_and_env_tokens_and_rereads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "admin adm-1\nviewer view-1\n").unwrap();
        let store = TokenStore::new(Some(path.clone()), Some(&Secret::new("env-admin")));
        assert_eq!(store.authenticate("adm-1"), Some(Role::Admin));
        assert_eq!(store.authenticate("view-1"), Some(Role::Viewer));
        assert_eq!(store.authenticate("env-admin"), Some(Role::Admin));
        assert_eq!(store.authenticate("view-2"), None);
        assert_eq!(store.authenticate(""), None);
        // Rotate: a new file (as a Secret volume does) replaces the old tokens.
        let next = dir.path().join("tokens.new");
        std::fs::write(&next, "viewer view-2\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(store.authenticate("view-2"), Some(Role::Viewer));
        assert_eq!(store.authenticate("adm-1"), None);
        assert_eq!(store.authenticate("env-admin"), Some(Role::Admin));
        // A missing file leaves only the environment token.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(store.authenticate("view-2"), None);
        assert_eq!(store.authenticate("env-admin"), Some(Role::Admin));
    }

    #[test]
    fn a_token_listed_twice_gets_the_higher_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "viewer same\nadmin same\n").unwrap();
        let store = TokenStore::new(Some(path), None);
        assert_eq!(store.authenticate("same"), Some(Role::Admin));
    }
}
