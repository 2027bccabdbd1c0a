//! Reading the few facts we need out of an SDP text: which codec each m-line settled on and in
//! which direction media flows. Pure code; str0m does the real negotiation.

use crate::media::Codec;

/// What an SDP (usually our answer) says about its media sections.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MediaSummary {
    /// The first (= chosen) video codec of an active video section.
    pub video: Option<Codec>,
    /// An active audio section with Opus.
    pub has_audio: bool,
    /// Some active section receives media (recvonly/sendrecv).
    pub receives: bool,
    /// Some active section sends media (sendonly/sendrecv).
    pub sends: bool,
    /// The SDP has a video section at all, whatever its codecs.
    pub video_offered: bool,
}

pub fn summarize(sdp: &str) -> MediaSummary {
    let mut out = MediaSummary::default();
    // Split into m-sections; each starts with "m=".
    let mut sections: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            sections.push(vec![line]);
        } else if let Some(s) = sections.last_mut() {
            s.push(line);
        }
    }
    for s in sections {
        let mut m = s[0][2..].split_whitespace();
        let kind = m.next().unwrap_or("");
        let port = m.next().unwrap_or("0");
        let _proto = m.next();
        let pts: Vec<&str> = m.collect();
        if kind == "video" {
            out.video_offered = true;
        }
        if port == "0" || pts.is_empty() {
            continue; // rejected section
        }
        let direction = s
            .iter()
            .find_map(|l| match *l {
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive" => Some(&l[2..]),
                _ => None,
            })
            .unwrap_or("sendrecv");
        if direction == "inactive" {
            continue;
        }
        let codec_of = |pt: &str| -> Option<String> {
            let prefix = format!("a=rtpmap:{pt} ");
            s.iter()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map(|r| r.split('/').next().unwrap_or("").to_ascii_uppercase())
        };
        let first = codec_of(pts[0]);
        match kind {
            "video" => {
                out.video = match first.as_deref() {
                    Some("H264") => Some(Codec::H264),
                    Some("VP8") => Some(Codec::Vp8),
                    _ => None,
                };
                if out.video.is_none() {
                    continue;
                }
            }
            "audio" => {
                out.has_audio = pts.iter().any(|pt| codec_of(pt).as_deref() == Some("OPUS"));
                if !out.has_audio {
                    continue;
                }
            }
            _ => continue,
        }
        out.receives |= matches!(direction, "recvonly" | "sendrecv");
        out.sends |= matches!(direction, "sendonly" | "sendrecv");
    }
    out
}

/// The addresses of an SDP's UDP candidates (`a=candidate:<foundation> <component> udp
/// <priority> <address> <port> typ ...`), each once, in order; lines that do not parse are
/// skipped.
pub fn udp_candidates(sdp: &str) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for line in sdp.lines().map(str::trim) {
        let Some(c) = line.strip_prefix("a=candidate:") else { continue };
        let f: Vec<&str> = c.split_whitespace().collect();
        if f.len() < 6 || !f[2].eq_ignore_ascii_case("udp") {
            continue;
        }
        let (Ok(ip), Ok(port)) = (f[4].parse::<std::net::IpAddr>(), f[5].parse::<u16>()) else { continue };
        let addr = std::net::SocketAddr::new(ip, port);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// Give every `msid` of an SDP the first one's stream id, so a browser puts audio and video
/// in ONE MediaStream (the official SDK plays `event.streams[0]` of each track; two streams
/// would leave the `<video>` without sound).
pub fn unify_msid(sdp: &str) -> String {
    let stream_of = |l: &str| -> Option<String> {
        let rest = l.strip_prefix("a=msid:").or_else(|| l.split_once(" msid:").map(|(_, r)| r))?;
        rest.split_whitespace().next().map(str::to_string)
    };
    let Some(first) = sdp.lines().find(|l| l.starts_with("a=msid:")).and_then(stream_of) else {
        return sdp.to_string();
    };
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        let is_msid = bare.starts_with("a=msid:") || (bare.starts_with("a=ssrc:") && bare.contains(" msid:"));
        match stream_of(bare).filter(|_| is_msid) {
            Some(stream) if stream != first && stream != "-" => {
                out.push_str(&line.replacen(&stream, &first, 1))
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\na=mid:1\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\na=rtpmap:103 rtx/90000\r\n";

    #[test]
    fn reads_chosen_codecs_and_direction() {
        let s = summarize(ANSWER);
        assert_eq!(s.video, Some(Codec::H264));
        assert!(s.has_audio && s.receives && !s.sends);
    }

    #[test]
    fn one_stream_id_for_all_tracks() {
        let sdp = "v=0\r\nm=audio 9 x 111\r\na=msid:AAA t1\r\na=ssrc:1 msid:AAA t1\r\nm=video 9 x 96\r\na=msid:BBB t2\r\na=ssrc:2 msid:BBB t2\r\n";
        let out = unify_msid(sdp);
        assert_eq!(out.matches("AAA").count(), 4, "{out}");
        assert!(!out.contains("BBB") && out.contains("AAA t2") && out.ends_with("\r\n"));
        assert_eq!(unify_msid("v=0\r\n"), "v=0\r\n");
    }

    #[test]
    fn rejected_sections_do_not_count() {
        let s = summarize(&ANSWER.replace("m=video 9", "m=video 0"));
        assert_eq!(s.video, None);
        assert!(s.video_offered);
        let s = summarize("garbage\nm=\nm=video");
        assert_eq!(s, MediaSummary { video_offered: true, ..Default::default() });
    }
}
