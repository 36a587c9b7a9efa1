//! A conservative scan of SQL text for statements that leave state in the server session
//! (SET, LISTEN, PREPARE, temporary tables, advisory locks ...). In transaction mode a server
//! connection that ran one is reset with `DISCARD ALL` before another client gets it.
//!
//! False positives only cost one `DISCARD ALL`; the scan errs on that side.

/// Statement-leading keywords that change session state.
const LEADING: &[&str] = &[
    "set",
    "reset",
    "listen",
    "unlisten",
    "declare",
    "prepare",
    "deallocate",
    "discard",
    "load",
    "close",
    "lock",
];
/// Words that change session state wherever they appear.
const ANYWHERE: &[&str] = &[
    "temp",
    "temporary",
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "session_authorization",
];

/// Whether `sql` may leave session state behind.
pub fn changes_session_state(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut at_statement_start = true;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                // Skip a quoted literal or identifier ('' and "" escape themselves).
                i += 1;
                while i < b.len() {
                    if b[i] == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                at_statement_start = false;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b';' => {
                at_statement_start = true;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                // Compared in place, case-insensitively: no lowercased copy per word.
                let word = &b[start..i];
                let listed =
                    |list: &[&str]| list.iter().any(|k| k.as_bytes().eq_ignore_ascii_case(word));
                if (at_statement_start && listed(LEADING)) || listed(ANYWHERE) {
                    return true;
                }
                at_statement_start = false;
            }
            c if c.is_ascii_whitespace() || c == b'(' => i += 1,
            _ => {
                at_statement_start = false;
                i += 1;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let table = [
            ("SET search_path = x", true),
            ("  set statement_timeout to 0", true),
            ("BEGIN; SET LOCAL x = 1; COMMIT", true),
            ("RESET ALL", true),
            ("LISTEN chan", true),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", true),
            ("PREPARE p AS SELECT 1", true),
            ("CREATE TEMP TABLE t (a int)", true),
            ("create temporary table t (a int)", true),
            ("SELECT set_config('a.b', 'c', false)", true),
            ("SELECT pg_advisory_lock(1)", true),
            ("SELECT Pg_Advisory_Lock(1)", true),
            ("Listen chan", true),
            ("SELECT settings_x, temps FROM t", false),
            ("/* c */ SET x = 1", true),
            ("-- c\nSET x = 1", true),
            ("(SET)", true),
            ("SELECT 1", false),
            ("UPDATE t SET a = 1 WHERE b = 2", false),
            ("SELECT 'SET x = 1; LISTEN y'", false),
            ("SELECT \"temp\" FROM t", false),
            ("INSERT INTO settings VALUES ('reset')", false),
            ("BEGIN; UPDATE t SET a = 'it''s; SET' ; COMMIT", false),
            ("SELECT pg_advisory_xact_lock(1)", false),
            ("", false),
        ];
        for (sql, want) in table {
            assert_eq!(changes_session_state(sql), want, "{sql}");
        }
    }
}
