//! Condition types and reasons used in `DbPoolPolicy.status.conditions`, as constants so the
//! operator, tests and dashboards agree on the spelling.

/// Condition types.
pub mod types {
    pub const READY: &str = "Ready";
    pub const SPEC_VALID: &str = "SpecValid";
    pub const SCALING: &str = "Scaling";
    pub const BUDGET_LIMITED: &str = "BudgetLimited";
    pub const POOL_SATURATED: &str = "PoolSaturated";
    pub const BREAKER_OPEN: &str = "BreakerOpen";

    /// Every condition type the operator writes, in display order.
    pub const ALL: [&str; 6] = [
        READY,
        SPEC_VALID,
        SCALING,
        BUDGET_LIMITED,
        POOL_SATURATED,
        BREAKER_OPEN,
    ];
}

/// Reasons for conditions, Events and `status.history`.
pub mod reasons {
    pub const RECONCILED: &str = "Reconciled";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const VALID: &str = "Valid";
    pub const INITIAL_SIZING: &str = "InitialSizing";
    pub const SUSTAINED_HIGH_UTILIZATION: &str = "SustainedHighUtilization";
    pub const MONTHLY_REVIEW: &str = "MonthlyReview";
    pub const SUSTAINED_LOW_UTILIZATION: &str = "SustainedLowUtilization";
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
    pub const SPEC_CHANGED: &str = "SpecChanged";
    pub const WITHIN_BUDGET: &str = "WithinBudget";
    pub const PAUSED: &str = "Paused";
    pub const METRICS_UNAVAILABLE: &str = "MetricsUnavailable";
}

/// Condition status values.
pub mod status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    pub const UNKNOWN: &str = "Unknown";
}
