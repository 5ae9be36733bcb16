//! Record codecs: reading a record's time, keys and fields (`scan` for plain JSON, `field`
//! for serde's visitors, `parse` for both and CSV), and writing enriched events and dead
//! letters (`format`).

pub(crate) mod arrow_read;
pub mod columns;
pub(crate) mod field;
pub(crate) mod format;
pub(crate) mod parse;
pub(crate) mod paths;
pub(crate) mod scan;
pub(crate) mod time;

pub use format::{escape_json_str, write_canonical, write_computed, write_exact};
pub use time::TimeFormat;

/// The next value of the tests' pseudo-random sequence (a 64-bit linear congruential
/// generator, Knuth's MMIX constants).
#[cfg(test)]
pub(crate) fn lcg(x: u64) -> u64 {
    x.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}
