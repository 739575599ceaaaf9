#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsl_fuzz::transport::replica_message(data));
