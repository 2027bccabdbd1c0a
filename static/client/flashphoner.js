/**
 * sluice Web SDK: a small, dependency-free client for the Flashphoner WCS signalling protocol.
 *
 * It offers the streaming part of the official Flashphoner Web SDK (2.0.x) API under the same
 * names, so pages written for WCS run against sluice unchanged:
 *
 *   Flashphoner.init();
 *   Flashphoner.createSession({urlServer: "ws://host:8080"})
 *     .on(SESSION_STATUS.ESTABLISHED, function (session) {
 *       session.createStream({name: "cam1", display: div})
 *         .on(STREAM_STATUS.PUBLISHING, function (stream) { ... })
 *         .publish();
 *     });
 *
 * Wire protocol (see the project's wcs-protocol notes): every frame is JSON
 * `{"message": name, "data": [obj]}`. A session sends `connection`, becomes ESTABLISHED on
 * `getUserData` and answers `ping` with `pong`. A stream sends `publishStream`/`playStream` with
 * the SDP offer exactly as `createOffer()` returned it (no trickle ICE: candidates are never sent)
 * and applies the `setRemoteSDP` answer. Status changes arrive as `notifyStreamStatusEvent`,
 * routed by `mediaSessionId`; FAILED, STOPPED and UNPUBLISHED end a stream.
 *
 * Only the WebRTC media provider exists. Plain ES2017, no build step: load it with a script tag.
 */
(function (global) {
    'use strict';

    // ---------------------------------------------------------------------------------------
    // Constants (same names and values as the official SDK)

    var SESSION_STATUS = Object.freeze({
        CONNECTED: 'CONNECTED',
        ESTABLISHED: 'ESTABLISHED',
        DISCONNECTED: 'DISCONNECTED',
        WARN: 'WARN',
        FAILED: 'FAILED',
        DEBUG: 'DEBUG',
        APP_DATA: 'APP_DATA',
        SEND_DATA_STATUS: 'SEND_DATA_STATUS',
        PENDING: 'PENDING',
        REGISTERED: 'REGISTERED',
        UNREGISTERED: 'UNREGISTERED',
        INCOMING_CALL: 'INCOMING_CALL'
    });

    var STREAM_STATUS = Object.freeze({
        NEW: 'NEW',
        PENDING: 'PENDING',
        PUBLISHING: 'PUBLISHING',
        PLAYING: 'PLAYING',
        PAUSED: 'PAUSED',
        UNPUBLISHED: 'UNPUBLISHED',
        STOPPED: 'STOPPED',
        FAILED: 'FAILED',
        PLAYBACK_PROBLEM: 'PLAYBACK_PROBLEM',
        RESIZE: 'RESIZE',
        SNAPSHOT_COMPLETE: 'SNAPSHOT_COMPLETE',
        NOT_ENOUGH_BANDWIDTH: 'NOT_ENOUGH_BANDWIDTH'
    });

    /** Pseudo status under which stream events (mute, data, snapshot...) are delivered. */
    var STREAM_EVENT = 'STREAM_EVENT';

    var STREAM_EVENT_TYPE = Object.freeze({
        AUDIO_MUTED: 'audioMuted',
        AUDIO_UNMUTED: 'audioUnmuted',
        VIDEO_MUTED: 'videoMuted',
        VIDEO_UNMUTED: 'videoUnmuted',
        DATA: 'data',
        SNAPSHOT_COMPLETED: 'snapshotCompleted',
        SNAPSHOT_FAILED: 'snapshotFailed',
        RESIZE: 'resize',
        NOT_ENOUGH_BANDWIDTH: 'notEnoughBandwidth',
        UNMUTE_REQUIRED: 'unmuteRequired'
    });

    var TRANSPORT_TYPE = Object.freeze({UDP: 'UDP', TCP: 'TCP'});

    var ERROR_INFO = Object.freeze({
        OPTIONS_URLSERVER_MUST_BE_PROVIDED: 'options.urlServer must be provided',
        INVALID_SESSION_STATE: 'Invalid session state',
        OPTIONS_MUST_BE_PROVIDED: 'options must be provided',
        OPTIONS_NAME_MUST_BE_PROVIDED: 'options.name must be provided',
        EVENT_CANT_BE_NULL: 'Event can\'t be null',
        CALLBACK_NEEDS_TO_BE_A_VALID_FUNCTION: 'Callback needs to be a valid function',
        LOCAL_ERROR: 'Local error'
    });

    /** Why publishing cannot start on a plain-http page outside localhost. */
    var CAMERA_NEEDS_SECURE_CONTEXT = 'camera needs https or localhost: browsers offer no camera ' +
        'to a page opened over plain http from another address (open the https:// address the server printed)';

    /** Statuses after which the server forgets a stream: the SDK releases it. */
    var TERMINAL = [STREAM_STATUS.FAILED, STREAM_STATUS.STOPPED, STREAM_STATUS.UNPUBLISHED];
    /** Deprecated statuses (WCS-3228) that carry data but do not change the stream status. */
    var LEGACY_STATUS = [STREAM_STATUS.RESIZE, STREAM_STATUS.SNAPSHOT_COMPLETE,
        STREAM_STATUS.NOT_ENOUGH_BANDWIDTH];
    /** stop() on a PENDING stream retries this often until the server has resolved it. */
    var STOP_RETRY_MS = 200;

    // ---------------------------------------------------------------------------------------
    // Module state and helpers

    var initialized = false;
    var defaultConstraints = {audio: true, video: true};
    var sessions = {};

    function log(level) {
        var args = Array.prototype.slice.call(arguments, 1);
        args.unshift('[flashphoner]');
        (console[level] || console.log).apply(console, args);
    }

    /** A random (version 4) UUID; used for session and media session ids. */
    function uuid() {
        if (global.crypto && typeof global.crypto.randomUUID === 'function') {
            return global.crypto.randomUUID();
        }
        var b = new Uint8Array(16);
        global.crypto.getRandomValues(b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join('');
        return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
    }

    /** Shared `.on(event, callback)` for sessions and streams: validates, stores, chains. */
    function addCallback(callbacks, self, event, callback) {
        if (!event) {
            throw new TypeError(ERROR_INFO.EVENT_CANT_BE_NULL);
        }
        if (typeof callback !== 'function') {
            throw new TypeError(ERROR_INFO.CALLBACK_NEEDS_TO_BE_A_VALID_FUNCTION);
        }
        callbacks[event] = callback;
        return self;
    }

    function fire(callbacks, event) {
        var cb = callbacks[event];
        if (!cb) {
            return;
        }
        try {
            cb.apply(null, Array.prototype.slice.call(arguments, 2));
        } catch (e) {
            log('error', 'callback for ' + event + ' threw', e);
        }
    }

    /**
     * Put H.264 first in a video transceiver's codec list (the server forwards what the publisher
     * sends, and H.264 plays everywhere). Packetization mode 1 and constrained baseline first.
     * Browsers without setCodecPreferences keep their own order.
     */
    function preferH264(transceiver) {
        if (!transceiver || typeof transceiver.setCodecPreferences !== 'function' ||
            !global.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) {
            return;
        }
        var caps = RTCRtpReceiver.getCapabilities('video');
        if (!caps || !caps.codecs) {
            return;
        }
        function rank(c) {
            if (c.mimeType.toLowerCase() !== 'video/h264') {
                return 9;
            }
            var f = c.sdpFmtpLine || '';
            return (f.indexOf('packetization-mode=1') >= 0 ? 0 : 2) + (f.indexOf('profile-level-id=42e01f') >= 0 ? 0 : 1);
        }
        var sorted = caps.codecs.map(function (c, i) { return {c: c, i: i}; })
            .sort(function (a, b) { return (rank(a.c) - rank(b.c)) || (a.i - b.i); })
            .map(function (x) { return x.c; });
        try {
            transceiver.setCodecPreferences(sorted);
        } catch (e) {
            log('warn', 'setCodecPreferences refused, keeping the browser order', e);
        }
    }

    /** A `<video>` for a display div: autoplay, inline, muted until playback is allowed. */
    function createVideo(id) {
        var v = document.createElement('video');
        v.id = id;
        v.autoplay = true;
        v.muted = true;
        v.playsInline = true;
        v.setAttribute('playsinline', '');
        v.setAttribute('webkit-playsinline', '');
        return v;
    }

    function stopTracks(mediaStream) {
        if (mediaStream) {
            mediaStream.getTracks().forEach(function (t) { t.stop(); });
        }
    }

    // ---------------------------------------------------------------------------------------
    // API: init, sessions

    /**
     * Initialise the API. `options.constraints` replaces the default getUserMedia constraints
     * ({audio: true, video: true}). Returns a resolved Promise (the official init is async).
     */
    function init(options) {
        options = options || {};
        if (!global.RTCPeerConnection || !global.WebSocket) {
            throw new Error('WebRTC is not supported by this browser');
        }
        if (options.constraints) {
            defaultConstraints = options.constraints;
        }
        initialized = true;
        return Promise.resolve();
    }

    function getSessions() {
        return Object.keys(sessions).map(function (k) { return sessions[k]; });
    }

    function getSession(id) {
        return sessions[id];
    }

    function getMediaProviders() {
        return ['WebRTC'];
    }

    /**
     * Open a session: a WebSocket to `options.urlServer` (any path; WCS pages put the stream name
     * there). Options: urlServer (required), appKey ("defaultApp"), mediaOptions (the
     * RTCPeerConnection configuration for every stream, e.g. iceServers), custom (object sent to
     * the server), keepAlive, authToken, timeout (ms to wait for the socket to open).
     */
    function createSession(options) {
        if (!initialized) {
            init({});
        }
        if (!options) {
            throw new TypeError(ERROR_INFO.OPTIONS_MUST_BE_PROVIDED);
        }
        if (!options.urlServer) {
            throw new TypeError(ERROR_INFO.OPTIONS_URLSERVER_MUST_BE_PROVIDED);
        }
        var s = new Session(options);
        sessions[s.id()] = s;
        return s;
    }

    // ---------------------------------------------------------------------------------------
    // Session

    function Session(options) {
        var self = this;
        var id_ = uuid();
        var status_ = SESSION_STATUS.PENDING;
        var urlServer = options.urlServer;
        var appKey = options.appKey || 'defaultApp';
        var authToken = options.authToken;
        var callbacks = {};
        var streams = {};        // mediaSessionId -> Stream, until the stream ends
        var userData = null;     // the getUserData object
        var ws;
        var openTimer = null;

        /** Send one frame; silently dropped when the socket is not open. */
        function send(message, data) {
            if (ws && ws.readyState === WebSocket.OPEN) {
                ws.send(JSON.stringify({message: message, data: [data === undefined ? null : data]}));
            }
        }

        function setStatus(status, obj) {
            status_ = status;
            if (status === SESSION_STATUS.DISCONNECTED || status === SESSION_STATUS.FAILED) {
                // The server ends every stream of a closed session: end ours the same way.
                Object.keys(streams).forEach(function (k) {
                    streams[k]._onStatus({status: STREAM_STATUS.FAILED});
                });
                delete sessions[id_];
            }
            fire(callbacks, status, self, obj);
        }

        function onMessage(event) {
            if (typeof event.data !== 'string') {
                return; // binary frames are not part of the streaming protocol
            }
            var frame;
            try {
                frame = JSON.parse(event.data);
            } catch (e) {
                log('warn', 'frame is not JSON', event.data);
                return;
            }
            var data = Array.isArray(frame.data) ? frame.data : [];
            var obj = data[0] || {};
            var stream;
            switch (frame.message) {
                case 'ping':
                    send('pong', null);
                    break;
                case 'getUserData':
                    userData = obj;
                    authToken = obj.authToken;
                    setStatus(SESSION_STATUS.ESTABLISHED, obj);
                    break;
                case 'setRemoteSDP':
                    // Positional: [mediaSessionId, sdp, isInitiator]
                    stream = streams[data[0]];
                    if (stream) {
                        stream._setRemoteSdp(data[1]);
                    }
                    break;
                case 'notifyStreamStatusEvent':
                case 'notifyVideoFormat':
                    stream = streams[obj.mediaSessionId];
                    if (stream) {
                        stream._onStatus(obj);
                    }
                    break;
                case 'notifyStreamEvent':
                    stream = streams[obj.mediaSessionId];
                    if (stream) {
                        stream._onEvent(obj);
                    }
                    break;
                case 'availableStream':
                    stream = streams[obj.id];
                    if (stream) {
                        stream._onAvailable(obj.status === 'true' || obj.status === true, obj.info);
                    }
                    break;
                case 'fail':
                    if (obj.apiMethod === 'StreamStatusEvent' && streams[obj.id]) {
                        var failed = Object.assign({}, obj);
                        failed.status = failed.status || STREAM_STATUS.FAILED;
                        streams[obj.id]._onStatus(failed);
                    }
                    fire(callbacks, SESSION_STATUS.WARN, obj);
                    break;
                case 'OnDataEvent':
                    fire(callbacks, SESSION_STATUS.APP_DATA, obj);
                    break;
                case 'DataStatusEvent':
                    fire(callbacks, SESSION_STATUS.SEND_DATA_STATUS, obj);
                    break;
                case 'notifySessionDebugEvent':
                    fire(callbacks, SESSION_STATUS.DEBUG, obj);
                    break;
                default:
                    // getVersion and anything newer: not needed for streaming.
                    log('debug', 'ignoring server message ' + frame.message);
            }
        }

        function connect() {
            ws = new WebSocket(urlServer);
            if (options.timeout > 0) {
                openTimer = setTimeout(function () {
                    if (ws.readyState === WebSocket.CONNECTING) {
                        log('warn', 'WebSocket connect timeout');
                        ws.close();
                    }
                }, options.timeout);
            }
            ws.onopen = function () {
                clearTimeout(openTimer);
                setStatus(SESSION_STATUS.CONNECTED);
                send('connection', {
                    appKey: appKey,
                    mediaProviders: getMediaProviders(),
                    keepAlive: options.keepAlive,
                    authToken: authToken,
                    clientVersion: '2.0',
                    clientOSVersion: navigator.appVersion,
                    clientBrowserVersion: navigator.userAgent,
                    msePacketizationVersion: 2,
                    custom: options.custom
                });
            };
            ws.onmessage = onMessage;
            ws.onerror = function () {
                setStatus(SESSION_STATUS.FAILED);
            };
            ws.onclose = function () {
                clearTimeout(openTimer);
                if (status_ !== SESSION_STATUS.FAILED) {
                    setStatus(SESSION_STATUS.DISCONNECTED);
                }
            };
        }

        /** Subscribe to a SESSION_STATUS; the callback gets (session, object from the server). */
        this.on = function (event, callback) {
            return addCallback(callbacks, self, event, callback);
        };
        this.id = function () { return id_; };
        this.status = function () { return status_; };
        this.getServerUrl = function () { return urlServer; };
        this.getUserData = function () { return userData; };
        this.getAuthToken = function () { return authToken; };
        this.getStreams = function () {
            return Object.keys(streams).map(function (k) { return streams[k]; });
        };
        this.getStream = function (mediaSessionId) { return streams[mediaSessionId]; };
        this.disconnect = function () {
            if (ws) {
                ws.close();
            }
        };
        /** Send an application message (`sendData`); the answer fires SEND_DATA_STATUS. */
        this.sendData = function (payload) {
            send('sendData', {operationId: uuid(), payload: payload});
        };

        /** Create a stream of this session; see {@link Stream}. Requires ESTABLISHED. */
        this.createStream = function (streamOptions) {
            if (status_ !== SESSION_STATUS.ESTABLISHED) {
                throw new Error(ERROR_INFO.INVALID_SESSION_STATE + ' ' + status_);
            }
            if (!streamOptions) {
                throw new TypeError(ERROR_INFO.OPTIONS_MUST_BE_PROVIDED);
            }
            if (!streamOptions.name) {
                throw new TypeError(ERROR_INFO.OPTIONS_NAME_MUST_BE_PROVIDED);
            }
            var stream = new Stream(streamOptions, {
                send: send,
                mediaOptions: options.mediaOptions,
                forget: function (id) { delete streams[id]; }
            });
            streams[stream.id()] = stream;
            return stream;
        };

        connect();
    }

    // ---------------------------------------------------------------------------------------
    // Stream

    /**
     * One published or played stream. Options: name (required), display (a div that receives
     * the `<video>`), record, receiveAudio/receiveVideo (play; default true), constraints
     * (getUserMedia constraints for publish; for play `{audio: false}`/`{video: false}` also
     * disable receiving), cacheLocalResources (keep the camera running after the stream ends and
     * reuse it next time), transport ("UDP"/"TCP"), custom, unmutePlayOnStart (default true),
     * mediaConnectionConstraints (ignored: kept for compatibility), simulcast (publish three
     * qualities, full, half and quarter size, so that viewers on slow links get a smaller one;
     * default true, `false` sends one).
     */
    /**
     * The simulcast layers a publisher sends for a camera track: three (quarter, half and full
     * size) from 960x540 up, two (half and full) from 480x270, else one. Chrome allows no more
     * layers than that for a picture size and drops the best ones first, so asking for more
     * would lose the full-size picture.
     */
    function simulcastLayers(track) {
        var s = track.getSettings ? track.getSettings() : {};
        var pixels = (s.width || 640) * (s.height || 480);
        var full = {rid: 'h', maxBitrate: 2500000};
        if (pixels >= 960 * 540) {
            return [{rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 200000},
                {rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 700000}, full];
        }
        if (pixels >= 480 * 270) {
            return [{rid: 'l', scaleResolutionDownBy: 2, maxBitrate: 250000}, full];
        }
        return [full];
    }

    function Stream(options, session) {
        var self = this;
        var id_ = uuid();
        var name_ = options.name;
        var display = options.display || null;
        var record_ = !!options.record;
        var cacheLocalResources = !!options.cacheLocalResources;
        var constraints = options.constraints && Object.keys(options.constraints).length ? options.constraints : null;
        var receiveAudio = options.receiveAudio !== undefined ? !!options.receiveAudio : true;
        var receiveVideo = options.receiveVideo !== undefined ? !!options.receiveVideo : true;
        // Publish: simulcast unless `simulcast: false`.
        var simulcast = options.simulcast !== false;
        if (constraints && constraints.audio !== undefined) {
            receiveAudio = !!constraints.audio;
        }
        if (constraints && constraints.video !== undefined) {
            receiveVideo = !!constraints.video;
        }
        var status_ = STREAM_STATUS.NEW;
        var published_ = false;
        var info_;
        var errorInfo_;
        var recordName_ = null;
        var audioState_;
        var videoState_;
        var callbacks = {};
        var pc = null;
        var localStream = null;   // publish: the captured camera/microphone
        var video = null;         // the <video> in display
        var availableWaiters = [];

        function bitrateOf(key) {
            return (constraints && constraints.video && constraints.video[key]) || 0;
        }

        function sendStreamEvent(type, payload) {
            session.send('sendStreamEvent', {mediaSessionId: id_, type: type, payload: payload});
        }

        /** The request object of publishStream/playStream/unPublishStream/stopStream. */
        function request(extra) {
            var o = {
                mediaSessionId: id_,
                name: name_,
                published: published_,
                hasVideo: true,
                hasAudio: true,
                status: status_,
                record: false
            };
            return Object.assign(o, extra || {});
        }

        function newPeerConnection() {
            var config = Object.assign({iceServers: []}, session.mediaOptions || {});
            config.bundlePolicy = 'max-compat';
            return new RTCPeerConnection(config);
        }

        function closePeerConnection() {
            if (pc) {
                try {
                    pc.close();
                } catch (e) { /* already closed */ }
                pc = null;
            }
        }

        /** Close the PC and free the display; the camera stays only with cacheLocalResources. */
        function release() {
            closePeerConnection();
            if (published_) {
                if (localStream && !cacheLocalResources) {
                    stopTracks(localStream);
                    if (video && video.parentNode) {
                        video.parentNode.removeChild(video);
                    }
                    if (display && display.__fpCachedStream === localStream) {
                        display.__fpCachedStream = null;
                    }
                } else if (localStream) {
                    // Cached for the next publish on this display: re-enable muted tracks.
                    localStream.getTracks().forEach(function (t) { t.enabled = true; });
                }
            } else if (video) {
                video.pause();
                video.srcObject = null;
                if (video.parentNode) {
                    video.parentNode.removeChild(video);
                }
            }
        }

        /** A local failure (no camera, SDP refused...): FAILED with "Local error". */
        function failLocally(error, notifyServer) {
            log('warn', 'stream ' + name_ + ' failed locally', error);
            errorInfo_ = error && error.message ? error.message : String(error);
            var wasSent = notifyServer && status_ !== STREAM_STATUS.NEW;
            if (wasSent) {
                session.send(published_ ? 'unPublishStream' : 'stopStream', request());
            }
            self._onStatus({status: STREAM_STATUS.FAILED, info: ERROR_INFO.LOCAL_ERROR});
        }

        /** getUserMedia, or the stream cached in this display by an earlier publish. */
        function getLocalMedia() {
            var wanted = constraints || defaultConstraints;
            var cached = display && display.__fpCachedStream;
            if (cached && cached.getTracks().every(function (t) { return t.readyState === 'live'; }) &&
                JSON.stringify(display.__fpCachedConstraints) === JSON.stringify(wanted)) {
                return Promise.resolve(cached);
            }
            if (cached) {
                stopTracks(cached);
            }
            if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
                // Browsers hide the camera from pages that are not a secure context.
                return Promise.reject(new Error(CAMERA_NEEDS_SECURE_CONTEXT));
            }
            return navigator.mediaDevices.getUserMedia(wanted).then(function (ms) {
                if (display) {
                    display.__fpCachedStream = ms;
                    display.__fpCachedConstraints = wanted;
                }
                return ms;
            });
        }

        function showLocal(ms) {
            if (!display) {
                return;
            }
            var existing = null;
            for (var i = 0; i < display.children.length; i++) {
                if (display.children[i].tagName === 'VIDEO' && display.children[i].srcObject === ms) {
                    existing = display.children[i];
                }
            }
            video = existing || createVideo(id_);
            video.id = id_;
            video.muted = true; // never echo the microphone
            if (!existing) {
                video.srcObject = ms;
                display.appendChild(video);
            }
            video.play().catch(function () { /* autoplay: muted preview always plays */ });
        }

        function playRemote(ms) {
            if (!video) {
                return;
            }
            video.srcObject = ms;
            video.onloadedmetadata = function () {
                video.play().then(function () {
                    if (options.unmutePlayOnStart === false) {
                        return;
                    }
                    video.muted = false;
                    if (video.paused) {
                        // The autoplay policy paused the unmuted video: play muted, ask the app.
                        video.muted = true;
                        video.play().catch(function () {});
                        self._onEvent({mediaSessionId: id_, type: STREAM_EVENT_TYPE.UNMUTE_REQUIRED});
                    }
                }).catch(function () {
                    video.muted = true;
                    video.play().catch(function () {});
                    self._onEvent({mediaSessionId: id_, type: STREAM_EVENT_TYPE.UNMUTE_REQUIRED});
                });
            };
        }

        // ------------------------------------------------------------------ public methods

        this.on = function (event, callback) {
            return addCallback(callbacks, self, event, callback);
        };

        /**
         * Publish: capture (constraints, default {audio: true, video: true}), show the local
         * preview in display, send `publishStream` with the offer. Status events follow.
         */
        this.publish = function () {
            if (status_ !== STREAM_STATUS.NEW) {
                throw new Error('Invalid stream state ' + status_);
            }
            status_ = STREAM_STATUS.PENDING;
            published_ = true;
            getLocalMedia().then(function (ms) {
                if (status_ !== STREAM_STATUS.PENDING) {
                    // Ended while waiting for the camera (e.g. the session closed).
                    if (!cacheLocalResources) {
                        stopTracks(ms);
                    }
                    return;
                }
                localStream = ms;
                showLocal(ms);
                pc = newPeerConnection();
                ms.getTracks().forEach(function (t) {
                    if (t.kind === 'video' && simulcast) {
                        // Simulcast: the server sends each viewer the best layer its link carries.
                        pc.addTransceiver(t, {
                            direction: 'sendonly',
                            streams: [ms],
                            sendEncodings: simulcastLayers(t)
                        });
                    } else {
                        pc.addTrack(t, ms);
                    }
                });
                pc.getTransceivers().forEach(function (t) {
                    if (t.sender && t.sender.track && t.sender.track.kind === 'video') {
                        preferH264(t);
                    }
                });
                return pc.createOffer().then(function (offer) {
                    return pc.setLocalDescription(offer).then(function () {
                        session.send('publishStream', request({
                            hasVideo: ms.getVideoTracks().length > 0,
                            hasAudio: ms.getAudioTracks().length > 0,
                            record: record_,
                            mediaProvider: 'WebRTC',
                            sdp: offer.sdp,
                            custom: options.custom,
                            bitrate: bitrateOf('bitrate'),
                            minBitrate: bitrateOf('minBitrate'),
                            maxBitrate: bitrateOf('maxBitrate'),
                            rtmpUrl: options.rtmpUrl,
                            constraints: constraints || undefined,
                            transport: options.transport
                        }));
                    });
                });
            }).catch(function (e) {
                failLocally(e, false);
            });
        };

        /**
         * Play: a `<video id=mediaSessionId>` in display, recvonly transceivers, `playStream`
         * with the offer. Fires PENDING locally at once (pages look the video element up then).
         */
        this.play = function () {
            if (status_ !== STREAM_STATUS.NEW) {
                throw new Error('Invalid stream state ' + status_);
            }
            status_ = STREAM_STATUS.PENDING;
            if (display) {
                video = createVideo(id_);
                display.appendChild(video);
            }
            try {
                pc = newPeerConnection();
                if (receiveAudio) {
                    pc.addTransceiver('audio', {direction: 'recvonly'});
                }
                if (receiveVideo) {
                    preferH264(pc.addTransceiver('video', {direction: 'recvonly'}));
                }
                // One WCS stream is one picture with its sound: every received track goes into
                // one MediaStream of ours, whatever stream ids (msid) the answer gave them.
                var remote = new MediaStream();
                pc.ontrack = function (e) {
                    remote.addTrack(e.track);
                    if (video && video.srcObject !== remote) {
                        playRemote(remote);
                    }
                };
            } catch (e) {
                failLocally(e, false);
                return;
            }
            fire(callbacks, STREAM_STATUS.PENDING, self);
            var thisPc = pc;
            pc.createOffer().then(function (offer) {
                return thisPc.setLocalDescription(offer).then(function () {
                    if (status_ !== STREAM_STATUS.PENDING) {
                        return;
                    }
                    session.send('playStream', request({
                        width: options.playWidth || 0,
                        height: options.playHeight || 0,
                        mediaProvider: 'WebRTC',
                        sdp: offer.sdp,
                        custom: options.custom,
                        bitrate: bitrateOf('bitrate'),
                        minBitrate: bitrateOf('minBitrate'),
                        maxBitrate: bitrateOf('maxBitrate'),
                        quality: bitrateOf('quality'),
                        constraints: constraints || undefined,
                        transport: options.transport
                    }));
                });
            }).catch(function (e) {
                failLocally(e, false);
            });
        };

        /**
         * Stop: `unPublishStream` (published) or `stopStream`, closing the PC at once; the final
         * UNPUBLISHED/STOPPED comes from the server. A NEW stream fails locally; a PENDING one
         * retries until the server has answered.
         */
        this.stop = function () {
            if (status_ === STREAM_STATUS.NEW) {
                self._onStatus({status: STREAM_STATUS.FAILED});
                return;
            }
            if (status_ === STREAM_STATUS.PENDING) {
                setTimeout(self.stop, STOP_RETRY_MS);
                return;
            }
            if (TERMINAL.indexOf(status_) >= 0) {
                return;
            }
            session.send(published_ ? 'unPublishStream' : 'stopStream', request());
            closePeerConnection();
        };

        /** Ask the server for a PNG of the published stream of this name: STREAM_EVENT follows. */
        this.snapshot = function () {
            if ([STREAM_STATUS.NEW, STREAM_STATUS.PLAYING, STREAM_STATUS.PUBLISHING].indexOf(status_) < 0) {
                throw new Error('Invalid stream state');
            }
            session.send('snapshot', {name: name_, mediaSessionId: id_});
        };

        /** Resolves with this stream if a stream of this name is published, else rejects. */
        this.available = function () {
            return new Promise(function (resolve, reject) {
                availableWaiters.push({resolve: resolve, reject: reject});
                session.send('availableStream', {mediaSessionId: id_, name: name_});
            });
        };

        function setLocalTracks(kind, enabled) {
            if (!localStream) {
                return false;
            }
            var tracks = kind === 'audio' ? localStream.getAudioTracks() : localStream.getVideoTracks();
            tracks.forEach(function (t) { t.enabled = enabled; });
            return tracks.length > 0;
        }

        function isMuted(kind) {
            if (!localStream) {
                return true;
            }
            var t = kind === 'audio' ? localStream.getAudioTracks()[0] : localStream.getVideoTracks()[0];
            return !t || !t.enabled;
        }

        this.muteAudio = function () {
            if (setLocalTracks('audio', false)) {
                sendStreamEvent(STREAM_EVENT_TYPE.AUDIO_MUTED);
            }
        };
        this.unmuteAudio = function () {
            if (setLocalTracks('audio', true)) {
                sendStreamEvent(STREAM_EVENT_TYPE.AUDIO_UNMUTED);
            }
        };
        this.muteVideo = function () {
            if (setLocalTracks('video', false)) {
                sendStreamEvent(STREAM_EVENT_TYPE.VIDEO_MUTED);
            }
        };
        this.unmuteVideo = function () {
            if (setLocalTracks('video', true)) {
                sendStreamEvent(STREAM_EVENT_TYPE.VIDEO_UNMUTED);
            }
        };
        this.isAudioMuted = function () { return isMuted('audio'); };
        this.isVideoMuted = function () { return isMuted('video'); };

        /** Send any object to this stream's subscribers (STREAM_EVENT type "data"). */
        this.sendData = function (payload) {
            if (status_ !== STREAM_STATUS.PUBLISHING) {
                throw new Error('Invalid stream state');
            }
            sendStreamEvent(STREAM_EVENT_TYPE.DATA, payload);
        };

        this.id = function () { return id_; };
        this.name = function () { return name_; };
        this.status = function () { return status_; };
        this.published = function () { return published_; };
        this.getInfo = function () { return info_; };
        this.getErrorInfo = function () { return errorInfo_; };
        this.getRecordInfo = function () { return recordName_; };
        this.getAudioState = function () { return audioState_; };
        this.getVideoState = function () { return videoState_; };
        /** The RTCPeerConnection while the stream has one (for getStats). */
        this.getPeerConnection = function () { return pc; };
        this.setVolume = function (v) {
            if (video && !published_) {
                video.volume = Math.max(0, Math.min(100, v)) / 100;
            }
        };
        this.getVolume = function () {
            return video && !published_ ? Math.round(video.volume * 100) : -1;
        };

        // ------------------------------------------------------------------ from the session

        this._setRemoteSdp = function (sdp) {
            if (!pc || pc.signalingState !== 'have-local-offer' || !sdp) {
                log('warn', 'ignoring answer for stream ' + name_ + ' in state ' + (pc ? pc.signalingState : 'closed'));
                return;
            }
            pc.setRemoteDescription({type: 'answer', sdp: sdp}).catch(function (e) {
                failLocally(e, true);
            });
        };

        this._onStatus = function (obj) {
            var event = obj.status;
            if (event === STREAM_EVENT) {
                self._onEvent(Object.assign({mediaSessionId: id_}, obj));
                return;
            }
            if (LEGACY_STATUS.indexOf(event) < 0 && event) {
                status_ = event;
            }
            if (obj.audioState) {
                audioState_ = obj.audioState;
            }
            if (obj.videoState) {
                videoState_ = obj.videoState;
            }
            if (obj.info) {
                info_ = obj.info;
            }
            if (record_ && obj.recordName !== undefined) {
                recordName_ = obj.recordName;
            }
            if (TERMINAL.indexOf(event) >= 0) {
                session.forget(id_);
                release();
            }
            fire(callbacks, event, self);
        };

        this._onEvent = function (ev) {
            fire(callbacks, STREAM_EVENT, ev);
        };

        this._onAvailable = function (available, reason) {
            info_ = reason;
            var waiters = availableWaiters;
            availableWaiters = [];
            waiters.forEach(function (w) {
                if (available) {
                    w.resolve(self);
                } else {
                    w.reject(self);
                }
            });
        };
    }

    // ---------------------------------------------------------------------------------------

    global.Flashphoner = {
        init: init,
        createSession: createSession,
        getSessions: getSessions,
        getSession: getSession,
        getMediaProviders: getMediaProviders,
        constants: {
            SESSION_STATUS: SESSION_STATUS,
            STREAM_STATUS: STREAM_STATUS,
            STREAM_EVENT: STREAM_EVENT,
            STREAM_EVENT_TYPE: STREAM_EVENT_TYPE,
            TRANSPORT_TYPE: TRANSPORT_TYPE,
            ERROR_INFO: ERROR_INFO
        }
    };
})(window);
