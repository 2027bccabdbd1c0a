/**
 * Stream Recording: publish the camera with `record: true` under the name in the URL path
 * (ws://host:8080/<name>). Stop ends the publish; on UNPUBLISHED (or FAILED) the page plays the
 * recorded file from /client/records/<recordName> of this web origin and offers it for download.
 * A recording that fails while the stream goes on (full disk, unwritable folder) arrives as a
 * session WARN and is shown under the status.
 */
'use strict';

var SESSION_STATUS = Flashphoner.constants.SESSION_STATUS;
var STREAM_STATUS = Flashphoner.constants.STREAM_STATUS;
var PROCESSING_STATUS = 'PROCESSING';
var localVideo;
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
    publishBtn = document.getElementById('publishBtn');
    document.getElementById('url').value = setURL() + '/' + createUUID(8);
    document.getElementById('downloadDiv').hidden = true;
    checkSecureContext();
    onStopped();
}

function onStarted(stream) {
    publishBtn.textContent = 'Stop';
    publishBtn.onclick = function () {
        setStatus(PROCESSING_STATUS);
        publishBtn.disabled = true;
        stream.stop();
    };
    publishBtn.disabled = false;
}

function onStopped() {
    publishBtn.textContent = 'Start';
    publishBtn.onclick = function () {
        var url = document.getElementById('url');
        if (!url.value) {
            url.classList.add('invalid');
            return;
        }
        url.classList.remove('invalid');
        publishBtn.disabled = true;
        url.disabled = true;
        document.getElementById('downloadDiv').hidden = true;
        startRecording();
    };
    publishBtn.disabled = false;
    document.getElementById('url').disabled = false;
}

function startRecording() {
    var url = field('url');
    var sessions = Flashphoner.getSessions();
    if (sessions.length > 0) {
        if (sessions[0].getServerUrl() === url) {
            publishStream(sessions[0]);
            return;
        }
        sessions[0].on(SESSION_STATUS.DISCONNECTED, function () {});
        sessions[0].on(SESSION_STATUS.FAILED, function () {});
        sessions[0].disconnect();
    }
    Flashphoner.createSession({urlServer: url}).on(SESSION_STATUS.ESTABLISHED, function (session) {
        setStatus(session.status());
        publishStream(session);
    }).on(SESSION_STATUS.DISCONNECTED, function () {
        setStatus(SESSION_STATUS.DISCONNECTED);
        onStopped();
    }).on(SESSION_STATUS.FAILED, function () {
        setStatus(SESSION_STATUS.FAILED);
        onStopped();
    }).on(SESSION_STATUS.WARN, function (warn) {
        // A recording that failed while publishing goes on.
        if (warn && warn.info) {
            showStatus('info', warn.info, 'error');
        }
    });
}

function publishStream(session) {
    var streamName = field('url').split('/')[3];
    session.createStream({
        name: streamName,
        display: localVideo,
        record: true,
        receiveVideo: false,
        receiveAudio: false
    }).on(STREAM_STATUS.PUBLISHING, function (stream) {
        setStatus(stream.status());
        onStarted(stream);
    }).on(STREAM_STATUS.UNPUBLISHED, function (stream) {
        setStatus(stream.status());
        showDownloadLink(stream.getRecordInfo());
        onStopped();
    }).on(STREAM_STATUS.FAILED, function (stream) {
        setStatus(stream.status(), failureText(stream));
        showDownloadLink(stream.getRecordInfo());
        onStopped();
    }).publish();
}

/** Show a session or stream status, and the failure reason if any. */
function setStatus(status, info) {
    var kind = status === STREAM_STATUS.PUBLISHING ? 'ok' : status === STREAM_STATUS.FAILED ? 'error' : 'muted';
    showStatus('status', status, kind);
    if (status === STREAM_STATUS.PUBLISHING) {
        showStatus('info', '');
    } else if (info) {
        showStatus('info', info, 'muted');
    }
}

/** Play the recorded file and offer it for download: /client/records/<name> of this origin. */
function showDownloadLink(name) {
    if (!name) {
        return;
    }
    var link = window.location.protocol + '//' + window.location.host + '/client/records/' + encodeURIComponent(name);
    document.getElementById('link').href = link;
    var video = document.getElementById('recVideo');
    video.src = link;
    video.controls = true;
    document.getElementById('downloadDiv').hidden = false;
}
