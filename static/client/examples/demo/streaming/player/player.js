/**
 * Player: play a published stream by name. Start connects to the WCS URL (reusing the session if
 * the URL is unchanged) and plays; Stop stops. Page parameters: ?streamName=NAME prefills the
 * name, ?autoplay=true starts at once, ?ws=PORT picks the WebSocket port (see utils.js).
 */
'use strict';

var SESSION_STATUS = Flashphoner.constants.SESSION_STATUS;
var STREAM_STATUS = Flashphoner.constants.STREAM_STATUS;
var STREAM_EVENT = Flashphoner.constants.STREAM_EVENT;
var remoteVideo;
var playBtn;

function init_page() {
    try {
        Flashphoner.init();
    } catch (e) {
        document.getElementById('notifyFlash').textContent =
            "Your browser doesn't support WebRTC technology needed for this example";
        return;
    }
    remoteVideo = document.getElementById('remoteVideo');
    playBtn = document.getElementById('playBtn');
    document.getElementById('url').value = setURL();
    document.getElementById('streamName').value = getUrlParam('streamName') || '';
    onStopped();
    if (getUrlParam('autoplay') === 'true') {
        playBtn.click();
    }
}

function setFormEnabled(enabled) {
    document.getElementById('url').disabled = !enabled;
    document.getElementById('streamName').disabled = !enabled;
}

function onStarted(stream) {
    playBtn.textContent = 'Stop';
    playBtn.onclick = function () {
        playBtn.disabled = true;
        stream.stop();
    };
    playBtn.disabled = false;
}

function onStopped() {
    playBtn.textContent = 'Start';
    playBtn.onclick = playBtnClick;
    playBtn.disabled = false;
    setFormEnabled(true);
}

function playBtnClick() {
    if (!validateForm()) {
        return;
    }
    playBtn.disabled = true;
    setFormEnabled(false);
    start();
}

function start() {
    var url = field('url');
    var sessions = Flashphoner.getSessions();
    if (sessions.length > 0) {
        var session = sessions[0];
        if (session.getServerUrl() === url) {
            playStream(session);
            return;
        }
        // Another server: forget the old session quietly.
        session.on(SESSION_STATUS.DISCONNECTED, function () {});
        session.on(SESSION_STATUS.FAILED, function () {});
        session.disconnect();
    }
    Flashphoner.createSession({urlServer: url}).on(SESSION_STATUS.ESTABLISHED, function (session) {
        setStatus(session.status());
        playStream(session);
    }).on(SESSION_STATUS.DISCONNECTED, function () {
        setStatus(SESSION_STATUS.DISCONNECTED);
        onStopped();
    }).on(SESSION_STATUS.FAILED, function () {
        setStatus(SESSION_STATUS.FAILED);
        onStopped();
    });
}

function playStream(session) {
    session.createStream({
        name: field('streamName'),
        display: remoteVideo
    }).on(STREAM_STATUS.PENDING, function (stream) {
        setStatus(stream.status());
    }).on(STREAM_STATUS.PLAYING, function (stream) {
        setStatus(stream.status(), stream);
        onStarted(stream);
    }).on(STREAM_STATUS.STOPPED, function (stream) {
        setStatus(STREAM_STATUS.STOPPED, stream);
        onStopped();
    }).on(STREAM_STATUS.FAILED, function (stream) {
        setStatus(STREAM_STATUS.FAILED, stream);
        onStopped();
    }).on(STREAM_EVENT, function (event) {
        console.log('Stream event ' + event.type, event.payload);
    }).play();
}

/** Show a session or stream status; the stream's info text when it ended. */
function setStatus(status, stream) {
    var kind = status === STREAM_STATUS.PLAYING ? 'ok'
        : status === STREAM_STATUS.FAILED ? 'error' : 'muted';
    showStatus('status', status, kind);
    if (status === STREAM_STATUS.PLAYING || status === SESSION_STATUS.ESTABLISHED) {
        showStatus('info', '');
    } else if (stream) {
        showStatus('info', stream.getInfo() || '', 'muted');
    }
}

/** Both fields are required; empty ones are highlighted. */
function validateForm() {
    var valid = true;
    ['url', 'streamName'].forEach(function (id) {
        var input = document.getElementById(id);
        var empty = !input.value.trim();
        input.classList.toggle('invalid', empty);
        if (empty) {
            valid = false;
        }
    });
    return valid;
}
