//! Zig-zag variable-length integers, as protobuf and Kafka's record format
//! use them.

use super::FormatError;

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

fn read_raw(b: &[u8], mut pos: usize, max_bytes: usize) -> Result<(u64, usize), FormatError> {
    let mut z = 0u64;
    for i in 0..max_bytes {
        let byte = *b
            .get(pos)
            .ok_or_else(|| FormatError("varint runs past the end".into()))?;
        pos += 1;
        z |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((z, pos));
        }
    }
    Err(FormatError(format!("varint longer than {max_bytes} bytes")))
}

#[inline]
fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Reads a 32-bit zig-zag varint (at most 5 bytes).
#[inline]
pub(crate) fn read_varint(b: &[u8], pos: usize) -> Result<(i32, usize), FormatError> {
    // Most fields (lengths, deltas, counts) fit in one byte.
    if let Some(&byte) = b.get(pos) {
        if byte < 0x80 {
            return Ok((unzigzag(byte as u64) as i32, pos + 1));
        }
    }
    let (z, p) = read_raw(b, pos, 5)?;
    if z > u32::MAX as u64 {
        return Err(FormatError(format!("varint {z} overflows 32 bits")));
    }
    Ok((unzigzag(z) as i32, p))
}

/// Reads a 64-bit zig-zag varlong (at most 10 bytes).
#[inline]
pub(crate) fn read_varlong(b: &[u8], pos: usize) -> Result<(i64, usize), FormatError> {
    if let Some(&byte) = b.get(pos) {
        if byte < 0x80 {
            return Ok((unzigzag(byte as u64), pos + 1));
        }
    }
    let (z, p) = read_raw(b, pos, 10)?;
    Ok((unzigzag(z), p))
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
            assert_eq!(read_varlong(&buf, 0).unwrap(), (v, n), "value {v}");
            if let Ok(v32) = i32::try_from(v) {
                assert_eq!(read_varint(&buf, 0).unwrap(), (v32, n));
            }
        }
    }

    #[test]
    fn length_formula_matches_the_encoding_for_every_bit_width() {
        for bits in 0..64 {
            for z in [1u64 << bits, (1u64 << bits) - 1, (1u64 << bits) | 1] {
                // Undo the zig-zag to get a value that encodes to `z`.
                let v = ((z >> 1) as i64) ^ -((z & 1) as i64);
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
        assert!(read_varint(&[0x80, 0x80], 0).is_err());
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 0).is_err());
        assert!(read_varlong(&[0xff; 11], 0).is_err());
    }
}
