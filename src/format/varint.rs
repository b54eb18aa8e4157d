//! Zig-zag variable-length integers, as protobuf and Kafka's record format
//! use them.

/// Bytes needed to write `v` zig-zag encoded.
#[inline]
pub(crate) fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    // Each byte carries 7 bits; 0 still takes one byte. For `bits` in
    // 1..=64, ceil(bits / 7) == (bits * 9 + 64) / 64: no division.
    let bits = 64 - (z | 1).leading_zeros() as usize;
    (bits * 9 + 64) / 64
}

/// Writes `v` zig-zag encoded at `dst[pos..]`; returns the position after it.
#[inline(always)]
pub(crate) fn write_varint(dst: &mut [u8], pos: usize, v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    // Lengths, deltas and counts are almost always one or two bytes.
    if z < 0x80 {
        dst[pos] = z as u8;
        return pos + 1;
    }
    if z < 0x4000 {
        dst[pos..pos + 2].copy_from_slice(&[(z as u8) | 0x80, (z >> 7) as u8]);
        return pos + 2;
    }
    write_varint_long(dst, pos, z)
}

fn write_varint_long(dst: &mut [u8], mut pos: usize, mut z: u64) -> usize {
    while z >= 0x80 {
        dst[pos] = (z as u8) | 0x80;
        z >>= 7;
        pos += 1;
    }
    dst[pos] = z as u8;
    pos + 1
}

/// The value of zig-zag code `z`.
#[inline(always)]
pub(crate) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// A forward reader for the hot decode path: `None` on any malformation,
/// with every step inlined so values stay in registers.
pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) pos: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn raw(&mut self, max_bytes: usize) -> Option<u64> {
        let first = *self.b.get(self.pos)?;
        self.pos += 1;
        if first < 0x80 {
            return Some(first as u64);
        }
        let mut z = (first & 0x7f) as u64;
        for i in 1..max_bytes {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            z |= ((byte & 0x7f) as u64) << (7 * i);
            if byte < 0x80 {
                return Some(z);
            }
        }
        None
    }

    #[inline(always)]
    pub(crate) fn varint(&mut self) -> Option<i32> {
        let z = self.raw(5)?;
        if z > u32::MAX as u64 {
            return None;
        }
        Some(unzigzag(z) as i32)
    }

    #[inline(always)]
    pub(crate) fn varlong(&mut self) -> Option<i64> {
        let z = self.raw(10)?;
        Some(unzigzag(z))
    }

    /// A length-prefixed field: `Some(None)` for null (-1).
    #[inline(always)]
    pub(crate) fn field(&mut self) -> Option<Option<(usize, usize)>> {
        let len = self.varint()?;
        if len == -1 {
            return Some(None);
        }
        let start = self.pos;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        if end > self.b.len() {
            return None;
        }
        self.pos = end;
        Some(Some((start, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_the_edges() {
        let values = [
            0i64,
            -1,
            1,
            63,
            -64,
            64,
            -65,
            8191,
            300,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ];
        for v in values {
            let mut buf = [0u8; 10];
            let n = write_varint(&mut buf, 0, v);
            assert_eq!(n, varint_len(v), "length of {v}");
            let mut c = Cursor { b: &buf, pos: 0 };
            assert_eq!((c.varlong(), c.pos), (Some(v), n), "value {v}");
            if let Ok(v32) = i32::try_from(v) {
                let mut c = Cursor { b: &buf, pos: 0 };
                assert_eq!((c.varint(), c.pos), (Some(v32), n));
            }
        }
    }

    #[test]
    fn length_formula_matches_the_encoding_for_every_bit_width() {
        for bits in 0..64 {
            for z in [1u64 << bits, (1u64 << bits) - 1, (1u64 << bits) | 1] {
                // Undo the zig-zag to get a value that encodes to `z`.
                let v = unzigzag(z);
                let mut buf = [0u8; 10];
                assert_eq!(varint_len(v), write_varint(&mut buf, 0, v), "z = {z:#x}");
            }
        }
    }

    #[test]
    fn known_encodings() {
        // Protobuf's documented zig-zag examples: 0->0, -1->1, 1->2, -2->3;
        // 150 zig-zags to 300, written as 0xac 0x02.
        let mut buf = [0u8; 4];
        assert_eq!(write_varint(&mut buf, 0, -1), 1);
        assert_eq!(buf[0], 1);
        assert_eq!(write_varint(&mut buf, 0, 150), 2);
        assert_eq!(&buf[..2], &[0xac, 0x02]);
    }

    #[test]
    fn truncated_and_overlong_inputs_are_errors() {
        let varint = |b: &[u8]| Cursor { b, pos: 0 }.varint();
        assert_eq!(varint(&[0x80, 0x80]), None, "truncated");
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            None,
            "longer than 5 bytes"
        );
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0x7f]),
            None,
            "overflows 32 bits"
        );
        assert_eq!(
            Cursor {
                b: &[0xff; 11],
                pos: 0
            }
            .varlong(),
            None,
            "longer than 10 bytes"
        );
    }
}
