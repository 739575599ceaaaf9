#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsl_fuzz::transport::checkpoint_stream(data));
