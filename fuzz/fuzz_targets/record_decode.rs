#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsl_log_fuzz::record_decode(data));
