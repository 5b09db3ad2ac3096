//! Test support shared by the codec modules: a decoder fed a byte stream cut into pieces, the way
//! TCP may deliver it.

use std::fmt::Debug;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Feeds `wire` to `codec` in chunks of the given sizes (cycled; 0 counts as 1), decoding every
/// complete frame after each chunk, then signals the end of the stream. The frames in order, or
/// the first error.
pub fn decode_chunked<D: Decoder>(
    mut codec: D,
    wire: &[u8],
    chunk_sizes: &[usize],
) -> Result<Vec<D::Item>, D::Error> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = wire;
    let mut sizes = chunk_sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(1).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        buf.extend_from_slice(chunk);
        rest = tail;
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// Asserts that `wire` decodes to `expected` however it is cut: at every single byte boundary,
/// and one byte at a time, each time with a fresh codec from `new_codec`.
pub fn assert_decodes_at_every_split<D>(
    new_codec: impl Fn() -> D,
    wire: &[u8],
    expected: &[D::Item],
) where
    D: Decoder,
    D::Item: PartialEq + Debug,
    D::Error: Debug,
{
    for cut in 0..=wire.len() {
        let frames = decode_chunked(new_codec(), wire, &[cut, wire.len()]).expect("valid stream");
        assert_eq!(frames, expected, "first chunk of {cut} bytes");
    }
    let frames = decode_chunked(new_codec(), wire, &[1]).expect("valid stream");
    assert_eq!(frames, expected, "one byte at a time");
}
