//! Named prepared statements in transaction mode.
//!
//! In transaction mode a client's next transaction may run on another server connection, so a
//! statement it prepared by name would be missing there. The relay rewrites the extended
//! protocol so that it is not:
//!
//! * A named `Parse` gets a pooler-side name derived from its text and parameter types
//!   ([`server_name`]: `pw_` and 128 bits of SHA-256), so clients preparing the same statement
//!   share one server-side statement and different statements never collide.
//! * `Bind` and `Describe` of a client's statement use that name; when the server connection
//!   does not have it yet, a `Parse` is sent first and its `ParseComplete` swallowed.
//! * Every server connection keeps at most `max_prepared_statements` of them
//!   ([`ServerStatements`], least recently used evicted with a `Close` whose reply is
//!   swallowed).
//! * A client's `Close` of a statement and `DEALLOCATE name` / `DEALLOCATE ALL` forget the
//!   client's names; the shared server-side statement stays for the next user.
//!
//! Replies keep their order because every message the client sends is answered by the
//! server itself: a `Close` of a name that never exists stands in for a `Parse` or `Close`
//! that need not reach the server, and its `CloseComplete` is handed on as the reply the
//! client expects ([`rewrite::Rewriter`]). After an error the server skips to the next Sync;
//! the expectations of the skipped messages are undone then.
//!
//! Everything here is pure: frames in, frames out.

pub mod deallocate;
pub mod rewrite;
pub mod statements;

pub use rewrite::{Rewriter, ServerAction, Stats};
pub use statements::{ClientStatements, ServerStatements, server_name};

/// One client's side of the tracking: its names and the rewriter of its transactions.
#[derive(Debug)]
pub struct Tracking {
    /// Rewrites messages and matches replies.
    pub rewriter: Rewriter,
    /// The client's named statements.
    pub client: ClientStatements,
}

impl Tracking {
    /// Tracking with at most `limit` statements per server connection; `None` when the limit
    /// is 0 (off).
    pub fn new(limit: u32) -> Option<Self> {
        (limit > 0).then(|| Self {
            rewriter: Rewriter::new(limit as usize),
            client: ClientStatements::new(),
        })
    }

    /// A reload changed the limit (0 keeps the names but stops adding room: 1).
    pub fn set_limit(&mut self, limit: u32) {
        self.rewriter.set_limit(limit as usize);
    }
}
