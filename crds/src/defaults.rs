//! Defaults: the hazard log's production values.
//!
//! `create_engine(pool_size=20, max_overflow=10, pool_timeout=30, pool_recycle=3600)`,
//! `pool_pre_ping=True`, `statement_timeout=30s`, a breaker that opens after 5 consecutive
//! failures for 30 s, alerts above 80 % for 5 minutes and above 90 % for 2 minutes, and the
//! capacity review: above 60 % for a month adds 5, sustained above 80 % increases at once.

pub fn t() -> bool {
    true
}
pub fn port() -> u16 {
    5432
}
pub fn username_key() -> String {
    "username".into()
}
pub fn password_key() -> String {
    "password".into()
}
pub fn pool_size() -> u32 {
    20
}
pub fn max_overflow() -> u32 {
    10
}
pub fn pool_timeout_seconds() -> u32 {
    30
}
pub fn pool_recycle_seconds() -> u32 {
    3600
}
pub fn statement_timeout_seconds() -> u32 {
    30
}
pub fn failure_threshold() -> u32 {
    5
}
pub fn open_seconds() -> u32 {
    30
}
pub fn breaker_message() -> String {
    "Database temporarily unavailable. Please try again shortly.".into()
}
pub fn min_pool_size() -> u32 {
    5
}
pub fn max_pool_size() -> u32 {
    100
}
pub fn scale_up_above() -> f64 {
    0.8
}
pub fn scale_up_sustained_seconds() -> u32 {
    60
}
pub fn review_above() -> f64 {
    0.6
}
pub fn review_window_days() -> u32 {
    30
}
pub fn step() -> u32 {
    5
}
pub fn scale_down_below() -> f64 {
    0.3
}
pub fn scale_down_stabilization_seconds() -> u32 {
    3600
}
pub fn reserved_connections() -> u32 {
    10
}
pub fn warning_above() -> f64 {
    0.8
}
pub fn warning_for_seconds() -> u32 {
    300
}
pub fn critical_above() -> f64 {
    0.9
}
pub fn critical_for_seconds() -> u32 {
    120
}
pub fn sidecar_image() -> String {
    crate::DEFAULT_SIDECAR_IMAGE.into()
}
pub fn listen_port() -> u16 {
    6432
}
pub fn admin_port() -> u16 {
    9930
}
