/**
 * HLS Player: plays a stream over HLS / LL-HLS with hls.js (vendored in dependencies/js) beside
 * the same stream over WebRTC (our SDK), and shows how far each is behind the server.
 * Page parameters: ?streamName=NAME, ?hls=PORT (default 8082), ?ll=false (plain HLS),
 * ?token=JWT, ?autoplay=true, ?ws=PORT (see utils.js).
 *
 * `hlsStats()` returns what the page measured (frames, delay samples, audio energy): the
 * browser test reads it.
 */
'use strict';

var SESSION_STATUS = Flashphoner.constants.SESSION_STATUS;
var STREAM_STATUS = Flashphoner.constants.STREAM_STATUS;
var hls = null;
var rtcStream = null;
var audio = null;
var timer = null;
var measured = {delays: [], rtcDelays: [], energy: 0, errors: [], levelCodecs: null};

function hlsPort() {
    var p = getUrlParam('hls');
    return p && /^\d+$/.test(p) ? +p : getPortsConfig().hls.http;
}

function hlsUrl() {
    var host = window.location.hostname || '127.0.0.1';
    if (host.indexOf(':') >= 0) {
        host = '[' + host + ']';
    }
    var name = encodeURIComponent(field('streamName'));
    var token = field('token');
    return 'http://' + host + ':' + hlsPort() + '/' + name + '/' + name + '.m3u8' +
        (token ? '?token=' + encodeURIComponent(token) : '');
}

function init_page() {
    document.getElementById('streamName').value = getUrlParam('streamName') || '';
    document.getElementById('token').value = getUrlParam('token') || '';
    document.getElementById('lowLatency').checked = getUrlParam('ll') !== 'false';
    var update = function () { document.getElementById('hlsUrl').value = hlsUrl(); };
    document.getElementById('streamName').oninput = update;
    document.getElementById('token').oninput = update;
    update();
    if (typeof Hls === 'undefined' || !Hls.isSupported()) {
        document.getElementById('notifyFlash').textContent =
            'This browser has no Media Source Extensions: hls.js cannot play here';
    }
    var btn = document.getElementById('playBtn');
    btn.onclick = start;
    if (getUrlParam('autoplay') === 'true') {
        btn.click();
    }
}

function start() {
    if (!field('streamName')) {
        showStatus('status', 'Enter a stream name', 'error');
        return;
    }
    var btn = document.getElementById('playBtn');
    btn.textContent = 'Stop';
    btn.onclick = stop;
    measured = {delays: [], rtcDelays: [], energy: 0, errors: [], levelCodecs: null};
    startHls();
    startWebrtc();
    timer = setInterval(sample, 250);
}

function stop() {
    clearInterval(timer);
    if (hls) {
        hls.destroy();
        hls = null;
    }
    if (rtcStream) {
        rtcStream.stop();
        rtcStream = null;
    }
    var btn = document.getElementById('playBtn');
    btn.textContent = 'Start';
    btn.onclick = start;
    showStatus('status', 'STOPPED', 'muted');
}

function startHls() {
    var video = document.getElementById('hlsVideo');
    var ll = document.getElementById('lowLatency').checked;
    document.getElementById('mode').textContent = ll ? 'LL-HLS' : 'HLS';
    var url = hlsUrl();
    document.getElementById('hlsUrl').value = url;
    // Sound: started by the click (a user gesture), measured through an analyser.
    video.muted = false;
    try {
        if (!audio) {
            var ctx = new AudioContext();
            // Every sample's energy summed (as WebRTC's totalAudioEnergy): a pass-through node.
            var meter = ctx.createScriptProcessor(4096, 2, 2);
            meter.onaudioprocess = function (ev) {
                for (var c = 0; c < ev.inputBuffer.numberOfChannels; c++) {
                    var d = ev.inputBuffer.getChannelData(c);
                    ev.outputBuffer.getChannelData(c).set(d);
                    var e = 0;
                    for (var i = 0; i < d.length; i++) e += d[i] * d[i];
                    measured.energy += e / ctx.sampleRate;
                }
            };
            ctx.createMediaElementSource(video).connect(meter);
            meter.connect(ctx.destination);
            audio = {ctx: ctx};
        }
        audio.ctx.resume();
    } catch (e) {
        measured.errors.push('audio: ' + e.message);
    }
    if (video.canPlayType('application/vnd.apple.mpegurl') && (typeof Hls === 'undefined' || !Hls.isSupported())) {
        video.src = url; // Safari's own HLS (needs AAC: see the README)
        video.play();
        return;
    }
    hls = new Hls({lowLatencyMode: ll, backBufferLength: 30});
    hls.on(Hls.Events.MANIFEST_PARSED, function (ev, data) {
        measured.levelCodecs = data.levels.map(function (l) { return l.codecSet || l.attrs.CODECS; });
        showStatus('status', 'PLAYING', 'ok');
        video.play().catch(function (e) { measured.errors.push('play: ' + e.message); });
    });
    hls.on(Hls.Events.ERROR, function (ev, data) {
        measured.errors.push(data.type + '/' + data.details + (data.fatal ? ' (fatal)' : ''));
        if (data.fatal) {
            showStatus('status', 'FAILED', 'error');
            document.getElementById('info').textContent = data.details;
        }
    });
    hls.loadSource(url);
    hls.attachMedia(video);
}

function startWebrtc() {
    var display = document.getElementById('rtcVideo');
    var play = function (session) {
        rtcStream = session.createStream({name: field('streamName'), display: display})
            .on(STREAM_STATUS.PLAYING, function () { watchRtcFrames(display); })
            .on(STREAM_STATUS.FAILED, function (s) {
                document.getElementById('rtcDelay').textContent = 'FAILED ' + failureText(s);
            });
        rtcStream.play();
    };
    var sessions = Flashphoner.getSessions();
    if (sessions.length > 0 && sessions[0].status() === SESSION_STATUS.ESTABLISHED) {
        play(sessions[0]);
        return;
    }
    try {
        Flashphoner.init();
    } catch (e) {
        document.getElementById('rtcDelay').textContent = 'no WebRTC in this browser';
        return;
    }
    Flashphoner.createSession({urlServer: setURL()}).on(SESSION_STATUS.ESTABLISHED, play)
        .on(SESSION_STATUS.FAILED, function () {
            document.getElementById('rtcDelay').textContent = 'signalling failed';
        });
}

/** WebRTC: the time from a frame's arrival at the browser to its display (per frame). */
function watchRtcFrames(display) {
    var v = display.querySelector('video');
    if (!v || !v.requestVideoFrameCallback) {
        return;
    }
    var onFrame = function (now, meta) {
        if (meta.receiveTime) {
            measured.rtcDelays.push((meta.expectedDisplayTime - meta.receiveTime) / 1000);
            if (measured.rtcDelays.length > 2000) measured.rtcDelays.shift();
        }
        if (rtcStream) v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
}

function median(a) {
    if (!a.length) return null;
    var s = a.slice().sort(function (x, y) { return x - y; });
    return s[Math.floor(s.length / 2)];
}

function sample() {
    var video = document.getElementById('hlsVideo');
    if (hls && hls.playingDate && !video.paused) {
        var d = (Date.now() - hls.playingDate.getTime()) / 1000;
        measured.delays.push(d);
        if (measured.delays.length > 2000) measured.delays.shift();
        document.getElementById('hlsDelay').textContent = d.toFixed(2) + ' s behind the server (median ' +
            median(measured.delays).toFixed(2) + ' s)';
    }
    var r = median(measured.rtcDelays.slice(-100));
    if (r !== null) {
        document.getElementById('rtcDelay').textContent = (r * 1000).toFixed(0) + ' ms from arrival to display';
    }
}

/** What the page measured, for tests. */
function hlsStats() {
    var video = document.getElementById('hlsVideo');
    var q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
    return {
        frames: q.totalVideoFrames || 0,
        dropped: q.droppedVideoFrames || 0,
        width: video.videoWidth,
        height: video.videoHeight,
        currentTime: video.currentTime,
        paused: video.paused,
        delays: measured.delays.slice(),
        rtcDelays: measured.rtcDelays.slice(-200),
        latency: hls ? hls.latency : null,
        energy: measured.energy,
        audioBytes: video.webkitAudioDecodedByteCount || 0,
        errors: measured.errors.slice(),
        codecs: measured.levelCodecs,
        playing: hls && hls.levels[hls.currentLevel] ? hls.levels[hls.currentLevel].attrs.CODECS : null,
        lowLatency: hls ? hls.lowLatencyMode : null
    };
}
