//! Micro-benchmarks of the hot paths, without sockets:
//! - `fanout_write`: one video frame written to N connected subscriber peers (the server's real
//!   engine peers, ICE+DTLS done in memory against str0m clients): H.264 packetizing once per
//!   frame (as the stream's fan-out does), then RTP headers, SRTP protect and draining the
//!   transmits, per subscriber.
//! - `vod_avcc_to_annexb`: converting an MP4 sample to Annex-B for a VOD source.
//!
//! Run: `cargo bench -p sluice-actors --bench hot_paths`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_actors::engine::{negotiate, Candidates, Peer, Proto, Role, StreamPacketizer};
use sluice_actors::media::{Codec, Frame};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc, RtcConfig};

/// A server peer connected (ICE + DTLS) to a str0m client, in memory.
fn connected_pair(i: u16) -> (Peer, Rtc, SocketAddr, SocketAddr) {
    let caddr: SocketAddr = format!("127.0.0.1:{}", 40000 + i).parse().unwrap();
    let saddr: SocketAddr = "127.0.0.1:31000".parse().unwrap();
    let mut client =
        RtcConfig::new().clear_codecs().enable_h264(true).enable_opus(true, false).build(Instant::now());
    client.add_local_candidate(Candidate::host(caddr, "udp").unwrap());
    let mut api = client.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let cands = Candidates { addrs: vec![saddr], udp: true, tcp: false };
    let neg = negotiate(&offer.to_sdp_string(), Role::Play { video: Some(Codec::H264) }, &cands).unwrap();
    client.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&neg.answer_sdp).unwrap()).unwrap();
    let mut server = neg.peer;
    let start = Instant::now();
    while !server.is_connected() {
        assert!(start.elapsed() < Duration::from_secs(10), "no connection in memory");
        pump(&mut server, &mut client, caddr, saddr);
    }
    // Let DTLS settle on both sides.
    for _ in 0..20 {
        pump(&mut server, &mut client, caddr, saddr);
    }
    (server, client, caddr, saddr)
}

/// Move every pending datagram between the two peers once, and advance their timers.
fn pump(server: &mut Peer, client: &mut Rtc, caddr: SocketAddr, saddr: SocketAddr) {
    let now = Instant::now();
    let mut to_server = Vec::new();
    loop {
        match client.poll_output().unwrap() {
            Output::Transmit(t) => to_server.push(t.contents.to_vec()),
            Output::Timeout(_) => break,
            Output::Event(_) => {}
        }
    }
    for d in to_server {
        let _ = server.receive(now, Proto::Udp, caddr, saddr, &d);
    }
    let _ = server.timeout(now);
    let mut to_client = Vec::new();
    let _ = server.poll(|t| to_client.push(t.contents), |_| {});
    for d in to_client {
        if let Ok(r) = Receive::new(Protocol::Udp, saddr, caddr, &d) {
            let _ = client.handle_input(Input::Receive(now, r));
        }
    }
    let _ = client.handle_input(Input::Timeout(now));
    std::thread::sleep(Duration::from_micros(200));
}

fn h264(n: u64, key: bool, size: usize) -> Frame {
    let mut d = vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }];
    d.extend((0..size).map(|i| ((i * 7 + n as usize) % 251 + 1) as u8));
    Frame { codec: Codec::H264, keyframe: key, rtp_time: n * 3000, captured: Instant::now(), data: d.into() }
}

fn fanout_write(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_write");
    g.measurement_time(Duration::from_secs(4));
    for n in [1usize, 10] {
        let mut peers: Vec<Peer> = (0..n).map(|i| connected_pair(i as u16).0).collect();
        // 2500-byte frames: 600 kbit/s at 30 fps, 3 RTP packets each.
        g.throughput(Throughput::Elements((n * 3) as u64));
        let mut k = 0u64;
        let mut packetizer = StreamPacketizer::default();
        g.bench_with_input(BenchmarkId::new("600kbps_frame_to_subscribers", n), &n, |b, _| {
            b.iter(|| {
                k += 1;
                let f = h264(k, k == 1, 2500);
                let mut sent = 0usize;
                let packets = packetizer.packetize(&f);
                for p in peers.iter_mut() {
                    p.write_frame(&f, &packets, f.rtp_time).unwrap();
                    // As the subscriber actor does: the peer is drained after the write.
                    let _ = p.poll(|_| sent += 1, |_| {});
                }
                sent
            })
        });
    }
    g.finish();
}

fn vod_avcc_to_annexb(c: &mut Criterion) {
    let mut sample = Vec::new();
    for len in [30usize, 8000, 1200] {
        sample.extend_from_slice(&(len as u32).to_be_bytes());
        sample.extend((0..len).map(|i| (i % 200 + 1) as u8));
    }
    let (sps, pps) = (vec![vec![0x67, 0x42, 0xc0, 0x1f]], vec![vec![0x68, 0xce, 0x3c, 0x80]]);
    let mut g = c.benchmark_group("vod");
    g.throughput(Throughput::Bytes(sample.len() as u64));
    g.bench_function("avcc_to_annexb_9kB_keyframe", |b| {
        b.iter(|| sluice_actors::h264::avcc_to_annexb(&sample, 4, true, &sps, &pps))
    });
    g.finish();
}

criterion_group!(benches, fanout_write, vod_avcc_to_annexb);
criterion_main!(benches);
