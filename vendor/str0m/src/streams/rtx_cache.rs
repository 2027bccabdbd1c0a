use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::io::DATAGRAM_MAX_PACKET_SIZE;
use crate::packet::Vp8Patch;
use crate::rtp_::{ExtensionValues, MediaTime, Pt, RtpHeader, SeqNo, Ssrc};

use super::RtpPacket;
use super::rtx_cache_buf::EvictingBuffer;

const RTX_CACHE_SIZE_QUANTIZER: usize = 25;
const RTX_CACHE_QUANTIZE_SLOTS: usize = DATAGRAM_MAX_PACKET_SIZE / RTX_CACHE_SIZE_QUANTIZER;

#[derive(Debug)]
pub(crate) struct RtxCache {
    // Data, new additions here probably need to be cleared in [`clear`].
    packet_by_seq_no: EvictingBuffer<HeldPacket>,

    // Technically we want [Option<SeqNo>; X] to indicate the absence of
    // a SeqNo. However We can half the storage space by using the sentinel
    // values SeqNo::MAX to indicate None
    // sluice: made on the first cached packet (640 bytes an audio stream never uses).
    seq_no_by_quantized_size: Option<Box<[SeqNo; RTX_CACHE_QUANTIZE_SLOTS]>>,

    // sluice: the packet last asked for, rebuilt from its compact record (see HeldPacket);
    // made on the first ask (a clean link never asks).
    scratch: Option<Box<RtpPacket>>,
}

/// sluice: a sent packet as the cache holds it, ~100 bytes where an `RtpPacket` is 408. Most of
/// an `RtpPacket` is its header's extension values and CSRC list, which sent media nearly
/// always leaves empty: the header is kept whole (boxed) only when they are not. A viewer's
/// history holds 50-130 of these (BENCHMARKS.md, "Session 13").
///
/// The MID and RID extensions are not kept. `poll_packet` writes them into a packet's header
/// while the peer has not acknowledged the stream's SSRC, and sets both again on every resend
/// from the stream's own values: the MID while the peer has not acknowledged the main or the
/// RTX SSRC, the RID never (a resend carries it as the repaired RID). Keeping them only made a
/// resend carry a MID the peer no longer needs.
#[derive(Debug)]
struct HeldPacket {
    seq_no: SeqNo,
    time: MediaTime,
    payload: Arc<[u8]>,
    timestamp: Instant,
    vp8_patch: Option<Vp8Patch>,
    header: HeldHeader,
}

#[derive(Debug)]
enum HeldHeader {
    /// Extension values at their defaults, no CSRCs.
    Plain {
        version: u8,
        has_padding: bool,
        has_extension: bool,
        marker: bool,
        payload_type: Pt,
        sequence_number: u16,
        timestamp: u32,
        ssrc: Ssrc,
        header_len: u16,
    },
    Full(Box<RtpHeader>),
}

impl HeldPacket {
    fn new(packet: RtpPacket) -> Self {
        let mut h = packet.header;
        h.ext_vals.mid = None;
        h.ext_vals.rid = None;
        let plain = h.csrc_count == 0
            && h.csrc == [0; 15]
            && h.header_len <= u16::MAX as usize
            && h.ext_vals == ExtensionValues::default();
        let header = if plain {
            HeldHeader::Plain {
                version: h.version,
                has_padding: h.has_padding,
                has_extension: h.has_extension,
                marker: h.marker,
                payload_type: h.payload_type,
                sequence_number: h.sequence_number,
                timestamp: h.timestamp,
                ssrc: h.ssrc,
                header_len: h.header_len as u16,
            }
        } else {
            HeldHeader::Full(Box::new(h))
        };
        HeldPacket {
            seq_no: packet.seq_no,
            time: packet.time,
            payload: packet.payload,
            timestamp: packet.timestamp,
            vp8_patch: packet.vp8_patch,
            header,
        }
    }

    /// The packet as it was cached (every cached packet is nackable).
    fn restore_into(&self, into: &mut RtpPacket) {
        into.seq_no = self.seq_no;
        into.time = self.time;
        into.payload = self.payload.clone();
        into.timestamp = self.timestamp;
        into.vp8_patch = self.vp8_patch;
        into.last_sender_info = None;
        into.nackable = true;
        into.header = match &self.header {
            HeldHeader::Full(h) => (**h).clone(),
            HeldHeader::Plain {
                version,
                has_padding,
                has_extension,
                marker,
                payload_type,
                sequence_number,
                timestamp,
                ssrc,
                header_len,
            } => RtpHeader {
                version: *version,
                has_padding: *has_padding,
                has_extension: *has_extension,
                csrc_count: 0,
                marker: *marker,
                payload_type: *payload_type,
                sequence_number: *sequence_number,
                timestamp: *timestamp,
                ssrc: *ssrc,
                csrc: [0; 15],
                ext_vals: ExtensionValues::default(),
                header_len: *header_len as usize,
            },
        };
    }
}

impl RtxCache {
    pub fn new(max_packet_count: usize, max_packet_age: Duration) -> Self {
        Self {
            packet_by_seq_no: EvictingBuffer::new(10, max_packet_age, max_packet_count),
            seq_no_by_quantized_size: None,
            scratch: None,
        }
    }

    pub fn cache_sent_packet(&mut self, packet: RtpPacket, now: Instant) {
        assert!(packet.nackable);
        let seq_no = packet.seq_no;
        let quantized_size = packet.payload.len() / RTX_CACHE_SIZE_QUANTIZER;
        self.packet_by_seq_no
            .push(*seq_no, now, HeldPacket::new(packet));
        self.seq_no_by_quantized_size
            .get_or_insert_with(|| Box::new([SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS]))
            [quantized_size] = seq_no;
        self.remove_old_packets(now);
    }

    pub fn last_cached_seq_no(&self) -> Option<SeqNo> {
        Some(self.packet_by_seq_no.last_position()?.into())
    }

    /// sluice: the payload size of a cached packet, without rebuilding it.
    pub fn cached_payload_len(&self, seq_no: SeqNo) -> Option<usize> {
        Some(self.packet_by_seq_no.get(*seq_no)?.payload.len())
    }

    pub fn get_cached_packet_by_seq_no(&mut self, seq_no: SeqNo) -> Option<&mut RtpPacket> {
        let held = self.packet_by_seq_no.get(*seq_no)?;
        let scratch = self
            .scratch
            .get_or_insert_with(|| Box::new(RtpPacket::blank()));
        held.restore_into(scratch);
        Some(scratch.as_mut())
    }

    pub fn get_cached_packet_smaller_than(&mut self, max_size: usize) -> Option<&mut RtpPacket> {
        let quantized_size = max_size / RTX_CACHE_SIZE_QUANTIZER;

        let seq_no = *self.seq_no_by_quantized_size.as_ref()?[..quantized_size]
            .iter()
            .rev()
            .filter(|seq_no| !seq_no.is_max())
            .find(|seq_no| self.packet_by_seq_no.contains(***seq_no))?;

        self.get_cached_packet_by_seq_no(seq_no)
    }

    fn remove_old_packets(&mut self, now: Instant) {
        self.packet_by_seq_no.maybe_evict(now);
    }

    pub(crate) fn last_packet(&self) -> Option<&[u8]> {
        let packet = self.packet_by_seq_no.last()?;
        Some(packet.payload.as_ref())
    }

    pub(crate) fn clear(&mut self) {
        self.packet_by_seq_no.clear();
        self.seq_no_by_quantized_size = None;
    }
}

#[cfg(test)]
mod test {
    use crate::rtp_::MediaTime;
    use crate::rtp_::RtpHeader;

    use super::*;

    fn after(now: Instant, millis: u64) -> Instant {
        now + Duration::from_millis(millis)
    }

    fn packet(now: Instant, seq_no: u64, millis: u64) -> RtpPacket {
        RtpPacket {
            header: RtpHeader::default(),
            seq_no: seq_no.into(),
            time: MediaTime::from_90khz(0),
            payload: millis.to_be_bytes().into(),
            vp8_patch: None,
            timestamp: after(now, millis),
            last_sender_info: None,
            nackable: true,
        }
    }

    // sluice: the compact record gives back the packet as it was cached, but for MID and RID.
    #[test]
    fn held_packet_round_trip() {
        let now = Instant::now();
        let mut plain = packet(now, 7, 10);
        plain.header.marker = true;
        plain.header.payload_type = 102.into();
        plain.header.sequence_number = 7;
        plain.header.timestamp = 90_000;
        plain.header.ssrc = 1234.into();
        plain.header.header_len = 24;
        plain.time = MediaTime::from_90khz(90_000);
        let mut with_mid = packet(now, 8, 20);
        with_mid.header.ext_vals.mid = Some("1".into());
        with_mid.header.ext_vals.rid = Some("h".into());
        let mut with_ext = packet(now, 9, 30);
        with_ext.header.ext_vals.audio_level = Some(-30);
        with_ext.header.csrc_count = 1;
        with_ext.header.csrc[0] = 99;

        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(3));
        for p in [&plain, &with_mid, &with_ext] {
            let copy = RtpPacket {
                header: p.header.clone(),
                seq_no: p.seq_no,
                time: p.time,
                payload: p.payload.clone(),
                vp8_patch: p.vp8_patch,
                timestamp: p.timestamp,
                last_sender_info: None,
                nackable: true,
            };
            rtx_cache.cache_sent_packet(copy, after(now, 30));
        }
        assert!(matches!(
            rtx_cache.packet_by_seq_no.get(7).unwrap().header,
            HeldHeader::Plain { .. }
        ));
        assert!(matches!(
            rtx_cache.packet_by_seq_no.get(8).unwrap().header,
            HeldHeader::Plain { .. }
        ));
        assert!(matches!(
            rtx_cache.packet_by_seq_no.get(9).unwrap().header,
            HeldHeader::Full(_)
        ));
        assert_eq!(
            Some(&mut plain),
            rtx_cache.get_cached_packet_by_seq_no(7.into())
        );
        with_mid.header.ext_vals.mid = None;
        with_mid.header.ext_vals.rid = None;
        assert_eq!(
            Some(&mut with_mid),
            rtx_cache.get_cached_packet_by_seq_no(8.into())
        );
        assert_eq!(
            Some(&mut with_ext),
            rtx_cache.get_cached_packet_by_seq_no(9.into())
        );
        assert_eq!(Some(8), rtx_cache.cached_payload_len(9.into()));
        assert_eq!(None, rtx_cache.cached_payload_len(10.into()));
    }

    #[test]
    fn rtx_cache_0_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(0, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
    }

    #[test]
    fn rtx_cache_0_duration() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(0));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(1.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(1000));
    }

    #[test]
    fn rtx_cache_1_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(1, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(25)
        );
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(24));
        rtx_cache.cache_sent_packet(packet(now, 2, 20), after(now, 20));
        assert_eq!(
            Some(&mut packet(now, 2, 20)),
            rtx_cache.get_cached_packet_by_seq_no(2.into())
        );
    }

    #[test]
    fn rtx_cache_100_sized_backwards() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(100, Duration::from_secs(3));

        for i in 1..=200 {
            let seq_no = 201 - i;
            let pkt = packet(now, seq_no, (201 - i) * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        assert_eq!(
            Some(&mut packet(now, 200, 2000)),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(100.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(101.into()));
    }

    #[test]
    fn rtx_cache_eviction() {
        let now = Instant::now();
        // Cache can take all entries
        let mut rtx_cache = RtxCache::new(400, Duration::from_secs(1));
        for i in 1..=200 {
            let seq_no = i;
            let pkt = packet(now, seq_no, i * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(99.into()));

        assert_eq!(
            Some(&mut packet(now, 100, 1000)),
            rtx_cache.get_cached_packet_by_seq_no(100.into())
        );
        assert_eq!(
            Some(&mut packet(now, 200, 2000)),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
    }
}
