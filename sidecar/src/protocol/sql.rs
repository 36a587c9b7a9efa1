//! A conservative scan of SQL text for statements that leave state in the server session
//! (SET, LISTEN, PREPARE, temporary tables, advisory locks ...). In transaction mode a server
//! connection that ran one is reset with `DISCARD ALL` before another client gets it.
//!
//! False positives only cost one `DISCARD ALL`; the scan errs on that side.

use std::ops::ControlFlow;

use wide::u8x16;

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

/// A substring, found by the two bytes at `at` in it (its pair), then confirmed by the text
/// around them, ignoring ASCII case.
struct Part {
    text: &'static [u8],
    at: usize,
}

const fn part(text: &'static str, at: usize) -> Part {
    assert!(at + 2 <= text.len());
    Part {
        text: text.as_bytes(),
        at,
    }
}

/// Substrings one of which every [`ANYWHERE`] word contains (a test checks it): text with none
/// of them, in any case and wherever it stands, has no such word. Each is found by a pair of
/// bytes that ordinary SQL seldom has (`mp` is in `timestamp`, `_c` in `pg_class`), so most
/// statements have no candidate but their `;`.
const ANYWHERE_PARTS: [Part; 4] = [
    part("temp", 2),
    part("set_config", 3),
    part("advisory_lock", 7),
    part("session_authorization", 6),
];
/// Substrings of SQL that may deallocate prepared statements (`DISCARD`, `DEALLOCATE`), found
/// by their first byte.
const DROP_PARTS: [Part; 2] = [part("discard", 0), part("dealloc", 0)];

/// Whether one of `parts` is in `sql` with its pair at `sql[i]`. Inlined with a constant list.
#[inline(always)]
fn part_at<const N: usize>(sql: &[u8], i: usize, parts: &[Part; N]) -> bool {
    // A plain loop, which the compiler unrolls over the constant parts (`any` stays a call).
    for p in parts {
        if i >= p.at
            && sql
                .get(i - p.at..i - p.at + p.text.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(p.text))
        {
            return true;
        }
    }
    false
}

/// Whether SQL text may deallocate prepared statements (`DISCARD ALL`, `DEALLOCATE` in any
/// form or place). Errs on the side of yes.
pub fn may_drop_statements(sql: &[u8]) -> bool {
    memchr::memchr2_iter(b'd', b'D', sql).any(|i| part_at(sql, i, &DROP_PARTS))
}

/// The SQL of a simple Query message's body: the text before its terminating NUL. A body that
/// ends in NUL (every valid one) is taken without a search; a NUL inside the text makes
/// PostgreSQL refuse the whole message, so reading past it only errs on the side of yes.
pub fn query_sql(body: &[u8]) -> &[u8] {
    match body.split_last() {
        Some((0, text)) => text,
        _ => &body[..memchr::memchr(0, body).unwrap_or(body.len())],
    }
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

/// Longest listed word + 1.
const MAX_LISTED: usize = 32;

/// For each length n, a bit per letter (a = bit 0) that starts a word of `list` with n letters.
const fn first_letters(list: &[&str]) -> [u32; MAX_LISTED] {
    let mut table = [0u32; MAX_LISTED];
    let mut i = 0;
    while i < list.len() {
        let w = list[i].as_bytes();
        assert!(w.len() < MAX_LISTED && w[0].is_ascii_lowercase());
        table[w.len()] |= 1 << (w[0] - b'a');
        i += 1;
    }
    table
}
const LEADING_FIRSTS: [u32; MAX_LISTED] = first_letters(LEADING);
const ANYWHERE_FIRSTS: [u32; MAX_LISTED] = first_letters(ANYWHERE);

/// Whether `sql` may leave session state behind. Works on the raw bytes: keywords are ASCII,
/// so any other byte is just not part of one (no UTF-8 decoding, no copy).
pub fn changes_session_state(sql: &[u8]) -> bool {
    quick_answer(sql).unwrap_or_else(|| full_scan(sql))
}

/// The answer for the common query, one statement, without walking it word by word: its
/// first word, then one pass over the places where an [`ANYWHERE`] word could stand, and `;`
/// ([`each_candidate`]). `None` when only [`full_scan`] can tell (more than one statement, a
/// leading comment, a listed substring somewhere).
fn quick_answer(sql: &[u8]) -> Option<bool> {
    let start = sql.iter().position(|b| CLASS[*b as usize] != SPACE)?;
    match CLASS[sql[start] as usize] {
        DASH | SLASH => return None,
        LETTER => {
            let len = sql[start..]
                .iter()
                .position(|b| !matches!(CLASS[*b as usize], LETTER | DIGIT))
                .unwrap_or(sql.len() - start);
            if listed(LEADING, &LEADING_FIRSTS, &sql[start..start + len]) {
                return Some(true);
            }
        }
        _ => {}
    }
    // One pass over the candidates, in order: every `;`, and every pair of an
    // [`ANYWHERE_PARTS`] part.
    let found = each_candidate(sql, |i| match sql[i] {
        // One statement: nothing but white space and semicolons after the first `;`.
        b';' => ControlFlow::Break(
            sql[i..]
                .iter()
                .all(|b| *b == b';' || b.is_ascii_whitespace())
                .then_some(false),
        ),
        _ if part_at(sql, i, &ANYWHERE_PARTS) => ControlFlow::Break(None),
        _ => ControlFlow::Continue(()),
    });
    match found {
        ControlFlow::Break(answer) => answer,
        ControlFlow::Continue(()) => Some(false),
    }
}

/// Calls `f` with each candidate position of `sql`, in order, until it breaks: every `;`, and
/// every place where the two bytes of an [`ANYWHERE_PARTS`] pair stand, in any case; a few
/// others fold onto them (ESC onto `;`, DEL onto `_`, and so on), which `f`'s exact look turns
/// away. `sql` is read sixteen positions at a time: full windows in place, and so is the last
/// one, of one to sixteen positions, when `sql` has at least sixteen bytes; a shorter `sql` is
/// read from a zero-padded copy. A plain loop calling `f` (no iterator adapters to unwind).
#[inline(always)]
fn each_candidate<B>(sql: &[u8], mut f: impl FnMut(usize) -> ControlFlow<B>) -> ControlFlow<B> {
    // A full window needs the byte after its last position.
    let full = sql.len().saturating_sub(1) / 16;
    for k in 0..full {
        let base = k * 16;
        each_bit(
            base,
            marks(window(sql, base), window(sql, base + 1)),
            &mut f,
        )?;
    }
    let base = full * 16;
    let n = sql.len();
    let last = if n >= 16 {
        // The last sixteen bytes, the byte after them a zero; positions before `base` were in
        // the last full window. (Fixed-size copies: no call to memcpy.)
        let mut next = [0u8; 16];
        next[..15].copy_from_slice(&sql[n - 15..]);
        marks(window(sql, n - 16), next) >> (base + 16 - n)
    } else {
        let mut padded = [0u8; 17];
        padded[..n].copy_from_slice(sql);
        marks(window(&padded, 0), window(&padded, 1))
    };
    each_bit(base, last, &mut f)
}

/// `f` for each set bit of `bits` (bit k: position base + k), lowest first, until it breaks.
#[inline(always)]
fn each_bit<B>(
    base: usize,
    mut bits: u32,
    f: &mut impl FnMut(usize) -> ControlFlow<B>,
) -> ControlFlow<B> {
    while bits != 0 {
        let i = base + bits.trailing_zeros() as usize;
        bits &= bits - 1;
        f(i)?;
    }
    ControlFlow::Continue(())
}

/// The sixteen bytes of `sql` from `at`.
#[inline(always)]
fn window(sql: &[u8], at: usize) -> [u8; 16] {
    <[u8; 16]>::try_from(&sql[at..at + 16]).expect("sixteen bytes")
}

/// A bit per candidate position (see [`each_candidate`]): `here` holds the bytes at the
/// window's sixteen positions, `next` the byte after each. Byte compares and a move mask on 16-byte
/// vectors (SSE2 on x86-64, NEON on aarch64, through `wide`'s safe types).
#[inline(always)]
fn marks(here: [u8; 16], next: [u8; 16]) -> u32 {
    // Bit 5 set: upper-case letters read as lower case, `_` as DEL; `;` has it already.
    let fold = u8x16::splat(0x20);
    let here = u8x16::new(here) | fold;
    let next = u8x16::new(next) | fold;
    let mut found = here.simd_eq(u8x16::splat(b';'));
    // A plain loop, unrolled over the constant parts.
    for p in &ANYWHERE_PARTS {
        let first = here.simd_eq(u8x16::splat(p.text[p.at] | 0x20));
        let second = next.simd_eq(u8x16::splat(p.text[p.at + 1] | 0x20));
        found |= first & second;
    }
    found.to_bitmask()
}

/// The whole scan: statement by statement, skipping literals, quoted identifiers and
/// comments.
fn full_scan(sql: &[u8]) -> bool {
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
                if (at_statement_start && listed(LEADING, &LEADING_FIRSTS, word))
                    || listed(ANYWHERE, &ANYWHERE_FIRSTS, word)
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

/// Whether `word` is one of `list` (whose first letters by length are `firsts`), ignoring
/// ASCII case. Most words of a query share no length and first letter with a listed one, and
/// are turned away by one table lookup.
fn listed(list: &[&str], firsts: &[u32; MAX_LISTED], word: &[u8]) -> bool {
    let first = word.first().map_or(0, u8::to_ascii_lowercase);
    if word.len() >= MAX_LISTED
        || !first.is_ascii_lowercase()
        || firsts[word.len()] & (1 << (first - b'a')) == 0
    {
        return false;
    }
    list.iter()
        .any(|k| k.len() == word.len() && k.as_bytes().eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_sql_stops_at_the_terminating_nul() {
        let table: [(&[u8], &[u8]); 6] = [
            (b"SELECT 1\0", b"SELECT 1"),
            (b"no terminator", b"no terminator"),
            (b"\0", b""),
            (b"", b""),
            // Invalid (PostgreSQL refuses it): all of it is looked at.
            (b"SELECT 1\0SET x = 1\0", b"SELECT 1\0SET x = 1"),
            (b"SELECT 1\0SET x = 1", b"SELECT 1"),
        ];
        for (body, want) in table {
            assert_eq!(query_sql(body), want);
        }
    }

    #[test]
    fn every_anywhere_word_contains_a_searched_part() {
        for word in ANYWHERE {
            assert!(
                ANYWHERE_PARTS
                    .iter()
                    .any(|p| word.as_bytes().windows(p.text.len()).any(|w| w == p.text)),
                "{word} would slip past the quick answer"
            );
        }
    }

    #[test]
    fn listed_words_are_found_in_any_case_and_no_others() {
        for (list, firsts) in [(LEADING, &LEADING_FIRSTS), (ANYWHERE, &ANYWHERE_FIRSTS)] {
            for word in list {
                assert!(listed(list, firsts, word.as_bytes()), "{word}");
                assert!(
                    listed(list, firsts, word.to_uppercase().as_bytes()),
                    "{word}"
                );
                // One letter changed or added: same length and first letter, or not.
                let mut other = word.as_bytes().to_vec();
                *other.last_mut().unwrap() = b'9';
                assert!(!listed(list, firsts, &other), "{word}");
                other.push(b'x');
                assert!(!listed(list, firsts, &other), "{word}");
            }
        }
        for word in ["", "_set", "select", "9set", "é", "pg_advisory_xact_lock"] {
            assert!(!listed(LEADING, &LEADING_FIRSTS, word.as_bytes()), "{word}");
            assert!(
                !listed(ANYWHERE, &ANYWHERE_FIRSTS, word.as_bytes()),
                "{word}"
            );
        }
    }

    /// The positions [`each_candidate`] gives, in its order.
    fn candidate_positions(sql: &[u8]) -> Vec<usize> {
        let mut found = Vec::new();
        let end: ControlFlow<()> = each_candidate(sql, |i| {
            found.push(i);
            ControlFlow::Continue(())
        });
        assert_eq!(end, ControlFlow::Continue(()));
        found
    }

    /// Every `;` and every pair of a part is a candidate, in order, in texts of every length
    /// around the sixteen-byte windows, in any case; no other position but those whose bytes
    /// fold onto them (ESC onto `;`, DEL onto `_`).
    #[test]
    fn candidates_are_every_semicolon_and_pair_in_order() {
        let alphabet: &[u8] = b";_mMpPcCyYnNx \x1b\x7f\xc3{:\x00";
        let fold = |b: u8| b | 0x20;
        let pairs: Vec<[u8; 2]> = ANYWHERE_PARTS
            .iter()
            .map(|p| [fold(p.text[p.at]), fold(p.text[p.at + 1])])
            .collect();
        for len in 0..=70 {
            for seed in 0..80usize {
                let text: Vec<u8> = (0..len)
                    .map(|i| alphabet[(i * 7 + seed * 13 + i * i * seed) % alphabet.len()])
                    .collect();
                let found = candidate_positions(&text);
                let want: Vec<usize> = (0..len)
                    .filter(|&i| {
                        fold(text[i]) == b';'
                            || text
                                .get(i + 1)
                                .is_some_and(|n| pairs.contains(&[fold(text[i]), fold(*n)]))
                    })
                    .collect();
                assert_eq!(found, want, "{text:?}");
            }
        }
        // The pairs themselves, where the vector compares find them.
        for (sql, at) in [
            ("create temp table", 9),
            ("SELECT SET_CONFIG('a', 'b', false)", 10),
            ("select pg_advisory_lock(1)", 17),
            ("SET SESSION_AUTHORIZATION x", 10),
        ] {
            assert_eq!(candidate_positions(sql.as_bytes()), [at], "{sql}");
        }
    }

    proptest::proptest! {
        /// DISCARD and DEALLOC are found in any case, wherever they are.
        #[test]
        fn may_drop_statements_finds_the_words_anywhere(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "DISCARD", "discard", "Dealloc", "deallocate", "d", "D", "disc", "ard", "x",
                    " ", ";", "'", "_", "é",
                ]),
                0..10,
            ),
        ) {
            let sql = pieces.concat();
            let lower = sql.to_ascii_lowercase();
            let naive = lower.contains("discard") || lower.contains("dealloc");
            proptest::prop_assert_eq!(may_drop_statements(sql.as_bytes()), naive, "{}", sql);
        }

        /// The quick answer, where it gives one, is the full scan's, for text made of the
        /// pieces that matter to either (keywords in any case, quotes, comments, semicolons).
        #[test]
        fn quick_answer_agrees_with_the_full_scan(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "SET", "set", "Reset", "LISTEN", "temp", "TEMPORARY", "Set_Config",
                    "pg_advisory_lock", "session_authorization", "select", "abalance", "x",
                    "1", " ", "\n", "(", ")", ";", "'", "\"", "--", "/*", "*/", "-", "/", "$$",
                    "é", "_", "=", "''", "P", "pg_temp_table_x",
                ]),
                0..12,
            ),
            upper in proptest::bool::ANY,
        ) {
            let mut sql = pieces.concat();
            if upper {
                sql = sql.to_uppercase();
            }
            if let Some(quick) = quick_answer(sql.as_bytes()) {
                proptest::prop_assert_eq!(quick, full_scan(sql.as_bytes()), "{}", sql);
            }
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
            // Longer texts, markers at both ends.
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
                false,
            ),
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 1; \n ;",
                false,
            ),
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 1; SET x = 1",
                true,
            ),
            (
                "INSERT INTO pgbench_history (tid) VALUES (1) RETURNING pg_advisory_lock(1)",
                true,
            ),
            ("SELECT 1234567; CREATE TEMPORARY TABLE t (a int)", true),
            (
                "SELECT col_a, col_b FROM some_table_with_a_long_name WHERE x_y = 1",
                false,
            ),
            ("SELECT 1 FROM t WHERE a = 'x;y'", false),
        ];
        for (sql, want) in table {
            assert_eq!(changes_session_state(sql.as_bytes()), want, "{sql}");
            assert_eq!(full_scan(sql.as_bytes()), want, "full scan: {sql}");
        }
    }
}
