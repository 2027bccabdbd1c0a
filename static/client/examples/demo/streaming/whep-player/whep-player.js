/**
 * WHEP Player: play a stream by name with one HTTP POST of a receive-only SDP offer to
 * /whep/<name> on this server; Stop DELETEs the session resource. No SDK (whip-whep.js).
 * Page parameters: ?streamName=NAME prefills the name, ?autoplay=true starts at once.
 */
'use strict';

var playBtn;
var session = null;

function init_page() {
    if (!window.RTCPeerConnection) {
        document.getElementById('notifyFlash').textContent =
            "Your browser doesn't support WebRTC technology needed for this example";
        return;
    }
    playBtn = document.getElementById('playBtn');
    document.getElementById('streamName').value = getUrlParam('streamName') || '';
    onStopped();
    if (getUrlParam('autoplay') === 'true') {
        playBtn.click();
    }
}

function onStopped() {
    session = null;
    playBtn.textContent = 'Start';
    playBtn.disabled = false;
    playBtn.onclick = start;
    document.getElementById('streamName').disabled = false;
    document.getElementById('token').disabled = false;
}

function start() {
    var input = document.getElementById('streamName');
    var name = input.value.trim();
    if (!name) {
        input.classList.add('invalid');
        return;
    }
    input.classList.remove('invalid');
    playBtn.disabled = true;
    input.disabled = true;
    document.getElementById('token').disabled = true;
    var endpoint = whipEndpoint('whep', name);
    document.getElementById('endpoint').textContent = endpoint;
    showStatus('status', 'PENDING');
    showStatus('info', '');
    var pc = new RTCPeerConnection();
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.addTransceiver('audio', {direction: 'recvonly'});
    var media = new MediaStream();
    pc.ontrack = function (e) {
        media.addTrack(e.track);
        document.getElementById('remoteVideo').srcObject = media;
    };
    whipWhepStart(endpoint, pc, document.getElementById('token').value.trim(), onState).then(function (s) {
        session = s;
        playBtn.textContent = 'Stop';
        playBtn.disabled = false;
        playBtn.onclick = stop;
    }).catch(function (e) {
        showStatus('status', 'FAILED', 'error');
        showStatus('info', e.message);
        onStopped();
    });
}

function onState(state) {
    if (state === 'connected') {
        showStatus('status', 'PLAYING', 'ok');
    } else if (state === 'failed' || state === 'disconnected') {
        // The stream ended (its publisher stopped) or the network went away.
        showStatus('status', 'STOPPED', 'error');
    }
}

function stop() {
    playBtn.disabled = true;
    var s = session;
    (s ? s.stop() : Promise.resolve()).then(function () {
        document.getElementById('remoteVideo').srcObject = null;
        showStatus('status', 'STOPPED');
        onStopped();
    });
}
