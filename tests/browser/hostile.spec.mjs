// Hostile clients against the server while a Chromium viewer plays (issue 15). The Streamer page
// publishes, the Player page plays; then, all at once for a window, from this process:
//   - slowloris on the WebSocket, REST and web ports (a request head trickled, never finished);
//   - half-open TCP on ICE-TCP (the media port), TURN/TCP and RTMP: silent, and stopped
//     mid-frame or mid-handshake;
//   - a flood of garbage datagrams on the media and TURN ports (UDP);
//   - a WebSocket client that opens a session and never reads.
// The viewer's framesDecoded must keep rising at a playing rate through the window (its fps is
// printed), and each hostile TCP client must have been closed by the server (timeouts).
// The same clients and the 50 Mbit/s publisher are in tests/hostile.rs with a synthetic viewer.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { after, before, test } from 'node:test';

import { expectFramesDecoded, fixture, inboundMedia, sleep, waitForText } from './harness.mjs';

const STREAMER = '/client/examples/demo/streaming/streamer/streamer.html';
const PLAYER = '/client/examples/demo/streaming/player/player.html';
/** The hostile window: longer than every server timeout the TCP clients meet (10 s). */
const WINDOW_MS = 16_000;
/** The viewer's floor during the window (the fake camera sends 20 fps). */
const MIN_FPS = 10;

let fx;
before(async () => { fx = await fixture(); });
after(async () => { await fx?.close(); });

/**
 * A TCP client that sends `first`, then a byte of `trickle` a second, never reading past what
 * shows the close; resolves with the ms until the server closed it, or null if still open when
 * `windowMs` ends (then destroyed).
 */
function hold(port, first, trickle, windowMs) {
    return new Promise((resolve) => {
        const t0 = Date.now();
        const s = net.connect(port, '127.0.0.1');
        let i = 0;
        let timer = null;
        const done = (v) => { clearInterval(timer); clearTimeout(end); s.destroy(); resolve(v); };
        const end = setTimeout(() => done(null), windowMs);
        s.on('connect', () => {
            if (first.length) s.write(first);
            if (trickle.length) timer = setInterval(() => s.write(trickle.subarray(i % trickle.length, (i++ % trickle.length) + 1)), 1000);
        });
        s.on('data', () => {});
        s.on('end', () => done(Date.now() - t0));
        s.on('close', () => done(Date.now() - t0));
        s.on('error', () => done(Date.now() - t0));
    });
}

/** Garbage datagrams to `port` for `ms`: ~2,000 a second, shaped like STUN, DTLS, RTP and none. */
async function flood(port, ms) {
    const sock = dgram.createSocket('udp4');
    let sent = 0;
    const end = Date.now() + ms;
    while (Date.now() < end) {
        for (let i = 0; i < 40; i++) {
            const b = Buffer.alloc(20 + Math.floor(Math.random() * 1000));
            for (let j = 0; j < b.length; j++) b[j] = Math.floor(Math.random() * 256);
            b[0] = [0x00, 0x01, 0x16, 0x80, 0x40][sent % 5];
            sock.send(b, port, '127.0.0.1');
            sent++;
        }
        await sleep(20);
    }
    sock.close();
    return sent;
}

/** A WebSocket client that upgrades, opens a WCS session and then never reads (paused). */
function deafWebSocket(port) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    s.on('connect', () => {
        s.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
        const text = Buffer.from(JSON.stringify({ message: 'connection', data: [{ appKey: 'defaultApp', mediaProviders: ['WebRTC'] }] }));
        // One masked client text frame (mask 0: the payload is sent as is).
        s.write(Buffer.concat([Buffer.from([0x81, 0x80 | 126, text.length >> 8, text.length & 0xff, 0, 0, 0, 0]), text]));
        s.pause();
    });
    return s;
}

test('a Chromium viewer keeps playing while hostile clients hit every port', { timeout: 90_000 }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const publisher = await (await fx.browser('publisher')).newPage('streamer');
        const viewer = await (await fx.browser('viewer')).newPage('player');
        await publisher.goto(server.webUrl(`${STREAMER}?ws=${server.ws}`));
        const name = (await publisher.inputValue('#url')).split('/')[3];
        await publisher.click('#publishBtn');
        await waitForText(publisher, '#status', 'PUBLISHING');
        await viewer.goto(server.webUrl(`${PLAYER}?ws=${server.ws}&streamName=${name}`));
        await viewer.click('#playBtn');
        await waitForText(viewer, '#status', 'PLAYING');
        await expectFramesDecoded(viewer, '#remoteVideo video');

        const head = Buffer.from('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n');
        const headers = Buffer.from('X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n');
        const c0c1 = Buffer.alloc(101, 7); c0c1[0] = 3;
        const tcp = [];
        const add = (what, n, port, first, trickle) => {
            for (let i = 0; i < n; i++) tcp.push(hold(port, first, trickle, WINDOW_MS).then((ms) => [what, ms]));
        };
        for (const [what, port] of [['ws', server.ws], ['rest', server.rest], ['http', server.http]]) {
            add(`slowloris ${what}`, 10, port, head, headers);
        }
        add('ICE-TCP silent', 5, server.media, Buffer.alloc(0), Buffer.alloc(0));
        add('ICE-TCP mid-frame', 5, server.media, Buffer.from([0, 100, 0, 1, 0, 0]), Buffer.alloc(0));
        add('TURN/TCP silent', 5, server.turn, Buffer.alloc(0), Buffer.alloc(0));
        add('TURN/TCP trickled', 5, server.turn, Buffer.from([0, 1, 0, 16, 0x21, 0x12, 0xa4, 0x42]), Buffer.from([9]));
        add('RTMP silent', 5, server.rtmp, Buffer.alloc(0), Buffer.alloc(0));
        add('RTMP mid-handshake', 5, server.rtmp, c0c1, Buffer.alloc(0));
        const deaf = Array.from({ length: 5 }, () => deafWebSocket(server.ws));

        const before = await inboundMedia(viewer);
        const t0 = Date.now();
        const [held, sent] = await Promise.all([
            Promise.all(tcp),
            Promise.all([flood(server.media, WINDOW_MS), flood(server.turn, WINDOW_MS)]),
        ]);
        const afterStats = await inboundMedia(viewer);
        const fps = (afterStats.framesDecoded - before.framesDecoded) / ((Date.now() - t0) / 1000);
        deaf.forEach((s) => s.destroy());

        const longest = {};
        for (const [what, ms] of held) longest[what] = Math.max(longest[what] ?? 0, ms ?? Infinity);
        t.diagnostic(`viewer ${fps.toFixed(1)} fps during the window; UDP garbage sent ${sent.join(' + ')}; ` +
            `longest hold (ms) ${JSON.stringify(longest)}`);
        assert.ok(fps >= MIN_FPS, `the viewer fell to ${fps.toFixed(1)} fps`);
        for (const [what, ms] of Object.entries(longest)) {
            assert.ok(Number.isFinite(ms), `${what}: still open after ${WINDOW_MS} ms`);
        }
        // Still serving: the viewer plays on and the publisher is still live.
        await expectFramesDecoded(viewer, '#remoteVideo video');
        assert.equal(await viewer.$eval('#status', (e) => e.textContent.trim()), 'PLAYING');
    })(t);
});
