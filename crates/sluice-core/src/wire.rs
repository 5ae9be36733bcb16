//! The compact binary form of registers, for checkpoints and the embedded store.
//!
//! Integers are LEB128 varints (signed ones zigzagged first), floats their 8 little-endian
//! bytes, byte strings a length and the bytes. Times are written relative to a base time that
//! the caller picks per key (its newest time), so a time near it takes one to three bytes
//! instead of eight. Counts of items come first, so a reader needs no schema: the layout of
//! each register is written out next to its type, and `docs/checkpoints.md` describes it.
//!
//! Decoding checks every length against the bytes left and fails with a [`WireError`] on
//! anything short or malformed; it never panics on bad input. Bytes can also be well formed
//! but structurally wrong (registers of another plan, counts that do not add up): each
//! register checks its inner consistency as it is decoded, and
//! [`crate::KeyState::decode`] checks the registers against the key spec they are for.

use smallvec::{Array, SmallVec};

use crate::deque::SmallDeque;

/// Malformed or truncated register bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

/// Appends values to a buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    base: i64,
}

impl<'a> Writer<'a> {
    /// Writes at the end of `out`, with times relative to `base`.
    pub fn new(out: &'a mut Vec<u8>, base: i64) -> Self {
        Writer { out, base }
    }

    /// Sets the time that later times are written relative to.
    pub fn set_base(&mut self, base: i64) {
        self.base = base;
    }

    /// An unsigned integer.
    #[inline]
    pub fn u(&mut self, mut v: u64) {
        if v < 0x80 {
            self.out.push(v as u8);
            return;
        }
        // Built on the stack and appended at once: one capacity check, not one per byte.
        let (mut buf, mut n) = ([0u8; 10], 0);
        while v >= 0x80 {
            buf[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        buf[n] = v as u8;
        self.out.extend_from_slice(&buf[..=n]);
    }

    /// A signed integer (zigzag).
    #[inline]
    pub fn i(&mut self, v: i64) {
        self.u(((v << 1) ^ (v >> 63)) as u64);
    }

    /// A time, relative to the base.
    #[inline]
    pub fn ts(&mut self, ts: i64) {
        self.i(ts.wrapping_sub(self.base));
    }

    /// A float, bit for bit.
    #[inline]
    pub fn f(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    /// A byte string.
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        self.u(b.len() as u64);
        self.out.extend_from_slice(b);
    }

    /// A sequence: its length, then each item.
    pub fn seq<T: Wire>(&mut self, items: &[T]) {
        self.u(items.len() as u64);
        for item in items {
            item.put(self);
        }
    }
}

/// Reads values from a byte slice, advancing through it.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    base: i64,
}

impl<'a> Reader<'a> {
    /// Reads `buf` with times relative to `base`.
    pub fn new(buf: &'a [u8], base: i64) -> Self {
        Reader { buf, base }
    }

    /// Sets the time that later times are read relative to.
    pub fn set_base(&mut self, base: i64) {
        self.base = base;
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// An unsigned integer.
    #[inline]
    pub fn u(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte holds the top bit only: more would not fit in a u64.
                if i == 9 && b > 1 {
                    return Err(WireError("an integer beyond u64"));
                }
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err(WireError("a truncated or overlong integer"))
    }

    /// A signed integer (zigzag).
    #[inline]
    pub fn i(&mut self) -> Result<i64, WireError> {
        let z = self.u()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A time, relative to the base.
    #[inline]
    pub fn ts(&mut self) -> Result<i64, WireError> {
        Ok(self.i()?.wrapping_add(self.base))
    }

    /// An unsigned integer that must fit a `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, WireError> {
        u32::try_from(self.u()?).map_err(|_| WireError("a count beyond u32"))
    }

    /// A length or count: at most the bytes left (every item takes at least one byte), so a
    /// damaged length cannot make the reader allocate without bound.
    #[inline]
    pub fn count(&mut self) -> Result<usize, WireError> {
        let n = self.u()?;
        if n > self.buf.len() as u64 {
            return Err(WireError("a length beyond the end of the data"));
        }
        Ok(n as usize)
    }

    /// An index or position, which is not bounded by the bytes left.
    #[inline]
    pub fn index(&mut self) -> Result<usize, WireError> {
        usize::try_from(self.u()?).map_err(|_| WireError("an index beyond usize"))
    }

    /// A float.
    #[inline]
    pub fn f(&mut self) -> Result<f64, WireError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<8>()
            .ok_or(WireError("a truncated float"))?;
        self.buf = rest;
        Ok(f64::from_bits(u64::from_le_bytes(*head)))
    }

    /// A byte string, borrowed.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.count()?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A sequence written by [`Writer::seq`].
    pub fn seq<A: Array>(&mut self) -> Result<SmallVec<A>, WireError>
    where
        A::Item: Wire,
    {
        let n = self.count()?;
        let mut v = SmallVec::with_capacity(n);
        for _ in 0..n {
            v.push(A::Item::get(self)?);
        }
        Ok(v)
    }

    /// A deque written by [`Writer::seq`] from its items.
    pub fn deque<A: Array>(&mut self) -> Result<SmallDeque<A>, WireError>
    where
        A::Item: Wire + Copy,
    {
        Ok(SmallDeque::from_items(self.seq::<A>()?))
    }
}

/// A register part with a compact binary form.
pub trait Wire: Sized {
    /// Appends the binary form.
    fn put(&self, w: &mut Writer<'_>);
    /// Reads it back.
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError>;
}

impl Wire for (i64, f64) {
    fn put(&self, w: &mut Writer<'_>) {
        w.ts(self.0);
        w.f(self.1);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok((r.ts()?, r.f()?))
    }
}

impl Wire for u32 {
    fn put(&self, w: &mut Writer<'_>) {
        w.u(u64::from(*self));
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.u32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_times_floats_and_bytes_round_trip() {
        let ints = [0i64, 1, -1, 63, -64, 64, 1 << 40, i64::MIN, i64::MAX];
        let base = 1_767_225_600_000;
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, base);
        for &v in &ints {
            w.i(v);
            w.u(v as u64);
            w.ts(v);
            w.f(v as f64 / 3.0);
        }
        w.f(-0.0);
        w.bytes(b"u42");
        let mut r = Reader::new(&out, base);
        for &v in &ints {
            assert_eq!(r.i(), Ok(v));
            assert_eq!(r.u(), Ok(v as u64));
            assert_eq!(r.ts(), Ok(v));
            assert_eq!(r.f().map(f64::to_bits), Ok((v as f64 / 3.0).to_bits()));
        }
        assert_eq!(r.f().map(f64::to_bits), Ok((-0.0f64).to_bits()));
        assert_eq!(r.bytes(), Ok(&b"u42"[..]));
        assert!(r.rest().is_empty());
    }

    #[test]
    fn times_near_the_base_are_short() {
        let mut out = Vec::new();
        Writer::new(&mut out, 1_767_225_600_000).ts(1_767_225_600_000 - 3_600_000);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        assert!(Reader::new(&[0x80], 0).u().is_err());
        assert!(Reader::new(&[0xff; 11], 0).u().is_err());
        let mut beyond = [0xff; 10];
        beyond[9] = 0x02;
        assert!(Reader::new(&beyond, 0).u().is_err());
        assert!(Reader::new(&[1, 2, 3], 0).f().is_err());
        assert!(Reader::new(&[200, 1, b'a'], 0).bytes().is_err());
        assert!(Reader::new(&[5, 1], 0).seq::<[u32; 2]>().is_err());
    }
}
