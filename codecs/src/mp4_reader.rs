//! Reading MP4 files for VOD: the track setup and a sample index, then sample bytes on demand.
//! Pure code over `Read + Seek` (no actix): the VOD source actor drives it.
//!
//! Handles progressive files (`moov` at the start or the end; sample tables `stts`, `ctts`,
//! `stsz`, `stsc`, `stco`/`co64`, `stss`) and fragmented files (`moof`/`traf`/`trun`, as our own
//! recordings are written), H.264 (`avc1`/`avc3`), VP8 (`vp08`), AAC (`mp4a`) and Opus tracks.
//! Samples that lie past the end of the file (a recording cut short by a crash, a truncated
//! download) are dropped at open, so playback ends cleanly where the data ends. Edit lists are
//! not applied: every track starts at its first sample. The video track's display rotation (the
//! `tkhd` matrix a phone writes for a portrait recording) is read as [`Mp4Index::rotation`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use mp4_atom::{Codec as StsdCodec, DecodeAtom, Header, Moof, Moov, ReadFrom, StszSamples, TrunSamples};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Mp4Error {
    /// Not an MP4 at all, or no usable `moov`.
    #[error("File has wrong format: {0}")]
    WrongFormat(String),
    /// A track codec WebRTC viewers cannot receive without re-encoding video.
    #[error("Unsupported codec: {0}")]
    UnsupportedCodec(String),
    #[error("Failed to read file: {0}")]
    Io(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSetup {
    /// H.264 with its parameter sets and NAL length size from `avcC`.
    H264 {
        sps: Vec<Vec<u8>>,
        pps: Vec<Vec<u8>>,
        length_size: u8,
    },
    Vp8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSetup {
    /// AAC with its AudioSpecificConfig.
    Aac {
        asc: Vec<u8>,
        sample_rate: u32,
        channels: u8,
    },
    Opus {
        channels: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
}

/// One sample: where it is and when it plays. Times are in microseconds from the start of the
/// file's timeline (the earliest first sample of any track).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub track: TrackKind,
    pub offset: u64,
    pub size: u32,
    /// Decode time (pacing order).
    pub dts_us: u64,
    /// Presentation time (RTP timestamps).
    pub pts_us: u64,
    pub sync: bool,
}

#[derive(Debug)]
pub struct Mp4Index {
    pub video: Option<VideoSetup>,
    pub audio: Option<AudioSetup>,
    pub width: u32,
    pub height: u32,
    /// Clockwise rotation (0, 90, 180 or 270 degrees) the video track's matrix asks for before
    /// display; `width` and `height` are the coded picture's, before rotation.
    pub rotation: u32,
    /// Every sample of the chosen video and audio tracks, in decode-time order.
    pub samples: Vec<Sample>,
    pub duration_us: u64,
}

struct Track {
    id: u32,
    kind: TrackKind,
    timescale: u32,
    /// The edit list's shift of this track's times, in its timescale: an initial empty edit
    /// (a delay) minus the media time the first edit starts at (B-frame delay, AAC priming).
    shift: i64,
    /// (offset, size, dts, cts offset, sync) in track timescale.
    raw: Vec<(u64, u32, u64, i64, bool)>,
}

/// Open a file and index it.
pub fn open(path: &Path) -> Result<(Mp4Index, File), Mp4Error> {
    let mut f = File::open(path).map_err(|e| Mp4Error::Io(e.to_string()))?;
    let idx = index(&mut f)?;
    Ok((idx, f))
}

/// Index an MP4 read from `r`.
pub fn index<R: Read + Seek>(r: &mut R) -> Result<Mp4Index, Mp4Error> {
    let file_len = r.seek(SeekFrom::End(0)).map_err(|e| Mp4Error::Io(e.to_string()))?;
    r.seek(SeekFrom::Start(0)).map_err(|e| Mp4Error::Io(e.to_string()))?;
    let mut moov: Option<Moov> = None;
    let mut moofs: Vec<(u64, Moof)> = Vec::new();
    let mut dropped = DroppedEntries::new();
    let mut pos = 0u64;
    let mut first = true;
    while pos.saturating_add(8) <= file_len {
        r.seek(SeekFrom::Start(pos)).map_err(|e| Mp4Error::Io(e.to_string()))?;
        let header = match Header::read_from(r) {
            Ok(h) => h,
            Err(_) if !first => break, // trailing garbage after valid boxes: stop there
            Err(e) => return Err(Mp4Error::WrongFormat(format!("not an MP4 box structure ({e})"))),
        };
        let body_start = r.stream_position().map_err(|e| Mp4Error::Io(e.to_string()))?;
        let body = header.size.map(|s| s as u64).unwrap_or(file_len.saturating_sub(body_start));
        let kind = header.kind.to_string();
        if first
            && !matches!(kind.as_str(), "ftyp" | "moov" | "free" | "skip" | "wide" | "mdat" | "styp" | "pdin")
        {
            return Err(Mp4Error::WrongFormat(format!("starts with {kind:?}, not an MP4 box")));
        }
        first = false;
        let end = body_start.saturating_add(body);
        match kind.as_str() {
            "moov" | "moof" if end <= file_len && body <= 256 << 20 => {
                let mut buf = vec![0u8; body as usize];
                r.read_exact(&mut buf).map_err(|e| Mp4Error::Io(e.to_string()))?;
                let parent = if kind == "moov" { b"moov" } else { b"moof" };
                let (mut traks, mut entries) = (0, DroppedEntries::new());
                blank_unread_boxes(parent, &mut buf, 0, &mut traks, &mut entries);
                if kind == "moov" {
                    dropped = entries;
                }
                let mut cur = std::io::Cursor::new(buf.as_slice());
                if kind == "moov" {
                    let m = Moov::decode_atom(&header, &mut cur)
                        .map_err(|e| Mp4Error::WrongFormat(format!("bad moov ({e})")))?;
                    moov = Some(m);
                } else {
                    match Moof::decode_atom(&header, &mut cur) {
                        Ok(m) => moofs.push((pos, m)),
                        Err(_) => break, // a damaged fragment ends the usable part
                    }
                }
            }
            "moov" | "moof" => break, // cut short: the part before it is what we have
            _ => {}
        }
        if end <= pos {
            break;
        }
        pos = end;
    }
    let moov = moov.ok_or_else(|| Mp4Error::WrongFormat("no moov box (truncated or not an MP4)".into()))?;
    build(moov, moofs, file_len, &dropped)
}

/// The boxes this reader reads, by parent, and where a parent's children start in its body
/// (after an `stsd`'s version and entry count, after a sample entry's fixed fields). Every other
/// box inside a `moov` or `moof` is renamed `free` before `mp4-atom` sees it, which it then skips
/// unread: `mp4-atom` decodes every box it knows wherever it is nested, and several of its
/// decoders trust 32-bit counts of the file (an `sgpd` in a sample entry, a sample table in
/// `dinf`, a PCM sample entry straight in the `moov` made 2 kB files ask for 4.8 to 10 GB; found
/// by fuzzing, `fuzz/regressions/mp4_reader/`). What stays is each box `mp4-atom` requires, the
/// tables and headers read below, and the sample entries named in unsupported-codec errors.
fn children(kind: &[u8; 4], body: &[u8]) -> Option<(usize, &'static [&'static [u8; 4]])> {
    const VISUAL_ENTRY: usize = 78;
    Some(match kind {
        b"moov" => (0, &[b"mvhd", b"trak", b"mvex"]),
        b"trak" => (0, &[b"tkhd", b"mdia", b"edts"]),
        b"edts" => (0, &[b"elst"]),
        b"mdia" => (0, &[b"mdhd", b"hdlr", b"minf"]),
        b"minf" => (0, &[b"dinf", b"stbl", b"vmhd", b"smhd", b"nmhd", b"sthd", b"hmhd"]),
        b"dinf" => (0, &[b"dref"]),
        b"stbl" => (0, &[b"stsd", b"stts", b"stsc", b"stsz", b"stz2", b"ctts", b"stss", b"stco", b"co64"]),
        b"stsd" => (8, &[b"avc1", b"avc3", b"vp08", b"mp4a", b"Opus", b"vp09", b"hev1", b"hvc1", b"av01"]),
        b"avc1" | b"avc3" => (VISUAL_ENTRY, &[b"avcC", b"btrt", b"pasp"]),
        b"vp08" | b"vp09" => (VISUAL_ENTRY, &[b"vpcC", b"btrt", b"pasp"]),
        b"hev1" | b"hvc1" => (VISUAL_ENTRY, &[b"hvcC", b"btrt", b"pasp"]),
        b"av01" => (VISUAL_ENTRY, &[b"av1C", b"btrt", b"pasp"]),
        // QuickTime sound sample descriptions 1 and 2 are longer (the version is at offset 8).
        b"mp4a" | b"Opus" => {
            let offset = match body.get(8..10) {
                Some([0, 1]) => 44,
                Some([0, 2]) => 64,
                _ => 28,
            };
            (offset, if kind == b"mp4a" { &[b"esds", b"btrt", b"wave"] } else { &[b"dOps", b"btrt"] })
        }
        b"mvex" => (0, &[b"trex"]),
        b"moof" => (0, &[b"mfhd", b"traf"]),
        b"traf" => (0, &[b"tfhd", b"tfdt", b"trun"]),
        _ => return None,
    })
}

/// Sample entries [`blank_unread_boxes`] renamed: (index of the `trak` in the `moov`, the entry's
/// original kind), so that an unsupported codec is still named in the error.
type DroppedEntries = Vec<(usize, [u8; 4])>;

/// Rename every box in `body` (the body of a box of kind `parent`) that [`children`] does not
/// list to `free`, and walk into the ones it lists. Stops at the first box whose size does not
/// fit (where `mp4-atom` stops too).
fn blank_unread_boxes(
    parent: &[u8; 4],
    body: &mut [u8],
    depth: u32,
    trak: &mut usize,
    dropped: &mut DroppedEntries,
) {
    let Some((offset, allowed)) = children(parent, body) else { return };
    let mut pos = offset;
    while let Some(h) = body.get(pos..pos + 8) {
        let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let kind = [h[4], h[5], h[6], h[7]];
        let rest = body.len() - pos;
        let (size, header) = match size32 {
            0 => (rest, 8),
            1 => match body.get(pos + 8..pos + 16) {
                Some(l) => {
                    let large = u64::from_be_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]);
                    (usize::try_from(large).unwrap_or(usize::MAX), 16)
                }
                None => return,
            },
            s => (s as usize, 8),
        };
        if size < header || size > rest {
            return;
        }
        if !allowed.contains(&&kind) {
            if parent == b"stsd" && kind != *b"free" {
                dropped.push((trak.saturating_sub(1), kind));
            }
            body[pos + 4..pos + 8].copy_from_slice(b"free");
        } else if depth < 12 {
            if kind == *b"trak" {
                *trak += 1;
            }
            blank_unread_boxes(&kind, &mut body[pos + header..pos + size], depth + 1, trak, dropped);
        }
        pos += size;
    }
}

/// Most samples one track may list: a sample takes at least a byte of the file, and no real
/// file comes near 4 million samples a track (18 hours of 60 fps video). Sample counts are
/// 32-bit fields of the file; without this bound a 2 kB file asked for 2 GB of index
/// (found by fuzzing, `fuzz/regressions/mp4_reader/`).
const MAX_SAMPLES_PER_TRACK: u64 = 4_000_000;

fn build(
    moov: Moov,
    moofs: Vec<(u64, Moof)>,
    file_len: u64,
    dropped: &DroppedEntries,
) -> Result<Mp4Index, Mp4Error> {
    let max_samples = file_len.min(MAX_SAMPLES_PER_TRACK) as usize;
    let mut video: Option<(VideoSetup, Track, u32, u32)> = None;
    let mut rotation = 0;
    let mut audio: Option<(AudioSetup, Track)> = None;
    let mut unsupported = Vec::new();
    for (trak_index, trak) in moov.trak.iter().enumerate() {
        let handler = trak.mdia.hdlr.handler.to_string();
        let timescale = trak.mdia.mdhd.timescale.max(1);
        let id = trak.tkhd.track_id;
        let stbl = &trak.mdia.minf.stbl;
        let Some(codec) = stbl.stsd.codecs.first() else { continue };
        let raw = sample_table(stbl, max_samples);
        let shift = edit_shift(trak, moov.mvhd.timescale, timescale);
        match (handler.as_str(), codec) {
            ("vide", StsdCodec::Avc1(mp4_atom::Avc1 { visual, avcc, .. }))
            | ("vide", StsdCodec::Avc3(mp4_atom::Avc3 { visual, avcc, .. }))
                if video.is_none() =>
            {
                let setup = VideoSetup::H264 {
                    sps: avcc.sequence_parameter_sets.clone(),
                    pps: avcc.picture_parameter_sets.clone(),
                    length_size: avcc.length_size,
                };
                let t = Track { id, kind: TrackKind::Video, timescale, shift, raw };
                video = Some((setup, t, visual.width as u32, visual.height as u32));
                rotation = matrix_rotation(&trak.tkhd.matrix);
            }
            ("vide", StsdCodec::Vp08(v)) if video.is_none() => {
                rotation = matrix_rotation(&trak.tkhd.matrix);
                let t = Track { id, kind: TrackKind::Video, timescale, shift, raw };
                video = Some((VideoSetup::Vp8, t, v.visual.width as u32, v.visual.height as u32));
            }
            ("soun", StsdCodec::Mp4a(m)) if audio.is_none() => {
                let Some(ds) = &m.esds.es_desc.dec_config.dec_specific else {
                    unsupported.push("AAC without AudioSpecificConfig".to_string());
                    continue;
                };
                let asc = if ds.raw.is_empty() {
                    // Rebuild the 2-byte AudioSpecificConfig from its fields.
                    let b0 = (ds.profile << 3) | (ds.freq_index >> 1);
                    let b1 = ((ds.freq_index & 1) << 7) | (ds.chan_conf << 3);
                    vec![b0, b1]
                } else {
                    ds.raw.clone()
                };
                // The AudioSpecificConfig is authoritative; sample entries often say 2 channels.
                let channels =
                    if (1..=2).contains(&ds.chan_conf) { ds.chan_conf } else { m.audio.channel_count as u8 };
                let setup =
                    AudioSetup::Aac { asc, sample_rate: m.audio.sample_rate.integer() as u32, channels };
                audio = Some((setup, Track { id, kind: TrackKind::Audio, timescale, shift, raw }));
            }
            ("soun", StsdCodec::Opus(o)) if audio.is_none() => {
                let setup = AudioSetup::Opus { channels: o.dops.output_channel_count.max(1) };
                audio = Some((setup, Track { id, kind: TrackKind::Audio, timescale, shift, raw }));
            }
            ("vide", StsdCodec::Hev1(_) | StsdCodec::Hvc1(_)) => {
                unsupported.push("HEVC (H.265) video".into())
            }
            ("vide", StsdCodec::Vp09(_)) => unsupported.push("VP9 video".into()),
            ("vide", StsdCodec::Av01(_)) => unsupported.push("AV1 video".into()),
            ("vide", other) => unsupported.push(format!("video {}", codec_name(other, trak_index, dropped))),
            ("soun", other) => unsupported.push(format!("audio {}", codec_name(other, trak_index, dropped))),
            _ => {}
        }
    }
    if video.is_none() && audio.is_none() {
        return Err(match unsupported.is_empty() {
            true => Mp4Error::WrongFormat("no video or audio track".into()),
            false => Mp4Error::UnsupportedCodec(format!(
                "{} (WebRTC viewers need H.264 or VP8 video, AAC or Opus audio)",
                unsupported.join(", ")
            )),
        });
    }
    if video.is_none() && unsupported.iter().any(|u| u.contains("video")) {
        return Err(Mp4Error::UnsupportedCodec(format!(
            "{} (WebRTC viewers need H.264 or VP8 video)",
            unsupported.join(", ")
        )));
    }
    let trex = moov.mvex.as_ref().map(|m| m.trex.clone()).unwrap_or_default();
    let mut tracks: Vec<&mut Track> = Vec::new();
    let (mut vt, mut at) = (video.as_ref().map(|v| v.1.id), audio.as_ref().map(|a| a.1.id));
    if let Some((_, t, _, _)) = video.as_mut() {
        tracks.push(t);
    }
    if let Some((_, t)) = audio.as_mut() {
        tracks.push(t);
    }
    for (moof_pos, moof) in &moofs {
        for traf in &moof.traf {
            let Some(track) = tracks.iter_mut().find(|t| t.id == traf.tfhd.track_id) else { continue };
            let tx = trex.iter().find(|t| t.track_id == track.id);
            let def_dur =
                traf.tfhd.default_sample_duration.or(tx.map(|t| t.default_sample_duration)).unwrap_or(0);
            let def_size = traf.tfhd.default_sample_size.or(tx.map(|t| t.default_sample_size)).unwrap_or(0);
            let def_flags =
                traf.tfhd.default_sample_flags.or(tx.map(|t| t.default_sample_flags)).unwrap_or(0);
            let base = traf.tfhd.base_data_offset.unwrap_or(*moof_pos);
            let mut dts = match &traf.tfdt {
                Some(t) => t.base_media_decode_time,
                None => track.raw.last().map(|s| s.2).unwrap_or(0),
            };
            let mut next_offset = base;
            for trun in &traf.trun {
                let mut offset = match trun.data_offset {
                    Some(d) => base.saturating_add_signed(i64::from(d)),
                    None => next_offset,
                };
                for i in 0..trun.samples.len() {
                    if track.raw.len() >= max_samples {
                        break;
                    }
                    let Some(e) = trun.samples.get(i) else { break };
                    let size = e.size.unwrap_or(def_size);
                    let flags = e.flags.unwrap_or(def_flags);
                    let sync = track.kind == TrackKind::Audio || flags & 0x0001_0000 == 0;
                    track.raw.push((offset, size, dts, e.cts.unwrap_or(0), sync));
                    dts = dts.saturating_add(e.duration.unwrap_or(def_dur) as u64);
                    offset = offset.saturating_add(size as u64);
                }
                next_offset = offset;
                let _ = matches!(trun.samples, TrunSamples::Inherited { .. });
            }
        }
    }
    // Samples past the end of the file are gone (crash, truncation).
    for t in tracks.iter_mut() {
        if let Some(cut) = t.raw.iter().position(|s| s.0.saturating_add(s.1 as u64) > file_len) {
            t.raw.truncate(cut);
        }
    }
    // Each track's times as its edit list places them (signed: a B-frame track's first decode
    // time comes before 0); the common timeline starts at the earliest decode time of any track.
    let to_us = |v: i64, ts: u32| (v as i128 * 1_000_000 / ts as i128) as i64;
    let start_us = tracks
        .iter()
        .filter_map(|t| t.raw.first().map(|s| to_us((s.2 as i64).saturating_add(t.shift), t.timescale)))
        .min()
        .unwrap_or(0);
    let mut samples = Vec::new();
    for t in &tracks {
        for &(offset, size, dts, cts, sync) in &t.raw {
            let dts = (dts as i64).saturating_add(t.shift);
            let dts_us = to_us(dts, t.timescale).saturating_sub(start_us).max(0) as u64;
            let pts_us = to_us(dts.saturating_add(cts), t.timescale).saturating_sub(start_us).max(0) as u64;
            samples.push(Sample { track: t.kind, offset, size, dts_us, pts_us, sync });
        }
    }
    samples.sort_by_key(|s| (s.dts_us, s.track == TrackKind::Audio));
    if samples.is_empty() {
        return Err(Mp4Error::WrongFormat("no media samples".into()));
    }
    let duration_us = samples.iter().map(|s| s.dts_us).max().unwrap_or(0);
    vt = vt.filter(|_| samples.iter().any(|s| s.track == TrackKind::Video));
    at = at.filter(|_| samples.iter().any(|s| s.track == TrackKind::Audio));
    let (video_setup, width, height) = match video {
        Some((v, _, w, h)) if vt.is_some() => (Some(v), w, h),
        _ => (None, 0, 0),
    };
    Ok(Mp4Index {
        video: video_setup,
        audio: audio.filter(|_| at.is_some()).map(|a| a.0),
        width,
        height,
        rotation: if vt.is_some() { rotation } else { 0 },
        samples,
        duration_us,
    })
}

/// A track's time shift from its edit list, in the track's timescale (see [`Track::shift`]):
/// leading empty edits delay it (their durations are in the movie's timescale), and the first
/// edit with media starts at its `media_time`. Only that much of an edit list is applied (what
/// encoders write: the B-frame delay, AAC priming, an A/V offset); later edits are ignored.
fn edit_shift(trak: &mp4_atom::Trak, movie_timescale: u32, timescale: u32) -> i64 {
    let Some(elst) = trak.edts.as_ref().and_then(|e| e.elst.as_ref()) else { return 0 };
    let mut delay: i64 = 0;
    for e in &elst.entries {
        match e.media_time {
            None => {
                let d = e.segment_duration as i128 * timescale as i128 / movie_timescale.max(1) as i128;
                delay = delay.saturating_add(d.clamp(0, i64::MAX as i128) as i64);
            }
            Some(m) => return delay.saturating_sub(m.min(i64::MAX as u64) as i64),
        }
    }
    delay
}

/// The clockwise display rotation of a track matrix (ISO 14496-12 §8.3.2; `x' = a x + c y`,
/// `y' = b x + d y` with y down): the angle of `(a, b)`, rounded to a quarter turn. 0 for a matrix
/// that is no rotation by a multiple of 90° (a mirror, a shear, zeros).
fn matrix_rotation(m: &mp4_atom::Matrix) -> u32 {
    match (m.a.signum(), m.b.signum(), m.c.signum(), m.d.signum()) {
        (1, 0, 0, 1) => 0,
        (0, 1, -1, 0) => 90,
        (-1, 0, 0, -1) => 180,
        (0, -1, 1, 0) => 270,
        _ => 0,
    }
}

/// A codec's name for errors; a sample entry renamed `free` before decoding by its original kind.
fn codec_name(c: &StsdCodec, trak_index: usize, dropped: &DroppedEntries) -> String {
    if let StsdCodec::Unknown(kind, _) = c {
        if let Some((_, original)) =
            dropped.iter().find(|(t, _)| *t == trak_index).filter(|_| *kind == mp4_atom::FourCC::new(b"free"))
        {
            return String::from_utf8_lossy(original).trim().to_lowercase();
        }
    }
    format!("{c:?}").split('(').next().unwrap_or("unknown").to_lowercase()
}

/// Expand the progressive sample tables of one track: (offset, size, dts, cts, sync), at most
/// `max_samples` of them.
fn sample_table(stbl: &mp4_atom::Stbl, max_samples: usize) -> Vec<(u64, u32, u64, i64, bool)> {
    let (count, size_at): (usize, Box<dyn Fn(usize) -> Option<u32>>) = match &stbl.stsz.samples {
        StszSamples::Identical { count, size } => {
            let size = *size;
            let count = (*count as usize).min(max_samples);
            (count, Box::new(move |i| (i < count).then_some(size)))
        }
        StszSamples::Different { sizes } => {
            let count = sizes.len().min(max_samples);
            (count, Box::new(move |i| sizes.get(i).copied().filter(|_| i < count)))
        }
    };
    if count == 0 {
        return Vec::new();
    }
    let chunks: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(s), _) => s.entries.iter().map(|&o| o as u64).collect(),
        (None, Some(c)) => c.entries.clone(),
        (None, None) => return Vec::new(),
    };
    let mut out = Vec::with_capacity(count);
    // Offsets from stsc runs over chunks.
    let mut sample = 0usize;
    let stsc = &stbl.stsc.entries;
    for (ci, chunk_off) in chunks.iter().enumerate() {
        if sample >= count {
            break;
        }
        let chunk_no = ci as u32 + 1;
        let per =
            stsc.iter().rev().find(|e| e.first_chunk <= chunk_no).map(|e| e.samples_per_chunk).unwrap_or(0);
        let mut off = *chunk_off;
        for _ in 0..per {
            let Some(size) = size_at(sample) else { break };
            out.push((off, size, 0u64, 0i64, true));
            off = off.saturating_add(size as u64);
            sample += 1;
        }
    }
    // Decode times.
    let mut dts = 0u64;
    let mut i = 0;
    'stts: for e in &stbl.stts.entries {
        for _ in 0..e.sample_count {
            let Some(s) = out.get_mut(i) else { break 'stts };
            s.2 = dts;
            dts = dts.saturating_add(e.sample_delta as u64);
            i += 1;
        }
    }
    if let Some(ctts) = &stbl.ctts {
        let mut i = 0;
        'ctts: for e in &ctts.entries {
            for _ in 0..e.sample_count {
                let Some(s) = out.get_mut(i) else { break 'ctts };
                s.3 = e.sample_offset;
                i += 1;
            }
        }
    }
    if let Some(stss) = &stbl.stss {
        for s in out.iter_mut() {
            s.4 = false;
        }
        for &n in &stss.entries {
            if let Some(s) = out.get_mut((n as usize).wrapping_sub(1)) {
                s.4 = true;
            }
        }
    }
    out
}

/// Read one sample's bytes.
pub fn read_sample<R: Read + Seek>(r: &mut R, s: &Sample) -> Result<Vec<u8>, Mp4Error> {
    r.seek(SeekFrom::Start(s.offset)).map_err(|e| Mp4Error::Io(e.to_string()))?;
    let mut buf = vec![0u8; s.size as usize];
    r.read_exact(&mut buf).map_err(|e| Mp4Error::Io(e.to_string()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files made by ffmpeg (installed by tests/run-all.sh) in every layout we must read.
    fn ffmpeg(name: &str, args: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-mp4r-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(name);
        let ok = std::process::Command::new("ffmpeg")
            .args([
                "-y",
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=30",
            ])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "2"])
            .args(args)
            .arg(&out)
            .status()
            .expect("ffmpeg")
            .success();
        assert!(ok, "ffmpeg {args:?}");
        out
    }

    const H264_AAC: &[&str] =
        &["-c:v", "libx264", "-bf", "0", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1"];

    #[test]
    fn reads_progressive_moov_first_and_last_and_fragmented() {
        for (name, extra) in [
            ("faststart.mp4", &["-movflags", "+faststart"][..]),
            ("moovlast.mp4", &[][..]),
            ("frag.mp4", &["-movflags", "+frag_keyframe+empty_moov+default_base_moof"][..]),
        ] {
            let args: Vec<&str> = H264_AAC.iter().chain(extra).copied().collect();
            let (idx, mut f) = open(&ffmpeg(name, &args)).unwrap();
            assert!(matches!(idx.video, Some(VideoSetup::H264 { .. })), "{name}");
            assert!(
                matches!(idx.audio, Some(AudioSetup::Aac { sample_rate: 44100, channels: 1, .. })),
                "{name}: {:?}",
                idx.audio
            );
            assert_eq!((idx.width, idx.height), (320, 240));
            let v: Vec<&Sample> = idx.samples.iter().filter(|s| s.track == TrackKind::Video).collect();
            assert_eq!(v.len(), 60, "{name}");
            assert!(v[0].sync && v[30].sync && !v[1].sync, "{name}");
            assert!((1_900_000..=2_100_000).contains(&idx.duration_us), "{name}: {}", idx.duration_us);
            let first = read_sample(&mut f, v[0]).unwrap();
            let Some(VideoSetup::H264 { sps, pps, length_size }) = &idx.video else { unreachable!() };
            let annexb = crate::h264::avcc_to_annexb(&first, *length_size, true, sps, pps);
            assert!(crate::media::is_keyframe(&annexb, true), "{name}");
        }
    }

    #[test]
    fn hevc_is_unsupported_and_truncation_is_handled() {
        let hevc = ffmpeg("hevc.mp4", &["-c:v", "libx265", "-x265-params", "log-level=none", "-an"]);
        match open(&hevc) {
            Err(Mp4Error::UnsupportedCodec(m)) => assert!(m.contains("HEVC"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A sample entry the reader does not decode at all is still named.
        let pcm = ffmpeg("pcm.mov", &["-vn", "-c:a", "pcm_s16le"]);
        match open(&pcm) {
            Err(Mp4Error::UnsupportedCodec(m)) => assert!(m.starts_with("audio sowt "), "{m}"),
            other => panic!("{other:?}"),
        }
        let args: Vec<&str> = H264_AAC.iter().chain(&["-movflags", "+faststart"]).copied().collect();
        let full = std::fs::read(ffmpeg("cut.mp4", &args)).unwrap();
        // Cut in the middle of mdat: the samples that remain still play.
        let (idx, _) = {
            let p = std::env::temp_dir().join(format!("sluice-cut-{}.mp4", std::process::id()));
            std::fs::write(&p, &full[..full.len() / 2]).unwrap();
            open(&p).unwrap()
        };
        assert!(idx.samples.len() > 10 && idx.duration_us < 1_900_000);
        // moov at the end, cut off: wrong format.
        let args: Vec<&str> = H264_AAC.to_vec();
        let full = std::fs::read(ffmpeg("cut2.mp4", &args)).unwrap();
        let mut c = std::io::Cursor::new(full[..full.len() - 200].to_vec());
        assert!(matches!(index(&mut c), Err(Mp4Error::WrongFormat(_))));
    }

    /// Phones write a portrait recording as landscape pictures and a rotation matrix; ffmpeg's
    /// `rotate` tag writes the same matrix.
    #[test]
    fn reads_the_display_rotation() {
        let plain = ffmpeg("norot.mp4", &["-c:v", "libx264", "-an"]);
        assert_eq!(open(&plain).unwrap().0.rotation, 0);
        for (tag, want) in [("90", 270), ("270", 90), ("180", 180)] {
            let dir = plain.parent().unwrap();
            let out = dir.join(format!("rot{tag}.mp4"));
            let ok = std::process::Command::new("ffmpeg")
                .args(["-y", "-hide_banner", "-loglevel", "error", "-i"])
                .arg(&plain)
                .args(["-c", "copy", "-metadata:s:v:0", &format!("rotate={tag}")])
                .arg(&out)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            let (idx, _) = open(&out).unwrap();
            // ffmpeg's tag is counterclockwise: its rotate=90 asks for 270° clockwise.
            assert_eq!(idx.rotation, want, "rotate={tag}");
            assert_eq!((idx.width, idx.height), (320, 240));
        }
    }

    #[test]
    fn garbage_is_wrong_format() {
        let mut text = std::io::Cursor::new(b"hello, this is a text file renamed to .mp4\n".repeat(10));
        assert!(matches!(index(&mut text), Err(Mp4Error::WrongFormat(_))));
        let mut empty = std::io::Cursor::new(Vec::new());
        assert!(matches!(index(&mut empty), Err(Mp4Error::WrongFormat(_))));
        // An ftyp and nothing else: no moov.
        let mut ftyp = std::io::Cursor::new(b"\0\0\0\x14ftypiso6\0\0\x02\0mp41".to_vec());
        assert!(matches!(index(&mut ftyp), Err(Mp4Error::WrongFormat(_))));
    }
}
