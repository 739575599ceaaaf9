#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsl_fuzz::log::pmem_recovery(data));
