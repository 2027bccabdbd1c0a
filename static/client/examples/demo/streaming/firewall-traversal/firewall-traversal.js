/**
 * Firewall Traversal Streaming, as the WCS demo of that name: publish the camera and play a
 * stream with every packet through a TURN relay. The form holds the WCS URL, the TURN URL
 * (default turn:<page host>:3478?transport=tcp), a username and credential (filled from the
 * server's /rest-api/turn/credentials: time-limited TURN REST API credentials) and "Force
 * relay" (iceTransportPolicy "relay": no direct candidates at all). The session is created with
 * mediaOptions {iceServers, iceTransportPolicy}, which the SDK hands to RTCPeerConnection. Under
 * each video the page shows the path media took (local candidate type and relay protocol).
 */
'use strict';

var SESSION_STATUS = Flashphoner.constants.SESSION_STATUS;
var STREAM_STATUS = Flashphoner.constants.STREAM_STATUS;
var TURN_DEFAULT_PORT = 3478;
var publishStream = null;
var playStream = null;

function init_page() {
    try {
        Flashphoner.init();
    } catch (e) {
        document.getElementById('notifyFlash').textContent =
            "Your browser doesn't support WebRTC technology needed for this example";
        return;
    }
    document.getElementById('url').value = setURL();
    checkSecureContext();
    document.getElementById('streamName').value = createUUID(8);
    document.getElementById('turnUrl').value = turnUrl(TURN_DEFAULT_PORT, 'tcp');
    fetchCredentials();
    document.getElementById('publishBtn').onclick = togglePublish;
    document.getElementById('playBtn').onclick = togglePlay;
}

/** turn:<page host>:<port>?transport=<transport> */
function turnUrl(port, transport) {
    var host = window.location.hostname || '127.0.0.1';
    if (host.indexOf(':') >= 0) {
        host = '[' + host + ']';
    }
    return 'turn:' + host + ':' + port + '?transport=' + transport;
}

/** Fill username and credential from the REST API; take the server's TURN port from its URLs. */
function fetchCredentials() {
    var xhr = new XMLHttpRequest();
    xhr.open('GET', getRestUrl() + '/turn/credentials?user=firewall-traversal');
    xhr.onload = function () {
        if (xhr.status !== 200) {
            showStatus('info', 'No TURN credentials from the server (' + xhr.status + ')', 'error');
            return;
        }
        var c;
        try {
            c = JSON.parse(xhr.responseText);
        } catch (e) {
            showStatus('info', 'Bad TURN credentials answer', 'error');
            return;
        }
        document.getElementById('turnUser').value = c.username;
        document.getElementById('turnCredential').value = c.credential;
        var tcp = (c.urls || []).filter(function (u) { return /\?transport=tcp$/.test(u); })[0];
        var m = tcp && /:(\d+)\?transport=tcp$/.exec(tcp);
        var turn = document.getElementById('turnUrl');
        if (m && turn.value === turnUrl(TURN_DEFAULT_PORT, 'tcp')) {
            turn.value = turnUrl(+m[1], 'tcp');
        }
        document.getElementById('turnCredential').setAttribute('data-loaded', 'true');
    };
    xhr.onerror = function () {
        showStatus('info', 'No TURN credentials from the server', 'error');
    };
    xhr.send();
}

/** The RTCPeerConnection configuration built from the form. */
function mediaOptions() {
    var url = field('turnUrl');
    var options = {
        iceServers: [{urls: url, username: field('turnUser'), credential: field('turnCredential')}]
    };
    if (document.getElementById('forceRelay').checked) {
        options.iceTransportPolicy = 'relay';
    }
    return options;
}

/** The session, created once with the TURN settings in force at that moment. */
function withSession(then) {
    var sessions = Flashphoner.getSessions();
    if (sessions.length > 0) {
        then(sessions[0]);
        return;
    }
    ['url', 'turnUrl', 'turnUser', 'turnCredential', 'forceRelay'].forEach(function (id) {
        document.getElementById(id).disabled = true;
    });
    Flashphoner.createSession({urlServer: field('url'), mediaOptions: mediaOptions()})
        .on(SESSION_STATUS.ESTABLISHED, function (session) {
            showStatus('status', SESSION_STATUS.ESTABLISHED, 'ok');
            then(session);
        }).on(SESSION_STATUS.DISCONNECTED, function () {
            showStatus('status', SESSION_STATUS.DISCONNECTED, 'muted');
            unlockForm();
        }).on(SESSION_STATUS.FAILED, function () {
            showStatus('status', SESSION_STATUS.FAILED, 'error');
            unlockForm();
        });
}

function unlockForm() {
    ['url', 'turnUrl', 'turnUser', 'turnCredential', 'forceRelay'].forEach(function (id) {
        document.getElementById(id).disabled = false;
    });
    publishStream = null;
    playStream = null;
    document.getElementById('publishBtn').textContent = 'Publish';
    document.getElementById('playBtn').textContent = 'Play';
}

function togglePublish() {
    var btn = document.getElementById('publishBtn');
    if (publishStream) {
        btn.disabled = true;
        publishStream.stop();
        return;
    }
    btn.disabled = true;
    withSession(function (session) {
        publishStream = session.createStream({
            name: field('streamName'),
            display: document.getElementById('localVideo'),
            cacheLocalResources: true,
            receiveVideo: false,
            receiveAudio: false
        }).on(STREAM_STATUS.PUBLISHING, function (stream) {
            showStatus('publishStatus', STREAM_STATUS.PUBLISHING, 'ok');
            btn.textContent = 'Unpublish';
            btn.disabled = false;
            showPath(stream, 'publishPath');
        }).on(STREAM_STATUS.UNPUBLISHED, function () {
            showStatus('publishStatus', STREAM_STATUS.UNPUBLISHED, 'muted');
            publishStream = null;
            btn.textContent = 'Publish';
            btn.disabled = false;
        }).on(STREAM_STATUS.FAILED, function (stream) {
            showStatus('publishStatus', STREAM_STATUS.FAILED, 'error');
            showStatus('info', failureText(stream), 'error');
            publishStream = null;
            btn.textContent = 'Publish';
            btn.disabled = false;
        });
        publishStream.publish();
    });
}

function togglePlay() {
    var btn = document.getElementById('playBtn');
    if (playStream) {
        btn.disabled = true;
        playStream.stop();
        return;
    }
    btn.disabled = true;
    withSession(function (session) {
        playStream = session.createStream({
            name: field('streamName'),
            display: document.getElementById('remoteVideo')
        }).on(STREAM_STATUS.PLAYING, function (stream) {
            showStatus('playStatus', STREAM_STATUS.PLAYING, 'ok');
            btn.textContent = 'Stop';
            btn.disabled = false;
            showPath(stream, 'playPath');
        }).on(STREAM_STATUS.STOPPED, function () {
            showStatus('playStatus', STREAM_STATUS.STOPPED, 'muted');
            playStream = null;
            btn.textContent = 'Play';
            btn.disabled = false;
        }).on(STREAM_STATUS.FAILED, function (stream) {
            showStatus('playStatus', STREAM_STATUS.FAILED, 'error');
            showStatus('info', stream.getInfo() || '', 'error');
            playStream = null;
            btn.textContent = 'Play';
            btn.disabled = false;
        });
        playStream.play();
    });
}

/** Show "relay tcp" (or "host udp", ...) for the stream's selected candidate pair. */
function showPath(stream, elementId) {
    var pc = stream.getPeerConnection && stream.getPeerConnection();
    if (!pc) {
        return;
    }
    pc.getStats().then(function (stats) {
        var local = null;
        stats.forEach(function (s) {
            if (s.type === 'transport' && s.selectedCandidatePairId) {
                var pair = stats.get(s.selectedCandidatePairId);
                local = pair && stats.get(pair.localCandidateId);
            }
        });
        if (local) {
            var path = local.candidateType + (local.relayProtocol ? ' ' + local.relayProtocol : ' ' + local.protocol);
            showStatus(elementId, '(' + path + ')', 'muted');
            document.getElementById(elementId).setAttribute('data-path', path);
        }
    });
}
