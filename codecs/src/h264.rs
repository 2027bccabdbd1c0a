//! H.264 as every source and sink of the server handles it, without decoding: the one Annex-B
//! scanner, the conversions between Annex-B (start codes, as WebRTC, RTSP and our [`Frame`]s
//! carry it) and AVCC (length prefixes, as MP4 and FLV carry it), the
//! `AVCDecoderConfigurationRecord`, and the picture size from an SPS.
//!
//! The SPS is parsed by `h264-reader` (VUI included; the crate retina already uses for RTSP
//! cameras); everything else here is a few lines of byte slicing.
//!
//! [`Frame`]: crate::media::Frame

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal};

/// NAL unit type of an IDR slice (a keyframe).
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;

/// The type of a NAL unit (header byte included), `None` if it is empty.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|h| h & 0x1f)
}

/// Where the next start code (00 00 01) at or after `from` begins, and where its NAL unit begins.
fn next_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 2 < data.len() {
        if data[i + 2] > 1 {
            // No start code can begin at i, i + 1 or i + 2 (the skip ffmpeg's scanner makes).
            i += 3;
        } else if data[i + 2] == 1 && data[i] == 0 && data[i + 1] == 0 {
            return Some((i, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

/// The NAL units of an Annex-B access unit (start codes 00 00 01 or 00 00 00 01), without their
/// start codes and trailing zero bytes. Bytes before the first start code are ignored; empty
/// units are skipped, so every unit yielded has its header byte. Allocates nothing.
pub fn annexb_nals(data: &[u8]) -> AnnexBNals<'_> {
    AnnexBNals { data, next: next_start_code(data, 0).map(|(_, nal)| nal) }
}

/// Iterator of [`annexb_nals`].
pub struct AnnexBNals<'a> {
    data: &'a [u8],
    /// Where the next NAL unit begins (just after its start code).
    next: Option<usize>,
}

impl<'a> Iterator for AnnexBNals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let start = self.next?;
            let end = match next_start_code(self.data, start) {
                Some((code, nal)) => {
                    self.next = Some(nal);
                    code
                }
                None => {
                    self.next = None;
                    self.data.len()
                }
            };
            let mut nal = &self.data[start..end];
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

/// NAL unit types of an Annex-B access unit, in order.
pub fn annexb_nal_types(data: &[u8]) -> impl Iterator<Item = u8> + '_ {
    annexb_nals(data).filter_map(nal_type)
}

/// An Annex-B access unit as an MP4 sample: each NAL unit prefixed by its 4-byte length.
/// Access unit delimiters are dropped (meaningless in MP4).
pub fn annexb_to_avcc(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    for nal in annexb_nals(data) {
        if nal_type(nal) == Some(NAL_AUD) {
            continue;
        }
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// Length-prefixed H.264 (AVCC, from MP4 samples and FLV tags) to Annex-B; on sync samples the
/// parameter sets go first unless the sample carries an SPS, so a viewer that starts at any
/// keyframe can decode. A length running past the end stops the conversion there.
pub fn avcc_to_annexb(
    sample: &[u8],
    length_size: u8,
    sync: bool,
    sps: &[Vec<u8>],
    pps: &[Vec<u8>],
) -> Vec<u8> {
    let ls = length_size.clamp(1, 4) as usize;
    let mut out = Vec::with_capacity(sample.len() + 64);
    let mut nals: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    while i + ls <= sample.len() {
        let len = sample[i..i + ls].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        i += ls;
        if len == 0 || i + len > sample.len() {
            break;
        }
        nals.push(&sample[i..i + len]);
        i += len;
    }
    let has_sps = nals.iter().any(|n| nal_type(n) == Some(NAL_SPS));
    if sync && !has_sps {
        for ps in sps.iter().chain(pps) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(ps);
        }
    }
    for n in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n);
    }
    out
}

/// Picture size from an H.264 SPS NAL unit (header byte included), cropping applied. `None` if
/// it does not parse. Never panics, whatever the bytes.
pub fn sps_dimensions(sps_nal: &[u8]) -> Option<(u32, u32)> {
    if sps_nal.is_empty() {
        return None; // RefNal needs its header byte.
    }
    let sps = SeqParameterSet::from_bits(RefNal::new(sps_nal, &[], true).rbsp_bits()).ok()?;
    sps.pixel_dimensions().ok()
}

/// An `AVCDecoderConfigurationRecord` is malformed (the text says how).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("bad AVCDecoderConfigurationRecord: {0}")]
pub struct BadAvcConfig(pub String);

/// An AVC decoder configuration (ISO 14496-15 §5.3.3.1, an FLV sequence header): parameter sets
/// and the NAL length size.
///
/// Parsed here rather than with `h264-reader`'s `AvcDecoderConfigurationRecord`, which indexes
/// past the end of a record whose last parameter set is empty (a panic on publisher input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
    /// Bytes of each NAL unit's length prefix (1, 2 or 4).
    pub length_size: u8,
}

impl AvcConfig {
    /// Parse an `AVCDecoderConfigurationRecord`. Empty parameter sets are skipped; a record
    /// without an SPS or a PPS is refused.
    pub fn parse(b: &[u8]) -> Result<AvcConfig, BadAvcConfig> {
        let bad = |why: &str| BadAvcConfig(why.to_string());
        if b.len() < 7 {
            return Err(bad("shorter than 7 bytes"));
        }
        if b[0] != 1 {
            return Err(bad(&format!("configurationVersion {}", b[0])));
        }
        let length_size = (b[4] & 0x03) + 1;
        if length_size == 3 {
            return Err(bad("NAL length size 3"));
        }
        let mut i = 5;
        let read_sets = |count: usize, i: &mut usize| -> Result<Vec<Vec<u8>>, BadAvcConfig> {
            let mut sets = Vec::with_capacity(count);
            for _ in 0..count {
                let len = b.get(*i..*i + 2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize);
                let len = len.ok_or_else(|| bad("truncated parameter set length"))?;
                *i += 2;
                let set = b.get(*i..*i + len).ok_or_else(|| bad("truncated parameter set"))?;
                if !set.is_empty() {
                    sets.push(set.to_vec());
                }
                *i += len;
            }
            Ok(sets)
        };
        let n_sps = (b[5] & 0x1f) as usize;
        i += 1;
        let sps = read_sets(n_sps, &mut i)?;
        let n_pps = *b.get(i).ok_or_else(|| bad("no PPS count"))? as usize;
        i += 1;
        let pps = read_sets(n_pps, &mut i)?;
        if sps.is_empty() || pps.is_empty() {
            return Err(bad("no SPS or no PPS"));
        }
        Ok(AvcConfig { sps, pps, length_size })
    }

    /// Picture size from the first SPS (0x0 when it cannot be read).
    pub fn dimensions(&self) -> (u32, u32) {
        self.sps.first().and_then(|s| sps_dimensions(s)).unwrap_or((0, 0))
    }
}

/// The slice types of H.264 (Table 7-6; types 5..9 are the same five, "all slices of the picture").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceType {
    P,
    B,
    I,
    Sp,
    Si,
}

/// Bits of an RBSP (emulation prevention bytes removed), read MSB first: enough of an
/// Exp-Golomb reader for the first fields of a slice header.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(b as u32)
    }

    /// ue(v): unsigned Exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut v: u64 = 1;
        for _ in 0..zeros {
            v = (v << 1) | self.bit()? as u64;
        }
        u32::try_from(v - 1).ok()
    }
}

/// The slice type of a coded slice NAL unit (type 1 or 5, header byte included), read from the
/// start of its slice header (`first_mb_in_slice`, `slice_type`). `None` for other NAL units or
/// when it does not parse. Never panics, whatever the bytes.
pub fn slice_type(nal: &[u8]) -> Option<SliceType> {
    if !matches!(nal_type(nal), Some(1) | Some(NAL_IDR)) {
        return None;
    }
    // Two Exp-Golomb fields fit in a few bytes; drop emulation prevention bytes (00 00 03).
    let mut rbsp = Vec::with_capacity(16);
    let mut zeros = 0;
    for &b in nal.iter().skip(1).take(24) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits { data: &rbsp, pos: 0 };
    let _first_mb = r.ue()?;
    match r.ue()? % 5 {
        0 => Some(SliceType::P),
        1 => Some(SliceType::B),
        2 => Some(SliceType::I),
        3 => Some(SliceType::Sp),
        _ => Some(SliceType::Si),
    }
}

/// `max_num_reorder_frames` of an SPS's VUI (how many frames a decoder must hold back to output
/// in presentation order): `None` when the SPS has no bitstream restrictions or does not parse.
pub fn sps_max_num_reorder_frames(sps_nal: &[u8]) -> Option<u32> {
    if sps_nal.is_empty() {
        return None;
    }
    let sps = SeqParameterSet::from_bits(RefNal::new(sps_nal, &[], true).rbsp_bits()).ok()?;
    sps.vui_parameters?.bitstream_restrictions.map(|b| b.max_num_reorder_frames)
}

/// True if an Annex-B access unit holds coded slices and none is a reference (`nal_ref_idc` 0 in
/// every slice's header): no later frame needs it, so it can be dropped without breaking decoding
/// (most B-frames of x264 and OBS streams).
pub fn is_disposable(data: &[u8]) -> bool {
    let mut slices = 0;
    for nal in annexb_nals(data) {
        match nal_type(nal) {
            Some(1) if nal[0] & 0x60 == 0 => slices += 1,
            Some(1..=5) => return false,
            _ => {}
        }
    }
    slices > 0
}

/// `profile_idc` of an SPS NAL unit (66 baseline, 77 main, 100 high, ...).
pub fn sps_profile_idc(sps_nal: &[u8]) -> Option<u8> {
    sps_nal.get(1).copied()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real SPS and PPS (x264, constrained baseline, 640x360: coded 640x368 with cropping).
    pub const SPS_640X360: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00,
        0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
    ];
    pub const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];
    /// x264 High profile, 1280x720 (1280x736 coded, cropped).
    pub const SPS_HIGH_720P: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];

    /// [`SPS_640X360`] and [`PPS`] as an `AVCDecoderConfigurationRecord`.
    pub fn avc_record() -> Vec<u8> {
        let mut r = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1];
        r.extend_from_slice(&(SPS_640X360.len() as u16).to_be_bytes());
        r.extend_from_slice(SPS_640X360);
        r.push(1);
        r.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        r.extend_from_slice(PPS);
        r
    }

    #[test]
    fn finds_nal_types() {
        let au = [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88];
        assert_eq!(annexb_nal_types(&au).collect::<Vec<_>>(), vec![7, 8, 5]);
        assert_eq!(annexb_nal_types(&[0, 0, 1, 0x41, 0x9a]).collect::<Vec<_>>(), vec![1]);
        assert_eq!(annexb_nal_types(&[]).count(), 0);
        // Back-to-back start codes: no empty unit.
        assert_eq!(annexb_nal_types(&[0, 0, 1, 0, 0, 1, 0x65]).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn annexb_split_and_convert() {
        let au = [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x65, 7, 8, 0];
        let nals: Vec<&[u8]> = annexb_nals(&au).collect();
        assert_eq!(nals, vec![&[0x09, 0xf0][..], &[0x67, 1, 2][..], &[0x65, 7, 8][..]]);
        assert_eq!(annexb_to_avcc(&au), vec![0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 3, 0x65, 7, 8]);
        assert!(annexb_to_avcc(&[1, 2, 3]).is_empty());
        assert!(annexb_to_avcc(&[]).is_empty());
        assert!(annexb_to_avcc(&[0, 0, 1]).is_empty());
        // Start codes at every alignment and after bytes > 1 (the scanner skips by 3).
        let au = [7, 7, 0, 0, 1, 0x41, 9, 0, 0, 0, 1, 0x65, 2, 2, 2, 0, 0, 1, 0x06, 5];
        let nals: Vec<&[u8]> = annexb_nals(&au).collect();
        assert_eq!(nals, vec![&[0x41, 9][..], &[0x65, 2, 2, 2][..], &[0x06, 5][..]]);
    }

    #[test]
    fn avcc_conversion_adds_parameter_sets_on_keyframes() {
        let sample = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x06];
        let out = avcc_to_annexb(&sample, 4, true, &[vec![0x67, 1]], &[vec![0x68, 2]]);
        assert_eq!(
            out,
            vec![0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1, 0x06]
        );
        let out = avcc_to_annexb(&sample, 4, false, &[vec![0x67]], &[]);
        assert_eq!(out, vec![0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1, 0x06]);
        // A length running past the end stops cleanly.
        assert_eq!(avcc_to_annexb(&[0, 0, 0, 9, 1], 4, false, &[], &[]), Vec::<u8>::new());
        // And back: the round trip gives the length-prefixed units again.
        assert_eq!(annexb_to_avcc(&avcc_to_annexb(&sample, 4, false, &[], &[])), sample);
    }

    #[test]
    fn sps_sizes() {
        assert_eq!(sps_dimensions(SPS_640X360), Some((640, 360)));
        assert_eq!(sps_dimensions(SPS_HIGH_720P), Some((1280, 720)));
        assert_eq!(sps_dimensions(&SPS_HIGH_720P[..6]), None);
        // Garbage (the synthetic test SPS) gives None, never a panic.
        assert_eq!(sps_dimensions(&[0x67, 0x80, 0x81, 0x82]), None);
        assert_eq!(sps_dimensions(&[0x67]), None);
        assert_eq!(sps_dimensions(&[]), None);
        for n in 0..=255u8 {
            let _ = sps_dimensions(&[0x67, n, n, n, n, 0xff, n, 0, 0, 3, n]);
        }
    }

    /// Random bytes, and real SPSs with random bytes flipped (a poor man's fuzzer, deterministic):
    /// `None` or a size, never a panic.
    #[test]
    fn random_sps_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..50_000 {
            let mut sps = if i % 2 == 0 { SPS_HIGH_720P.to_vec() } else { SPS_640X360.to_vec() };
            if i % 3 == 0 {
                let len = (next() % 40) as usize;
                sps = std::iter::once(0x67).chain((0..len).map(|_| next() as u8)).collect();
            } else {
                for _ in 0..1 + next() % 3 {
                    let at = 1 + (next() as usize) % (sps.len() - 1);
                    sps[at] = next() as u8;
                }
                sps.truncate(1 + (next() as usize) % sps.len());
            }
            let _ = sps_dimensions(&sps);
        }
    }

    #[test]
    fn avc_config_and_size() {
        let c = AvcConfig::parse(&avc_record()).unwrap();
        assert_eq!((c.length_size, c.sps.len(), c.pps.len()), (4, 1, 1));
        assert_eq!(c.dimensions(), (640, 360));
        for cut in 0..avc_record().len() {
            assert!(AvcConfig::parse(&avc_record()[..cut]).is_err(), "cut at {cut}");
        }
        // An empty last PPS (which makes h264-reader's parser index out of bounds) is skipped.
        let mut r = avc_record();
        r.truncate(r.len() - PPS.len() - 3);
        r.extend_from_slice(&[2, 0, PPS.len() as u8]);
        r.extend_from_slice(PPS);
        r.extend_from_slice(&[0, 0]);
        assert_eq!(AvcConfig::parse(&r).map(|c| c.pps), Ok(vec![PPS.to_vec()]));
    }

    #[test]
    fn slice_types_and_reorder_hints() {
        // first_mb 0 (1), slice_type 1 = B (010), 0 = P (1), 7 = I (0001000).
        assert_eq!(slice_type(&[0x01, 0b1010_0000]), Some(SliceType::B));
        assert_eq!(slice_type(&[0x41, 0b1100_0000]), Some(SliceType::P));
        assert_eq!(slice_type(&[0x65, 0b1000_1000]), Some(SliceType::I));
        assert_eq!(slice_type(&[0x67, 0x80]), None, "an SPS is not a slice");
        assert_eq!(slice_type(&[0x41]), None);
        assert_eq!(slice_type(&[]), None);
        assert_eq!(slice_type(&[0x41, 0, 0, 0, 0, 0, 0]), None);
        for n in 0..=255u8 {
            let _ = slice_type(&[0x41, n, 0, 0, 3, n]);
            let _ = sps_max_num_reorder_frames(&[0x67, 0x64, n, n, 0, 0, 3, n]);
        }
        assert_eq!(sps_profile_idc(SPS_HIGH_720P), Some(100));
        assert_eq!(sps_profile_idc(SPS_640X360), Some(66));
        assert_eq!(sps_max_num_reorder_frames(&[]), None);
        assert!(is_disposable(&[0, 0, 1, 0x01, 0xa0, 0, 0, 1, 0x01, 0x80]));
        assert!(!is_disposable(&[0, 0, 1, 0x01, 0xa0, 0, 0, 1, 0x21, 0x80]), "one slice is a reference");
        assert!(!is_disposable(&[0, 0, 1, 0x41, 0xa0]));
        assert!(!is_disposable(&[0, 0, 1, 0x65, 0x88]));
        assert!(!is_disposable(&[0, 0, 1, 0x06, 0x05]), "no slice");
        assert!(!is_disposable(&[]));
    }
}
