/**
 * Streamer: publish the camera under the name in the URL path (ws://host:8080/<name>) and play
 * it back from the server as a preview. Start publishes; once PUBLISHING, the preview plays the
 * same name. Stop stops the preview, whose STOPPED stops the publisher (UNPUBLISHED). If the
 * preview fails while publishing, the publisher is stopped too.
 */
'use strict';

var SESSION_STATUS = Flashphoner.constants.SESSION_STATUS;
var STREAM_STATUS = Flashphoner.constants.STREAM_STATUS;
var localVideo;
var remoteVideo;
var publishBtn;

function init_page() {
    try {
        Flashphoner.init();
    } catch (e) {
        document.getElementById('notifyFlash').textContent =
            "Your browser doesn't support WebRTC technology needed for this example";
        return;
    }
    localVideo = document.getElementById('localVideo');
    remoteVideo = document.getElementById('remoteVideo');
    publishBtn = document.getElementById('publishBtn');
    document.getElementById('url').value = setURL() + '/' + createUUID(8);
    checkSecureContext();
    onStopped();
}

/** Both streams are up: the button stops the preview (which then stops the publisher). */
function onStarted(publishStream, previewStream) {
    publishBtn.textContent = 'Stop';
    publishBtn.onclick = function () {
        publishBtn.disabled = true;
        previewStream.stop();
    };
    publishBtn.disabled = false;
}

function onStopped() {
    publishBtn.textContent = 'Start';
    publishBtn.onclick = function () {
        publishBtn.disabled = true;
        start();
    };
    publishBtn.disabled = false;
}

function start() {
    var sessions = Flashphoner.getSessions();
    if (sessions.length > 0) {
        startStreaming(sessions[0]);
        return;
    }
    var urlInput = document.getElementById('url');
    urlInput.disabled = true;
    Flashphoner.createSession({urlServer: urlInput.value}).on(SESSION_STATUS.ESTABLISHED, function (session) {
        startStreaming(session);
    }).on(SESSION_STATUS.DISCONNECTED, function () {
        setStatus(SESSION_STATUS.DISCONNECTED);
        urlInput.disabled = false;
        onStopped();
    }).on(SESSION_STATUS.FAILED, function () {
        setStatus(SESSION_STATUS.FAILED);
        urlInput.disabled = false;
        onStopped();
    });
}

function startStreaming(session) {
    var streamName = field('url').split('/')[3];
    if (!streamName) {
        setStatus(STREAM_STATUS.FAILED);
        showStatus('info', 'The URL must end with /<stream name>', 'muted');
        onStopped();
        return;
    }
    session.createStream({
        name: streamName,
        display: localVideo,
        cacheLocalResources: true,
        receiveVideo: false,
        receiveAudio: false
    }).on(STREAM_STATUS.PUBLISHING, function (publishStream) {
        setStatus(STREAM_STATUS.PUBLISHING);
        playPreview(session, streamName, publishStream);
    }).on(STREAM_STATUS.UNPUBLISHED, function (stream) {
        setStatus(STREAM_STATUS.UNPUBLISHED, stream);
        onStopped();
    }).on(STREAM_STATUS.FAILED, function (stream) {
        setStatus(STREAM_STATUS.FAILED, stream);
        onStopped();
    }).publish();
}

function playPreview(session, streamName, publishStream) {
    session.createStream({
        name: streamName,
        display: remoteVideo
    }).on(STREAM_STATUS.PENDING, function (previewStream) {
        showStatus('previewStatus', previewStream.status(), 'muted');
    }).on(STREAM_STATUS.PLAYING, function (previewStream) {
        showStatus('previewStatus', STREAM_STATUS.PLAYING, 'ok');
        onStarted(publishStream, previewStream);
    }).on(STREAM_STATUS.STOPPED, function () {
        showStatus('previewStatus', STREAM_STATUS.STOPPED, 'muted');
        publishStream.stop();
    }).on(STREAM_STATUS.FAILED, function (previewStream) {
        showStatus('previewStatus', STREAM_STATUS.FAILED, 'error');
        if (publishStream.status() === STREAM_STATUS.PUBLISHING) {
            setStatus(STREAM_STATUS.FAILED, previewStream);
            publishStream.stop();
        }
    }).play();
}

/** Show a session or publisher status, and the stream's info text when it ended. */
function setStatus(status, stream) {
    var kind = status === STREAM_STATUS.PUBLISHING ? 'ok'
        : status === STREAM_STATUS.FAILED ? 'error' : 'muted';
    showStatus('status', status, kind);
    if (status === STREAM_STATUS.PUBLISHING) {
        showStatus('info', '');
    } else if (stream) {
        showStatus('info', failureText(stream), status === STREAM_STATUS.FAILED ? 'error' : 'muted');
    }
}
