//! The ward-round load used by `scripts/demo`: simulated clinicians run short transactions
//! through the sidecars of several "pods" while a scraper records what each sidecar reports.
//!
//! ```text
//!  phases (quiet, ward round, emergency, db restart, recovery)
//!     │ clinicians per phase
//!     ▼
//!  clinician tasks ──tokio-postgres──▶ sidecar pods ──▶ PostgreSQL
//!  scraper ──GET /api/metrics──▶ sidecar pods ──▶ timeline ──▶ report.md + timeline.svg
//! ```

pub mod phases;
pub mod report;
pub mod scrape;
