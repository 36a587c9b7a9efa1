//! What each client prepared, and what each server connection holds.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use hashlink::LinkedHashSet;
use sha2::{Digest, Sha256};

/// Prefix of pooler-side statement names.
pub const NAME_PREFIX: &str = "pw_";

/// The pooler-side name of a statement: `pw_` and the first 128 bits of the SHA-256 of the
/// `Parse` body after the client's name (query text, parameter count and types). Equal
/// statements share a name; different ones do not collide (63-byte identifier limit kept).
pub fn server_name(parse_rest: &[u8]) -> Bytes {
    let digest = Sha256::digest(parse_rest);
    let mut name = BytesMut::with_capacity(NAME_PREFIX.len() + 32);
    name.put_slice(NAME_PREFIX.as_bytes());
    for b in &digest[..16] {
        name.put_slice(format!("{b:02x}").as_bytes());
    }
    name.freeze()
}

/// A statement a client prepared by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The pooler-side name.
    pub server_name: Bytes,
    /// The `Parse` body with the pooler-side name, ready to send to any server connection.
    pub parse_body: Bytes,
}

impl Statement {
    /// From a named `Parse` body: the client's name and the statement.
    pub fn from_parse(body: &Bytes) -> Option<(Bytes, Self)> {
        let nul = body.iter().position(|b| *b == 0)?;
        let client_name = body.slice(..nul);
        let rest = &body[nul + 1..];
        let server_name = server_name(rest);
        let mut parse = BytesMut::with_capacity(server_name.len() + 1 + rest.len());
        parse.put_slice(&server_name);
        parse.put_u8(0);
        parse.put_slice(rest);
        Some((
            client_name,
            Self {
                server_name,
                parse_body: parse.freeze(),
            },
        ))
    }
}

/// One client's named statements (client name → statement).
#[derive(Debug, Default)]
pub struct ClientStatements {
    map: HashMap<Bytes, Statement>,
}

impl ClientStatements {
    /// No statements.
    pub fn new() -> Self {
        Self::default()
    }

    /// The statement the client named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Statement> {
        self.map.get(name)
    }

    /// Remember (or replace) `name`; answers what it meant before.
    pub fn insert(&mut self, name: Bytes, statement: Statement) -> Option<Statement> {
        self.map.insert(name, statement)
    }

    /// Forget `name`; answers what it meant.
    pub fn take(&mut self, name: &[u8]) -> Option<Statement> {
        self.map.remove(name)
    }

    /// Forget `name`; true if it was known.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.map.remove(name).is_some()
    }

    /// Undo a Parse of `name` as `server_name` that failed or was skipped: while the name
    /// still means that statement, it means `previous` again (or nothing).
    pub fn undo_parse(&mut self, name: &Bytes, server_name: &[u8], previous: Option<Statement>) {
        if self
            .map
            .get(name)
            .is_some_and(|s| s.server_name == server_name)
        {
            match previous {
                Some(p) => {
                    self.map.insert(name.clone(), p);
                }
                None => {
                    self.map.remove(name);
                }
            }
        }
    }

    /// Undo a Close of `name` that the server skipped: the name means `statement` again,
    /// unless the client has used it for another since.
    pub fn undo_close(&mut self, name: Bytes, statement: Statement) {
        self.map.entry(name).or_insert(statement);
    }

    /// Forget everything (`DEALLOCATE ALL`).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// How many statements the client has.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the client has none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The pooler-side statements one server connection holds, least recently used first.
#[derive(Debug, Default)]
pub struct ServerStatements {
    lru: LinkedHashSet<Bytes>,
}

impl ServerStatements {
    /// None yet (a new connection, or one just reset with `DISCARD ALL`).
    pub fn new() -> Self {
        Self::default()
    }

    /// True (and now the most recently used) when the connection holds `name`.
    pub fn touch(&mut self, name: &Bytes) -> bool {
        self.lru.to_back(name)
    }

    /// Record `name` as held; returns what must be closed first to stay within `limit`
    /// (oldest first).
    pub fn insert(&mut self, name: Bytes, limit: usize) -> Vec<Bytes> {
        let mut evicted = Vec::new();
        while self.lru.len() >= limit.max(1) {
            match self.lru.pop_front() {
                Some(old) => evicted.push(old),
                None => break,
            }
        }
        self.lru.insert(name);
        evicted
    }

    /// Forget `name` (its Parse failed).
    pub fn remove(&mut self, name: &[u8]) {
        self.lru.remove(name);
    }

    /// `name` is held after all (its Close was skipped): put it back as the oldest.
    pub fn restore(&mut self, name: Bytes) {
        if !self.lru.contains(&name) {
            self.lru.insert(name.clone());
            self.lru.to_front(&name);
        }
    }

    /// The connection was reset: it holds nothing.
    pub fn clear(&mut self) {
        self.lru.clear();
    }

    /// How many statements the connection holds.
    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    /// The held names, least recently used first.
    pub fn names(&self) -> impl Iterator<Item = &Bytes> {
        self.lru.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn names_follow_text_and_types_only() {
        let cases: [(&[u8], &[u8], bool); 4] = [
            (b"select 1\0\0\0", b"select 1\0\0\0", true),
            (b"select 1\0\0\0", b"select 2\0\0\0", false),
            // Same text, different parameter types.
            (
                b"select $1\0\0\x01\0\0\0\x17",
                b"select $1\0\0\x01\0\0\0\x19",
                false,
            ),
            (
                b"select $1\0\0\x01\0\0\0\x17",
                b"select $1\0\0\x01\0\0\0\x17",
                true,
            ),
        ];
        for (x, y, same) in cases {
            assert_eq!(server_name(x) == server_name(y), same, "{x:?} {y:?}");
        }
        let n = server_name(b"select 1\0\0\0");
        assert_eq!(n.len(), 35);
        assert!(n.starts_with(b"pw_"));
    }

    #[test]
    fn parse_bodies_are_renamed() {
        let body = Bytes::from_static(b"s1\0select $1\0\0\x01\0\0\0\x17");
        let (client, st) = Statement::from_parse(&body).unwrap();
        assert_eq!(client, b("s1"));
        assert!(st.parse_body.starts_with(&st.server_name));
        assert_eq!(
            &st.parse_body[st.server_name.len()..],
            b"\0select $1\0\0\x01\0\0\0\x17"
        );
        assert_eq!(Statement::from_parse(&Bytes::from_static(b"no-nul")), None);
    }

    #[test]
    fn server_cache_is_lru_bounded() {
        // (operation, name, limit, evicted, held afterwards oldest first)
        let mut s = ServerStatements::new();
        type Step<'a> = (&'a str, &'a str, usize, &'a [&'a str], &'a [&'a str]);
        let steps: [Step<'_>; 7] = [
            ("insert", "a", 2, &[], &["a"]),
            ("insert", "b", 2, &[], &["a", "b"]),
            ("touch", "a", 2, &[], &["b", "a"]),
            ("insert", "c", 2, &["b"], &["a", "c"]),
            // A lowered limit (reload) evicts down to it.
            ("insert", "d", 1, &["a", "c"], &["d"]),
            ("restore", "c", 1, &[], &["c", "d"]),
            ("remove", "d", 1, &[], &["c"]),
        ];
        for (op, name, limit, evicted, held) in steps {
            let got: Vec<Bytes> = match op {
                "insert" => s.insert(b(name), limit),
                "touch" => {
                    assert!(s.touch(&b(name)));
                    vec![]
                }
                "restore" => {
                    s.restore(b(name));
                    vec![]
                }
                _ => {
                    s.remove(name.as_bytes());
                    vec![]
                }
            };
            let want: Vec<Bytes> = evicted.iter().map(|e| b(e)).collect();
            assert_eq!(got, want, "{op} {name}");
            let now: Vec<&Bytes> = s.names().collect();
            let want_held: Vec<Bytes> = held.iter().map(|e| b(e)).collect();
            assert_eq!(now, want_held.iter().collect::<Vec<_>>(), "{op} {name}");
        }
        assert!(!s.touch(&b("zz")));
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn client_names_are_undone_only_while_unchanged() {
        let mut c = ClientStatements::new();
        let (name, st) = Statement::from_parse(&Bytes::from_static(b"s\0select 1\0\0\0")).unwrap();
        c.insert(name.clone(), st.clone());
        c.undo_parse(&name, b"pw_other", None);
        assert_eq!(c.len(), 1);
        c.undo_parse(&name, &st.server_name, None);
        assert!(c.is_empty());
        // A failed re-Parse of a name brings the earlier statement back.
        let (_, other) = Statement::from_parse(&Bytes::from_static(b"s\0select 2\0\0\0")).unwrap();
        c.insert(name.clone(), st.clone());
        assert_eq!(c.insert(name.clone(), other.clone()), Some(st.clone()));
        c.undo_parse(&name, &other.server_name, Some(st.clone()));
        assert_eq!(c.get(b"s"), Some(&st));
        // A skipped Close gives the name back, unless it was reused.
        let taken = c.take(b"s").unwrap();
        c.undo_close(name.clone(), taken);
        assert_eq!(c.get(b"s"), Some(&st));
        c.insert(name.clone(), other.clone());
        c.undo_close(name.clone(), st.clone());
        assert_eq!(c.get(b"s"), Some(&other));
    }
}
