#![no_main]

// Panics the runtime contains (becoming errors) unwind past libFuzzer's aborting hook.
libfuzzer_sys::fuzz_target!(init: fdpp_runtime::error::pass_contained_panics(), |data: &[u8]| {
    fdpp_runtime::fuzz_targets::config(data);
});
