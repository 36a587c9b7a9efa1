//! Proxy-wide counters for metrics: connected clients and transactions served.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Proxy-wide running totals (`poolwarden_client_connections`,
/// `poolwarden_transactions_total`).
#[derive(Debug, Default)]
pub struct ProxyCounters {
    clients: AtomicI64,
    transactions: AtomicU64,
}

impl ProxyCounters {
    /// Clients logged in right now.
    pub fn clients(&self) -> i64 {
        self.clients.load(Ordering::Relaxed)
    }

    /// Transactions served (each ReadyForQuery `I` that ends client work, autocommit
    /// statements included).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    pub(crate) fn add_transactions(&self, n: u64) {
        self.transactions.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn client_connected(self: &Arc<Self>) -> ClientGuard {
        self.clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard(self.clone())
    }
}

/// Counts a client as connected while it lives.
pub(crate) struct ClientGuard(Arc<ProxyCounters>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}
