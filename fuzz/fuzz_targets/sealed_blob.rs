#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| broked_fuzz::sealed_blob(data));
