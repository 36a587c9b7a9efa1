//! Recognising a simple query that is exactly one `DEALLOCATE`.

/// What a `DEALLOCATE` names.
#[derive(Debug, PartialEq, Eq)]
pub enum Deallocate {
    /// `DEALLOCATE [PREPARE] ALL`
    All,
    /// `DEALLOCATE [PREPARE] name` (folded to lower case unless quoted, as PostgreSQL does).
    Name(Vec<u8>),
}

/// The `DEALLOCATE` that `sql` consists of (one statement, an optional `;`, no comments), or
/// `None` for anything else, which then goes to the server unchanged.
pub fn parse(sql: &[u8]) -> Option<Deallocate> {
    // Nearly every query is something else: tell by its first ten letters, without building
    // a token.
    let start = sql.iter().position(|c| !c.is_ascii_whitespace())?;
    if !sql[start..]
        .get(..10)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"deallocate"))
    {
        return None;
    }
    let mut words = Words::new(sql);
    if !words.keyword(b"deallocate") {
        return None;
    }
    let mut next = words.token()?;
    if next.eq_ignore_ascii_case(b"prepare") && !words.quoted_last {
        next = words.token()?;
    }
    let target = if next.eq_ignore_ascii_case(b"all") && !words.quoted_last {
        Deallocate::All
    } else if words.quoted_last {
        Deallocate::Name(next)
    } else {
        Deallocate::Name(next.to_ascii_lowercase())
    };
    words.skip_space();
    if words.peek() == Some(b';') {
        words.at += 1;
        words.skip_space();
    }
    (words.at == sql.len()).then_some(target)
}

struct Words<'a> {
    s: &'a [u8],
    at: usize,
    quoted_last: bool,
}

impl Words<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn keyword(&mut self, kw: &[u8]) -> bool {
        match self.token() {
            Some(t) => !self.quoted_last && t.eq_ignore_ascii_case(kw),
            None => false,
        }
    }

    /// The next identifier or keyword; `None` on anything else (comments, operators).
    fn token(&mut self) -> Option<Vec<u8>> {
        self.skip_space();
        self.quoted_last = false;
        match self.peek()? {
            b'"' => {
                self.at += 1;
                let mut out = Vec::new();
                loop {
                    match self.peek()? {
                        b'"' if self.s.get(self.at + 1) == Some(&b'"') => {
                            out.push(b'"');
                            self.at += 2;
                        }
                        b'"' => {
                            self.at += 1;
                            break;
                        }
                        c => {
                            out.push(c);
                            self.at += 1;
                        }
                    }
                }
                self.quoted_last = true;
                (!out.is_empty()).then_some(out)
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = self.at;
                while self.peek().is_some_and(|c| {
                    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
                }) {
                    self.at += 1;
                }
                Some(self.s[start..self.at].to_vec())
            }
            _ => None,
        }
    }
}

impl<'a> Words<'a> {
    fn new(s: &'a [u8]) -> Self {
        Self {
            s,
            at: 0,
            quoted_last: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let name = |s: &str| Some(Deallocate::Name(s.as_bytes().to_vec()));
        let cases: [(&str, Option<Deallocate>); 14] = [
            ("DEALLOCATE ALL", Some(Deallocate::All)),
            ("deallocate all;", Some(Deallocate::All)),
            ("  DEALLOCATE PREPARE ALL ;  ", Some(Deallocate::All)),
            ("DEALLOCATE _pg3_0", name("_pg3_0")),
            ("DEALLOCATE PREPARE S_1", name("s_1")),
            ("DEALLOCATE \"S_1\"", name("S_1")),
            ("DEALLOCATE \"all\"", name("all")),
            ("DEALLOCATE \"a\"\"b\"", name("a\"b")),
            ("DEALLOCATE prepare", None),
            ("DEALLOCATE", None),
            ("DEALLOCATE a; SELECT 1", None),
            ("DEALLOCATE a -- comment", None),
            ("SELECT 'DEALLOCATE ALL'", None),
            ("DEALLOCATE \"\"", None),
        ];
        for (sql, want) in cases {
            assert_eq!(parse(sql.as_bytes()), want, "{sql}");
        }
    }
}
