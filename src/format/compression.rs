//! Batch compression, encoded as Kafka encodes it.
//!
//! In a RecordBatch v2 the header (61 bytes, with `recordsCount`) stays
//! uncompressed; bits 0-2 of `attributes` name the codec, and everything
//! after the header — the records, back to back — is one compressed stream.
//! The CRC-32C covers the compressed bytes. Per codec, the stream is what
//! Kafka's Java client writes and its decoders read:
//!
//! | bits | codec  | stream |
//! |------|--------|--------|
//! | 1    | gzip   | a gzip member (RFC 1952), as `GZIPOutputStream` writes |
//! | 2    | snappy | xerial framing, as `SnappyOutputStream` writes: the 16-byte header `82 'SNAPPY' 00`, version 1, compatible version 1 (both i32 big-endian), then blocks of at most 32 KiB input, each an i32 big-endian length and a raw Snappy block. Raw Snappy without the header is read too. |
//! | 3    | lz4    | the LZ4 frame format (magic `04 22 4D 18`), 64 KiB independent blocks, no checksums beyond the header's |
//! | 4    | zstd   | one Zstandard frame (level 3, Kafka's default) |
//!
//! Each codec is a cargo feature (`gzip`, `snappy`, `lz4`, `zstd`; the last
//! two are on by default). A topic cannot be configured with a codec that is
//! not compiled in, and reading a batch written with one fails with
//! `Error::Corrupt` saying which feature it needs.

use std::borrow::Cow;
#[cfg(any(feature = "gzip", feature = "lz4", feature = "zstd"))]
use std::io::Read;

use serde::{Deserialize, Serialize};

use super::FormatError;

/// Compression of a topic's batches ([`TopicConfig::compression`]).
///
/// Batches keep the codec they were written with: changing a topic's codec
/// (or reading segments written by an older configuration) leaves every
/// batch readable, as long as its codec's feature is compiled in.
///
/// [`TopicConfig::compression`]: crate::TopicConfig::compression
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (default, like Kafka's `compression.type=none`).
    #[default]
    None,
    /// gzip (feature `gzip`): best ratio of the classic codecs, slowest.
    Gzip,
    /// Snappy in the xerial framing (feature `snappy`).
    Snappy,
    /// LZ4 frame format (feature `lz4`, on by default): fastest.
    Lz4,
    /// Zstandard (feature `zstd`, on by default): good ratio at speed.
    Zstd,
}

/// Largest records section a batch may decompress to: batch lengths are
/// 32-bit in the format.
#[cfg(any(
    feature = "gzip",
    feature = "snappy",
    feature = "lz4",
    feature = "zstd"
))]
const MAX_DECOMPRESSED: u64 = i32::MAX as u64;

/// xerial's Snappy stream header: magic, version 1, compatible version 1.
#[cfg(feature = "snappy")]
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];
/// Input bytes per xerial block (`SnappyOutputStream`'s default).
#[cfg(feature = "snappy")]
const XERIAL_BLOCK: usize = 32 * 1024;

impl Compression {
    /// The codec's bits in a batch's `attributes`.
    pub(crate) fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec named by a batch's `attributes`.
    pub(crate) fn from_attributes(attributes: i16) -> Result<Compression, FormatError> {
        Ok(match attributes & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            n => {
                return Err(FormatError::new(format!(
                    "compression codec {n} does not exist"
                )))
            }
        })
    }

    /// The cargo feature that compiles the codec in.
    pub(crate) fn feature(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Whether this build can write and read the codec.
    pub fn is_available(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Snappy => cfg!(feature = "snappy"),
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }

    fn unavailable(self) -> FormatError {
        FormatError::new(format!(
            "batch compressed with {self:?}, but brook was built without the {:?} feature",
            self.feature()
        ))
    }
}

/// Appends `input` compressed with `codec` to `out`. Only fails for a codec
/// that is not compiled in (or `None`).
#[cfg_attr(
    not(any(
        feature = "gzip",
        feature = "snappy",
        feature = "lz4",
        feature = "zstd"
    )),
    allow(unused_variables, clippy::ptr_arg)
)]
pub(crate) fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    match codec {
        Compression::None => Err(FormatError::new("no codec to compress with")),
        #[cfg(feature = "gzip")]
        Compression::Gzip => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(input)
                .and_then(|()| enc.finish().map(drop))
                .map_err(|e| FormatError::new(format!("gzip: {e}")))
        }
        #[cfg(feature = "snappy")]
        Compression::Snappy => {
            out.extend_from_slice(&XERIAL_HEADER);
            let mut enc = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let at = out.len();
                out.resize(at + 4 + snap::raw::max_compress_len(block.len()), 0);
                let n = enc
                    .compress(block, &mut out[at + 4..])
                    .map_err(|e| FormatError::new(format!("snappy: {e}")))?;
                out[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
                out.truncate(at + 4 + n);
            }
            Ok(())
        }
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            use std::io::Write;
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(input)
                .map_err(|e| FormatError::new(format!("lz4: {e}")))?;
            enc.finish()
                .map(drop)
                .map_err(|e| FormatError::new(format!("lz4: {e}")))
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let bound = zstd::zstd_safe::compress_bound(input.len());
            let at = out.len();
            out.resize(at + bound, 0);
            let n = zstd::bulk::compress_to_buffer(input, &mut out[at..], 3)
                .map_err(|e| FormatError::new(format!("zstd: {e}")))?;
            out.truncate(at + n);
            Ok(())
        }
        #[allow(unreachable_patterns)]
        other => Err(other.unavailable()),
    }
}

/// The records section of a batch with codec `codec`: `input` itself when
/// uncompressed, else decompressed.
pub(crate) fn decompress(codec: Compression, input: &[u8]) -> Result<Cow<'_, [u8]>, FormatError> {
    match codec {
        Compression::None => Ok(Cow::Borrowed(input)),
        #[cfg(feature = "gzip")]
        Compression::Gzip => read_all("gzip", flate2::read::GzDecoder::new(input)),
        #[cfg(feature = "snappy")]
        Compression::Snappy => snappy_decompress(input).map(Cow::Owned),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => read_all("lz4", lz4_flex::frame::FrameDecoder::new(input)),
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| FormatError::new(format!("zstd: {e}")))?;
            read_all("zstd", dec)
        }
        #[allow(unreachable_patterns)]
        other => Err(other.unavailable()),
    }
}

#[cfg(any(feature = "gzip", feature = "lz4", feature = "zstd"))]
fn read_all(codec: &str, reader: impl Read) -> Result<Cow<'static, [u8]>, FormatError> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| FormatError::new(format!("{codec} stream is damaged: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(FormatError::new(format!(
            "{codec} stream decompresses past {MAX_DECOMPRESSED} bytes"
        )));
    }
    Ok(Cow::Owned(out))
}

#[cfg(feature = "snappy")]
fn snappy_decompress(input: &[u8]) -> Result<Vec<u8>, FormatError> {
    let damaged = |e: String| FormatError::new(format!("snappy stream is damaged: {e}"));
    let mut dec = snap::raw::Decoder::new();
    if !input.starts_with(&XERIAL_HEADER[..8]) {
        snappy_block_len(input, 0).map_err(damaged)?;
        return dec
            .decompress_vec(input)
            .map_err(|e| damaged(e.to_string()));
    }
    let mut out = Vec::new();
    let mut rest = &input[XERIAL_HEADER.len().min(input.len())..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(damaged("a block length is cut off".into()));
        }
        let n = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let block = rest
            .get(4..4 + n)
            .ok_or_else(|| damaged(format!("a block of {n} bytes runs past the end")))?;
        let len = snappy_block_len(block, out.len()).map_err(damaged)?;
        let at = out.len();
        out.resize(at + len, 0);
        dec.decompress(block, &mut out[at..])
            .map_err(|e| damaged(e.to_string()))?;
        rest = &rest[4 + n..];
    }
    Ok(out)
}

/// The decompressed length a raw Snappy block declares in its header,
/// checked before anything is allocated for it: at most what the block's
/// bytes can expand to (a 3-byte copy element yields at most 64 bytes, so
/// under 32 times the block), and no more than [`MAX_DECOMPRESSED`] with
/// the `so_far` bytes of earlier blocks.
#[cfg(feature = "snappy")]
fn snappy_block_len(block: &[u8], so_far: usize) -> Result<usize, String> {
    let len = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
    if len > block.len().saturating_mul(32) {
        return Err(format!(
            "a block of {} bytes declares {len} bytes decompressed",
            block.len()
        ));
    }
    if (so_far + len) as u64 > MAX_DECOMPRESSED {
        return Err(format!("decompresses past {MAX_DECOMPRESSED} bytes"));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"user-{}\"}}", i % 97).into_bytes())
            .collect()
    }

    #[test]
    fn every_available_codec_round_trips_and_shrinks_repetitive_data() {
        let input = sample();
        for codec in ALL.into_iter().skip(1).filter(|c| c.is_available()) {
            let mut out = b"prefix".to_vec();
            compress(codec, &input, &mut out).unwrap();
            assert!(out.starts_with(b"prefix"), "{codec:?} overwrote the buffer");
            let packed = &out[6..];
            assert!(
                packed.len() * 4 < input.len(),
                "{codec:?}: {} bytes",
                packed.len()
            );
            assert_eq!(
                &*decompress(codec, packed).unwrap(),
                &input[..],
                "{codec:?}"
            );
        }
    }

    #[test]
    fn attribute_bits_round_trip_and_unknown_codecs_are_refused() {
        for codec in ALL {
            assert_eq!(
                Compression::from_attributes(codec.attribute_bits()).unwrap(),
                codec
            );
        }
        for bits in 5..8 {
            assert!(Compression::from_attributes(bits).is_err());
        }
    }

    #[test]
    fn damaged_streams_are_errors_not_panics() {
        let input = sample();
        for codec in ALL.into_iter().skip(1).filter(|c| c.is_available()) {
            let mut packed = Vec::new();
            compress(codec, &input, &mut packed).unwrap();
            for cut in [0, 1, 5, 17, packed.len() / 2, packed.len() - 1] {
                // A cut stream is an error or (a codec may stop at a block
                // boundary) a prefix of the input, never other bytes.
                if let Ok(out) = decompress(codec, &packed[..cut]) {
                    assert!(input.starts_with(&out), "{codec:?} cut at {cut}");
                }
            }
            let mut flipped = packed.clone();
            for i in (0..flipped.len()).step_by(7) {
                flipped[i] ^= 0xa5;
            }
            let _ = decompress(codec, &flipped);
        }
    }

    #[cfg(feature = "snappy")]
    #[test]
    fn snappy_uses_the_xerial_framing_and_reads_raw_snappy_too() {
        let input = sample();
        let mut packed = Vec::new();
        compress(Compression::Snappy, &input, &mut packed).unwrap();
        assert_eq!(&packed[..16], &XERIAL_HEADER);
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert_eq!(&*decompress(Compression::Snappy, &raw).unwrap(), &input[..]);
    }

    #[cfg(feature = "snappy")]
    #[test]
    fn a_snappy_length_header_the_block_cannot_fill_is_refused_before_allocating() {
        // Found by fuzzing: a raw block whose varint header claims ~4 GB
        // made the decoder allocate that much before looking further.
        let lying = [0x8b, 0xcf, 0xe5, 0xff, 0x0e, 0x76, 0x61, 0x6c];
        let err = decompress(Compression::Snappy, &lying).unwrap_err();
        assert!(err.0.contains("declares"), "{err}");
        let mut framed = XERIAL_HEADER.to_vec();
        framed.extend_from_slice(&(lying.len() as u32).to_be_bytes());
        framed.extend_from_slice(&lying);
        let err = decompress(Compression::Snappy, &framed).unwrap_err();
        assert!(err.0.contains("declares"), "{err}");
        // The most a block can expand: runs of 64-byte copies.
        let zeros = vec![0u8; 1 << 20];
        let raw = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert_eq!(&*decompress(Compression::Snappy, &raw).unwrap(), &zeros[..]);
    }
}
