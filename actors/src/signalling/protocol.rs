//! The WCS (Flashphoner Web Call Server) signalling protocol: message types, parsing and framing.
//!
//! Pure code: no actix, no sockets. Every frame on the wire is a JSON text message
//! `{"message": <name>, "data": [ ... ]}`; the client always sends exactly one element in `data`,
//! and the official Web SDK reads `data[0]` of every server frame before looking at `message`,
//! so every frame we send carries a `data` array.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::fmt;

/// Exact `info` strings the Web SDK and WCS pages know (WCS `STREAM_STATUS_INFO`).
pub mod info {
    pub const STREAM_NOT_FOUND: &str = "Stream not found";
    pub const NAME_IN_USE: &str = "Stream name is already in use";
    /// A `vod://` file that is missing or lies outside the media folder.
    pub const FILE_NOT_FOUND: &str = "File not found";
    pub const MEDIA_SESSION_ID_IN_USE: &str = "MediaSessionId is already in use";
    pub const MEDIA_SESSION_ID_NULL: &str = "MediaSessionId is null";
    pub const STOPPED_BY_PUBLISHER: &str = "Stopped by publisher stop";
    pub const STOPPED_BY_SESSION_DISCONNECT: &str = "Stopped by session disconnect";
    pub const STOPPED_BY_REST_TERMINATE: &str = "Stopped by rest /terminate";
    pub const STOPPED_BY_USER: &str = "Stopped by user";
    pub const ICE_TIMEOUT: &str = "Failed by ICE timeout";
    pub const ICE_KEEP_ALIVE: &str = "Failed by ICE keep alive";
    pub const NO_COMMON_CODECS: &str = "No common codecs";
    pub const FAILED_BY_ERROR: &str = "Failed by error";
    /// A publisher sending far more video than any camera or screen share does (a hostile or
    /// broken client), stopped by the server.
    pub const BITRATE_OVER_LIMIT: &str = "Failed by error: video bitrate over the limit";
    pub const SESSION_NOT_READY: &str = "Session not ready";
    /// Final status of every stream, and refusal of new ones, when the server stops.
    pub const SERVER_SHUTDOWN: &str = "Server shutdown";
    pub const FILE_WRONG_FORMAT: &str = "File has wrong format";
    pub const FAILED_TO_READ_FILE: &str = "Failed to read file";
    /// A viewer's STOPPED when its VOD file ends (WCS leaves it undocumented).
    pub const END_OF_FILE: &str = "End of file";
    pub const RTSP_WRONG_FORMAT: &str = "Rtsp has wrong format";
    pub const RTSP_CONNECT_FAILED: &str = "Failed to connect to rtsp stream";
    pub const RTSP_NOT_FOUND: &str = "Rtsp stream not found";
    /// A refusal by access control (tokens, `--rtsp-allow`); a reason may follow after ": ".
    pub const RESTRICTED_ACCESS: &str = "Restricted access";
    /// The PLAYING info of a play that asked for a picture size (`width`/`height`): WCS would
    /// transcode to it; sluice forwards the published picture (the size asked for follows).
    pub const PLAY_SIZE_NOT_APPLIED: &str =
        "Play size not applied, the stream is sent as published; requested";
}

/// The status of one published or played stream, as the SDK's `STREAM_STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamStatus {
    New,
    Pending,
    Publishing,
    Playing,
    Unpublished,
    Stopped,
    Failed,
}

impl StreamStatus {
    /// FAILED, STOPPED and UNPUBLISHED end a stream: the SDK deletes it and closes its PC.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Unpublished | Self::Stopped | Self::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::Pending => "PENDING",
            Self::Publishing => "PUBLISHING",
            Self::Playing => "PLAYING",
            Self::Unpublished => "UNPUBLISHED",
            Self::Stopped => "STOPPED",
            Self::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_ascii_uppercase())).ok()
    }
}

impl fmt::Display for StreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stream object WCS sends in `notifyStreamStatusEvent` and returns from `/stream/find`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    pub media_session_id: String,
    pub name: String,
    pub published: bool,
    pub has_video: bool,
    pub has_audio: bool,
    pub status: StreamStatus,
    pub info: String,
    pub record: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_name: Option<String>,
    pub width: u32,
    pub height: u32,
    pub bitrate: u32,
    pub min_bitrate: u32,
    pub max_bitrate: u32,
    pub quality: u32,
    pub audio_codec: String,
    pub video_codec: String,
    pub create_date: u64,
    pub media_provider: String,
    pub media_type: String,
    pub transport: String,
    pub session_id: String,
    pub app_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_state: Option<MuteState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_state: Option<MuteState>,
    /// Why the stream's video is re-encoded before viewers get it (B-frames), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcoding: Option<String>,
    /// The last video rate report of a WebRTC publisher or viewer ([`crate::video_rate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::video_rate::VideoRate>,
    /// Viewers of a published stream, in `/stream/find` answers ([`crate::registry::Registry::find`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<u32>,
}

/// What a server-side source (RTMP, RTSP, VOD) says about itself; the rest of its stream object
/// is the same for all of them ([`StreamInfo::of_source`]).
#[derive(Debug, Clone, Copy)]
pub struct SourceDescription<'a> {
    pub media_session_id: &'a str,
    pub name: &'a str,
    /// `mediaProvider` as WCS shows it ("Flash" for RTMP, "RTSP", "VOD").
    pub provider: &'a str,
    /// The WCS video codec name ("H264", "VP8"), empty without video.
    pub video_codec: &'a str,
    pub has_audio: bool,
    pub width: u32,
    pub height: u32,
    /// "TCP", "UDP" or empty.
    pub transport: &'a str,
    pub session_id: &'a str,
}

/// Unix time in milliseconds (`createDate`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl StreamInfo {
    /// The stream object of a server-side source, PUBLISHING from the start; audio is Opus
    /// (AAC is transcoded).
    pub fn of_source(d: SourceDescription<'_>) -> StreamInfo {
        StreamInfo {
            media_session_id: d.media_session_id.to_string(),
            name: d.name.to_string(),
            published: true,
            has_video: !d.video_codec.is_empty(),
            has_audio: d.has_audio,
            status: StreamStatus::Publishing,
            info: String::new(),
            record: false,
            record_name: None,
            width: d.width,
            height: d.height,
            bitrate: 0,
            min_bitrate: 0,
            max_bitrate: 0,
            quality: 0,
            audio_codec: if d.has_audio { "opus".into() } else { String::new() },
            video_codec: d.video_codec.to_string(),
            create_date: now_ms(),
            media_provider: d.provider.to_string(),
            media_type: "publish".into(),
            transport: d.transport.to_string(),
            session_id: d.session_id.to_string(),
            app_key: "defaultApp".into(),
            custom: None,
            audio_state: None,
            video_state: None,
            transcoding: None,
            metrics: None,
            viewers: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct MuteState {
    pub muted: bool,
}

/// Whether media goes out over UDP (default) or the client asked for ICE-TCP only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

/// A `publishStream` or `playStream` request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRequest {
    pub media_session_id: String,
    pub name: String,
    pub sdp: String,
    pub record: bool,
    pub has_audio: bool,
    pub has_video: bool,
    pub transport: Transport,
    pub custom: Option<Value>,
    pub width: u32,
    pub height: u32,
    pub bitrate: u32,
    pub min_bitrate: u32,
    pub max_bitrate: u32,
    pub quality: u32,
    /// `rtmpUrl` of a publish: re-publish the stream to that RTMP server ([`crate::push`]).
    pub rtmp_url: Option<String>,
}

impl StreamRequest {
    /// The stream object for this request, as sent back in status events.
    pub fn to_info(&self, published: bool, session_id: &str, app_key: &str, now_ms: u64) -> StreamInfo {
        StreamInfo {
            media_session_id: self.media_session_id.clone(),
            name: self.name.clone(),
            published,
            has_video: self.has_video,
            has_audio: self.has_audio,
            status: StreamStatus::Pending,
            info: String::new(),
            record: self.record,
            record_name: None,
            width: self.width,
            height: self.height,
            bitrate: self.bitrate,
            min_bitrate: self.min_bitrate,
            max_bitrate: self.max_bitrate,
            quality: self.quality,
            audio_codec: String::new(),
            video_codec: String::new(),
            create_date: now_ms,
            media_provider: "WebRTC".into(),
            media_type: if published { "publish" } else { "play" }.into(),
            transport: match self.transport {
                Transport::Udp => "UDP",
                Transport::Tcp => "TCP",
            }
            .into(),
            session_id: session_id.into(),
            app_key: app_key.into(),
            custom: self.custom.clone(),
            audio_state: None,
            video_state: None,
            transcoding: None,
            metrics: None,
            viewers: None,
        }
    }
}

/// `unPublishStream` / `stopStream`.
#[derive(Debug, Clone, PartialEq)]
pub struct StopRequest {
    pub media_session_id: String,
    pub name: String,
}

/// `sendStreamEvent`: mute/unmute notices and `data` relayed to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEventRequest {
    pub media_session_id: String,
    pub kind: String,
    pub payload: Value,
}

/// A message from the client, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Connection(Map<String, Value>),
    PublishStream(StreamRequest),
    PlayStream(StreamRequest),
    UnPublishStream(StopRequest),
    StopStream(StopRequest),
    SendStreamEvent(StreamEventRequest),
    AvailableStream {
        media_session_id: String,
        name: String,
    },
    Snapshot {
        media_session_id: String,
        name: String,
    },
    SendData {
        operation_id: String,
        payload: Value,
    },
    Ping,
    Pong,
    /// `sessionDebug {command: "start"|"stop"}` ([`crate::debug_log`]).
    SessionDebug {
        command: String,
    },
    /// `pushLogs {logs}`: the SDK's own log lines while a debug log is kept.
    PushLogs(String),
    /// Messages the SDK may send that a streaming server has nothing to do with
    /// (`pushLogs`, `sessionDebug`, metrics ...): acknowledged by silence.
    Ignored(String),
}

/// Why a client frame was refused. `api_method` names the message, for the `fail` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub api_method: String,
    pub media_session_id: Option<String>,
    pub reason: String,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.api_method, self.reason)
    }
}

impl std::error::Error for ProtocolError {}

const IGNORED: &[&str] =
    &["submitBugReport", "webRTCMetricsClientDescription", "webRTCMetricsBatch", "getVersion"];

/// Parse one text frame from a client.
pub fn parse_client(text: &str) -> Result<ClientMessage, ProtocolError> {
    let err = |api: &str, id: Option<String>, reason: String| ProtocolError {
        api_method: api.to_string(),
        media_session_id: id,
        reason,
    };
    let v: Value = serde_json::from_str(text)
        .map_err(|e| err("unknown", None, format!("Malformed message: not JSON ({e})")))?;
    let Value::Object(mut frame) = v else {
        return Err(err("unknown", None, "Malformed message: not a JSON object".into()));
    };
    let Some(Value::String(name)) = frame.remove("message") else {
        return Err(err("unknown", None, "Malformed message: no \"message\" name".into()));
    };
    let first = match frame.remove("data") {
        Some(Value::Array(mut a)) if !a.is_empty() => a.swap_remove(0),
        Some(Value::Array(_)) | None | Some(Value::Null) => Value::Null,
        Some(other) => other,
    };
    let obj = match &first {
        Value::Object(m) => Some(m),
        _ => None,
    };
    let id = obj.and_then(|o| str_field(o, "mediaSessionId"));
    let need_obj = |what: &str| -> Result<&Map<String, Value>, ProtocolError> {
        obj.ok_or_else(|| err(&name, None, format!("Malformed {what}: data[0] must be an object")))
    };
    let need_str = |o: &Map<String, Value>, field: &str| -> Result<String, ProtocolError> {
        match str_field(o, field) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(err(&name, id.clone(), format!("Missing field \"{field}\""))),
        }
    };
    Ok(match name.as_str() {
        "connection" => ClientMessage::Connection(obj.cloned().unwrap_or_default()),
        "publishStream" | "playStream" => {
            let o = need_obj(&name)?;
            let req = StreamRequest {
                media_session_id: need_str(o, "mediaSessionId")?,
                name: need_str(o, "name")?,
                sdp: need_str(o, "sdp")?,
                record: bool_field(o, "record").unwrap_or(false),
                has_audio: bool_field(o, "hasAudio").unwrap_or(true),
                has_video: bool_field(o, "hasVideo").unwrap_or(true),
                transport: match str_field(o, "transport").as_deref() {
                    Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
                    _ => Transport::Udp,
                },
                custom: o.get("custom").filter(|v| !v.is_null()).cloned(),
                width: u32_field(o, "width"),
                height: u32_field(o, "height"),
                bitrate: u32_field(o, "bitrate"),
                min_bitrate: u32_field(o, "minBitrate"),
                max_bitrate: u32_field(o, "maxBitrate"),
                quality: u32_field(o, "quality"),
                rtmp_url: str_field(o, "rtmpUrl").filter(|u| !u.trim().is_empty()),
            };
            if name == "publishStream" {
                ClientMessage::PublishStream(req)
            } else {
                ClientMessage::PlayStream(req)
            }
        }
        "unPublishStream" | "stopStream" => {
            let o = need_obj(&name)?;
            let req = StopRequest {
                media_session_id: need_str(o, "mediaSessionId")?,
                name: str_field(o, "name").unwrap_or_default(),
            };
            if name == "unPublishStream" {
                ClientMessage::UnPublishStream(req)
            } else {
                ClientMessage::StopStream(req)
            }
        }
        "sendStreamEvent" => {
            let o = need_obj(&name)?;
            ClientMessage::SendStreamEvent(StreamEventRequest {
                media_session_id: need_str(o, "mediaSessionId")?,
                kind: need_str(o, "type")?,
                payload: o.get("payload").cloned().unwrap_or(Value::Null),
            })
        }
        "availableStream" | "snapshot" => {
            let o = need_obj(&name)?;
            let media_session_id = need_str(o, "mediaSessionId")?;
            let stream_name = need_str(o, "name")?;
            if name == "snapshot" {
                ClientMessage::Snapshot { media_session_id, name: stream_name }
            } else {
                ClientMessage::AvailableStream { media_session_id, name: stream_name }
            }
        }
        "sendData" => {
            let o = need_obj(&name)?;
            ClientMessage::SendData {
                operation_id: need_str(o, "operationId")?,
                payload: o.get("payload").cloned().unwrap_or(Value::Null),
            }
        }
        "sessionDebug" => ClientMessage::SessionDebug {
            command: obj.and_then(|o| str_field(o, "command")).unwrap_or_default(),
        },
        "pushLogs" => ClientMessage::PushLogs(obj.and_then(|o| str_field(o, "logs")).unwrap_or_default()),
        "ping" => ClientMessage::Ping,
        "pong" => ClientMessage::Pong,
        n if IGNORED.contains(&n) => ClientMessage::Ignored(name),
        _ => return Err(err(&name, id, format!("Unknown message \"{name}\""))),
    })
}

fn str_field(o: &Map<String, Value>, k: &str) -> Option<String> {
    match o.get(k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn bool_field(o: &Map<String, Value>, k: &str) -> Option<bool> {
    match o.get(k)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s == "true"),
        _ => None,
    }
}

fn u32_field(o: &Map<String, Value>, k: &str) -> u32 {
    o.get(k)
        .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
        .map(|n| n.min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

/// One server frame: `{"message": name, "data": data}`; `data` must be an array.
pub fn frame(message: &str, data: Value) -> String {
    debug_assert!(data.is_array(), "server frames always carry a data array");
    json!({ "message": message, "data": data }).to_string()
}

pub fn status_event(info: &StreamInfo) -> String {
    frame("notifyStreamStatusEvent", json!([info]))
}

pub fn set_remote_sdp(media_session_id: &str, sdp: &str) -> String {
    frame("setRemoteSDP", json!([media_session_id, sdp, true]))
}

pub fn stream_event(media_session_id: &str, kind: &str, payload: &Value) -> String {
    frame(
        "notifyStreamEvent",
        json!([{ "mediaSessionId": media_session_id, "type": kind, "payload": payload }]),
    )
}

/// `fail`: the SDK raises a WARN session event. When it concerns a stream, it carries
/// `apiMethod: "StreamStatusEvent"`, the stream `id` and `status: "FAILED"` so the SDK fails it.
pub fn fail(e: &ProtocolError) -> String {
    let mut o = Map::new();
    match &e.media_session_id {
        Some(id) => {
            o.insert("apiMethod".into(), "StreamStatusEvent".into());
            o.insert("id".into(), id.clone().into());
            o.insert("status".into(), "FAILED".into());
        }
        None => {
            o.insert("apiMethod".into(), e.api_method.clone().into());
        }
    }
    o.insert("info".into(), e.reason.clone().into());
    frame("fail", json!([o]))
}

pub fn ping() -> String {
    frame("ping", json!([null]))
}

pub fn pong() -> String {
    frame("pong", json!([null]))
}

/// `getUserData`: the connection object echoed, plus the session's token and status.
pub fn user_data(connection: &Map<String, Value>, session_id: &str) -> String {
    let mut o = connection.clone();
    o.insert("authToken".into(), session_id.into());
    o.insert("sessionId".into(), session_id.into());
    o.insert("status".into(), "ESTABLISHED".into());
    o.insert("useWsTunnel".into(), false.into());
    o.insert("useWsTunnelPacketization2".into(), false.into());
    o.insert("useBase64BinaryEncoding".into(), false.into());
    // webRTCMetricsServerDescription is left out on purpose: it turns the SDK's metrics off.
    o.remove("webRTCMetricsServerDescription");
    frame("getUserData", json!([o]))
}

pub fn version(v: &str) -> String {
    frame("getVersion", json!([v]))
}

pub fn available_stream(media_session_id: &str, available: bool, reason: &str) -> String {
    // The SDK compares `status == "true"`: it must be the string, not a JSON boolean.
    frame(
        "availableStream",
        json!([{ "id": media_session_id, "status": if available { "true" } else { "false" }, "info": reason }]),
    )
}

pub fn data_status(operation_id: &str, accepted: bool, info: &str) -> String {
    frame(
        "DataStatusEvent",
        json!([{ "operationId": operation_id, "status": if accepted { "ACCEPTED" } else { "FAILED" }, "info": info }]),
    )
}

/// Mute notices change the publisher's `audioState`/`videoState`; returns the kind and state.
pub fn mute_change(event_type: &str) -> Option<(&'static str, bool)> {
    match event_type {
        "audioMuted" => Some(("audio", true)),
        "audioUnmuted" => Some(("audio", false)),
        "videoMuted" => Some(("video", true)),
        "videoUnmuted" => Some(("video", false)),
        _ => None,
    }
}

/// Event types a publisher may relay to its subscribers with `sendStreamEvent`.
pub fn relayable_event(event_type: &str) -> bool {
    mute_change(event_type).is_some() || event_type == "data"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(extra: &str) -> String {
        format!(
            r#"{{"message":"publishStream","data":[{{"mediaSessionId":"m1","name":"s1","sdp":"v=0","record":true{extra}}}]}}"#
        )
    }

    #[test]
    fn parses_publish() {
        let m = parse_client(&publish(r#","transport":"TCP","width":"640""#)).unwrap();
        let ClientMessage::PublishStream(r) = m else { panic!("{m:?}") };
        assert_eq!(r.name, "s1");
        assert!(r.record);
        assert_eq!(r.transport, Transport::Tcp);
        assert_eq!(r.width, 640);
    }

    #[test]
    fn missing_fields_name_the_stream() {
        let e = parse_client(r#"{"message":"playStream","data":[{"mediaSessionId":"m2","name":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.media_session_id.as_deref(), Some("m2"));
        assert!(e.reason.contains("sdp"), "{e}");
        let f: Value = serde_json::from_str(&fail(&e)).unwrap();
        assert_eq!(f["data"][0]["status"], "FAILED");
        assert_eq!(f["data"][0]["id"], "m2");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "{", "[]", "42", r#"{"data":[]}"#, r#"{"message":7}"#] {
            assert!(parse_client(bad).is_err(), "{bad}");
        }
        let e = parse_client(r#"{"message":"frobnicate","data":[null]}"#).unwrap_err();
        assert!(e.reason.contains("Unknown message"));
        let e = parse_client(r#"{"message":"publishStream","data":["x"]}"#).unwrap_err();
        assert_eq!(e.api_method, "publishStream");
    }

    #[test]
    fn frames_always_carry_data() {
        for f in [ping(), pong(), version("1"), set_remote_sdp("a", "b"), available_stream("a", true, "")] {
            let v: Value = serde_json::from_str(&f).unwrap();
            assert!(v["data"].is_array(), "{f}");
        }
        let v: Value = serde_json::from_str(&available_stream("a", false, "r")).unwrap();
        assert_eq!(v["data"][0]["status"], "false");
    }

    #[test]
    fn status_round_trip() {
        assert_eq!(StreamStatus::parse("publishing"), Some(StreamStatus::Publishing));
        assert_eq!(serde_json::to_string(&StreamStatus::Unpublished).unwrap(), "\"UNPUBLISHED\"");
        assert!(StreamStatus::Failed.is_terminal());
    }
}
