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

/// The SQL of a simple Query message's body: the text before its terminating NUL.
pub fn query_sql(body: &[u8]) -> &[u8] {
    &body[..memchr::memchr(0, body).unwrap_or(body.len())]
}

/// Byte classes for the scan: one table lookup per byte instead of a chain of tests.
const OTHER: u8 = 0;
const LETTER: u8 = 1; // a-z A-Z _ : starts or continues a word
const DIGIT: u8 = 2; // continues a word
const SPACE: u8 = 3; // white space and '(' keep the statement start
const QUOTE: u8 = 4; // ' and "
const DASH: u8 = 5;
const SLASH: u8 = 6;
const SEMICOLON: u8 = 7;

const CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b.is_ascii_alphabetic() || b == b'_' {
            LETTER
        } else if b.is_ascii_digit() {
            DIGIT
        } else if b.is_ascii_whitespace() || b == b'(' {
            SPACE
        } else if b == b'\'' || b == b'"' {
            QUOTE
        } else if b == b'-' {
            DASH
        } else if b == b'/' {
            SLASH
        } else if b == b';' {
            SEMICOLON
        } else {
            OTHER
        };
        c += 1;
    }
    t
};

/// Bit n set when some word of `list` has n letters.
const fn lengths(list: &[&str]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i].len();
        i += 1;
    }
    mask
}
const LEADING_LENGTHS: u64 = lengths(LEADING);
const ANYWHERE_LENGTHS: u64 = lengths(ANYWHERE);

/// Whether `sql` may leave session state behind. Works on the raw bytes: keywords are ASCII,
/// so any other byte is just not part of one (no UTF-8 decoding, no copy).
pub fn changes_session_state(sql: &[u8]) -> bool {
    let b = sql;
    let mut i = 0;
    let mut at_statement_start = true;
    while i < b.len() {
        let c = b[i];
        match CLASS[c as usize] {
            SPACE => i += 1,
            LETTER => {
                let start = i;
                i += 1;
                while i < b.len() && matches!(CLASS[b[i] as usize], LETTER | DIGIT) {
                    i += 1;
                }
                // Compared in place, case-insensitively: no lowercased copy per word.
                let word = &b[start..i];
                if (at_statement_start && listed(LEADING, LEADING_LENGTHS, word))
                    || listed(ANYWHERE, ANYWHERE_LENGTHS, word)
                {
                    return true;
                }
                at_statement_start = false;
            }
            QUOTE => {
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
            DASH if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            SLASH if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            SEMICOLON => {
                at_statement_start = true;
                i += 1;
            }
            _ => {
                at_statement_start = false;
                i += 1;
            }
        }
    }
    false
}

/// Whether `word` is one of `list` (whose word lengths are `lengths`), ignoring ASCII case.
/// Most words of a query share no length, or then no first letter, with a listed one.
fn listed(list: &[&str], lengths: u64, word: &[u8]) -> bool {
    if word.len() >= 64 || lengths & (1 << word.len()) == 0 {
        return false;
    }
    let first = word[0].to_ascii_lowercase();
    list.iter().any(|k| {
        let k = k.as_bytes();
        k.len() == word.len() && k[0] == first && k.eq_ignore_ascii_case(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_sql_stops_at_the_terminating_nul() {
        let table: [(&[u8], &[u8]); 3] = [
            (b"SELECT 1\0", b"SELECT 1"),
            (b"no terminator", b"no terminator"),
            (b"\0", b""),
        ];
        for (body, want) in table {
            assert_eq!(query_sql(body), want);
        }
    }

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
            ("SELECT temp1, café FROM t2", false),
            ("SELECT 'é'; SET x = 1", true),
            ("SELECT 1 -- SET x\n", false),
            ("SELECT a/b, c-d FROM t; LISTEN x", true),
            ("", false),
        ];
        for (sql, want) in table {
            assert_eq!(changes_session_state(sql.as_bytes()), want, "{sql}");
        }
    }
}
