// A thin driver the browser tests call with page.evaluate. It uses only the public API both
// SDKs share (the official Flashphoner Web SDK and ours), as a WCS page would, and records what
// the SDK reports: session statuses, each stream's statuses with getInfo(), stream events.
'use strict';

(function () {
    const { SESSION_STATUS, STREAM_STATUS, STREAM_EVENT } = Flashphoner.constants;
    const STATUSES = ['PENDING', 'PUBLISHING', 'PLAYING', 'UNPUBLISHED', 'STOPPED', 'FAILED'];

    const sdk = window.sdk = {
        session: null,
        sessionEvents: [],
        streams: {},   // key -> the SDK stream
        events: {},    // key -> [{status, info}] in arrival order
        streamEvents: {}, // key -> [{type, payload}]

        /** Open a session; resolves with its status once ESTABLISHED. */
        async connect(urlServer) {
            await Flashphoner.init({});
            return new Promise((resolve, reject) => {
                Flashphoner.createSession({ urlServer })
                    .on(SESSION_STATUS.ESTABLISHED, (s) => {
                        sdk.session = s;
                        sdk.sessionEvents.push('ESTABLISHED');
                        resolve(s.status());
                    })
                    .on(SESSION_STATUS.DISCONNECTED, () => sdk.sessionEvents.push('DISCONNECTED'))
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

        /** Publish the fake camera under `name`, preview in #local. */
        publish(key, name) {
            sdk.create(key, { name, display: document.getElementById('local') });
            sdk.streams[key].publish();
            return sdk.streams[key].id();
        },

        /** Play `name` into #remote. */
        play(key, name) {
            sdk.create(key, { name, display: document.getElementById('remote') });
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
