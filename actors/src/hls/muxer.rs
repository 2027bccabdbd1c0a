//! [`HlsMuxer`]: one per stream played over HLS. A sink of the stream like a recorder: it gets
//! the stream's frames ([`Forward`]) and its end ([`SourceEnded`]), and packages them into its
//! [`HlsStream`] (CMAF parts and segments, in memory, bounded by the packager's window).
//!
//! Lifecycle: started by the first HLS request ([`super::HlsStreams::get`]), it asks the source
//! for a keyframe at once and whenever a segment is due and none came (browsers send keyframes
//! only when asked), at most every [`KEYFRAME_EVERY`]; it stops [`HLS_IDLE`] after the last
//! request, or when the source ends. A stream with no video keyframe within [`KEYFRAME_WAIT`]
//! is packaged as audio alone.
//!
//! Backpressure: the fan-out `try_send`s frames into a mailbox of [`HLS_QUEUE`]; a muxer that
//! falls behind loses frames up to the next keyframe, like a slow viewer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::{AacRendition, HlsStream, HlsStreams, HLS_IDLE};
use crate::messages::{Forward, RemoveSubscriber, RequestKeyframe, SourceEnded, StreamSource};

/// Frames queued for a muxer before the fan-out drops for it (several seconds of video+audio).
pub const HLS_QUEUE: usize = 1024;
/// Fewest time between two keyframe requests.
pub const KEYFRAME_EVERY: Duration = Duration::from_millis(900);
/// No video keyframe by then: package audio alone.
pub const KEYFRAME_WAIT: Duration = Duration::from_secs(5);
/// How often the muxer checks idleness and keyframe needs.
const TICK: Duration = Duration::from_millis(100);

/// Sink ids of HLS muxers, in a range apart from viewers' (from 1), recorders' (from 2^62) and
/// pushers' (from 3 * 2^61).
static NEXT_SINK_ID: AtomicU64 = AtomicU64::new(5 << 60);

pub struct HlsMuxer {
    stream: Arc<HlsStream>,
    source: StreamSource,
    table: Arc<HlsStreams>,
    /// The AAC rendition's audio transcoder (None for the Opus one).
    aac: Option<AacRendition>,
    sink_id: u64,
    began: Instant,
    last_keyframe_ask: Instant,
    gave_up_video: bool,
    span: tracing::Span,
}

impl HlsMuxer {
    pub fn new(
        stream: Arc<HlsStream>,
        source: StreamSource,
        table: Arc<HlsStreams>,
        aac: Option<AacRendition>,
    ) -> Self {
        let span = tracing::info_span!("hls", stream = %stream.name, aac = stream.aac);
        HlsMuxer {
            stream,
            source,
            table,
            aac,
            sink_id: NEXT_SINK_ID.fetch_add(1, Ordering::Relaxed),
            began: Instant::now(),
            last_keyframe_ask: Instant::now(),
            gave_up_video: false,
            span,
        }
    }

    fn ask_keyframe(&mut self) {
        self.last_keyframe_ask = Instant::now();
        self.source.keyframe.do_send(RequestKeyframe(None));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.stream.idle() >= HLS_IDLE {
            debug!(parent: &self.span, "no request for {HLS_IDLE:?}: stopping");
            return ctx.stop();
        }
        let (started, wants) = self.stream.read(|p| (p.started(), p.wants_keyframe()));
        if !started && !self.gave_up_video && self.began.elapsed() >= KEYFRAME_WAIT {
            self.gave_up_video = true;
            warn!(parent: &self.span, "no video keyframe within {KEYFRAME_WAIT:?}: packaging audio only");
            self.stream.write(|p| p.start_without_video());
        }
        if (!started || wants) && self.last_keyframe_ask.elapsed() >= KEYFRAME_EVERY {
            self.ask_keyframe();
        }
    }
}

impl Actor for HlsMuxer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(HLS_QUEUE);
        info!(parent: &self.span, "HLS packaging started");
        self.source.attach(self.sink_id, None, ctx, |act: &mut Self, ctx| {
            debug!(parent: &act.span, "source gone before the muxer joined");
            ctx.stop();
        });
        self.ask_keyframe();
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.source.leave.do_send(RemoveSubscriber { id: self.sink_id });
        self.stream.end();
        self.table.done(&self.stream);
        info!(parent: &self.span, "HLS packaging stopped");
        Running::Stop
    }
}

impl Handler<Forward> for HlsMuxer {
    type Result = ();
    fn handle(&mut self, Forward(frame, _): Forward, ctx: &mut Context<Self>) {
        // The AAC rendition transcodes the audio first (an Opus decode and an AAC encode per
        // 20 ms packet: about 1-2 % of a core), outside the packager's lock.
        let frames = match &mut self.aac {
            Some(r) => r.convert(&frame),
            None => vec![(*frame).clone()],
        };
        let mut new_part = false;
        for f in &frames {
            match self.stream.write(|p| p.push(f)) {
                Ok(progress) => new_part |= progress.new_part,
                Err(e) => {
                    warn!(parent: &self.span, error = %e, "HLS packaging failed");
                    return ctx.stop();
                }
            }
        }
        if new_part {
            self.stream.published_part();
        }
    }
}

impl Handler<SourceEnded> for HlsMuxer {
    type Result = ();
    fn handle(&mut self, m: SourceEnded, ctx: &mut Context<Self>) {
        debug!(parent: &self.span, reason = m.reason, "source ended");
        ctx.stop();
    }
}
