//! The rewriter between a client and a small model of a PostgreSQL backend's extended
//! protocol: what the client sees must be what a backend of its own would have said.

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::frame::{decode, is_frontend_tag};

/// A backend's extended protocol, reduced to statements: Parse/Bind/Describe/Close/Execute/
/// Sync/Query, an error for a query containing "bad", for an unknown statement and for a
/// duplicate name, and skipping to Sync after an error.
#[derive(Default)]
struct Backend {
    statements: HashSet<Vec<u8>>,
    skipping: bool,
    parses: usize,
    /// Every Parse fails (the statement cannot be prepared on this connection).
    refuse_parse: bool,
}

fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    let i = b.iter().position(|c| *c == 0).unwrap();
    (&b[..i], &b[i + 1..])
}

fn reply(tag: u8) -> Frame {
    Frame {
        tag,
        body: Bytes::new(),
    }
}

impl Backend {
    fn error(&mut self, replies: &mut Vec<Frame>) {
        replies.push(reply(b'E'));
        self.skipping = true;
    }

    fn answer(&mut self, wire: &mut BytesMut) -> Vec<Frame> {
        let mut replies = Vec::new();
        while let Some(f) = decode(wire, 1 << 20, is_frontend_tag).unwrap() {
            if self.skipping && f.tag != b'S' {
                continue;
            }
            match f.tag {
                b'P' => {
                    let (name, rest) = cstr(&f.body);
                    let (sql, _) = cstr(rest);
                    if self.refuse_parse
                        || sql.windows(3).any(|w| w == b"bad")
                        || (!name.is_empty() && self.statements.contains(name))
                    {
                        self.error(&mut replies);
                    } else {
                        self.parses += 1;
                        if !name.is_empty() {
                            self.statements.insert(name.to_vec());
                        }
                        replies.push(reply(b'1'));
                    }
                }
                b'B' => {
                    let (_, rest) = cstr(&f.body);
                    let (stmt, _) = cstr(rest);
                    if stmt.is_empty() || self.statements.contains(stmt) {
                        replies.push(reply(b'2'));
                    } else {
                        self.error(&mut replies);
                    }
                }
                b'D' => {
                    let (name, _) = cstr(&f.body[1..]);
                    if f.body[0] == b'S' && !self.statements.contains(name) {
                        self.error(&mut replies);
                    } else {
                        replies.push(reply(b't'));
                        replies.push(reply(b'n'));
                    }
                }
                b'C' => {
                    let (name, _) = cstr(&f.body[1..]);
                    self.statements.remove(name);
                    replies.push(reply(b'3'));
                }
                b'E' => replies.push(reply(b'C')),
                b'S' => {
                    self.skipping = false;
                    replies.push(reply(b'Z'));
                }
                b'Q' => {
                    let (sql, _) = cstr(&f.body);
                    if sql.is_empty() {
                        replies.push(reply(b'I'));
                    } else if sql.windows(3).any(|w| w == b"bad") {
                        replies.push(reply(b'E'));
                    } else {
                        replies.push(reply(b'C'));
                    }
                    replies.push(reply(b'Z'));
                }
                _ => {}
            }
        }
        replies
    }
}

fn frame(tag: u8, parts: &[&[u8]]) -> Frame {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(p);
    }
    Frame {
        tag,
        body: Bytes::from(body),
    }
}
fn parse(name: &str, sql: &str) -> Frame {
    frame(b'P', &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"])
}
fn bind(stmt: &str) -> Frame {
    frame(b'B', &[b"\0", stmt.as_bytes(), b"\0\0\0\0\0\0\0"])
}
fn describe(stmt: &str) -> Frame {
    frame(b'D', &[b"S", stmt.as_bytes(), b"\0"])
}
fn close(stmt: &str) -> Frame {
    frame(b'C', &[b"S", stmt.as_bytes(), b"\0"])
}
fn execute() -> Frame {
    frame(b'E', &[b"\0\0\0\0\0"])
}
fn sync() -> Frame {
    frame(b'S', &[])
}
fn query(sql: &str) -> Frame {
    frame(b'Q', &[sql.as_bytes(), b"\0"])
}

/// One server connection as the relay sees it.
struct Conn {
    backend: Backend,
    cache: ServerStatements,
}

impl Conn {
    fn new() -> Self {
        Self {
            backend: Backend::default(),
            cache: ServerStatements::new(),
        }
    }
}

/// Run one batch from a client through a rewriter on `conn`; the tags the client receives.
fn run(
    rw: &mut Rewriter,
    client: &mut ClientStatements,
    conn: &mut Conn,
    batch: Vec<Frame>,
) -> String {
    let mut wire = BytesMut::new();
    for f in batch {
        rw.client_message(f, client, &mut conn.cache, &mut wire);
    }
    let mut seen = String::new();
    for r in conn.backend.answer(&mut wire) {
        match rw.server_message(r.tag, client, &mut conn.cache) {
            ServerAction::Forward => seen.push(r.tag as char),
            ServerAction::Swallow => {}
            ServerAction::Replace(f) => seen.push(f.tag as char),
        }
    }
    assert!(rw.is_idle(), "expectations left after {seen}");
    // The cache never claims a statement the backend lacks.
    for name in conn.cache.names() {
        assert!(
            conn.backend.statements.contains(name.as_ref()),
            "phantom {name:?}"
        );
    }
    seen
}

#[test]
fn a_statement_follows_the_client_to_another_connection() {
    let mut client = ClientStatements::new();
    let (mut x, mut y) = (Conn::new(), Conn::new());
    let mut rw = Rewriter::new(100);
    let seen = run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("s1", "select $1"), bind("s1"), execute(), sync()],
    );
    assert_eq!(seen, "12CZ");
    // Next transaction, another connection: re-prepared there, unseen by the client.
    let seen = run(
        &mut rw,
        &mut client,
        &mut y,
        vec![bind("s1"), execute(), sync()],
    );
    assert_eq!(seen, "2CZ");
    assert_eq!(y.backend.parses, 1);
    // Describe on a third, too.
    let mut z = Conn::new();
    let seen = run(&mut rw, &mut client, &mut z, vec![describe("s1"), sync()]);
    assert_eq!(seen, "tnZ");
    assert_eq!(
        rw.take_stats(),
        Stats {
            hits: 1,
            misses: 3,
            evictions: 0
        }
    );
}

#[test]
fn clients_share_one_server_statement_and_names_never_collide() {
    let (mut a, mut b) = (ClientStatements::new(), ClientStatements::new());
    let mut x = Conn::new();
    let mut rw = Rewriter::new(100);
    // Both call theirs "s1"; same text shares, different text does not collide.
    let one = vec![parse("s1", "select 1"), sync()];
    assert_eq!(run(&mut rw, &mut a, &mut x, one.clone()), "1Z");
    assert_eq!(run(&mut rw, &mut b, &mut x, one), "1Z");
    assert_eq!(x.backend.parses, 1, "the second Parse was a hit");
    let two = vec![parse("s2", "select 2"), sync()];
    assert_eq!(run(&mut rw, &mut b, &mut x, two), "1Z");
    let mut c = ClientStatements::new();
    let three = vec![parse("s2", "select 3"), sync()];
    assert_eq!(run(&mut rw, &mut c, &mut x, three), "1Z");
    assert_eq!(x.backend.statements.len(), 3);
    // A name the client never prepared is the server's own error.
    let unknown = vec![bind("s9"), execute(), sync()];
    assert_eq!(run(&mut rw, &mut c, &mut x, unknown), "EZ");
}

#[test]
fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
    let mut client = ClientStatements::new();
    let mut x = Conn::new();
    let mut rw = Rewriter::new(2);
    for (i, sql) in ["select 1", "select 2", "select 3"].iter().enumerate() {
        let name = format!("s{i}");
        let seen = run(
            &mut rw,
            &mut client,
            &mut x,
            vec![parse(&name, sql), bind(&name), execute(), sync()],
        );
        assert_eq!(seen, "12CZ");
        assert!(x.backend.statements.len() <= 2);
    }
    assert_eq!(rw.take_stats().evictions, 1);
    // s0 was evicted from the server; the client still has it.
    let seen = run(
        &mut rw,
        &mut client,
        &mut x,
        vec![bind("s0"), execute(), sync()],
    );
    assert_eq!(seen, "2CZ");
    assert_eq!(x.cache.len(), 2);
}

#[test]
fn an_error_in_a_pipeline_leaves_no_phantom_statements() {
    let mut client = ClientStatements::new();
    let (mut x, mut y) = (Conn::new(), Conn::new());
    let mut rw = Rewriter::new(100);
    run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("good", "select 1"), sync()],
    );
    // On y: a failing Parse first, then a Bind of "good" that needs an injected Parse which
    // the server skips, and a Parse of "later" that is skipped too.
    let seen = run(
        &mut rw,
        &mut client,
        &mut y,
        vec![
            parse("broken", "bad sql"),
            bind("good"),
            execute(),
            parse("later", "select 2"),
            sync(),
        ],
    );
    assert_eq!(seen, "EZ");
    assert!(y.cache.is_empty(), "skipped Parses are not held");
    assert!(client.get(b"broken").is_none() && client.get(b"later").is_none());
    // Everything works afterwards on the same connection.
    let seen = run(
        &mut rw,
        &mut client,
        &mut y,
        vec![bind("good"), execute(), sync()],
    );
    assert_eq!(seen, "2CZ");
}

#[test]
fn a_failing_injected_parse_is_the_clients_error_and_is_not_held() {
    let mut client = ClientStatements::new();
    let mut x = Conn::new();
    let mut rw = Rewriter::new(100);
    run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("s", "select 1"), sync()],
    );
    // On y the statement cannot be prepared (say a table it reads is missing there): the
    // client's Bind fails with the server's error, nothing is cached.
    let mut y = Conn::new();
    y.backend.refuse_parse = true;
    let seen = run(
        &mut rw,
        &mut client,
        &mut y,
        vec![bind("s"), execute(), sync()],
    );
    assert_eq!(seen, "EZ");
    assert!(y.cache.is_empty());
    assert!(client.get(b"s").is_some(), "the client's name stays");
}

#[test]
fn a_skipped_eviction_keeps_the_statement_held() {
    let mut client = ClientStatements::new();
    let mut x = Conn::new();
    let mut rw = Rewriter::new(1);
    run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("a", "select 1"), sync()],
    );
    // The error comes first, so the eviction Close of "a" and the Parse of "b" are skipped.
    let seen = run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("", "bad"), parse("b", "select 2"), sync()],
    );
    assert_eq!(seen, "EZ");
    // "a" is still on the server and in the cache; "b" in neither.
    let seen = run(
        &mut rw,
        &mut client,
        &mut x,
        vec![bind("a"), execute(), sync()],
    );
    assert_eq!(seen, "2CZ");
    assert_eq!(x.backend.parses, 1);
}

#[test]
fn close_and_deallocate_forget_only_the_clients_names() {
    let mut client = ClientStatements::new();
    let mut x = Conn::new();
    let mut rw = Rewriter::new(100);
    run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("s", "select 1"), parse("t", "select 2"), sync()],
    );
    // Close answers CloseComplete; the name can then be prepared with other text.
    let seen = run(
        &mut rw,
        &mut client,
        &mut x,
        vec![close("s"), parse("s", "select 3"), sync()],
    );
    assert_eq!(seen, "31Z");
    assert_eq!(
        x.backend.statements.len(),
        3,
        "the shared statement stays for others"
    );
    // Closing an unknown statement is no error, as in PostgreSQL.
    assert_eq!(
        run(&mut rw, &mut client, &mut x, vec![close("nope"), sync()]),
        "3Z"
    );
    // DEALLOCATE name: the command tag comes back with the server's ReadyForQuery.
    let mut out = BytesMut::new();
    rw.client_message(query("DEALLOCATE t"), &mut client, &mut x.cache, &mut out);
    let replies = x.backend.answer(&mut out);
    let actions: Vec<ServerAction> = replies
        .iter()
        .map(|r| rw.server_message(r.tag, &mut client, &mut x.cache))
        .collect();
    assert_eq!(
        actions,
        [
            ServerAction::Replace(Frame {
                tag: b'C',
                body: Bytes::from_static(b"DEALLOCATE\0")
            }),
            ServerAction::Forward
        ]
    );
    assert!(client.get(b"t").is_none() && client.get(b"s").is_some());
    // An unknown name goes to the server, which answers with its error.
    let unknown = vec![query("DEALLOCATE bad_name")];
    assert_eq!(run(&mut rw, &mut client, &mut x, unknown), "EZ");
    let all = vec![query("DEALLOCATE ALL")];
    assert_eq!(run(&mut rw, &mut client, &mut x, all), "CZ");
    assert!(client.is_empty());
    assert_eq!(
        run(&mut rw, &mut client, &mut x, vec![bind("s"), sync()]),
        "EZ"
    );
}

#[test]
fn a_parse_the_server_already_holds_is_answered_in_order() {
    let mut client = ClientStatements::new();
    let mut x = Conn::new();
    let mut rw = Rewriter::new(100);
    run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("s", "select 1"), sync()],
    );
    let mut other = ClientStatements::new();
    let seen = run(
        &mut rw,
        &mut other,
        &mut x,
        vec![
            parse("", "select 0"),
            bind(""),
            parse("mine", "select 1"),
            bind("mine"),
            execute(),
            sync(),
        ],
    );
    assert_eq!(seen, "1212CZ");
    assert_eq!(x.backend.parses, 2);
}

#[test]
fn a_clients_own_discard_all_is_survived() {
    let mut client = ClientStatements::new();
    let mut x = Conn::new();
    let mut rw = Rewriter::new(100);
    run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("s", "select 1"), sync()],
    );
    // DISCARD ALL through SQL: the model keeps its statements (as if the DISCARD failed),
    // the cache forgets them; the next use closes the name first, so no "already exists".
    assert_eq!(
        run(&mut rw, &mut client, &mut x, vec![query("discard all")]),
        "CZ"
    );
    assert!(x.cache.is_empty());
    let seen = run(
        &mut rw,
        &mut client,
        &mut x,
        vec![bind("s"), execute(), sync()],
    );
    assert_eq!(seen, "2CZ");
    // And when it did drop them, the statement is prepared again.
    x.backend.statements.clear();
    run(&mut rw, &mut client, &mut x, vec![query("DISCARD ALL")]);
    let seen = run(
        &mut rw,
        &mut client,
        &mut x,
        vec![bind("s"), execute(), sync()],
    );
    assert_eq!(seen, "2CZ");
}

#[test]
fn a_close_the_server_skipped_keeps_the_name() {
    let mut client = ClientStatements::new();
    let mut x = Conn::new();
    let mut rw = Rewriter::new(100);
    run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("s", "select 1"), sync()],
    );
    // An error first: the server skips the Close, so the name must still work after.
    let seen = run(
        &mut rw,
        &mut client,
        &mut x,
        vec![parse("", "bad"), close("s"), sync()],
    );
    assert_eq!(seen, "EZ");
    let seen = run(
        &mut rw,
        &mut client,
        &mut x,
        vec![bind("s"), execute(), sync()],
    );
    assert_eq!(seen, "2CZ");
}

/// SQL that may drop prepared statements: any DISCARD or DEALLOC..., in any case, anywhere.
#[test]
fn statements_may_be_dropped_by_discard_or_deallocate_anywhere() {
    let table: [(&[u8], bool); 7] = [
        (b"DISCARD ALL", true),
        (b"select 1; deallocate prepare x", true),
        (b"DO $$ BEGIN EXECUTE 'Dealloc' || 'ate all'; END $$", true),
        (b"SELECT d FROM dd WHERE ddd = 'discar'", false),
        (b"SELECT 1", false),
        (b"discar", false),
        (b"", false),
    ];
    for (sql, want) in table {
        assert_eq!(
            super::may_drop_statements(sql),
            want,
            "{}",
            String::from_utf8_lossy(sql)
        );
    }
}
