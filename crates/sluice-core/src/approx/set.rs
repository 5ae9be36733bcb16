//! Sets of distinct values: exact value hashes while few, else a HyperLogLog sketch; their
//! unions; their binary form.

use datasketches::hash::value::raw_bytes;
use datasketches::hll::{Coupon, HllSketch, HllType, HllUnion};
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64;

use crate::wire::{Reader, Wire, WireError, Writer};

/// log2 of the number of HyperLogLog registers (4096: relative standard error 1.6%).
pub const LG_K: u8 = 12;
/// One byte per register: the fastest to update and to merge; 4 KiB at [`LG_K`].
const HLL_TYPE: HllType = HllType::Hll8;
/// Most values a set counts exactly (as hashes) before it becomes a sketch: where a sketch
/// turns from a set of coupons into its register array, and about as large (3 KiB).
pub const EXACT: usize = 384;

/// An empty sketch of this module's configuration.
fn empty_sketch() -> HllSketch {
    HllSketch::new(LG_K, HLL_TYPE).expect("LG_K lies in the crate's range of 4 to 21")
}

/// An empty union of sketches of this module's configuration.
fn empty_union() -> HllUnion {
    HllUnion::new(LG_K).expect("LG_K lies in the crate's range of 4 to 21")
}

/// The coupon (register address and rank) of value hash `h`: the sketch is fed the hash's 8
/// little-endian bytes.
#[inline]
pub fn coupon(h: u64) -> Coupon {
    Coupon::from_value(raw_bytes::from_slice(&h.to_le_bytes()))
}

/// One value being added: its hash, and its coupon once a sketch needs it (computed once for
/// all the sets the value goes into).
#[derive(Debug, Clone, Copy)]
pub struct Value {
    hash: u64,
    coupon: Option<Coupon>,
}

impl Value {
    /// The value with canonical bytes `bytes`.
    #[inline]
    pub fn new(bytes: &[u8]) -> Self {
        Value {
            hash: xxh3_64(bytes),
            coupon: None,
        }
    }

    #[inline]
    fn coupon(&mut self) -> Coupon {
        *self.coupon.get_or_insert_with(|| coupon(self.hash))
    }
}

/// The distinct values of a bucket, a block or a window.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueSet {
    /// At most [`EXACT`] value hashes (xxh3), ascending: exact.
    Few(SmallVec<[u64; 2]>),
    /// More: a HyperLogLog sketch, boxed so that the small case stays small.
    Sketch(Box<HllSketch>),
}

impl Default for ValueSet {
    fn default() -> Self {
        ValueSet::Few(SmallVec::new())
    }
}

/// A sketch of `hashes`.
fn sketch_of(hashes: impl IntoIterator<Item = u64>) -> HllSketch {
    let mut sketch = empty_sketch();
    for h in hashes {
        sketch.update_with_coupon(coupon(h));
    }
    sketch
}

impl ValueSet {
    /// Adds `v`.
    #[inline]
    pub fn insert(&mut self, v: &mut Value) {
        match self {
            ValueSet::Few(hashes) => match hashes.binary_search(&v.hash) {
                Ok(_) => {}
                Err(i) if hashes.len() < EXACT => {
                    if hashes.len() == hashes.capacity() {
                        // Half again, up to EXACT: a full set wastes at most a third.
                        let more = (hashes.len() / 2).max(2).min(EXACT - hashes.len());
                        hashes.reserve_exact(more);
                    }
                    hashes.insert(i, v.hash);
                }
                Err(_) => {
                    let mut sketch = sketch_of(hashes.iter().copied());
                    sketch.update_with_coupon(v.coupon());
                    *self = ValueSet::Sketch(Box::new(sketch));
                }
            },
            ValueSet::Sketch(sketch) => sketch.update_with_coupon(v.coupon()),
        }
    }

    /// The number of distinct values: exact for hashes, the composite estimate of a sketch.
    #[inline]
    pub fn estimate(&self) -> u64 {
        match self {
            ValueSet::Few(hashes) => hashes.len() as u64,
            // Saturating: a NaN, which no checked sketch gives, would be 0.
            ValueSet::Sketch(sketch) => sketch.composite_estimate().round() as u64,
        }
    }

    /// Whether the set holds no value.
    pub fn is_empty(&self) -> bool {
        match self {
            ValueSet::Few(hashes) => hashes.is_empty(),
            ValueSet::Sketch(sketch) => sketch.is_empty(),
        }
    }

    /// Bytes allocated outside the set itself (hashes past the inline ones, the sketch).
    pub fn heap_bytes(&self) -> usize {
        match self {
            ValueSet::Few(hashes) if hashes.spilled() => hashes.capacity() * 8,
            ValueSet::Few(_) => 0,
            ValueSet::Sketch(sketch) => size_of::<HllSketch>() + sketch.estimated_size(),
        }
    }
}

/// The union of value sets, built one set at a time: hashes are gathered (and sorted once),
/// the first sketch is copied and the others merged with a DataSketches union, which is the
/// dear part (about 3.5 µs a register array); hashes are added to the result as coupons.
#[derive(Default)]
pub struct Union {
    hashes: SmallVec<[u64; 16]>,
    sketch: Option<HllSketch>,
    sketches: Option<HllUnion>,
}

impl Union {
    /// Adds every value of `set`.
    pub fn add(&mut self, set: &ValueSet) {
        match set {
            ValueSet::Few(hashes) => {
                self.hashes.extend_from_slice(hashes);
                if self.hashes.len() > 2 * EXACT {
                    self.compact();
                }
            }
            ValueSet::Sketch(sketch) if self.sketch.is_none() => {
                self.sketch = Some((**sketch).clone());
            }
            ValueSet::Sketch(sketch) => {
                self.sketches.get_or_insert_with(empty_union).update(sketch)
            }
        }
    }

    /// Adds value `v`.
    #[inline]
    pub fn push(&mut self, v: &Value) {
        self.hashes.push(v.hash);
        if self.hashes.len() > 2 * EXACT {
            self.compact();
        }
    }

    /// Sorts the gathered hashes and drops repeats; past [`EXACT`], moves them into the
    /// sketch.
    fn compact(&mut self) {
        self.hashes.sort_unstable();
        self.hashes.dedup();
        if self.hashes.len() > EXACT {
            let sketch = self.sketch.get_or_insert_with(empty_sketch);
            for h in self.hashes.drain(..) {
                sketch.update_with_coupon(coupon(h));
            }
        }
    }

    /// The number of distinct values of every set added: [`ValueSet::estimate`] of
    /// [`Union::finish`], without making the set when it is exact.
    pub fn estimate(mut self) -> u64 {
        self.compact();
        if self.sketch.is_none() {
            return self.hashes.len() as u64;
        }
        self.finish().estimate()
    }

    /// The union of every set added.
    pub fn finish(mut self) -> ValueSet {
        self.compact();
        let Some(mut sketch) = self.sketch else {
            return ValueSet::Few(SmallVec::from_slice(&self.hashes));
        };
        for &h in &self.hashes {
            sketch.update_with_coupon(coupon(h));
        }
        if let Some(mut union) = self.sketches {
            union.update(&sketch);
            sketch = union.to_sketch(HLL_TYPE);
        }
        ValueSet::Sketch(Box::new(sketch))
    }
}

/// Kind tag of a set of hashes in the binary form.
const TAG_HASHES: u64 = 0;
/// Kind tag of a sketch in the binary form.
const TAG_SKETCH: u64 = 1;

/// `0` and the hashes (8 little-endian bytes each, ascending, as one byte string), or `1`
/// and the sketch's DataSketches image. Decoding checks that a set is not empty, that hashes
/// are at most [`EXACT`] and strictly ascending, and the sketch image (see
/// [`sketch_from_image`]).
impl Wire for ValueSet {
    fn put(&self, w: &mut Writer<'_>) {
        match self {
            ValueSet::Few(hashes) => {
                w.u(TAG_HASHES);
                let bytes: SmallVec<[u8; 16]> =
                    hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
                w.bytes(&bytes);
            }
            ValueSet::Sketch(sketch) => {
                w.u(TAG_SKETCH);
                w.bytes(&sketch.serialize());
            }
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let set = match r.u()? {
            TAG_HASHES => ValueSet::Few(hashes_from_bytes(r.bytes()?)?),
            TAG_SKETCH => ValueSet::Sketch(Box::new(sketch_from_image(r.bytes()?)?)),
            _ => return Err(WireError("an unknown kind of value set")),
        };
        if set.is_empty() {
            return Err(WireError("an empty value set"));
        }
        Ok(set)
    }
}

/// Value hashes from their 8-byte little-endian forms: at most [`EXACT`], ascending.
fn hashes_from_bytes(bytes: &[u8]) -> Result<SmallVec<[u64; 2]>, WireError> {
    let (chunks, rest) = bytes.as_chunks::<8>();
    if !rest.is_empty() {
        return Err(WireError(
            "value hashes of a length that is not a multiple of 8",
        ));
    }
    if chunks.len() > EXACT {
        return Err(WireError("more value hashes than a set keeps"));
    }
    let hashes: SmallVec<[u64; 2]> = chunks.iter().map(|c| u64::from_le_bytes(*c)).collect();
    if hashes.windows(2).any(|p| p[0] >= p[1]) {
        return Err(WireError("value hashes out of order, or repeated"));
    }
    Ok(hashes)
}

/// Offsets in a DataSketches HLL image (the library's public binary format).
pub mod image {
    /// The byte whose two low bits are the current mode.
    pub const MODE_BYTE: usize = 7;
    /// Mode: a list of coupons.
    pub const LIST: u8 = 0;
    /// Mode: a hash set of coupons.
    pub const SET: u8 = 1;
    /// Mode: the register array.
    pub const HLL: u8 = 2;
    /// Where the coupons of a compact list start.
    pub const LIST_COUPONS: usize = 8;
    /// Where the coupons of a compact hash set start.
    pub const SET_COUPONS: usize = 12;
    /// Where the registers start.
    pub const REGISTERS: usize = 40;
}

/// Most coupons a list holds (at 8 it becomes a hash set).
const LIST_COUPONS: usize = 7;

/// A sketch from its DataSketches image, checked beyond what the crate checks: the
/// configuration is this module's, the image has no bytes past the sketch, coupons are
/// distinct and not the empty coupon, registers fit six bits, and the counts derived from
/// the registers (zero registers, sums of inverse powers of two) are recomputed rather than
/// read: the crate trusts all of these, and would miscount, or panic, on damaged ones.
///
/// (A sketch is written as coupons only when two of its more than [`EXACT`] values share a
/// coupon, so that it did not reach its register array.)
pub fn sketch_from_image(bytes: &[u8]) -> Result<HllSketch, WireError> {
    let damaged = WireError("a damaged HyperLogLog sketch");
    let sketch = HllSketch::deserialize(bytes).map_err(|_| damaged.clone())?;
    if sketch.lg_config_k() != LG_K || sketch.target_type() != HLL_TYPE {
        return Err(WireError("a HyperLogLog sketch of another configuration"));
    }
    if sketch.serialize().len() != bytes.len() {
        return Err(WireError("a HyperLogLog sketch image of the wrong length"));
    }
    let coupons = |from: usize, most: usize| {
        bytes
            .get(from..)
            .is_some_and(|coupons| coupons_valid(coupons, most))
    };
    let registers = || bytes.get(image::REGISTERS..).is_some_and(registers_valid);
    match bytes.get(image::MODE_BYTE).map(|m| m & 3) {
        Some(image::LIST) if coupons(image::LIST_COUPONS, LIST_COUPONS) => Ok(sketch),
        Some(image::SET) if coupons(image::SET_COUPONS, usize::MAX) => Ok(sketch),
        Some(image::HLL) if registers() => Ok(rederived(&sketch)),
        _ => Err(damaged),
    }
}

/// Whether `bytes` are at most `most` coupons (4 bytes each), distinct, none empty (zero).
fn coupons_valid(bytes: &[u8], most: usize) -> bool {
    let (chunks, rest) = bytes.as_chunks::<4>();
    let mut coupons: Vec<u32> = chunks.iter().map(|c| u32::from_le_bytes(*c)).collect();
    coupons.sort_unstable();
    rest.is_empty()
        && coupons.len() <= most
        && coupons.first() != Some(&0)
        && coupons.windows(2).all(|p| p[0] != p[1])
}

/// Whether `registers` are one byte for each of the 2^LG_K registers, each at most 63 (the
/// largest rank a coupon has).
fn registers_valid(registers: &[u8]) -> bool {
    registers.len() == 1 << LG_K && registers.iter().all(|&r| r < 64)
}

/// The same registers with the counts derived from them recomputed (a union copies the
/// registers and recounts).
fn rederived(sketch: &HllSketch) -> HllSketch {
    let mut union = empty_union();
    union.update(sketch);
    union.to_sketch(HLL_TYPE)
}
