//! Configuration: file + environment + flags → a validated [`Config`].
//!
//! ```text
//!  poolwarden.yaml ─┐
//!  POOLWARDEN_* env ─┼─▶ resolve() ─▶ validate() ─▶ Config ─▶ (ArcSwap) live config
//!  --flags ─────────┘        flag > env > file > default
//! ```

mod duration;
pub mod env;
mod error;
mod load;
mod model;
pub mod reload;

pub use duration::{ConfigDuration, parse_duration};
pub use error::ConfigError;
pub use load::{
    MAX_POOL, Overrides, load, parse_database_url, parse_file, read_file, redact_url, resolve,
    validate,
};
pub use model::*;
pub use reload::{ReloadError, ReloadHandle, ReloadOptions, ReloadSource, ReloadTrigger, Reloader};

#[cfg(test)]
mod tests;
