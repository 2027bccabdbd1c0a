// RTSP pull seen from browsers: a real RTSP server (GStreamer's, tests/support/rtsp_camera.py,
// H.264 test pattern + AAC tone) on loopback is played by URL in two Chromium pages at once
// through the Player demo page; both decode frames and sound, and the camera sees one client.
// A closed port and a wrong path show the WCS error strings. A server with the default policy
// refuses the camera on loopback ("Restricted access") without connecting to it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { TEST_TIMEOUT_MS, expectFramesDecoded, fixture, startCamera, textOf, waitForText } from './harness.mjs';

const PLAYER = '/client/examples/demo/streaming/player/player.html';

let fx;
let camera;
before(async () => {
    // The camera listens on 127.0.0.1, which the default policy refuses (rtsp:// names never
    // reach loopback or private hosts unless --rtsp-allow says so): allow that one address, as
    // an operator allows the LAN of their cameras.
    fx = await fixture({ serverArgs: ['--rtsp-allow', '127.0.0.1'] });
    camera = await startCamera();
});
after(async () => {
    camera?.child.kill('SIGKILL');
    await fx?.close();
});

async function openPlayer(label, name, on = fx) {
    const page = await (await on.browser(label)).newPage('player');
    const { server } = on;
    await page.goto(server.webUrl(`${PLAYER}?ws=${server.ws}&streamName=${encodeURIComponent(name)}`));
    await page.click('#playBtn');
    return page;
}

test('two Chromium pages play one camera, pulled once', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const url = `rtsp://127.0.0.1:${camera.port}/cam`;
        const pages = await Promise.all([openPlayer('viewer1', url), openPlayer('viewer2', url)]);
        for (const page of pages) {
            await waitForText(page, '#status', 'PLAYING');
        }
        for (const page of pages) {
            const frames = await expectFramesDecoded(page, '#remoteVideo video', { audio: true });
            t.diagnostic(`${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames, ` +
                `${frames.audioSamples} audio samples in the window`);
            assert.deepEqual([frames.width, frames.height], [640, 360]);
        }
        assert.equal(camera.clients(), 1, 'the camera was pulled more than once');
    })(t);
});

test('a closed port and a wrong path fail with the WCS strings', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const cases = [
            ['rtsp://127.0.0.1:1/cam', 'Failed to connect to rtsp stream'],
            [`rtsp://127.0.0.1:${camera.port}/nope`, 'Rtsp stream not found'],
        ];
        for (const [url, info] of cases) {
            const page = await openPlayer('failing', url);
            await waitForText(page, '#status', 'FAILED');
            assert.equal(await textOf(page, '#info'), info, url);
        }
    })(t);
});

test('with the default policy the camera on loopback is refused, never connected to', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const defaults = await fixture();
    try {
        await defaults.run(async () => {
            const before = camera.clients();
            for (const url of [`rtsp://127.0.0.1:${camera.port}/x`, `rtsp://localhost:${camera.port}/x`]) {
                const page = await openPlayer('refused', url, defaults);
                await waitForText(page, '#status', 'FAILED');
                assert.equal(await textOf(page, '#info'), 'Restricted access', url);
            }
            assert.equal(camera.clients(), before, 'the camera saw a connection');
        })(t);
    } finally {
        await defaults.close();
    }
});
