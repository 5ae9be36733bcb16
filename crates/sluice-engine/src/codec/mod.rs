//! Record codecs: reading a record's time, keys and fields (`scan` for plain JSON, `field`
//! for serde's visitors, `parse` for both and CSV), and writing enriched events and dead
//! letters (`format`).

pub(crate) mod field;
pub mod format;
pub mod parse;
pub(crate) mod scan;
pub mod time;
