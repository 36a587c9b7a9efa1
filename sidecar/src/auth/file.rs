//! The client users file, in PgBouncer's `auth_file` format:
//!
//! ```text
//! ; comment            # comment too
//! "alice" "SCRAM-SHA-256$4096:c2FsdA==$StoredKey:ServerKey"
//! "bob"   "md5d1d0ab1d3a2b6c0e8f7a6b5c4d3e2f1a"
//! "carol" "a plain password"
//! "dave ""the quote"" smith" "pw"       (a doubled quote inside a field is one quote)
//! ```
//!
//! Fields after the second are ignored, as PgBouncer does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::scram::ScramVerifier;
use crate::config::Secret;
use crate::file_stamp::FileStamp;

/// How a user's password is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredPassword {
    /// The password itself (works for md5 and scram-sha-256).
    Plain(Secret),
    /// `md5` + hex(md5(password + user)) (md5 only).
    Md5(Secret),
    /// A SCRAM-SHA-256 verifier (scram-sha-256; also used when md5 is configured, as
    /// PostgreSQL does).
    Scram(ScramVerifier),
}

impl StoredPassword {
    /// Classify a stored secret as PostgreSQL does: `md5` + 32 hex digits, a parseable
    /// `SCRAM-SHA-256$...` verifier, or else a plain password.
    pub fn parse(secret: &str) -> Self {
        if let Some(hex) = secret.strip_prefix("md5")
            && hex.len() == 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return StoredPassword::Md5(Secret::new(secret.to_ascii_lowercase()));
        }
        if let Ok(v) = secret.parse::<ScramVerifier>() {
            return StoredPassword::Scram(v);
        }
        StoredPassword::Plain(Secret::new(secret))
    }
}

/// A problem in the users file. Never shows a line's content (it holds secrets).
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("users file line {line}: {problem}")]
    Line { line: usize, problem: &'static str },
}

/// The users of the client auth file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthFile {
    users: HashMap<String, StoredPassword>,
}

impl AuthFile {
    /// Parse the file's text. A later line for the same user replaces an earlier one.
    pub fn parse(text: &str) -> Result<Self, AuthFileError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let err = |problem| AuthFileError::Line {
                line: i + 1,
                problem,
            };
            let (user, rest) = quoted(line).ok_or_else(|| err("expected \"user\" \"password\""))?;
            let (secret, _) = quoted(rest.trim_start())
                .ok_or_else(|| err("expected a quoted password after the user"))?;
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            users.insert(user, StoredPassword::parse(&secret));
        }
        Ok(Self { users })
    }

    /// Read and parse the file.
    pub fn read(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The stored password of `user`.
    pub fn get(&self, user: &str) -> Option<&StoredPassword> {
        self.users.get(user)
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The users file of a running proxy: read at start (an error stops start-up), re-read when
/// the file changes (checked with one `stat` per lookup). A changed file that cannot be read
/// or parsed is logged and the previous users stay, as PgBouncer keeps its users on a failed
/// reload.
pub struct SharedAuthFile {
    path: PathBuf,
    current: Mutex<(Option<FileStamp>, Arc<AuthFile>)>,
}

impl std::fmt::Debug for SharedAuthFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAuthFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SharedAuthFile {
    /// Read `path` now.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let stamp = FileStamp::of(path);
        let users = AuthFile::read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            current: Mutex::new((stamp, Arc::new(users))),
        })
    }

    /// The users now (re-read first if the file changed).
    pub fn current(&self) -> Arc<AuthFile> {
        let now = FileStamp::of(&self.path);
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if now != cur.0 {
            cur.0 = now;
            match AuthFile::read(&self.path) {
                Ok(users) => {
                    tracing::info!(path = %self.path.display(), users = users.len(), "users file reloaded");
                    cur.1 = Arc::new(users);
                }
                Err(e) => {
                    tracing::error!(error = %e, "users file refused; the previous users stay");
                }
            }
        }
        cur.1.clone()
    }

    /// The stored password of `user` now.
    pub fn get(&self, user: &str) -> Option<StoredPassword> {
        self.current().get(user).cloned()
    }
}

/// A leading `"..."` field with `""` escapes; returns it and the rest of the line.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if let Some((_, '"')) = chars.peek() {
                chars.next();
                out.push('"');
                continue;
            }
            return Some((out, &body[i + 1..]));
        }
        out.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "SCRAM-SHA-256$4096:W0xmqYmmhWJVLYd3uQS42A==$yY6Yv2ElDwoyOkbhRM4XOtPeHsS4ZT7sw8tYrQ4F1Mg=:0bNmz7PEVq/mFNaCGpaY7yGJKdAoj2tcf8LHRbQ8TNs=";

    #[test]
    fn parses_pgbouncer_format() {
        let text = format!(
            "; pgbouncer comment\n# hash comment\n\n\"alice\" \"{VERIFIER}\"\n\"bob\" \"md5D1D0AB1D3A2B6C0E8F7A6B5C4D3E2F1A\" \"ignored\"\n  \"carol\"   \"plain pw\"\n\"dave \"\"q\"\" smith\" \"pa\"\"ss\"\n\"eve\" \"md5short\"\n"
        );
        let f = AuthFile::parse(&text).unwrap();
        assert_eq!(f.len(), 5);
        assert!(matches!(f.get("alice"), Some(StoredPassword::Scram(v)) if v.iterations() == 4096));
        assert_eq!(
            f.get("bob"),
            Some(&StoredPassword::Md5(Secret::new(
                "md5d1d0ab1d3a2b6c0e8f7a6b5c4d3e2f1a"
            )))
        );
        assert_eq!(
            f.get("carol"),
            Some(&StoredPassword::Plain(Secret::new("plain pw")))
        );
        assert_eq!(
            f.get("dave \"q\" smith"),
            Some(&StoredPassword::Plain(Secret::new("pa\"ss")))
        );
        assert_eq!(
            f.get("eve"),
            Some(&StoredPassword::Plain(Secret::new("md5short")))
        );
        assert_eq!(f.get("mallory"), None);
    }

    #[test]
    fn bad_lines_name_the_line_not_the_content() {
        let table = [
            ("alice secret\n", 1),
            ("\"alice\"\n", 1),
            ("\"alice\" \"unterminated\n", 1),
            ("\"ok\" \"pw\"\n\"\" \"pw\"\n", 2),
            ("\"ok\" \"pw\"\n\n\"open\n", 3),
        ];
        for (text, line) in table {
            match AuthFile::parse(text) {
                Err(AuthFileError::Line { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
            let shown = AuthFile::parse(text).unwrap_err().to_string();
            assert!(
                !shown.contains("secret") && !shown.contains("unterminated"),
                "{shown}"
            );
        }
    }

    #[test]
    fn shared_file_follows_changes_and_keeps_users_on_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "\"alice\" \"pw1\"\n").unwrap();
        let shared = SharedAuthFile::load(&path).unwrap();
        assert_eq!(
            shared.get("alice"),
            Some(StoredPassword::Plain(Secret::new("pw1")))
        );
        assert_eq!(shared.get("bob"), None);
        // A Secret-volume style replacement: new file renamed over the old one.
        let next = dir.path().join("users.new");
        std::fs::write(&next, "\"alice\" \"pw2\"\n\"bob\" \"pw3\"\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(
            shared.get("alice"),
            Some(StoredPassword::Plain(Secret::new("pw2")))
        );
        assert_eq!(
            shared.get("bob"),
            Some(StoredPassword::Plain(Secret::new("pw3")))
        );
        // A broken file: the previous users stay.
        std::fs::write(&next, "\"alice\" unquoted\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(
            shared.get("alice"),
            Some(StoredPassword::Plain(Secret::new("pw2")))
        );
        // A missing file at start is an error.
        assert!(SharedAuthFile::load(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let f = AuthFile::parse(
            "\"carol\" \"hunter2\"\n\"bob\" \"md5d1d0ab1d3a2b6c0e8f7a6b5c4d3e2f1a\"\n",
        )
        .unwrap();
        let shown = format!("{f:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("d1d0ab"),
            "{shown}"
        );
    }
}
