//! What every stream source shares: a WebRTC publisher, an RTMP encoder, an RTSP pull and a VOD
//! file are all actors that own a [`FanOut`] of viewers (and recorders, snapshot takers) and a
//! [`crate::registry::Registration`].
//!
//! A source implements [`Source`] (its fan-out and its few differences) and gets the six
//! handlers every source answers from [`crate::source_handlers!`]: [`AddSubscriber`],
//! [`crate::messages::RemoveSubscriber`], [`crate::messages::RequestKeyframe`],
//! [`crate::messages::SinkReady`],
//! [`crate::messages::GetGop`] and [`crate::messages::Stop`]. Registering goes through
//! [`crate::registry::Registry::register_source`], and the stream object through
//! [`crate::protocol::StreamInfo::of_source`]: adding a source means writing its protocol.

use actix::prelude::*;

use crate::fanout::FanOut;
use crate::messages::AddSubscriber;

/// A stream source (see the module docs). Default methods do nothing.
pub trait Source: Actor<Context = Context<Self>> {
    fn fanout(&mut self) -> &mut FanOut;

    /// Whether the stream carries video (what a snapshot taker is told with the GOP).
    fn has_video(&self) -> bool;

    /// The stream has ended: a viewer that joins now is told at once.
    fn has_ended(&self) -> bool {
        false
    }

    /// A viewer is about to join (the publisher tells it the current mute state).
    fn viewer_joining(&mut self, _m: &AddSubscriber) {}

    /// The set of viewers changed (idle tracking).
    fn viewers_changed(&mut self, _ctx: &mut Context<Self>) {}

    /// A viewer asks for a keyframe (only a WebRTC publisher can make one; a VOD file starts).
    fn keyframe_wanted(&mut self, _ctx: &mut Context<Self>) {}

    /// Whether a viewer that starts gets the held GOP at once ([`crate::fanout::FanOut::start_sink`])
    /// even when it is not fresh ([`crate::fanout::FRESH_GOP`]). Sources whose keyframe comes
    /// within a round trip of a request (a WebRTC peer) say no: there a new keyframe is the
    /// faster start than seconds of GOP.
    fn starts_from_gop(&self) -> bool {
        true
    }

    /// A viewer switches to simulcast layer `layer` (0 the best) and needs its keyframe.
    fn layer_keyframe_wanted(&mut self, _layer: u8, ctx: &mut Context<Self>) {
        self.keyframe_wanted(ctx);
    }

    /// A viewer's link cannot carry the stream's lowest quality: make a lower one (one more layer) if
    /// this source can.
    fn lower_layer_wanted(&mut self, _ctx: &mut Context<Self>) {}

    /// Someone wants the current GOP (a snapshot).
    fn gop_wanted(&mut self, _ctx: &mut Context<Self>) {}

    /// End the stream with `reason` (REST terminate, server shutdown).
    fn stop(&mut self, reason: &'static str, ctx: &mut Context<Self>);
}

/// The handlers of a [`Source`] type.
#[macro_export]
macro_rules! source_handlers {
    ($t:ty) => {
        impl actix::Handler<$crate::messages::AddSubscriber> for $t {
            type Result = ();
            fn handle(&mut self, m: $crate::messages::AddSubscriber, ctx: &mut actix::Context<Self>) {
                use $crate::source::Source as _;
                if self.has_ended() {
                    m.ended.do_send($crate::messages::SourceEnded {
                        reason: $crate::protocol::info::STOPPED_BY_PUBLISHER,
                    });
                    return;
                }
                self.viewer_joining(&m);
                self.fanout().add(m);
                self.viewers_changed(ctx);
            }
        }

        impl actix::Handler<$crate::messages::RemoveSubscriber> for $t {
            type Result = ();
            fn handle(&mut self, m: $crate::messages::RemoveSubscriber, ctx: &mut actix::Context<Self>) {
                use $crate::source::Source as _;
                self.fanout().remove(m.id);
                self.viewers_changed(ctx);
            }
        }

        impl actix::Handler<$crate::messages::RequestKeyframe> for $t {
            type Result = ();
            fn handle(&mut self, m: $crate::messages::RequestKeyframe, ctx: &mut actix::Context<Self>) {
                use $crate::source::Source as _;
                match m.0.and_then(|id| self.fanout().sink_layer(id)) {
                    // A simulcast layer or a lower rendition: that one's keyframe.
                    Some((layer, target)) if self.fanout().layer_rates().len() > 1 => {
                        self.layer_keyframe_wanted(target.unwrap_or(layer), ctx)
                    }
                    _ => self.keyframe_wanted(ctx),
                }
            }
        }

        impl actix::Handler<$crate::messages::SinkReady> for $t {
            type Result = ();
            fn handle(&mut self, m: $crate::messages::SinkReady, ctx: &mut actix::Context<Self>) {
                use $crate::source::Source as _;
                // A fresh GOP starts the viewer whatever the source, and then it needs no new
                // keyframe; an older one only where the source says so.
                let fresh = self.fanout().gop_is_fresh(std::time::Instant::now());
                let started =
                    !self.has_ended() && (fresh || self.starts_from_gop()) && self.fanout().start_sink(m.id);
                if !(started && fresh) {
                    self.keyframe_wanted(ctx);
                }
            }
        }

        impl actix::Handler<$crate::messages::ViewerBandwidth> for $t {
            type Result = Option<$crate::messages::BandwidthGoal>;
            fn handle(
                &mut self,
                m: $crate::messages::ViewerBandwidth,
                ctx: &mut actix::Context<Self>,
            ) -> Option<$crate::messages::BandwidthGoal> {
                use $crate::source::Source as _;
                let d = self.fanout().set_bandwidth(m.id, m.bps, std::time::Instant::now());
                if let Some(layer) = d.switch {
                    self.layer_keyframe_wanted(layer, ctx);
                }
                if d.lower_wanted {
                    self.lower_layer_wanted(ctx);
                }
                d.goal
            }
        }

        impl actix::Handler<$crate::messages::GetGop> for $t {
            type Result = $crate::messages::GopReply;
            fn handle(
                &mut self,
                _: $crate::messages::GetGop,
                ctx: &mut actix::Context<Self>,
            ) -> $crate::messages::GopReply {
                use $crate::source::Source as _;
                self.gop_wanted(ctx);
                let has_video = self.has_video();
                $crate::messages::GopReply { frames: self.fanout().gop().to_vec(), has_video }
            }
        }

        impl actix::Handler<$crate::messages::Stop> for $t {
            type Result = ();
            fn handle(&mut self, m: $crate::messages::Stop, ctx: &mut actix::Context<Self>) {
                use $crate::source::Source as _;
                self.stop(m.reason, ctx);
            }
        }
    };
}
