/**
 * Stream Snapshot: publish the camera under the name in the URL path, then "Take a snapshot"
 * asks the server for a picture of the published stream. As in the WCS seed, the snapshot is
 * taken through a fresh stream object of the same name (never played): the server decodes the
 * stream and answers with a STREAM_EVENT snapshotCompleted (payload.snapshot = base64 PNG) or
 * snapshotFailed (payload.info). The picture is shown beside the live video.
 */
'use strict';

var SESSION_STATUS = Flashphoner.constants.SESSION_STATUS;
var STREAM_STATUS = Flashphoner.constants.STREAM_STATUS;
var STREAM_EVENT = Flashphoner.constants.STREAM_EVENT;
var STREAM_EVENT_TYPE = Flashphoner.constants.STREAM_EVENT_TYPE;
var publishBtn;
var snapshotBtn;

function init_page() {
    try {
        Flashphoner.init();
    } catch (e) {
        document.getElementById('notifyFlash').textContent =
            "Your browser doesn't support WebRTC technology needed for this example";
        return;
    }
    publishBtn = document.getElementById('publishBtn');
    snapshotBtn = document.getElementById('snapshotBtn');
    document.getElementById('url').value = setURL() + '/' + createUUID(8);
    checkSecureContext();
    onStopped();
}

function onStarted(stream) {
    publishBtn.textContent = 'Stop';
    publishBtn.onclick = function () {
        publishBtn.disabled = true;
        stream.stop();
    };
    publishBtn.disabled = false;
    snapshotBtn.disabled = false;
    snapshotBtn.onclick = function () {
        snapshot(stream.name());
    };
}

function onStopped() {
    publishBtn.textContent = 'Start';
    publishBtn.onclick = function () {
        publishBtn.disabled = true;
        start();
    };
    publishBtn.disabled = false;
    snapshotBtn.disabled = true;
}

function start() {
    var sessions = Flashphoner.getSessions();
    if (sessions.length > 0) {
        publish(sessions[0]);
        return;
    }
    var urlInput = document.getElementById('url');
    urlInput.disabled = true;
    Flashphoner.createSession({urlServer: urlInput.value}).on(SESSION_STATUS.ESTABLISHED, function (session) {
        publish(session);
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

function publish(session) {
    var streamName = field('url').split('/')[3];
    session.createStream({
        name: streamName,
        display: document.getElementById('localVideo'),
        cacheLocalResources: true,
        receiveVideo: false,
        receiveAudio: false
    }).on(STREAM_STATUS.PUBLISHING, function (stream) {
        setStatus(STREAM_STATUS.PUBLISHING);
        onStarted(stream);
    }).on(STREAM_STATUS.UNPUBLISHED, function (stream) {
        setStatus(STREAM_STATUS.UNPUBLISHED, stream);
        onStopped();
    }).on(STREAM_STATUS.FAILED, function (stream) {
        setStatus(STREAM_STATUS.FAILED, stream);
        onStopped();
    }).publish();
}

/** Ask for a picture of `name` through a new stream object, as the WCS seed does. */
function snapshot(name) {
    var session = Flashphoner.getSessions()[0];
    showStatus('snapshotStatus', 'requested', 'muted');
    session.createStream({name: name}).on(STREAM_EVENT, function (event) {
        if (event.type === STREAM_EVENT_TYPE.SNAPSHOT_COMPLETED) {
            document.getElementById('snapshotImg').src = 'data:image/png;base64,' + event.payload.snapshot;
            showStatus('snapshotStatus', 'completed', 'ok');
        } else if (event.type === STREAM_EVENT_TYPE.SNAPSHOT_FAILED) {
            showStatus('snapshotStatus', 'failed: ' + (event.payload && event.payload.info), 'error');
        }
    }).snapshot();
}

function setStatus(status, stream) {
    var kind = status === STREAM_STATUS.PUBLISHING ? 'ok'
        : status === STREAM_STATUS.FAILED ? 'error' : 'muted';
    showStatus('status', status, kind);
    if (status === STREAM_STATUS.PUBLISHING) {
        showStatus('info', '');
    } else if (stream) {
        showStatus('info', stream.getInfo() || '', 'muted');
    }
}
