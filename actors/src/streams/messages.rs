//! Messages several actors share. Messages that only one actor handles live beside it.

use actix::prelude::*;
use serde_json::Value;

use crate::protocol::StreamInfo;

/// A stream's status changed: the session sends `notifyStreamStatusEvent` to its client.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StatusChanged(pub StreamInfo);

/// A stream event for a client: `notifyStreamEvent` (mute notices, data, snapshots).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StreamEventNotice {
    pub media_session_id: String,
    pub kind: String,
    pub payload: Value,
}

/// A WebRTC peer's video rate report for its client: `inboundVideoRate` to a publisher,
/// `outboundVideoRate` to a viewer ([`crate::video_rate`]).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct VideoRateNotice {
    pub media_session_id: String,
    /// True for a publisher (what the server receives), false for a viewer (what it sends).
    pub inbound: bool,
    pub rate: crate::video_rate::VideoRate,
}

/// Where a viewer's actor reports to its client's session: status changes, stream events and
/// video rate reports.
#[derive(Clone)]
pub struct ClientRecipients {
    pub status: Recipient<StatusChanged>,
    pub events: Recipient<StreamEventNotice>,
    pub rates: Recipient<VideoRateNotice>,
}

/// End a publish or a play. `reason` becomes the `info` of the final status event.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Stop {
    pub reason: &'static str,
}

/// A frame of the stream a sink is attached to, shared by all its sinks, with its RTP payloads
/// cut once for every viewer.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Forward(pub std::sync::Arc<crate::media::Frame>, pub std::sync::Arc<crate::engine::Packets>);

/// The stream's source ended: viewers get STOPPED with `reason`, recorders finish their file.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SourceEnded {
    pub reason: &'static str,
}

/// A sink (viewer, recorder) attaches to a stream source.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddSubscriber {
    pub id: u64,
    pub frames: Recipient<Forward>,
    pub ended: Recipient<SourceEnded>,
    /// Where stream events (mute, data) for this viewer go, and its `mediaSessionId`.
    pub events: Option<(String, Recipient<StreamEventNotice>)>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveSubscriber {
    pub id: u64,
}

/// A sink needs a keyframe (it just connected, or its decoder asked with PLI/FIR). With the
/// sink's id, a keyframe of the layer it gets (or moves to) is enough.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RequestKeyframe(pub Option<u64>);

/// A viewer's peer is connected and ready for video: the source sends it the GOP it holds at
/// once, so its picture starts without waiting for the source's next keyframe
/// ([`crate::fanout::FanOut::start_sink`]), and asks for a fresh keyframe where it can.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SinkReady {
    pub id: u64,
}

/// A viewer's bandwidth estimate changed (bit/s): the source's fan-out picks the simulcast
/// layer it gets ([`crate::fanout::FanOut::set_bandwidth`]) and answers what the viewer's
/// estimator should aim for (None: the stream has one layer, nothing to aim for).
#[derive(Message)]
#[rtype(result = "Option<BandwidthGoal>")]
pub struct ViewerBandwidth {
    pub id: u64,
    pub bps: u64,
}

/// Where a viewer's bandwidth estimation should probe, bit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct BandwidthGoal {
    /// Kept up with padding: the next layer up, so the estimate can grow to it.
    pub minimum: u64,
    /// The best layer of the stream.
    pub desired: u64,
}

/// The source's held GOP (keyframe first), for snapshots; empty when it holds none.
#[derive(Message)]
#[rtype(result = "GopReply")]
pub struct GetGop;

#[derive(MessageResponse)]
pub struct GopReply {
    pub frames: Vec<std::sync::Arc<crate::media::Frame>>,
    /// The stream carries video at all (an audio-only stream never will have a picture).
    pub has_video: bool,
}

/// How sinks reach a stream source, whatever actor it is (a browser publisher, a VOD file, an
/// RTMP encoder...): every source answers these three messages.
#[derive(Clone)]
pub struct StreamSource {
    pub join: Recipient<AddSubscriber>,
    pub leave: Recipient<RemoveSubscriber>,
    pub keyframe: Recipient<RequestKeyframe>,
    pub ready: Recipient<SinkReady>,
    pub gop: Recipient<GetGop>,
    pub bandwidth: Recipient<ViewerBandwidth>,
}

impl StreamSource {
    /// Attach the sink actor running in `ctx` (a viewer, recorder, pusher) as `id`: it gets the
    /// stream's frames ([`Forward`]) and its end ([`SourceEnded`]), and `events` its stream events.
    /// A source already gone runs `gone` instead, exactly as if it had stopped after the join.
    pub fn attach<A>(
        &self,
        id: u64,
        events: Option<(String, Recipient<StreamEventNotice>)>,
        ctx: &mut Context<A>,
        gone: impl FnOnce(&mut A, &mut Context<A>) + 'static,
    ) where
        A: Actor<Context = Context<A>> + Handler<Forward> + Handler<SourceEnded>,
    {
        let join =
            AddSubscriber { id, frames: ctx.address().recipient(), ended: ctx.address().recipient(), events };
        actix::fut::wrap_future::<_, A>(self.join.send(join))
            .then(move |res, act, ctx| {
                if res.is_err() {
                    gone(act, ctx);
                }
                actix::fut::ready(())
            })
            .spawn(ctx);
    }

    pub fn of<A>(addr: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<AddSubscriber>
            + Handler<RemoveSubscriber>
            + Handler<RequestKeyframe>
            + Handler<GetGop>
            + Handler<SinkReady>
            + Handler<ViewerBandwidth>,
    {
        StreamSource {
            join: addr.clone().recipient(),
            leave: addr.clone().recipient(),
            keyframe: addr.clone().recipient(),
            ready: addr.clone().recipient(),
            gop: addr.clone().recipient(),
            bandwidth: addr.clone().recipient(),
        }
    }
}
