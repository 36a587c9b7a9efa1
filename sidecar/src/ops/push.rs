//! Which pool settings a reload applies when the admin API has pushed some.

use crate::config::PoolConfig;

/// The `pool` section a reload applies. `file_before` is the section the previous load
/// produced (file + environment + flags), `file_now` the new load's, `live` what is running
/// (it may carry a `PUT /api/pool` push). An unchanged section keeps the live settings, so a
/// reload for another reason does not silently revert a push; a changed one wins.
pub fn merge_pool(
    file_before: &PoolConfig,
    file_now: &PoolConfig,
    live: &PoolConfig,
) -> PoolConfig {
    if file_now == file_before {
        live.clone()
    } else {
        file_now.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(size: u32, overflow: u32) -> PoolConfig {
        PoolConfig {
            pool_size: size,
            max_overflow: overflow,
            ..PoolConfig::default()
        }
    }

    #[test]
    fn table() {
        // (file before, file now, live, expected)
        let cases = [
            // No push, file unchanged: nothing changes.
            (pool(20, 10), pool(20, 10), pool(20, 10), pool(20, 10)),
            // Pushed 25, file unchanged (reload for another reason): the push holds.
            (pool(20, 10), pool(20, 10), pool(25, 13), pool(25, 13)),
            // Pushed 25, then the file says 30: the file wins.
            (pool(20, 10), pool(30, 15), pool(25, 13), pool(30, 15)),
            // Pushed 25, then the file is edited to 20 → 22: the file wins.
            (pool(20, 10), pool(22, 10), pool(25, 13), pool(22, 10)),
            // No push, the file changed: the file wins.
            (pool(5, 0), pool(10, 0), pool(5, 0), pool(10, 0)),
        ];
        for (i, (before, now, live, want)) in cases.into_iter().enumerate() {
            assert_eq!(merge_pool(&before, &now, &live), want, "case {i}");
        }
    }
}
