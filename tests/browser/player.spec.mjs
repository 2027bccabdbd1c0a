// The Player demo page with our SDK: a second browser plays what the Streamer page publishes,
// gets STOPPED "Stopped by publisher stop" when the publisher stops, and FAILED "Stream not
// found" for a name nobody publishes.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { TEST_TIMEOUT_MS, expectFramesDecoded, expectVideoSize, fixture, peerConnectionStates, textOf, waitForText } from './harness.mjs';

const STREAMER = '/client/examples/demo/streaming/streamer/streamer.html';
const PLAYER = '/client/examples/demo/streaming/player/player.html';

let fx;
before(async () => { fx = await fixture(); });
after(async () => { await fx?.close(); });

test('player plays a stream published by the streamer until the publisher stops', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const publisher = await (await fx.browser('publisher')).newPage('streamer');
        const viewerBrowser = await fx.browser('viewer');
        const viewer = await viewerBrowser.newPage('player');

        await publisher.goto(server.webUrl(`${STREAMER}?ws=${server.ws}`));
        const name = (await publisher.inputValue('#url')).split('/')[3];
        await publisher.click('#publishBtn');
        await waitForText(publisher, '#status', 'PUBLISHING');
        await waitForText(publisher, '#previewStatus', 'PLAYING');

        await viewer.goto(server.webUrl(`${PLAYER}?ws=${server.ws}&streamName=${name}`));
        assert.equal(await viewer.inputValue('#url'), `ws://127.0.0.1:${server.ws}`);
        assert.equal(await viewer.inputValue('#streamName'), name);
        await viewer.click('#playBtn');
        await waitForText(viewer, '#status', 'PLAYING');
        await waitForText(viewer, '#playBtn', 'Stop');
        assert.equal(await textOf(viewer, '#info'), '');

        const frames = await expectFramesDecoded(viewer, '#remoteVideo video', { audio: true });
        t.diagnostic(`viewer ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames, ` +
            `${frames.audioSamples} audio samples in the window`);
        // The viewer reaches the publisher's full size (its best simulcast layer).
        await expectVideoSize(t, viewer, '#remoteVideo video', frames, [640, 480]);

        // The publisher stops: the viewer is told why.
        await publisher.click('#publishBtn');
        await waitForText(publisher, '#status', 'UNPUBLISHED');
        await waitForText(viewer, '#status', 'STOPPED');
        assert.equal(await textOf(viewer, '#info'), 'Stopped by publisher stop');
        await waitForText(viewer, '#playBtn', 'Start');
        assert.equal(await viewer.$('#remoteVideo video'), null, 'stopped video element left behind');
        assert.deepEqual(await peerConnectionStates(viewer), ['closed']);
    })(t);
});

test('player shows FAILED "Stream not found" for a name nobody publishes', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const viewer = await (await fx.browser('viewer2')).newPage('player');
        await viewer.goto(server.webUrl(`${PLAYER}?ws=${server.ws}`));
        // An empty name is refused by the form, nothing is sent.
        await viewer.click('#playBtn');
        assert.equal(await viewer.$eval('#streamName', (e) => e.classList.contains('invalid')), true);
        assert.equal(await textOf(viewer, '#status'), '');

        await viewer.fill('#streamName', 'nobody-publishes-this');
        await viewer.click('#playBtn');
        await waitForText(viewer, '#status', 'FAILED');
        assert.equal(await textOf(viewer, '#info'), 'Stream not found');
        await waitForText(viewer, '#playBtn', 'Start');
        assert.equal(await viewer.$('#remoteVideo video'), null);
    })(t);
});
