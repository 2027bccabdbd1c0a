// A thin driver the browser tests call with page.evaluate. It uses only the public API both
// SDKs share (the official Flashphoner Web SDK and ours), as a WCS page would, and records what
// the SDK reports: session statuses, each stream's statuses with getInfo(), stream events,
// and the session's WARN events (the server's `fail` messages, e.g. a refused connection).
'use strict';

(function () {
    const { SESSION_STATUS, STREAM_STATUS, STREAM_EVENT } = Flashphoner.constants;
    const STATUSES = ['PENDING', 'PUBLISHING', 'PLAYING', 'UNPUBLISHED', 'STOPPED', 'FAILED'];

    const sdk = window.sdk = {
        session: null,
        sessionEvents: [],
        warnings: [],  // session WARN events: [{apiMethod, info}]
        streams: {},   // key -> the SDK stream
        events: {},    // key -> [{status, info}] in arrival order
        streamEvents: {}, // key -> [{type, payload}]

        /**
         * Open a session; resolves with its status once ESTABLISHED, or with 'DISCONNECTED' when
         * the server closes it first (a refused connection). `options` go to createSession too
         * (e.g. `{custom: {token}}`).
         */
        async connect(urlServer, options = {}) {
            await Flashphoner.init({});
            return new Promise((resolve, reject) => {
                Flashphoner.createSession({ ...options, urlServer })
                    .on(SESSION_STATUS.ESTABLISHED, (s) => {
                        sdk.session = s;
                        sdk.sessionEvents.push('ESTABLISHED');
                        resolve(s.status());
                    })
                    .on(SESSION_STATUS.WARN, (obj) => sdk.warnings.push({
                        apiMethod: obj && obj.apiMethod, info: obj && obj.info,
                    }))
                    .on(SESSION_STATUS.DISCONNECTED, () => {
                        sdk.sessionEvents.push('DISCONNECTED');
                        resolve('DISCONNECTED'); // no-op once ESTABLISHED
                    })
                    .on(SESSION_STATUS.FAILED, () => {
                        sdk.sessionEvents.push('FAILED');
                        reject(new Error('session FAILED'));
                    });
            });
        },

        create(key, options) {
            const stream = sdk.session.createStream(options);
            sdk.streams[key] = stream;
            sdk.events[key] = [];
            sdk.streamEvents[key] = [];
            for (const status of STATUSES) {
                stream.on(status, (s) => sdk.events[key].push({ status, info: s.getInfo() || '' }));
            }
            stream.on(STREAM_EVENT, (e) => sdk.streamEvents[key].push({ type: e.type, payload: e.payload }));
            return stream.id();
        },

        /**
         * Publish the fake camera under `name`, preview in #local; `extra` goes to createStream
         * too (e.g. `{custom: {token}, record: true}`).
         */
        publish(key, name, extra = {}) {
            sdk.create(key, { ...extra, name, display: document.getElementById('local') });
            sdk.streams[key].publish();
            return sdk.streams[key].id();
        },

        /** Play `name` into #remote; `extra` goes to createStream too. */
        play(key, name, extra = {}) {
            sdk.create(key, { ...extra, name, display: document.getElementById('remote') });
            sdk.streams[key].play();
            return sdk.streams[key].id();
        },

        call(key, method, ...args) {
            return sdk.streams[key][method](...args);
        },

        stop(key) {
            sdk.streams[key].stop();
        },

        disconnect() {
            sdk.session.disconnect();
        },
    };
})();
