//! The RTMP publishing client of re-publishing: the one module of [`crate::push`] that calls
//! `rml_rtmp` (its handshake and `ClientSession`, both sans-IO: bytes in, bytes and events out).
//!
//! [`RtmpClient`] drives one connection from the first byte to "publishing": handshake (C0+C1
//! out at creation), `connect` to the app (with `tcUrl`, which nginx-rtmp and YouTube want),
//! `createStream` + `publish` of the stream key as `live`; then it turns each [`FlvOut`] into
//! an RTMP message. No socket here: the pusher actor writes [`RtmpClient::take_output`] and
//! feeds what it reads to [`RtmpClient::on_bytes`]. The library runs behind `catch_unwind`: a
//! server's bytes that break it are a protocol error, not a dead actor.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
    StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

use crate::flv::FlvOut;

/// The chunk size we send with (rml_rtmp announces it after `connect`): fewer chunk headers
/// than RTMP's default 128.
const CHUNK_SIZE: u32 = 4096;
/// The `flashVer` we announce, as Flash Media Live Encoder-style encoders do.
const FLASH_VERSION: &str = "FMLE/3.0 (compatible; sluice)";

/// What went wrong on the connection, for the log and `/push/find_all`'s `info`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    /// The server said no to `connect` or `publish` (its description or status code).
    #[error("RTMP server refused: {0}")]
    Refused(String),
}

/// Something the pusher acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// `NetStream.Publish.Start`: media may flow.
    Publishing,
}

enum Proto {
    Handshake(Box<Handshake>),
    Session(Box<ClientSession>),
}

/// One RTMP publishing connection's protocol state (see the module docs).
pub struct RtmpClient {
    proto: Proto,
    app: String,
    key: String,
    tc_url: String,
    publishing: bool,
    out: Vec<Bytes>,
    events: VecDeque<ClientEvent>,
}

fn lib_err<E: std::fmt::Debug>(e: E) -> ClientError {
    ClientError::Protocol(format!("{e:?}"))
}

impl RtmpClient {
    /// A client that will publish `key` in `app` of the server at `tc_url`
    /// (`rtmp://host:port/app`). The handshake's first bytes are ready in
    /// [`RtmpClient::take_output`].
    pub fn new(app: &str, key: &str, tc_url: &str) -> Result<Self, ClientError> {
        let mut h = Handshake::new(PeerType::Client);
        let p0p1 = h.generate_outbound_p0_and_p1().map_err(|e| ClientError::Handshake(format!("{e:?}")))?;
        Ok(RtmpClient {
            proto: Proto::Handshake(Box::new(h)),
            app: app.to_string(),
            key: key.to_string(),
            tc_url: tc_url.to_string(),
            publishing: false,
            out: vec![Bytes::from(p0p1)],
            events: VecDeque::new(),
        })
    }

    pub fn is_publishing(&self) -> bool {
        self.publishing
    }

    /// Bytes to write to the server, in order.
    pub fn take_output(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.out)
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Bytes the server sent. An error ends the connection.
    pub fn on_bytes(&mut self, data: &[u8]) -> Result<(), ClientError> {
        catch_unwind(AssertUnwindSafe(|| self.on_bytes_inner(data))).unwrap_or_else(|_| {
            Err(ClientError::Protocol("the server's bytes broke the RTMP library".into()))
        })
    }

    fn on_bytes_inner(&mut self, data: &[u8]) -> Result<(), ClientError> {
        match &mut self.proto {
            Proto::Handshake(h) => match h.process_bytes(data) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    if !response_bytes.is_empty() {
                        self.out.push(Bytes::from(response_bytes));
                    }
                    Ok(())
                }
                Ok(HandshakeProcessResult::Completed { response_bytes, remaining_bytes }) => {
                    if !response_bytes.is_empty() {
                        self.out.push(Bytes::from(response_bytes));
                    }
                    let mut config = ClientSessionConfig::new();
                    config.chunk_size = CHUNK_SIZE;
                    config.flash_version = FLASH_VERSION.to_string();
                    config.tc_url = Some(self.tc_url.clone());
                    let (mut session, initial) = ClientSession::new(config).map_err(lib_err)?;
                    let connect = session.request_connection(self.app.clone()).map_err(lib_err)?;
                    self.proto = Proto::Session(Box::new(session));
                    self.results(initial)?;
                    self.results(vec![connect])?;
                    if !remaining_bytes.is_empty() {
                        return self.on_bytes_inner(&remaining_bytes);
                    }
                    Ok(())
                }
                Err(e) => Err(ClientError::Handshake(format!("{e:?}"))),
            },
            Proto::Session(s) => {
                let results = s.handle_input(data).map_err(|e| ClientError::Protocol(e.to_string()))?;
                self.results(results)
            }
        }
    }

    fn session(&mut self) -> Result<&mut ClientSession, ClientError> {
        match &mut self.proto {
            Proto::Session(s) => Ok(s),
            Proto::Handshake(_) => Err(ClientError::Protocol("not connected yet".into())),
        }
    }

    fn results(&mut self, results: Vec<ClientSessionResult>) -> Result<(), ClientError> {
        let mut queue: VecDeque<ClientSessionResult> = results.into();
        while let Some(r) = queue.pop_front() {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.out.push(Bytes::from(p.bytes)),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
                ClientSessionResult::RaisedEvent(e) => match e {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let key = self.key.clone();
                        let r = self
                            .session()?
                            .request_publishing(key, PublishRequestType::Live)
                            .map_err(lib_err)?;
                        queue.push_back(r);
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(ClientError::Refused(format!(
                            "connect to app {:?}: {description}",
                            self.app
                        )));
                    }
                    ClientSessionEvent::PublishRequestAccepted => {
                        self.publishing = true;
                        self.events.push_back(ClientEvent::Publishing);
                    }
                    ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                        // NetStream.Publish.BadName (name in use), .Failed, .Rejected...
                        let fatal = ["BadName", "Failed", "Rejected", "Denied", "Unpublish"]
                            .iter()
                            .any(|w| code.contains(w));
                        if fatal {
                            return Err(ClientError::Refused(format!("publish {:?}: {code}", self.key)));
                        }
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }

    /// Send one tag. Only while publishing (before, it is an error the caller avoids).
    pub fn send(&mut self, o: &FlvOut) -> Result<(), ClientError> {
        if !self.publishing {
            return Err(ClientError::Protocol("not publishing".into()));
        }
        let r = match o {
            FlvOut::Metadata(m) => {
                let mut md = StreamMetadata::new();
                if m.video {
                    md.video_width = Some(m.width);
                    md.video_height = Some(m.height);
                    md.video_codec_id = Some(7);
                }
                if m.audio {
                    md.audio_codec_id = Some(10);
                    md.audio_sample_rate = Some(m.audio_rate);
                    md.audio_channels = Some(if m.stereo { 2 } else { 1 });
                    md.audio_is_stereo = Some(m.stereo);
                }
                md.encoder = Some(format!("sluice {}", crate::VERSION));
                self.session()?.publish_metadata(&md)
            }
            FlvOut::Video { ts_ms, body, .. } => self.session()?.publish_video_data(
                Bytes::copy_from_slice(body),
                RtmpTimestamp::new(*ts_ms),
                false,
            ),
            FlvOut::Audio { ts_ms, body } => self.session()?.publish_audio_data(
                Bytes::copy_from_slice(body),
                RtmpTimestamp::new(*ts_ms),
                false,
            ),
        }
        .map_err(lib_err)?;
        self.results(vec![r])
    }

    /// `deleteStream`-like goodbye: the server ends the stream at once instead of on timeout.
    pub fn stop(&mut self) {
        if !self.publishing {
            return;
        }
        self.publishing = false;
        if let Ok(s) = self.session() {
            if let Ok(r) = s.stop_publishing() {
                let _ = self.results(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};

    /// Our client against rml_rtmp's server session, bytes passed by hand: handshake, connect,
    /// publish, a video tag arrives.
    #[test]
    fn publishes_to_a_server() {
        let mut client = RtmpClient::new("live", "rtmp_cam", "rtmp://127.0.0.1:1935/live").unwrap();
        let mut hs = Handshake::new(PeerType::Server);
        let mut server: Option<ServerSession> = None;
        let mut to_client: Vec<u8> = Vec::new();
        let mut published = None;
        let mut video = 0;
        for _ in 0..20 {
            let up: Vec<u8> = client.take_output().concat();
            let mut results = Vec::new();
            if !up.is_empty() {
                match server.as_mut() {
                    None => match hs.process_bytes(&up).unwrap() {
                        HandshakeProcessResult::InProgress { response_bytes } => {
                            to_client.extend(response_bytes)
                        }
                        HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                            to_client.extend(response_bytes);
                            let (mut s, initial) = ServerSession::new(ServerSessionConfig::new()).unwrap();
                            results.extend(initial);
                            results.extend(s.handle_input(&remaining_bytes).unwrap());
                            server = Some(s);
                        }
                    },
                    Some(s) => results.extend(s.handle_input(&up).unwrap()),
                }
            }
            let mut queue: VecDeque<ServerSessionResult> = results.into();
            while let Some(r) = queue.pop_front() {
                match r {
                    ServerSessionResult::OutboundResponse(p) => to_client.extend_from_slice(&p.bytes),
                    ServerSessionResult::RaisedEvent(e) => match e {
                        ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                            assert_eq!(app_name, "live");
                            queue.extend(server.as_mut().unwrap().accept_request(request_id).unwrap());
                        }
                        ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
                            published = Some(stream_key);
                            queue.extend(server.as_mut().unwrap().accept_request(request_id).unwrap());
                        }
                        ServerSessionEvent::VideoDataReceived { .. } => video += 1,
                        _ => {}
                    },
                    _ => {}
                }
            }
            if !to_client.is_empty() {
                client.on_bytes(&std::mem::take(&mut to_client)).unwrap();
            }
            if client.poll_event() == Some(ClientEvent::Publishing) {
                client
                    .send(&FlvOut::Video { ts_ms: 0, body: vec![0x17, 1, 0, 0, 0], keyframe: true })
                    .unwrap();
            }
            if video > 0 {
                break;
            }
        }
        assert_eq!(published.as_deref(), Some("rtmp_cam"));
        assert!(client.is_publishing());
        assert_eq!(video, 1);
        // Garbage from a "server" is an error, never a panic.
        let mut c = RtmpClient::new("live", "k", "rtmp://x/live").unwrap();
        let _ = c.on_bytes(&[3; 3000]);
        let _ = c.on_bytes(&[0xff; 5000]);
    }
}
