#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rsl_fuzz::kv::kv_checkpoint_load(data));
