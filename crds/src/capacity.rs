//! The hazard log's capacity-planning formulas, as pure functions.
//!
//! "pool_size = concurrent_users × 1.5; max_overflow = pool_size × 0.5", both rounded up so
//! that the pool never ends up smaller than the formula asks for.

/// `ceil(concurrent_users × 1.5)`, computed in integers so there is no float rounding.
pub fn pool_size_for_users(concurrent_users: u32) -> u32 {
    let users = u64::from(concurrent_users);
    clamp_u32((users * 3).div_ceil(2))
}

/// `ceil(pool_size × 0.5)`.
pub fn max_overflow_for_pool(pool_size: u32) -> u32 {
    pool_size.div_ceil(2)
}

/// Both formulas at once: `(pool_size, max_overflow)` for a number of concurrent users.
pub fn sizing_for_users(concurrent_users: u32) -> (u32, u32) {
    let pool = pool_size_for_users(concurrent_users);
    (pool, max_overflow_for_pool(pool))
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_formula_rounds_up() {
        let table = [
            (0, 0),
            (1, 2),
            (2, 3),
            (3, 5),
            (10, 15),
            (13, 20),
            (14, 21),
            (40, 60),
            (667, 1001),
            (u32::MAX, u32::MAX),
        ];
        for (users, want) in table {
            assert_eq!(pool_size_for_users(users), want, "users={users}");
        }
    }

    #[test]
    fn overflow_formula_rounds_up() {
        let table = [
            (0, 0),
            (1, 1),
            (5, 3),
            (20, 10),
            (25, 13),
            (60, 30),
            (u32::MAX, 1 << 31),
        ];
        for (pool, want) in table {
            assert_eq!(max_overflow_for_pool(pool), want, "pool={pool}");
        }
    }

    #[test]
    fn hazard_log_production_values_follow_from_the_formula() {
        // 20 concurrent operations need about 13-14 users; 20/10 is the hazard log's sizing.
        assert_eq!(sizing_for_users(13), (20, 10));
        assert_eq!(sizing_for_users(40), (60, 30));
    }
}
