/**
 * WHIP Publisher: publish the camera with one HTTP POST of the SDP offer to
 * /whip/<name> on this server (RFC 9725); Stop DELETEs the session resource. No SDK: fetch and
 * RTCPeerConnection only (whip-whep.js). Page parameters: ?streamName=NAME, ?autostart=true.
 */
'use strict';

var publishBtn;
var session = null;

function init_page() {
    if (!window.RTCPeerConnection || !checkSecureContext()) {
        document.getElementById('notifyFlash').textContent = document.getElementById('notifyFlash').textContent ||
            "Your browser doesn't support WebRTC technology needed for this example";
        return;
    }
    publishBtn = document.getElementById('publishBtn');
    var name = getUrlParam('streamName') || 'whip-' + createUUID(6);
    document.getElementById('endpoint').value = whipEndpoint('whip', name);
    onStopped();
    if (getUrlParam('autostart') === 'true') {
        publishBtn.click();
    }
}

function onStopped() {
    session = null;
    publishBtn.textContent = 'Start';
    publishBtn.disabled = false;
    publishBtn.onclick = start;
    document.getElementById('endpoint').disabled = false;
    document.getElementById('token').disabled = false;
}

function start() {
    var endpoint = document.getElementById('endpoint').value.trim();
    if (!endpoint) {
        document.getElementById('endpoint').classList.add('invalid');
        return;
    }
    document.getElementById('endpoint').classList.remove('invalid');
    publishBtn.disabled = true;
    document.getElementById('endpoint').disabled = true;
    document.getElementById('token').disabled = true;
    showStatus('status', 'PENDING');
    showStatus('info', '');
    navigator.mediaDevices.getUserMedia({video: true, audio: true}).then(function (media) {
        document.getElementById('localVideo').srcObject = media;
        var pc = new RTCPeerConnection();
        media.getTracks().forEach(function (track) {
            pc.addTransceiver(track, {direction: 'sendonly'});
        });
        return whipWhepStart(endpoint, pc, document.getElementById('token').value.trim(), onState);
    }).then(function (s) {
        session = s;
        var name = decodeURIComponent(endpoint.split('/').pop());
        document.getElementById('playerLink').href = '../player/player.html?streamName=' + encodeURIComponent(name);
        document.getElementById('whepLink').href = '../whep-player/whep-player.html?streamName=' + encodeURIComponent(name);
        publishBtn.textContent = 'Stop';
        publishBtn.disabled = false;
        publishBtn.onclick = stop;
    }).catch(function (e) {
        stopCamera();
        showStatus('status', 'FAILED', 'error');
        showStatus('info', e.message);
        onStopped();
    });
}

function onState(state) {
    if (state === 'connected') {
        showStatus('status', 'PUBLISHING', 'ok');
    } else if (state === 'failed' || state === 'disconnected') {
        showStatus('status', state.toUpperCase(), 'error');
    }
}

function stopCamera() {
    var v = document.getElementById('localVideo');
    if (v.srcObject) {
        v.srcObject.getTracks().forEach(function (t) { t.stop(); });
        v.srcObject = null;
    }
}

function stop() {
    publishBtn.disabled = true;
    var s = session;
    (s ? s.stop() : Promise.resolve()).then(function () {
        stopCamera();
        showStatus('status', 'UNPUBLISHED');
        onStopped();
    });
}
