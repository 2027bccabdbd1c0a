#!/usr/bin/python3
"""A WHIP encoder made of GStreamer's webrtcbin (tests/whip.rs): videotestsrc -> x264enc (H.264
constrained baseline) and audiotestsrc -> opusenc, sent-only, offered to a WHIP endpoint with one
HTTP POST (application/sdp). Prints `resource <Location>` once the answer is applied, then
`connected` when ICE and DTLS are up, and runs for SECS seconds.

Usage: whip_gst.py URL [SECS] [TOKEN]. Needs Debian's python3-gi, gir1.2-gst-plugins-bad-1.0,
gir1.2-nice-0.1 and gstreamer1.0-{plugins-base,good,bad,ugly,nice}. libnice never gathers on
loopback by itself, so 127.0.0.1 is added as a local address; the server (ICE-lite) learns the
address from the checks, so no candidate is sent to it."""
import os, sys, time, urllib.request, urllib.error, gi
gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); gi.require_version('GstSdp', '1.0')
gi.require_version('Nice', '0.1')
from gi.repository import Gst, GstWebRTC, GstSdp, GLib, Nice

URL = sys.argv[1]
SECS = float(sys.argv[2]) if len(sys.argv) > 2 else 10
TOKEN = sys.argv[3] if len(sys.argv) > 3 else None

def out(line):
    sys.stdout.write(line + '\n'); sys.stdout.flush()

Gst.init(None)
pipe = Gst.parse_launch(
    'webrtcbin name=w bundle-policy=max-bundle '
    'videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! videoconvert ! '
    'x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=800 ! video/x-h264,profile=constrained-baseline ! '
    'h264parse config-interval=-1 ! rtph264pay pt=102 aggregate-mode=zero-latency config-interval=-1 ! '
    'application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000 ! w. '
    'audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! rtpopuspay pt=111 ! '
    'application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! w.')
w = pipe.get_by_name('w')
KEEP = []  # PyGObject mis-refcounts 'ice-agent': keep references, leave with os._exit()
ice = w.get_property('ice-agent'); agent = ice.get_property('agent')
addr = Nice.Address.new(); addr.set_from_string('127.0.0.1'); agent.add_local_address(addr)
KEEP += [ice, agent, addr]
loop = GLib.MainLoop()

def fail(why):
    out('error ' + why)
    loop.quit()

def on_offer(promise, _):
    reply = promise.get_reply(); offer = reply.get_value('offer')  # keep 'reply' alive while 'offer' is used
    w.emit('set-local-description', offer, None)
    sdp = offer.sdp.as_text()
    headers = {'Content-Type': 'application/sdp'}
    if TOKEN:
        headers['Authorization'] = 'Bearer ' + TOKEN
    try:
        resp = urllib.request.urlopen(urllib.request.Request(URL, data=sdp.encode(), headers=headers, method='POST'), timeout=10)
    except urllib.error.HTTPError as e:
        return fail('%d %s' % (e.code, e.read().decode(errors='replace')))
    except Exception as e:  # connection refused, timeout
        return fail(str(e))
    answer_text = resp.read().decode()
    res, msg = GstSdp.SDPMessage.new_from_text(answer_text)
    answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
    w.emit('set-remote-description', answer, None)
    KEEP.append(answer)
    out('resource ' + resp.headers.get('Location', ''))

def make_offer():
    # Once caps reach both sink pads (on-negotiation-needed fires too early: the offer is NULL).
    pads = [w.get_static_pad('sink_%d' % i) for i in (0, 1)]
    if not all(p and p.get_current_caps() for p in pads):
        return True
    for i in (0, 1):
        t = w.emit('get-transceiver', i)
        if t:
            t.set_property('direction', GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
    w.emit('create-offer', None, Gst.Promise.new_with_change_func(on_offer, None))
    return False

def on_state(*_):
    if w.get_property('connection-state') == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
        out('connected')
w.connect('notify::connection-state', on_state)
GLib.timeout_add(50, make_offer)
GLib.timeout_add(int(SECS * 1000), loop.quit)
pipe.set_state(Gst.State.PLAYING)
loop.run()
pipe.set_state(Gst.State.NULL)
os._exit(0)
