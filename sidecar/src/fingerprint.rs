//! SQL fingerprints for the slow-query log: every literal becomes `?`, so values, passwords
//! and other data never reach a log line (CONTRACT §2.6).
//!
//! ```text
//!  SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'x' -- who
//!    ─▶ SELECT * FROM t WHERE id IN (?) AND name = ?
//! ```
//!
//! Replaced: string constants (`'...'` with `''`, `E'...'` with backslash escapes, `B''`,
//! `X''`, `N''`, `U&''`), dollar-quoted strings (`$$...$$`, `$tag$...$tag$`) and numbers.
//! Kept: keywords (`TRUE`, `NULL`, ...), identifiers including `"quoted"` ones, and bind
//! parameters (`$1`). Comments are removed, whitespace collapsed, and an `IN` list made only of
//! literals collapses to `IN (?)`. An unterminated literal swallows the rest of the text.
//! Strings are read as with `standard_conforming_strings = on` (the default since 9.1).
//!
//! [`slow_query`] is the one way the proxy logs anything about a query.

use std::time::Duration;

use crate::metrics::PoolMetrics;

/// Longest fingerprint logged, in bytes; longer ones are cut (after normalisation).
pub const MAX_FINGERPRINT: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok<'a> {
    /// A keyword or identifier (kept).
    Word(&'a str),
    /// A `"quoted"` identifier (kept).
    Quoted(&'a str),
    /// A bind parameter `$n` (kept).
    Param(&'a str),
    /// Any literal (replaced by `?`).
    Literal,
    /// Operators and punctuation (kept).
    Punct(&'a str),
    /// Whitespace or a comment.
    Space,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// End of a `'...'` string starting at `start` (the quote); `backslash`: `\` escapes.
fn end_of_string(b: &[u8], start: usize, backslash: bool) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if backslash => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// `$tag$` at `i` (tag may be empty): the tag's end (after the second `$`).
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|&c| is_ident_start(c)) {
        j += 1;
        while b
            .get(j)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
        {
            j += 1;
        }
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

fn tokenize(sql: &str) -> Vec<Tok<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        // Whitespace and comments.
        if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push(Tok::Space);
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            out.push(Tok::Space);
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // Block comments nest in PostgreSQL.
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(Tok::Space);
            continue;
        }
        // Strings, with their prefixes.
        if c == b'\'' {
            i = end_of_string(b, i, false);
            out.push(Tok::Literal);
            continue;
        }
        if matches!(c, b'e' | b'E') && b.get(i + 1) == Some(&b'\'') {
            i = end_of_string(b, i + 1, true);
            out.push(Tok::Literal);
            continue;
        }
        if matches!(c, b'b' | b'B' | b'x' | b'X' | b'n' | b'N') && b.get(i + 1) == Some(&b'\'') {
            i = end_of_string(b, i + 1, false);
            out.push(Tok::Literal);
            continue;
        }
        if matches!(c, b'u' | b'U') && b.get(i + 1) == Some(&b'&') && b.get(i + 2) == Some(&b'\'') {
            i = end_of_string(b, i + 2, false);
            out.push(Tok::Literal);
            continue;
        }
        // Quoted identifiers (and U&"..." ones).
        if c == b'"' {
            i += 1;
            while i < b.len() {
                if b[i] == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            out.push(Tok::Quoted(&sql[start..i]));
            continue;
        }
        // Parameters and dollar quotes.
        if c == b'$' {
            if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(Tok::Param(&sql[start..i]));
                continue;
            }
            if let Some(body) = dollar_tag(b, i) {
                let tag = &b[i..body];
                let mut j = body;
                i = b.len();
                while j + tag.len() <= b.len() {
                    if &b[j..j + tag.len()] == tag {
                        i = j + tag.len();
                        break;
                    }
                    j += 1;
                }
                out.push(Tok::Literal);
                continue;
            }
            i += 1;
            out.push(Tok::Punct(&sql[start..i]));
            continue;
        }
        // Numbers: 42, 3.14, .5, 1e-3, 0x1F, 1_000.
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            i += 1;
            while i < b.len() {
                let d = b[i];
                let exp_sign = matches!(d, b'+' | b'-') && matches!(b[i - 1], b'e' | b'E');
                if d.is_ascii_alphanumeric() || d == b'.' || d == b'_' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Tok::Literal);
            continue;
        }
        // Keywords and identifiers.
        if is_ident_start(c) {
            while i < b.len() && is_ident_char(b[i]) {
                i += 1;
            }
            // Keep multi-byte characters whole.
            while !sql.is_char_boundary(i) {
                i += 1;
            }
            out.push(Tok::Word(&sql[start..i]));
            continue;
        }
        // One punctuation character (multi-byte safe).
        i += 1;
        while !sql.is_char_boundary(i) {
            i += 1;
        }
        out.push(Tok::Punct(&sql[start..i]));
    }
    out
}

/// `IN ( lit , lit , ... )` → `IN (?)`, for lists made only of (signed) literals.
fn collapse_in_lists(toks: Vec<Tok<'_>>) -> Vec<Tok<'_>> {
    let mut out: Vec<Tok<'_>> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if let Tok::Word(w) = toks[i]
            && w.eq_ignore_ascii_case("in")
            && let Some(end) = literal_list_end(&toks, i + 1)
        {
            out.extend([
                Tok::Word(w),
                Tok::Space,
                Tok::Punct("("),
                Tok::Literal,
                Tok::Punct(")"),
            ]);
            i = end;
            continue;
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// If `( lit, lit, ... )` (spaces allowed) starts at `i`, the index after `)`.
fn literal_list_end(toks: &[Tok<'_>], mut i: usize) -> Option<usize> {
    let skip = |toks: &[Tok<'_>], mut i: usize| {
        while toks.get(i) == Some(&Tok::Space) {
            i += 1;
        }
        i
    };
    i = skip(toks, i);
    if toks.get(i) != Some(&Tok::Punct("(")) {
        return None;
    }
    i += 1;
    loop {
        i = skip(toks, i);
        if matches!(toks.get(i), Some(Tok::Punct("-" | "+"))) {
            i = skip(toks, i + 1);
        }
        if toks.get(i) != Some(&Tok::Literal) {
            return None;
        }
        i = skip(toks, i + 1);
        match toks.get(i) {
            Some(Tok::Punct(",")) => i += 1,
            Some(Tok::Punct(")")) => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The fingerprint of `sql`: literals replaced by `?`, comments removed, whitespace collapsed.
pub fn fingerprint(sql: &str) -> String {
    let toks = collapse_in_lists(tokenize(sql));
    let mut out = String::with_capacity(sql.len().min(MAX_FINGERPRINT));
    let mut pending_space = false;
    for t in toks {
        let text = match t {
            Tok::Space => {
                pending_space = true;
                continue;
            }
            Tok::Literal => "?",
            Tok::Word(s) | Tok::Quoted(s) | Tok::Param(s) | Tok::Punct(s) => s,
        };
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push_str(text);
    }
    if out.len() > MAX_FINGERPRINT {
        let mut cut = MAX_FINGERPRINT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Log one slow query: ONE structured line (target `poolwarden::slow_query`) with the
/// database, `duration_ms` and the fingerprint. The only way the proxy logs a query: never log
/// query text, values or bind parameters any other way.
pub fn slow_query(database: &str, duration: Duration, sql: &str) {
    let fingerprint = fingerprint(sql);
    tracing::warn!(
        target: "poolwarden::slow_query",
        database,
        duration_ms = duration.as_millis() as u64,
        fingerprint = %fingerprint,
        "slow query"
    );
}

/// Account for one finished query: `poolwarden_query_duration_seconds`, and when it took at
/// least `threshold` (`slow_query_threshold`), `poolwarden_slow_queries_total` and one
/// [`slow_query`] line. `sql` is only read for a slow query.
pub fn record_query(metrics: &PoolMetrics, threshold: Duration, took: Duration, sql: &str) {
    metrics.observe_query(took);
    if took >= threshold {
        metrics.slow_query();
        slow_query(metrics.database(), took, sql);
    }
}

#[cfg(test)]
mod tests;
