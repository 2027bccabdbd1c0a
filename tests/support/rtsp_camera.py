#!/usr/bin/python3
"""A test IP camera: GStreamer's RTSP server on 127.0.0.1 serving a test pattern as H.264 (x264,
keyframe every second) plus a 440 Hz tone as AAC at rtsp://127.0.0.1:<port>/cam (/video: H.264
only; /gop4: H.264 with a keyframe every 4 s, as many IP cameras are set). One shared pipeline per mount, so "pulled once" is visible: every RTSP client that connects
is reported on stdout as a line "client <n>".

Usage: rtsp_camera.py [port]   (0 or none: any free port; the first stdout line is "ready <port>")
Needs Debian's python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad,ugly}
and gstreamer1.0-libav (avenc_aac)."""
import sys
import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402



def video(gop_frames):
    return (
        "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=360,framerate=30/1 ! "
        f"videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop_frames} bitrate=800 ! "
        "video/x-h264,profile=constrained-baseline ! h264parse config-interval=-1 ! "
        "rtph264pay name=pay0 pt=96 config-interval=-1"
    )


VIDEO = video(30)
AUDIO = (
    "audiotestsrc is-live=true freq=440 volume=0.3 ! audio/x-raw,rate=48000,channels=2 ! "
    "audioconvert ! avenc_aac bitrate=96000 ! aacparse ! rtpmp4gpay name=pay1 pt=97"
)


def main():
    Gst.init(None)
    port = sys.argv[1] if len(sys.argv) > 1 else "0"
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    mounts = server.get_mount_points()
    mounts_launch = (("/cam", f"( {VIDEO} {AUDIO} )"), ("/video", f"( {VIDEO} )"), ("/gop4", f"( {video(120)} )"))
    for path, launch in mounts_launch:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)
        mounts.add_factory(path, factory)
    clients = {"n": 0}

    def on_client(_server, _client):
        clients["n"] += 1
        try:
            print(f"client {clients['n']}", flush=True)
        except BrokenPipeError:
            pass  # nobody reads the count: serve on

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        print("cannot attach the RTSP server", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"ready {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
