//! Environment overrides, read through a small trait so tests hand in fake values.

use std::collections::HashMap;

pub const DATABASE_URL: &str = "POOLWARDEN_DATABASE_URL";
pub const DB_PASSWORD: &str = "POOLWARDEN_DB_PASSWORD";
pub const POOL_SIZE: &str = "POOLWARDEN_POOL_SIZE";
pub const MAX_OVERFLOW: &str = "POOLWARDEN_MAX_OVERFLOW";
pub const POOL_TIMEOUT: &str = "POOLWARDEN_POOL_TIMEOUT";
pub const POOL_RECYCLE: &str = "POOLWARDEN_POOL_RECYCLE";
pub const STATEMENT_TIMEOUT: &str = "POOLWARDEN_STATEMENT_TIMEOUT";
pub const MODE: &str = "POOLWARDEN_MODE";
pub const LISTEN: &str = "POOLWARDEN_LISTEN";
pub const ADMIN_LISTEN: &str = "POOLWARDEN_ADMIN_LISTEN";
pub const ADMIN_TOKEN: &str = "POOLWARDEN_ADMIN_TOKEN";
pub const LOG_FORMAT: &str = "POOLWARDEN_LOG_FORMAT";
pub const DATA_PATH: &str = "POOLWARDEN_DATA_PATH";
pub const WORKER_THREADS: &str = "POOLWARDEN_WORKER_THREADS";

/// A source of environment variables.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// Build a fake environment from pairs, for tests.
pub fn from_pairs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
