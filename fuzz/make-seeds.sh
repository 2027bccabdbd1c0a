#!/usr/bin/env bash
# Makes the seed corpus in fuzz/corpus/<target>/ (files named seed-*): small media files made by
# ffmpeg (MP4 progressive and fragmented, FLV, H.264 NAL units, AAC configs), then the generated
# seeds of fuzz/src/lib.rs (WCS messages, SDP offers, signed TURN requests, an RTMP publish made by
# rml_rtmp's client, URLs and allow-lists) written by the corpus replay test.
# Needs ffmpeg (with libx264, libvpx, libopus) and python3. Rerunning replaces the seeds only.
set -euo pipefail
cd "$(dirname "$0")"
C=corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$C"/{mp4_reader,flv_tags,h264,aac_config}

ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
v="-f lavfi -i testsrc=size=64x48:rate=10:duration=0.4"
a="-f lavfi -i sine=frequency=440:sample_rate=44100:duration=0.2"
x264="-c:v libx264 -preset ultrafast -pix_fmt yuv420p"

# MP4: progressive (moov first and last), fragmented, with B-frames, with Opus, rotated.
ff $v $a $x264 -g 4 -c:a aac -b:a 32k -movflags +faststart "$C/mp4_reader/seed-h264-aac-faststart.mp4"
ff $v $a $x264 -g 4 -c:a aac -b:a 32k "$C/mp4_reader/seed-h264-aac-moov-last.mp4"
ff $v $a $x264 -g 4 -c:a aac -b:a 32k -movflags frag_keyframe+empty_moov+default_base_moof \
  "$C/mp4_reader/seed-h264-aac-fragmented.mp4"
ff $v -c:v libx264 -preset medium -bf 2 -g 8 -pix_fmt yuv420p -an "$C/mp4_reader/seed-h264-bframes.mp4"
ff $v -f lavfi -i sine=frequency=440:sample_rate=48000:duration=0.2 $x264 -c:a libopus -b:a 16k \
  -strict experimental "$C/mp4_reader/seed-h264-opus.mp4"
ff $v -vf transpose=1 $x264 -an -metadata:s:v rotate=90 "$C/mp4_reader/seed-h264-rotated.mp4"

# FLV as RTMP carries it (H.264 + AAC), and with B-frames (composition times).
ff $v $a $x264 -g 4 -c:a aac -b:a 32k "$C/flv_tags/seed-h264-aac.flv"
ff $v -c:v libx264 -preset medium -bf 2 -g 8 -pix_fmt yuv420p -an "$C/flv_tags/seed-h264-bframes.flv"

# H.264: an Annex-B stream with B-frames, and each of its first NAL units alone (SPS, PPS, SEI,
# I, P and B slices); the avcC of an MP4. AAC: the AudioSpecificConfig of the FLV.
ff $v -c:v libx264 -preset medium -bf 2 -g 8 -pix_fmt yuv420p -an -f h264 "$tmp/b.h264"
cp "$tmp/b.h264" "$C/h264/seed-annexb-bframes.h264"
python3 - "$tmp/b.h264" "$C" <<'EOF'
import re, sys
data = open(sys.argv[1], 'rb').read()
C = sys.argv[2]
starts = [m.end() for m in re.finditer(b'\x00\x00\x01', data)]
names = {7: 'sps', 8: 'pps', 6: 'sei', 5: 'idr', 1: 'slice'}
seen = {}
for i, s in enumerate(starts):
    end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
    nal = data[s:end].rstrip(b'\x00')
    t = nal[0] & 0x1f
    if t not in names or seen.get(t, 0) >= (3 if t == 1 else 1):
        continue
    seen[t] = seen.get(t, 0) + 1
    open(f"{C}/h264/seed-nal-{names[t]}{seen[t]}", 'wb').write(nal[:400])
mp4 = open(f"{C}/mp4_reader/seed-h264-aac-faststart.mp4", 'rb').read()
i = mp4.find(b'avcC')
size = int.from_bytes(mp4[i - 4:i], 'big')
open(f"{C}/h264/seed-avcc-record", 'wb').write(mp4[i + 4:i - 4 + size])
flv = open(f"{C}/flv_tags/seed-h264-aac.flv", 'rb').read()
pos = int.from_bytes(flv[5:9], 'big') + 4
while pos + 11 <= len(flv):
    kind, size = flv[pos] & 0x1f, int.from_bytes(flv[pos + 1:pos + 4], 'big')
    body = flv[pos + 11:pos + 11 + size]
    if kind == 8 and len(body) > 2 and body[1] == 0:
        open(f"{C}/aac_config/seed-flv-asc", 'wb').write(body[2:])
        break
    pos += 11 + size + 4
EOF

# The generated seeds (fuzz/src/lib.rs `seeds()`), written by the corpus replay test.
# `--media-only` skips this step.
if [ "${1:-}" != "--media-only" ]; then
  (cd .. && cargo test -q -p sluice-actors --test fuzz_corpus -- --ignored write_generated_seeds)
fi
du -sh "$C"
