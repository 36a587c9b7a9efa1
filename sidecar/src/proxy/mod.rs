//! Client sessions ↔ server connections.
//!
//! ```text
//!  accept ─▶ startup (SSL/GSS → 'N', cancel, auth hook) ─▶ session loop
//!   transaction mode: first message ─▶ Pool::checkout ─▶ relay until ReadyForQuery 'I'
//!                     ─▶ (DISCARD ALL if session state was touched) ─▶ release
//!   session mode:     checkout at login ─▶ relay until logout ─▶ DISCARD ALL ─▶ release
//! ```

mod boundaries;
mod cancel;
mod client;
mod counters;
mod event_loop;
mod listener;
mod login;
mod phase;
mod pools;
mod relay;
mod session;
mod startup;
mod wakes;

pub use boundaries::{Boundaries, QueryTimer};
pub use cancel::CancelRegistry;
pub use counters::ProxyCounters;
pub use event_loop::{EventLoop, Loops};
pub use listener::{Proxy, RunError, termination_signal as listener_signal};
pub use phase::Phase;
pub use pools::{DbPool, ObserverFactory, Pools, ServerManager, pool_settings};
