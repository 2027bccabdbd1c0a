//! # sluice-codecs: the pure media code of the sluice media server
//!
//! Everything here is sans-IO and knows nothing of actors: no actix, no tokio, no sockets, no
//! clock (arrival times are passed in). The actor crate (`sluice-actors`) drives it and
//! re-exports every module under the same name, so `sluice_actors::fmp4` is this crate's
//! [`fmp4`]. The rule "codec code imports no actix" is kept by this crate's `Cargo.toml`, which
//! cannot reach actix, tokio or dashmap, rather than by habit.
//!
//! ## The modules
//! - [`media`]: the [`media::Frame`] every source produces and every sink reads (an H.264 access
//!   unit in Annex-B, a VP8 frame or an Opus packet), and whether it is a keyframe.
//! - [`h264`]: the one Annex-B scanner, Annex-B ↔ AVCC (length prefixes) conversion, the
//!   `AVCDecoderConfigurationRecord`, the picture size from an SPS (parsed by `h264-reader`).
//! - [`fmp4`]: the crash-safe fragmented MP4 writer of recordings (and its live mode for HLS).
//! - [`hls`]: HLS and LL-HLS packaging: CMAF segments and parts in memory, the playlists.
//! - [`mp4_reader`]: the MP4 reader of VOD (progressive and fragmented files).
//! - [`flv`]: FLV tag bodies, as RTMP carries them, to frames, and frames to FLV tags.
//! - [`picture`]: one picture of a stream decoded (openh264, image-webp) and encoded as PNG/JPEG.
//! - [`transcode`]: AAC → Opus (symphonia, rubato, libopus) for VOD and RTMP/RTSP ingest.
//! - [`opus`]: the only module that calls libopus.
//! - [`video_transcode`]: H.264 with B-frames (which WebRTC viewers play as a slideshow) found
//!   and re-encoded to constrained baseline with openh264, sans-IO (frames in, frames out).
//! - [`aac`]: the only module that calls the AAC encoder (FDK AAC), for Opus → AAC
//!   ([`transcode::OpusToAac`]) when a stream is re-published over RTMP.
//!
//! ## Where to start
//! [`media`] and [`h264`], then whichever container the source or sink at hand speaks.
//! Unit tests sit at the foot of each module; the parsers have deterministic random-input tests
//! that must end in errors, never panics.

pub mod aac;
pub mod flv;
pub mod fmp4;
pub mod h264;
pub mod hls;
pub mod media;
pub mod mp4_reader;
pub mod opus;
pub mod picture;
pub mod transcode;
pub mod video_transcode;
