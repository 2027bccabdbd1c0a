//! Fan-out of one stream's frames to its sinks (viewers, recorders), embedded by every source
//! actor. Not an actor itself: the owning source calls it from its own handlers.
//!
//! The fan-out also holds the stream's current GOP: the latest video keyframe and the video
//! frames since, at most [`GOP_MAX_SPAN`] long. A snapshot decodes it without waiting for the
//! source. When the GOP grows past that span (browsers send no periodic keyframes), it is dropped
//! and the source is asked for a fresh keyframe, so a recent one is always held: for a browser
//! publisher that is one extra keyframe every few seconds.
//!
//! Instant start: a viewer whose peer has connected gets the held GOP at once
//! ([`FanOut::start_sink`]), its timestamps squeezed into the milliseconds before the newest
//! frame, so its decoder catches up to live in one burst instead of waiting up to a GOP for
//! the source's next keyframe (sources that cannot make one on request: RTMP encoders,
//! cameras, files). H.264 only: VP8's picture ids would jump. The GOP's RTP payloads are made
//! once and shared by every viewer that starts from it, as live frames' are. A WebRTC publisher
//! answers a keyframe request within a round trip, so its viewers start from a new keyframe
//! instead, unless the held one is fresh ([`FRESH_GOP`]): then they start from it and ask for
//! nothing.
//!
//! Simulcast: a browser may publish two or three layers of one video (`rid`s). Layer 0 is the
//! best; it is what recorders, snapshots, HLS and every sink start with. A viewer's bandwidth
//! estimate ([`FanOut::set_bandwidth`]) moves it to the best layer that fits, down at once, up
//! only [`LAYER_UP_HOLD`] after it last moved down and once the estimate has allowed the better
//! layer for [`LAYER_UP_CONFIRM`]; the switch happens at the new
//! layer's next keyframe (the source is asked for one), the old layer flowing until then.
//!
//! Backpressure policy: frames go out with `try_send` on each sink's bounded mailbox. A sink
//! whose mailbox is full loses that frame, gets no more video until the next keyframe, and the
//! source is told to ask for one; a slow sink never stalls the source or the other sinks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::Value;

use crate::engine::{Packets, StreamPacketizer};
use crate::media::{Frame, FrameKind};

/// Longest GOP held (for snapshots and for viewers that start), in the video clock (90 kHz):
/// 6 s, longer than the keyframe interval of RTMP encoders (1-4 s) and IP cameras (2-5 s), so
/// that a viewer of such a source can start at any moment.
pub const GOP_MAX_SPAN: u64 = 6 * 90_000;
/// Bytes of video held at most in the GOP; its RTP payloads, kept for viewers that start, are
/// bounded by the same figure.
pub const GOP_MAX_BYTES: usize = 8 << 20;
/// Spacing of the held GOP's frames when they are sent to a viewer that starts (90 kHz: 1 ms).
pub const START_SPACING: u64 = 90;
/// A held GOP whose keyframe arrived this recently is "fresh": every source starts a viewer
/// from it, and no new keyframe is asked for that viewer. Without it, viewers who join a WebRTC
/// publisher together (an event's start) each asked for a keyframe, and a browser answers one
/// request per 300 ms at most (libwebrtc's `kMinKeyframeSendIntervalMs`): the second and later
/// waited ~350 ms (`KEYFRAME_MIN_INTERVAL`) for theirs; a fresh GOP is a few frames, at most
/// ~150 kB at 2.5 Mbit/s.
pub const FRESH_GOP: Duration = Duration::from_millis(500);
use crate::messages::{AddSubscriber, BandwidthGoal, Forward, SourceEnded, StreamEventNotice};

/// After a viewer moved down a simulcast layer, how long before it may move up again. Probes
/// pass a token-bucket shaper at line rate, so such a link reads as fast again and again: only
/// sending the better layer tells, and each try costs a second or two of a queue (the better
/// layer's keyframe through the thin link). 8 s: a try about every 13 s on such a link (4 s
/// made it every 8 s, a quarter of the time on the better layer and stalls near 1.3 s).
pub const LAYER_UP_HOLD: Duration = Duration::from_secs(8);
/// How long the estimate must keep allowing a better layer before a viewer moves up: one probe
/// can read high for a moment (a 250 kbit/s viewer's estimate jumped to ~490 kbit/s and moved it
/// to the 380 kbit/s layer). Probes through a token bucket that keep reading high are what
/// [`LAYER_UP_HOLD`] paces.
pub const LAYER_UP_CONFIRM: Duration = Duration::from_millis(2500);
/// A layer is chosen when its video rate is at most this share of the viewer's estimate less
/// [`AUDIO_ALLOWANCE`] (RTP and SRTP overhead, estimate noise).
const LAYER_FIT: f64 = 0.9;
/// What the audio of a stream takes of a viewer's link, bit/s (Opus as browsers send it).
const AUDIO_ALLOWANCE: u64 = 40_000;
/// A viewer's goal before the stream's video rate is measured: twice a 2.5 Mbit/s 720p stream.
const UNMEASURED_DESIRED: u64 = 5_000_000;
/// A viewer's goal: probes aim at twice the best layer (a probe shows at most what it sends),
/// plus the audio.
fn probe_goal(best: u64) -> BandwidthGoal {
    BandwidthGoal { minimum: 0, desired: 2 * best + AUDIO_ALLOWANCE }
}

/// Most simulcast layers carried.
pub const MAX_LAYERS: usize = 4;

/// What [`FanOut::set_bandwidth`] decided for a viewer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerDecision {
    /// What its estimator should aim for (None: one layer, nothing to aim for).
    pub goal: Option<BandwidthGoal>,
    /// The layer it now waits for a keyframe of, when it changed.
    pub switch: Option<u8>,
    /// The stream has one quality and this viewer's link cannot carry it: a lower rendition
    /// would serve it (the source makes one where it can, as layer 1).
    pub lower_wanted: bool,
}

struct Sink {
    frames: Recipient<Forward>,
    ended: Recipient<SourceEnded>,
    events: Option<(String, Recipient<StreamEventNotice>)>,
    /// No video goes out until a keyframe: set at join and after a lost frame.
    wait_keyframe: bool,
    /// The simulcast layer this sink gets (0, the best, unless its bandwidth says otherwise).
    layer: u8,
    /// The layer it moves to at that layer's next keyframe.
    target: Option<u8>,
    /// When it last moved down a layer.
    down_at: Option<Instant>,
    /// Since when its estimate has allowed a better layer than the one it is heading to.
    better_since: Option<Instant>,
}

/// A simulcast layer's own packetizer and measured video rate.
#[derive(Default)]
struct Layer {
    packetizer: StreamPacketizer,
    /// Bytes since `since`, and the rate (bit/s) of the last full second.
    bytes: u64,
    since: Option<Instant>,
    rate: u64,
}

impl Layer {
    fn count(&mut self, frame: &Frame) {
        let now = frame.captured;
        let since = *self.since.get_or_insert(now);
        self.bytes += frame.data.len() as u64;
        let secs = now.saturating_duration_since(since).as_secs_f64();
        if secs >= 1.0 {
            self.rate = (self.bytes as f64 * 8.0 / secs) as u64;
            self.bytes = 0;
            self.since = Some(now);
        }
    }
}

#[derive(Default)]
pub struct FanOut {
    sinks: HashMap<u64, Sink>,
    /// Frames are packetized here, once, for every viewer: one packetizer per simulcast layer
    /// (the first is the only one without simulcast).
    layers: Vec<Layer>,
    gop: Vec<Arc<Frame>>,
    gop_bytes: usize,
    /// The RTP payloads of the GOP's frames, once made (by the live fan-out, or for the first
    /// viewer that starts from it), shared by every viewer that starts: at most
    /// [`GOP_MAX_BYTES`] of them.
    gop_packets: Vec<Option<Arc<Packets>>>,
    gop_packet_bytes: usize,
    /// When the held GOP's keyframe arrived.
    gop_at: Option<Instant>,
    frames: u64,
}

impl FanOut {
    pub fn add(&mut self, m: AddSubscriber) {
        let sink = Sink {
            frames: m.frames,
            ended: m.ended,
            events: m.events,
            wait_keyframe: true,
            layer: 0,
            target: None,
            down_at: None,
            better_since: None,
        };
        self.sinks.insert(m.id, sink);
    }

    /// The stream now has `n` simulcast layers (1: none). Sinks on a layer that no longer
    /// exists wait for a keyframe of the best one.
    pub fn set_layers(&mut self, n: usize) {
        let n = n.clamp(1, MAX_LAYERS);
        self.layers.resize_with(n, Layer::default);
        for s in self.sinks.values_mut() {
            if usize::from(s.layer) >= n || s.target.is_some_and(|t| usize::from(t) >= n) {
                s.layer = 0;
                s.target = None;
                s.wait_keyframe = true;
            }
        }
    }

    /// A new layer's rate until it has been measured (a lower rendition's target bitrate), so
    /// that viewers can move to it at once.
    pub fn expect_rate(&mut self, layer: u8, bps: u64) {
        if let Some(l) = self.layers.get_mut(usize::from(layer)).filter(|l| l.rate == 0) {
            l.rate = bps;
        }
    }

    /// The measured video rate of each layer, bit/s (best first).
    pub fn layer_rates(&self) -> Vec<u64> {
        self.layers.iter().map(|l| l.rate).collect()
    }

    /// The layer a sink gets, and the one it is moving to.
    pub fn sink_layer(&self, id: u64) -> Option<(u8, Option<u8>)> {
        self.sinks.get(&id).map(|s| (s.layer, s.target))
    }

    /// Whether any sink gets layer `layer` or waits for it.
    pub fn layer_wanted(&self, layer: u8) -> bool {
        self.sinks.values().any(|s| s.layer == layer || s.target == Some(layer))
    }

    /// A viewer's bandwidth estimate (bit/s) at `now`: pick its layer (see the module docs).
    pub fn set_bandwidth(&mut self, id: u64, bps: u64, now: Instant) -> LayerDecision {
        let rates = self.layer_rates();
        let budget = (bps.saturating_sub(AUDIO_ALLOWANCE) as f64 * LAYER_FIT) as u64;
        tracing::trace!(sink = id, bps, ?rates, layer = ?self.sinks.get(&id).map(|s| (s.layer, s.target)), "viewer bandwidth");
        if rates.len() == 1 && rates[0] > 0 {
            // One quality: the estimator probes up to twice it (str0m paces what it sends to
            // the estimate, so it must find what the link carries), and a viewer that cannot
            // carry it wants a lower one made.
            let goal = probe_goal(rates[0]);
            return LayerDecision { goal: Some(goal), lower_wanted: rates[0] > budget, switch: None };
        }
        if rates.len() < 2 || rates.iter().any(|&r| r == 0) {
            // Video not measured yet (its first second): str0m probes only towards a goal, and
            // without one a fast viewer's estimate crawls up from its 1 Mbit/s start for
            // seconds while a bigger stream queues behind the pacer. No goal before any video
            // (an audio-only stream has nothing to probe for).
            let video = self.layers.iter().any(|l| l.since.is_some());
            let known = probe_goal(rates.iter().copied().max().unwrap_or(0));
            let goal =
                video.then_some(BandwidthGoal { desired: known.desired.max(UNMEASURED_DESIRED), ..known });
            return LayerDecision { goal, ..LayerDecision::default() };
        }
        let Some(s) = self.sinks.get_mut(&id) else { return LayerDecision::default() };
        let lowest = (rates.len() - 1) as u8;
        let fits = rates.iter().position(|&r| r <= budget).map_or(lowest, |i| i as u8);
        let heading = s.target.unwrap_or(s.layer);
        let mut switch = None;
        if fits > heading {
            // Worse than what it gets: down at once.
            s.down_at = Some(now);
            switch = Some(fits);
        } else if fits < heading
            && s.down_at.is_none_or(|t| now.saturating_duration_since(t) >= LAYER_UP_HOLD)
            && now.saturating_duration_since(*s.better_since.get_or_insert(now)) >= LAYER_UP_CONFIRM
        {
            switch = Some(fits);
        }
        if fits >= heading || switch.is_some() {
            s.better_since = None;
        }
        if let Some(l) = switch {
            tracing::debug!(sink = id, from = heading, to = l, bps, ?rates, "simulcast layer switch");
            let direction = if l > heading { "down" } else { "up" };
            crate::metrics::metrics().layer_switches.with_label_values(&[direction]).inc();
            s.target = if l == s.layer { None } else { Some(l) };
        }
        // No padding (a viewer on a thin link would pay for it in delay and loss): the
        // estimator probes towards the best layer on its own.
        let goal = probe_goal(rates[0]);
        // Not even the lowest layer fits: a lower rendition is wanted (the source makes one
        // below its layers when it can, and the viewer moves to it once it is measured).
        let lower_wanted = rates[usize::from(lowest)] > budget;
        LayerDecision { goal: Some(goal), switch: switch.filter(|_| s.target.is_some()), lower_wanted }
    }

    pub fn remove(&mut self, id: u64) {
        self.sinks.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The held GOP: the latest video keyframe and the video frames since (empty when none).
    pub fn gop(&self) -> &[Arc<Frame>] {
        &self.gop
    }

    /// Whether the held GOP's keyframe arrived within [`FRESH_GOP`] of `now`.
    pub fn gop_is_fresh(&self, now: Instant) -> bool {
        !self.gop.is_empty() && self.gop_at.is_some_and(|t| now.saturating_duration_since(t) <= FRESH_GOP)
    }

    /// Keep the GOP; returns true when it overflowed and a fresh keyframe is wanted.
    fn hold(&mut self, frame: &Arc<Frame>) -> bool {
        if frame.kind() != FrameKind::Video {
            return false;
        }
        if frame.keyframe {
            self.drop_gop();
            self.gop_at = Some(Instant::now());
        } else if self.gop.is_empty() {
            return false;
        }
        self.gop_bytes += frame.data.len();
        self.gop.push(frame.clone());
        self.gop_packets.push(None);
        let span = frame.rtp_time.wrapping_sub(self.gop[0].rtp_time);
        if span > GOP_MAX_SPAN || self.gop_bytes > GOP_MAX_BYTES {
            self.drop_gop();
            return true;
        }
        false
    }

    fn drop_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
        self.gop_packets.clear();
        self.gop_packet_bytes = 0;
    }

    /// Keep the payloads of the GOP's frame `i`, within the budget.
    fn hold_packets(&mut self, i: usize, packets: &Arc<Packets>) {
        let bytes = packets.bytes();
        if let Some(slot) = self.gop_packets.get_mut(i).filter(|p| p.is_none()) {
            if self.gop_packet_bytes + bytes <= GOP_MAX_BYTES {
                *slot = Some(packets.clone());
                self.gop_packet_bytes += bytes;
            }
        }
    }

    /// Send a frame to every sink. Returns true when a keyframe should be requested from the
    /// source (a sink lost a frame).
    pub fn forward(&mut self, frame: Frame) -> bool {
        self.forward_layer(0, frame)
    }

    /// Send a frame of simulcast layer `layer` (0 the best; audio goes as layer 0) to the
    /// sinks that get that layer. Returns true when a keyframe of it should be requested.
    pub fn forward_layer(&mut self, layer: u8, frame: Frame) -> bool {
        let video = frame.kind() == FrameKind::Video;
        if self.layers.len() <= usize::from(layer) {
            if layer > 0 {
                return false; // a layer the source has not announced
            }
            self.layers.push(Layer::default());
        }
        if video {
            self.layers[usize::from(layer)].count(&frame);
        }
        let frame = Arc::new(frame);
        let mut want_keyframe = false;
        if layer == 0 {
            self.frames += 1;
            want_keyframe = self.hold(&frame);
        }
        let wanted = |s: &Sink| !video || s.layer == layer || (s.target == Some(layer) && frame.keyframe);
        if !self.sinks.values().any(wanted) {
            return want_keyframe;
        }
        let mut packets = self.layers[usize::from(layer)].packetizer.packetize(&frame);
        packets.layer = layer;
        let packets = Arc::new(packets);
        if layer == 0 && self.gop.last().is_some_and(|g| Arc::ptr_eq(g, &frame)) {
            self.hold_packets(self.gop.len() - 1, &packets);
        }
        self.sinks.retain(|_, s| {
            if video {
                if s.target == Some(layer) && frame.keyframe {
                    // The switch to this layer happens here, at its keyframe.
                    s.layer = layer;
                    s.target = None;
                    s.wait_keyframe = false;
                } else if s.layer != layer || (s.wait_keyframe && !frame.keyframe) {
                    return true;
                }
                s.wait_keyframe = false;
            }
            match s.frames.try_send(Forward(frame.clone(), packets.clone())) {
                Ok(()) => true,
                Err(SendError::Full(_)) => {
                    s.wait_keyframe = true;
                    want_keyframe = true;
                    true
                }
                Err(SendError::Closed(_)) => false,
            }
        });
        want_keyframe
    }

    /// A viewer is ready for video (its peer connected): send it the held GOP now, the frames
    /// 1 ms apart ([`START_SPACING`]) and ending at the newest one's time, then live frames as
    /// they come. Returns whether the whole GOP went out; without a held H.264 GOP, or when the
    /// viewer's mailbox is full, the viewer starts at the next keyframe.
    pub fn start_sink(&mut self, id: u64) -> bool {
        let Some(last) = self.gop.last() else { return false };
        if last.codec != crate::media::Codec::H264 {
            return false;
        }
        if !self.sinks.contains_key(&id) {
            return false;
        }
        let newest = last.rtp_time;
        let n = self.gop.len();
        // Payloads the live fan-out or an earlier start made are shared; the rest are made
        // here, by a packetizer of its own (the shared one's state belongs to the live stream),
        // and kept for the next viewer. They do not depend on the frame's time.
        let mut packetizer = StreamPacketizer::default();
        for i in 0..n {
            let g = self.gop[i].clone();
            let packets = match &self.gop_packets[i] {
                Some(p) => p.clone(),
                None => {
                    let p = Arc::new(packetizer.packetize(&g));
                    self.hold_packets(i, &p);
                    p
                }
            };
            let back = (n - 1 - i) as u64 * START_SPACING;
            let frame = Arc::new(Frame { rtp_time: newest.saturating_sub(back), ..(*g).clone() });
            let Some(s) = self.sinks.get_mut(&id) else { return false };
            match s.frames.try_send(Forward(frame, packets)) {
                Ok(()) => s.wait_keyframe = false,
                Err(_) => {
                    // A full mailbox: this viewer waits for a keyframe instead.
                    s.wait_keyframe = true;
                    return false;
                }
            }
        }
        true
    }

    /// Frames were lost upstream: hold every sink's video until a fresh keyframe.
    pub fn lost_frame(&mut self) {
        self.drop_gop();
        for s in self.sinks.values_mut() {
            s.wait_keyframe = true;
        }
    }

    /// Relay a stream event (mute notice, data) to every viewer's client.
    pub fn relay_event(&self, kind: &str, payload: &Value) {
        for (id, events) in self.sinks.values().filter_map(|s| s.events.as_ref()) {
            events.do_send(StreamEventNotice {
                media_session_id: id.clone(),
                kind: kind.to_string(),
                payload: payload.clone(),
            });
        }
    }

    /// The source is gone: tell every sink, and forget them.
    pub fn end(&mut self, reason: &'static str) {
        for (_, s) in self.sinks.drain() {
            s.ended.do_send(SourceEnded { reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;
    use std::time::Instant;

    fn f(key: bool, t: u64) -> Frame {
        Frame {
            codec: Codec::H264,
            keyframe: key,
            rtp_time: t,
            captured: Instant::now(),
            data: vec![1; 10].into(),
        }
    }

    /// A sink that notes the layer and keyframe flag of every video frame it gets.
    struct Noting(std::sync::Arc<std::sync::Mutex<Vec<(u8, bool)>>>);
    impl Actor for Noting {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(1000); // the test sends before the actor runs
        }
    }
    impl Handler<Forward> for Noting {
        type Result = ();
        fn handle(&mut self, Forward(f, p): Forward, _: &mut Context<Self>) {
            if f.kind() == FrameKind::Video {
                self.0.lock().unwrap().push((p.layer, f.keyframe));
            }
        }
    }
    impl Handler<SourceEnded> for Noting {
        type Result = ();
        fn handle(&mut self, _: SourceEnded, _: &mut Context<Self>) {}
    }

    /// A sink that keeps, for each video frame, its time and the payloads it came with.
    struct Pointers(std::sync::Arc<std::sync::Mutex<Vec<(u64, Arc<Packets>)>>>);
    impl Actor for Pointers {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(1000);
        }
    }
    impl Handler<Forward> for Pointers {
        type Result = ();
        fn handle(&mut self, Forward(f, p): Forward, _: &mut Context<Self>) {
            if f.kind() == FrameKind::Video {
                self.0.lock().unwrap().push((f.rtp_time, p));
            }
        }
    }
    impl Handler<SourceEnded> for Pointers {
        type Result = ();
        fn handle(&mut self, _: SourceEnded, _: &mut Context<Self>) {}
    }

    #[actix_rt::test]
    async fn viewers_that_start_from_the_gop_share_its_payloads() {
        let mut fo = FanOut::default();
        // Held before anyone watches: nothing packetized yet.
        fo.forward(f(true, 9000));
        fo.forward(f(false, 12000));
        let mut noted = Vec::new();
        for id in 1..=3u64 {
            let n = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = Pointers(n.clone()).start();
            actix_rt::task::yield_now().await;
            fo.add(AddSubscriber {
                id,
                frames: sink.clone().recipient(),
                ended: sink.recipient(),
                events: None,
            });
            assert!(fo.start_sink(id), "the whole GOP went out");
            if id == 2 {
                fo.forward(f(false, 15000)); // live: packetized once for viewers 1 and 2
            }
            noted.push(n);
        }
        actix_rt::task::yield_now().await;
        let got: Vec<Vec<(u64, Arc<Packets>)>> = noted.iter().map(|n| n.lock().unwrap().clone()).collect();
        // Squeezed 1 ms apart up to the newest frame's time.
        assert_eq!(got[0].iter().map(|x| x.0).collect::<Vec<_>>(), [12000 - START_SPACING, 12000, 15000]);
        assert_eq!(got[1].iter().map(|x| x.0).collect::<Vec<_>>(), [12000 - START_SPACING, 12000, 15000]);
        assert_eq!(
            got[2].iter().map(|x| x.0).collect::<Vec<_>>(),
            [15000 - 2 * START_SPACING, 15000 - START_SPACING, 15000]
        );
        // Kept by the sinks, so an address cannot be reused by a later allocation.
        let ptrs = |v: &Vec<(u64, Arc<Packets>)>| v.iter().map(|x| Arc::as_ptr(&x.1)).collect::<Vec<_>>();
        assert_eq!(ptrs(&got[0]), ptrs(&got[1]), "the second viewer got the first one's payloads");
        assert_eq!(ptrs(&got[0]), ptrs(&got[2]), "and the third, the live frame's too");
    }

    /// Two layers for 1.5 s, a second apart in capture time: the best ~800 kbit/s, the other
    /// ~200 kbit/s; both measured.
    fn feed_two_layers(fo: &mut FanOut, t0: Instant) {
        for i in 0..45u64 {
            let at = t0 + Duration::from_millis(i * 33);
            let key = i == 0;
            fo.forward_layer(0, Frame { captured: at, data: vec![0; 3300].into(), ..f(key, i * 3000) });
            fo.forward_layer(1, Frame { captured: at, data: vec![0; 830].into(), ..f(key, i * 3000) });
        }
    }

    #[actix_rt::test]
    async fn a_viewer_moves_down_at_once_and_up_after_the_hold_at_keyframes() {
        let noted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Noting(noted.clone()).start();
        actix_rt::task::yield_now().await; // `started` sets its mailbox size
        let mut fo = FanOut::default();
        fo.add(AddSubscriber {
            id: 1,
            frames: sink.clone().recipient(),
            ended: sink.recipient(),
            events: None,
        });
        fo.set_layers(2);
        let t0 = Instant::now();
        feed_two_layers(&mut fo, t0);
        let rates = fo.layer_rates();
        assert!(rates[0] > 700_000 && rates[1] > 150_000 && rates[1] < 250_000, "{rates:?}");

        // Plenty: the best layer, and a goal above it.
        let d = fo.set_bandwidth(1, 2_000_000, t0);
        assert_eq!((d.switch, d.lower_wanted), (None, false));
        assert!(d.goal.is_some_and(|g| g.desired > rates[0]));
        // 400 kbit/s: down at once, to the layer that fits; the switch waits for its keyframe.
        let d = fo.set_bandwidth(1, 400_000, t0);
        assert_eq!(d.switch, Some(1));
        fo.forward_layer(1, f(false, 200_000));
        fo.forward_layer(0, f(false, 200_000));
        assert_eq!(fo.sink_layer(1), Some((0, Some(1))), "still on 0 until layer 1's keyframe");
        fo.forward_layer(1, f(true, 203_000));
        assert_eq!(fo.sink_layer(1), Some((1, None)));
        // The estimate recovers: not up within the hold, nor on one high estimate after it
        // (a probe through a token bucket), up once it has held for LAYER_UP_CONFIRM.
        assert_eq!(fo.set_bandwidth(1, 2_000_000, t0 + Duration::from_secs(1)).switch, None);
        let later = t0 + LAYER_UP_HOLD;
        assert_eq!(fo.set_bandwidth(1, 2_000_000, later).switch, None);
        assert_eq!(fo.set_bandwidth(1, 400_000, later + Duration::from_millis(500)).switch, None);
        assert_eq!(fo.set_bandwidth(1, 2_000_000, later + Duration::from_secs(1)).switch, None);
        let confirmed = later + Duration::from_secs(1) + LAYER_UP_CONFIRM;
        assert_eq!(fo.set_bandwidth(1, 2_000_000, confirmed - Duration::from_millis(250)).switch, None);
        assert_eq!(fo.set_bandwidth(1, 2_000_000, confirmed).switch, Some(0));
        fo.forward_layer(0, f(true, 206_000));
        assert_eq!(fo.sink_layer(1), Some((0, None)));

        // What the sink got: layer 0 from its first keyframe, layer 1 from its keyframe on, and
        // layer 0 again from its keyframe.
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let got = noted.lock().unwrap().clone();
        let switches: Vec<(u8, bool)> = got.windows(2).filter(|w| w[0].0 != w[1].0).map(|w| w[1]).collect();
        assert_eq!(switches, vec![(1, true), (0, true)], "{got:?}");
        assert_eq!(got[0], (0, true));
    }

    #[test]
    fn one_quality_asks_for_a_lower_rendition_when_a_viewer_cannot_carry_it() {
        let mut fo = FanOut::default();
        let t0 = Instant::now();
        for i in 0..45u64 {
            let at = t0 + Duration::from_millis(i * 33);
            fo.forward(Frame { captured: at, data: vec![0; 1600].into(), ..f(i == 0, i * 3000) });
        }
        let rate = fo.layer_rates()[0];
        assert!(rate > 300_000, "{rate}");
        // No sink is needed for the one-layer answer.
        assert!(fo.set_bandwidth(9, rate * 2, t0).goal.is_some_and(|g| g.desired >= 2 * rate));
        assert!(!fo.set_bandwidth(9, rate * 2, t0).lower_wanted);
        assert!(fo.set_bandwidth(9, rate * 8 / 10, t0).lower_wanted);
    }

    #[test]
    fn a_goal_before_the_video_is_measured_but_not_for_audio_only() {
        let mut fo = FanOut::default();
        let t0 = Instant::now();
        // Audio only so far: nothing to probe for.
        fo.forward(Frame { codec: Codec::Opus, ..f(false, 0) });
        assert_eq!(fo.layer_rates(), [0]);
        assert!(fo.set_bandwidth(9, 1_000_000, t0).goal.is_none());
        // Its first video frame: probe towards a big stream until it is measured.
        fo.forward(f(true, 3000));
        assert_eq!(fo.layer_rates(), [0]);
        let d = fo.set_bandwidth(9, 1_000_000, t0);
        assert!(d.goal.is_some_and(|g| g.desired >= UNMEASURED_DESIRED), "{:?}", d.goal);
        assert_eq!((d.switch, d.lower_wanted), (None, false));
    }

    #[test]
    fn gop_is_held_and_bounded() {
        let mut fo = FanOut::default();
        assert!(!fo.forward(f(false, 0)), "no keyframe yet: nothing held, nothing asked");
        assert!(fo.gop().is_empty());
        fo.forward(f(true, 1000));
        fo.forward(f(false, 4000));
        let audio = Frame { codec: Codec::Opus, ..f(false, 5) };
        fo.forward(audio);
        assert_eq!(fo.gop().len(), 2, "audio is not part of the GOP");
        // Past GOP_MAX_SPAN the GOP is dropped and a keyframe requested.
        assert!(fo.forward(f(false, 1000 + GOP_MAX_SPAN + 1)));
        assert!(fo.gop().is_empty());
        fo.forward(f(true, 1000 + GOP_MAX_SPAN + 3000));
        assert_eq!(fo.gop().len(), 1);
    }

    #[test]
    fn a_gop_is_fresh_only_just_after_its_keyframe() {
        let mut fo = FanOut::default();
        let now = Instant::now();
        assert!(!fo.gop_is_fresh(now), "nothing held");
        fo.forward(f(true, 1000));
        fo.forward(f(false, 4000));
        let now = Instant::now();
        assert!(fo.gop_is_fresh(now));
        assert!(!fo.gop_is_fresh(now + FRESH_GOP + Duration::from_millis(1)));
        fo.lost_frame();
        assert!(!fo.gop_is_fresh(now), "a GOP dropped is not fresh");
    }
}
