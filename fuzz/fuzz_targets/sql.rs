//! The SQL session-state scan: `protocol::sql::changes_session_state` over arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolwarden_sidecar::protocol::fuzz_input;

fuzz_target!(|data: &[u8]| {
    fuzz_input::sql(data);
});
