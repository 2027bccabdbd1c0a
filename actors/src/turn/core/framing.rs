//! What arrives on a TURN port, and how a TCP byte stream is cut into messages.
//!
//! A TURN client sends two kinds of packets (RFC 8656 §12): STUN messages (first two bits `00`)
//! and ChannelData (`01`: a 16-bit channel number `0x4000..=0x7FFF`, a 16-bit length, the
//! payload). Both are self-delimiting, so TURN over TCP has no framing of its own: a STUN message
//! is `20 + length` bytes (the length is a multiple of 4), and ChannelData over a stream is padded
//! to a multiple of 4 bytes. [`StreamSplitter`] cuts a TCP stream at those boundaries; anything
//! else is garbage and closes the connection.

/// First and last channel number a client may bind (RFC 5766 range; RFC 8656 narrows it to
/// `0x4FFF`, still inside).
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFF;
/// STUN header size.
pub const STUN_HEADER: usize = 20;
/// The largest packet a TURN port accepts: ChannelData header plus a 16-bit length, padded.
pub const MAX_FRAME: usize = 4 + 0xFFFF + 3;

/// The kind of a packet, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    ChannelData,
    Invalid,
}

pub fn classify(data: &[u8]) -> Kind {
    match data.first().map(|b| b >> 6) {
        Some(0) => Kind::Stun,
        Some(1) => Kind::ChannelData,
        _ => Kind::Invalid,
    }
}

/// Channel number and payload of a ChannelData packet; None when it is not one, or is cut short.
/// Bytes after the payload (padding) are ignored.
pub fn parse_channel_data(data: &[u8]) -> Option<(u16, &[u8])> {
    if data.len() < 4 {
        return None;
    }
    let number = u16::from_be_bytes([data[0], data[1]]);
    if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
        return None;
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    data.get(4..4 + len).map(|p| (number, p))
}

/// A ChannelData packet; `pad` (over TCP) rounds it up to a multiple of 4 bytes. None if the
/// payload does not fit the 16-bit length.
pub fn channel_data(number: u16, payload: &[u8], pad: bool) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let total = if pad { (4 + payload.len() + 3) & !3 } else { 4 + payload.len() };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out.resize(total, 0);
    Some(out)
}

/// The TCP stream broke the framing rules: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("neither STUN nor ChannelData (first byte {0:#04x})")]
    NotTurn(u8),
    #[error("STUN message length {0} is not a multiple of 4")]
    BadStunLength(usize),
}

/// Length of the frame at the start of `buf`, if its header is there.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    match classify(buf) {
        Kind::Stun if !len.is_multiple_of(4) => Err(FramingError::BadStunLength(len)),
        Kind::Stun => Ok(Some(STUN_HEADER + len)),
        Kind::ChannelData => Ok(Some((4 + len + 3) & !3)),
        Kind::Invalid => Err(FramingError::NotTurn(buf[0])),
    }
}

/// Cuts a TCP byte stream into whole STUN messages and (padded) ChannelData frames. Holds at
/// most one partial frame plus what one read brought.
#[derive(Debug, Default)]
pub struct StreamSplitter {
    buf: Vec<u8>,
    start: usize,
}

impl StreamSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the socket.
    pub fn extend(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let rest = &self.buf[self.start..];
        let Some(len) = frame_len(rest)? else {
            self.compact();
            return Ok(None);
        };
        if rest.len() < len {
            self.compact();
            return Ok(None);
        }
        let frame = rest[..len].to_vec();
        self.start += len;
        Ok(Some(frame))
    }

    /// Bytes held that do not yet make a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_round_trip_and_padding() {
        let f = channel_data(0x4001, b"hello", false).unwrap();
        assert_eq!(f, [0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(parse_channel_data(&f), Some((0x4001, &b"hello"[..])));
        let p = channel_data(0x4001, b"hello", true).unwrap();
        assert_eq!(p.len(), 12);
        assert_eq!(parse_channel_data(&p), Some((0x4001, &b"hello"[..])));
        assert_eq!(channel_data(0x4000, &[], true).unwrap().len(), 4);
        assert_eq!(channel_data(0x4000, b"abcd", true).unwrap().len(), 8);
        assert!(channel_data(0x4000, &vec![0; 70_000], false).is_none());
        assert_eq!(parse_channel_data(&[0x40, 0x01, 0, 9, 1, 2]), None, "cut short");
        assert_eq!(parse_channel_data(&[0x80, 0x01, 0, 0]), None, "not a channel");
        assert_eq!(parse_channel_data(&[0x40]), None);
    }

    #[test]
    fn classify_first_bits() {
        assert_eq!(classify(&[0x00, 0x01]), Kind::Stun);
        assert_eq!(classify(&[0x40]), Kind::ChannelData);
        assert_eq!(classify(&[0x7f]), Kind::ChannelData);
        assert_eq!(classify(&[0x80]), Kind::Invalid);
        assert_eq!(classify(&[0x16]), Kind::Stun, "TLS records start 0x16: decided by the parser");
        assert_eq!(classify(&[]), Kind::Invalid);
    }

    fn stun(len: u16) -> Vec<u8> {
        let mut m = vec![0, 1];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[9; 12]);
        m.extend(std::iter::repeat_n(0xAB, len as usize));
        m
    }

    #[test]
    fn splitter_cuts_at_frame_boundaries_whatever_the_reads() {
        let mut stream = stun(8);
        stream.extend(channel_data(0x4000, b"abcde", true).unwrap());
        stream.extend(stun(0));
        stream.extend(channel_data(0x4fff, b"1234", true).unwrap());
        let want = [28, 12, 20, 8];
        for chunk in [1, 2, 3, 5, 7, 64] {
            let mut s = StreamSplitter::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                s.extend(piece);
                while let Some(f) = s.next_frame().unwrap() {
                    got.push(f.len());
                }
            }
            assert_eq!(got, want, "chunk {chunk}");
            assert_eq!(s.pending(), 0);
        }
    }

    #[test]
    fn splitter_rejects_garbage() {
        let mut s = StreamSplitter::new();
        s.extend(&[0x80, 0, 0, 0]);
        assert_eq!(s.next_frame(), Err(FramingError::NotTurn(0x80)));
        let mut s = StreamSplitter::new();
        s.extend(&[0, 1, 0, 3]);
        assert_eq!(s.next_frame(), Err(FramingError::BadStunLength(3)));
    }

    #[test]
    fn splitter_survives_random_bytes() {
        // A small deterministic fuzz: never panics, never holds more than a frame plus a read.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut s = StreamSplitter::new();
            for _ in 0..8 {
                let n = (x % 300) as usize;
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        (x & 0x7f) as u8
                    })
                    .collect();
                s.extend(&bytes);
                while let Ok(Some(f)) = s.next_frame() {
                    assert!(f.len() <= MAX_FRAME);
                }
                assert!(s.pending() <= MAX_FRAME + 300);
            }
        }
    }
}
