//! Message framing (backend side): `protocol::frame::decode` as `FrameReader` drives it, with
//! the input fed whole and in small chunks (the first byte picks the chunk size).
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolwarden_sidecar::protocol::fuzz_input;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let whole = fuzz_input::frames(rest, false, 0);
    let split = fuzz_input::frames(rest, false, usize::from(chunk % 16) + 1);
    assert_eq!(whole, split, "chunking changed the result");
});
