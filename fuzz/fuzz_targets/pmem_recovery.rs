#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsl_log_fuzz::pmem_recovery(data));
