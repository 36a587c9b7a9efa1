//! Rewriting one transaction's messages so a client's named statements work on whichever
//! server connection serves it, and handing the server's replies back in the order and shape
//! the client expects.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::deallocate::{self, Deallocate};
use super::statements::{ClientStatements, ServerStatements, Statement};
use crate::protocol::frame::Frame;
use crate::protocol::sql::may_drop_statements;

/// A name no statement has (pooler names are `pw_` and 32 hex digits): closing it is a no-op
/// the server answers with CloseComplete, in order, standing in for a reply made here.
const NO_STATEMENT: &[u8] = b"pw_none";

/// Prepared-statement counts for `poolwarden_prepared_statements_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The server connection already held the statement.
    pub hits: u64,
    /// It did not: a Parse went to the server.
    pub misses: u64,
    /// Statements closed on the server to stay within the limit.
    pub evictions: u64,
}

/// What to do with a message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerAction {
    /// Pass it to the client as it is.
    Forward,
    /// Drop it: the reply to a message the pooler added.
    Swallow,
    /// Send this instead.
    Replace(Frame),
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Forward,
    Swallow,
    AsParseComplete,
}

/// A ParseComplete or CloseComplete the server owes, and what to undo if it never comes
/// (an earlier message failed and the server skipped to Sync).
#[derive(Debug)]
struct Expect {
    reply: Reply,
    /// Recorded as held when sent; forget it if the Parse was skipped or failed.
    added: Option<Bytes>,
    /// Dropped from the cache when its Close was sent; still held if the Close was skipped.
    evicted: Option<Bytes>,
    /// The client's name for a Parse, undone if that Parse failed: (client name, server
    /// name, what the name meant before).
    client_name: Option<(Bytes, Bytes, Option<Statement>)>,
    /// A client's Close of its name, undone if the server skipped it.
    closed: Option<(Bytes, Statement)>,
}

impl Expect {
    fn reply(reply: Reply) -> Self {
        Self {
            reply,
            added: None,
            evicted: None,
            client_name: None,
            closed: None,
        }
    }
}

/// Messages up to one ReadyForQuery (a Sync, a simple Query or a FunctionCall).
#[derive(Debug, Default)]
struct Segment {
    expects: VecDeque<Expect>,
    /// A DEALLOCATE answered here: the server's EmptyQueryResponse becomes this command tag.
    empty_query_tag: Option<&'static str>,
    /// Closed by the client's Sync/Query/FunctionCall; the next ReadyForQuery ends it.
    closed: bool,
}

/// The rewriting state of one relay (one transaction in transaction mode).
#[derive(Debug)]
pub struct Rewriter {
    limit: usize,
    segments: VecDeque<Segment>,
    /// Counts since the last [`Rewriter::take_stats`].
    stats: Stats,
}

impl Rewriter {
    /// Keep at most `limit` (≥ 1) statements per server connection.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            segments: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Keep at most `limit` (≥ 1) statements per server connection from now on.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    /// Nothing is owed by the server.
    pub fn is_idle(&self) -> bool {
        self.segments.iter().all(|s| s.expects.is_empty())
    }

    /// The counts so far, reset.
    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.stats)
    }

    fn open_segment(&mut self) -> &mut Segment {
        if self.segments.back().is_none_or(|s| s.closed) {
            self.segments.push_back(Segment::default());
        }
        self.segments.back_mut().expect("just pushed")
    }

    fn expect(&mut self, e: Expect) {
        self.open_segment().expects.push_back(e);
    }

    fn close_segment(&mut self) {
        self.open_segment().closed = true;
    }

    /// Turn one client message into what goes to the server, appended to `out`.
    pub fn client_message(
        &mut self,
        f: Frame,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
        out: &mut BytesMut,
    ) {
        match f.tag {
            b'P' => self.parse(f, client, server, out),
            b'B' => self.bind(f, client, server, out),
            b'D' => self.describe(f, client, server, out),
            b'C' => self.close(f, client, out),
            b'Q' => {
                self.query(f, client, server, out);
                self.close_segment();
            }
            b'S' | b'F' => {
                f.encode(out);
                self.close_segment();
            }
            _ => f.encode(out),
        }
    }

    fn parse(
        &mut self,
        f: Frame,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
        out: &mut BytesMut,
    ) {
        let named = f.body.first().is_some_and(|b| *b != 0);
        let Some((name, statement)) = named.then(|| Statement::from_parse(&f.body)).flatten()
        else {
            // The unnamed statement (or a malformed body, which the server refuses).
            f.encode(out);
            return self.expect(Expect::reply(Reply::Forward));
        };
        let server_name = statement.server_name.clone();
        // PostgreSQL refuses a Parse of a name in use (42P05); drivers never send one, and here
        // the name is simply given the new statement.
        let previous = client.insert(name.clone(), statement.clone());
        let client_name = Some((name, server_name.clone(), previous));
        if server.touch(&server_name) {
            self.stats.hits += 1;
            close_frame(b'S', NO_STATEMENT).encode(out);
            self.expect(Expect {
                client_name,
                ..Expect::reply(Reply::AsParseComplete)
            });
        } else {
            self.stats.misses += 1;
            self.make_room_and_add(server, server_name.clone(), out);
            self.clear_name(&server_name, out);
            encode(out, b'P', &statement.parse_body);
            self.expect(Expect {
                added: Some(server_name),
                client_name,
                ..Expect::reply(Reply::Forward)
            });
        }
    }

    /// Record `name` as held, closing the least recently used statements beyond the limit.
    fn make_room_and_add(
        &mut self,
        server: &mut ServerStatements,
        name: Bytes,
        out: &mut BytesMut,
    ) {
        for old in server.insert(name, self.limit) {
            self.stats.evictions += 1;
            close_frame(b'S', &old).encode(out);
            self.expect(Expect {
                evicted: Some(old),
                ..Expect::reply(Reply::Swallow)
            });
        }
    }

    /// Close `name` before preparing it: a no-op when the server lacks it, as the cache says,
    /// and a safe reset when the cache was wrong (a client's own DEALLOCATE or DISCARD ran in
    /// a transaction that then failed), so a Parse never meets "already exists".
    fn clear_name(&mut self, name: &[u8], out: &mut BytesMut) {
        close_frame(b'S', name).encode(out);
        self.expect(Expect::reply(Reply::Swallow));
    }

    /// Make sure the server holds `statement` before a message that uses it.
    fn ensure(&mut self, statement: &Statement, server: &mut ServerStatements, out: &mut BytesMut) {
        if server.touch(&statement.server_name) {
            self.stats.hits += 1;
            return;
        }
        self.stats.misses += 1;
        self.make_room_and_add(server, statement.server_name.clone(), out);
        self.clear_name(&statement.server_name, out);
        encode(out, b'P', &statement.parse_body);
        self.expect(Expect {
            added: Some(statement.server_name.clone()),
            ..Expect::reply(Reply::Swallow)
        });
    }

    fn bind(
        &mut self,
        f: Frame,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
        out: &mut BytesMut,
    ) {
        // portal \0 statement \0 rest
        let body = &f.body;
        let Some(p_end) = body.iter().position(|b| *b == 0) else {
            return f.encode(out);
        };
        let Some(s_len) = body[p_end + 1..].iter().position(|b| *b == 0) else {
            return f.encode(out);
        };
        let s_end = p_end + 1 + s_len;
        let name = &body[p_end + 1..s_end];
        // Unnamed, or a name the client never prepared: the server answers for itself.
        let Some(statement) = (!name.is_empty()).then(|| client.get(name)).flatten() else {
            return f.encode(out);
        };
        let statement = statement.clone();
        self.ensure(&statement, server, out);
        let mut b = BytesMut::with_capacity(body.len() + statement.server_name.len());
        b.put_slice(&body[..=p_end]);
        b.put_slice(&statement.server_name);
        b.put_slice(&body[s_end..]);
        encode(out, b'B', &b);
    }

    fn describe(
        &mut self,
        f: Frame,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
        out: &mut BytesMut,
    ) {
        let Some(statement) = statement_target(&f.body).and_then(|n| client.get(n)) else {
            return f.encode(out);
        };
        let statement = statement.clone();
        self.ensure(&statement, server, out);
        encode(out, b'D', &target_body(b'S', &statement.server_name));
    }

    fn close(&mut self, f: Frame, client: &mut ClientStatements, out: &mut BytesMut) {
        let closed = match statement_target(&f.body) {
            Some(name) => {
                // The shared server-side statement stays; the client's name goes. Closing a
                // name that does not exist is no error in PostgreSQL either.
                let closed = client
                    .take(name)
                    .map(|st| (f.body.slice(1..1 + name.len()), st));
                close_frame(b'S', NO_STATEMENT).encode(out);
                closed
            }
            None => {
                f.encode(out);
                None
            }
        };
        self.expect(Expect {
            closed,
            ..Expect::reply(Reply::Forward)
        });
    }

    fn query(
        &mut self,
        f: Frame,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
        out: &mut BytesMut,
    ) {
        let sql = crate::protocol::sql::query_sql(&f.body);
        let tag = match deallocate::parse(sql) {
            Some(Deallocate::All) => {
                client.clear();
                "DEALLOCATE ALL"
            }
            Some(Deallocate::Name(n)) if client.remove(&n) => "DEALLOCATE",
            // Not ours: the server answers, with its own error for an unknown name.
            _ => {
                // SQL DISCARD ALL / DEALLOCATE in some other form: assume the server holds
                // none of ours now; a later Parse closes the name first anyway. (Nothing to
                // forget, nothing to look for.)
                if !server.is_empty() && may_drop_statements(sql) {
                    server.clear();
                }
                return f.encode(out);
            }
        };
        // An empty query keeps the server's ReadyForQuery (and transaction status) in order.
        encode(out, b'Q', b"\0");
        self.open_segment().empty_query_tag = Some(tag);
    }

    /// What to do with one message (of type `tag`) from the server. Inlined into the relay's
    /// loop over a read's messages: rows, row descriptions and command tags, most of what a
    /// server sends, are forwarded after a match on the type byte, without a call.
    #[inline]
    pub fn server_message(
        &mut self,
        tag: u8,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
    ) -> ServerAction {
        match tag {
            b'1' | b'3' => self.expected_reply(),
            b'E' => self.error(client, server),
            b'I' => self.empty_query_reply(),
            b'Z' => self.ready(client, server),
            _ => ServerAction::Forward,
        }
    }

    // The answers below are kept out of line (`inline(never)`), so the relay's loop over the
    // server's messages stays small: inlined, they made it larger and slower (callgrind).

    /// A ParseComplete or CloseComplete: answered as the message it answers expects.
    #[inline(never)]
    fn expected_reply(&mut self) -> ServerAction {
        let Some(e) = self
            .segments
            .front_mut()
            .and_then(|s| s.expects.pop_front())
        else {
            return ServerAction::Forward;
        };
        match e.reply {
            Reply::Forward => ServerAction::Forward,
            Reply::Swallow => ServerAction::Swallow,
            Reply::AsParseComplete => ServerAction::Replace(Frame {
                tag: b'1',
                body: Bytes::new(),
            }),
        }
    }

    /// An ErrorResponse: the server now skips to Sync, so nothing else in this segment is
    /// answered.
    #[inline(never)]
    fn error(
        &mut self,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
    ) -> ServerAction {
        if let Some(seg) = self.segments.front_mut() {
            undo(seg.expects.drain(..), client, server);
        }
        ServerAction::Forward
    }

    /// A ReadyForQuery ends the oldest segment: what it expected and did not get is undone.
    #[inline(never)]
    fn ready(
        &mut self,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
    ) -> ServerAction {
        if let Some(seg) = self.segments.pop_front() {
            undo(seg.expects, client, server);
        }
        ServerAction::Forward
    }

    /// An EmptyQueryResponse: the command tag of a DEALLOCATE the pooler answered itself, or
    /// forwarded.
    #[inline(never)]
    fn empty_query_reply(&mut self) -> ServerAction {
        match self
            .segments
            .front_mut()
            .and_then(|s| s.empty_query_tag.take())
        {
            Some(tag) => {
                let mut body = BytesMut::with_capacity(tag.len() + 1);
                body.put_slice(tag.as_bytes());
                body.put_u8(0);
                ServerAction::Replace(Frame {
                    tag: b'C',
                    body: body.freeze(),
                })
            }
            None => ServerAction::Forward,
        }
    }
}

fn undo(
    left: impl IntoIterator<Item = Expect>,
    client: &mut ClientStatements,
    server: &mut ServerStatements,
) {
    for e in left {
        if let Some(name) = e.added {
            server.remove(&name);
        }
        if let Some(name) = e.evicted {
            server.restore(name);
        }
        if let Some((name, server_name, previous)) = e.client_name {
            client.undo_parse(&name, &server_name, previous);
        }
        if let Some((name, statement)) = e.closed {
            client.undo_close(name, statement);
        }
    }
}

/// The statement name of a Describe/Close body aimed at a named statement (`S` name \0).
fn statement_target(body: &[u8]) -> Option<&[u8]> {
    let (&kind, rest) = body.split_first()?;
    let end = rest.iter().position(|b| *b == 0)?;
    (kind == b'S' && end > 0 && end + 1 == rest.len()).then(|| &rest[..end])
}

fn target_body(kind: u8, name: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(name.len() + 2);
    b.put_u8(kind);
    b.put_slice(name);
    b.put_u8(0);
    b
}

fn close_frame(kind: u8, name: &[u8]) -> Frame {
    Frame {
        tag: b'C',
        body: target_body(kind, name).freeze(),
    }
}

fn encode(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(u32::try_from(body.len() + 4).unwrap_or(u32::MAX));
    out.put_slice(body);
}

#[cfg(test)]
mod tests;
