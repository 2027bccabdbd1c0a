//! Plain RTP publishing, for Janus's streaming plugin (an RTP mountpoint takes no WebRTC).
//!
//! The frames are the synthetic publisher's (or the `--clip`'s), packetized the way str0m
//! packetizes them for sluice, so both servers forward the same packets: SPS and PPS in one
//! STAP-A ahead of the IDR, a NAL unit whole when it fits the payload budget, FU-A otherwise,
//! the marker bit on the last packet of a frame, 90 kHz timestamps. Opus: one 80-byte packet
//! every 20 ms at 48 kHz, as the WebRTC publisher sends.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{h264_frame, load_clip, parse_bitrate, Args};

/// Payload bytes per packet: str0m's budget at its default MTU (1150, less the 16-byte SRTP tag,
/// rounded down to the 16-byte SRTP block), so the packet counts match the WebRTC publisher's.
pub const MAX_PAYLOAD: usize = 1120;

/// RTP payloads of one H.264 access unit, at most `max` bytes each.
pub fn packetize_h264(au: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let (mut sps, mut pps): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    for nal in sluice_codecs::h264::annexb_nals(au) {
        match nal[0] & 0x1f {
            9 => continue, // access unit delimiter: not sent
            7 => {
                sps = Some(nal);
                continue;
            }
            8 => {
                pps = Some(nal);
                continue;
            }
            _ => {}
        }
        if let (Some(s), Some(p)) = (sps.take(), pps.take()) {
            let mut stap = vec![0x78]; // F=0, NRI=3, type 24
            for n in [s, p] {
                stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
                stap.extend_from_slice(n);
            }
            if stap.len() <= max {
                out.push(stap);
            }
        }
        if nal.len() <= max {
            out.push(nal.to_vec());
            continue;
        }
        let (ind, kind) = (28 | (nal[0] & 0x60), nal[0] & 0x1f);
        let chunks: Vec<&[u8]> = nal[1..].chunks(max - 2).collect();
        let last = chunks.len() - 1;
        for (k, c) in chunks.into_iter().enumerate() {
            let mut p = Vec::with_capacity(c.len() + 2);
            let fu = kind
                | if k == 0 {
                    0x80
                } else if k == last {
                    0x40
                } else {
                    0
                };
            p.extend_from_slice(&[ind, fu]);
            p.extend_from_slice(c);
            out.push(p);
        }
    }
    out
}

/// One outgoing RTP stream.
pub struct RtpOut {
    dest: SocketAddr,
    pt: u8,
    ssrc: u32,
    seq: u16,
    buf: Vec<u8>,
}

impl RtpOut {
    pub fn new(dest: SocketAddr, pt: u8, ssrc: u32) -> RtpOut {
        RtpOut { dest, pt, ssrc, seq: (ssrc >> 16) as u16, buf: Vec::with_capacity(1500) }
    }

    pub fn send(&mut self, sock: &UdpSocket, payload: &[u8], ts: u32, marker: bool) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0x80, self.pt | if marker { 0x80 } else { 0 }]);
        self.buf.extend_from_slice(&self.seq.to_be_bytes());
        self.buf.extend_from_slice(&ts.to_be_bytes());
        self.buf.extend_from_slice(&self.ssrc.to_be_bytes());
        self.buf.extend_from_slice(payload);
        let _ = sock.send_to(&self.buf, self.dest);
        crate::PUBLISHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.seq = self.seq.wrapping_add(1);
    }
}

/// The publisher for an RTP mountpoint: H.264 (pt 96) to `video`, Opus (pt 111) to `audio`.
/// Keyframes every `--gop` seconds (synthetic) or as the clip has them: an RTP mountpoint
/// carries no keyframe requests back.
pub fn run_rtp_publisher(video: SocketAddr, audio: SocketAddr, a: Args, stop: Arc<AtomicBool>) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let clip = a.clip.as_deref().map(load_clip);
    let seed = std::process::id().wrapping_mul(2654435761);
    let mut v = RtpOut::new(video, 96, seed | 1);
    let mut au = RtpOut::new(audio, 111, seed.rotate_left(16) | 2);
    let bitrate = parse_bitrate(&a.bitrate);
    let frame_gap = Duration::from_secs_f64(1.0 / a.fps as f64);
    let frame_size = (bitrate / 8 / a.fps as u64) as usize;
    let start = Instant::now();
    let (mut next_v, mut next_a) = (start, start);
    let (mut vn, mut an) = (0u64, 0u64);
    let mut last_key: Option<Instant> = None;
    let (ts_v, ts_a) = (seed.rotate_left(8), seed.rotate_left(24));
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_v {
            next_v += frame_gap;
            let data = match &clip {
                Some(c) if !c.is_empty() => c[vn as usize % c.len()].0.clone(),
                _ => {
                    let key = last_key.is_none_or(|t| now.duration_since(t).as_secs_f64() >= a.gop);
                    if key {
                        last_key = Some(now);
                    }
                    // Keyframes 4x larger, as in the WebRTC publisher.
                    h264_frame(vn, key, if key { frame_size * 4 } else { frame_size })
                }
            };
            let ts = ts_v.wrapping_add((vn * 90_000 / a.fps as u64) as u32);
            let pkts = packetize_h264(&data, MAX_PAYLOAD);
            let n = pkts.len();
            for (k, p) in pkts.iter().enumerate() {
                v.send(&sock, p, ts, k + 1 == n);
            }
            vn += 1;
        }
        if now >= next_a {
            next_a += Duration::from_millis(20);
            au.send(&sock, &[0xfc; 80], ts_a.wrapping_add((an * 960) as u32), false);
            an += 1;
        }
        let wake = next_v.min(next_a);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()).min(Duration::from_millis(20)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_is_stap_a_then_fu_a() {
        let f = h264_frame(0, true, 3000);
        let p = packetize_h264(&f, MAX_PAYLOAD);
        assert_eq!(p[0][0] & 0x1f, 24, "SPS+PPS in a STAP-A");
        assert_eq!(p[1][0] & 0x1f, 28);
        assert_eq!(p[1][1], 0x80 | 5, "FU-A start of the IDR");
        assert_eq!(p.last().unwrap()[1] & 0x40, 0x40, "FU-A end");
        assert!(p.iter().all(|x| x.len() <= MAX_PAYLOAD));
        // The fragments carry the NAL unit whole.
        let body: usize = p[1..].iter().map(|x| x.len() - 2).sum();
        assert_eq!(body, 3000);
        assert_eq!(p.len(), 1 + 3000usize.div_ceil(MAX_PAYLOAD - 2));
    }

    #[test]
    fn small_frame_is_one_nal() {
        let f = h264_frame(3, false, 500);
        let p = packetize_h264(&f, MAX_PAYLOAD);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].len(), 501);
        assert_eq!(p[0][0], 0x41);
    }
}
