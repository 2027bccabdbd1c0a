// The official Flashphoner Web SDK (npm @flashphoner/websdk 2.0.276, unmodified) against sluice:
// the Streamer flow (publish, preview of the same name in the same page) and the Player flow
// (a second browser plays; publisher stop; unknown name), with frames decoded.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
    sdkSuite,
    TEST_TIMEOUT_MS, expectFramesDecoded, openSdkPage, peerConnectionStates, statuses,
    waitForStatus,
} from './harness.mjs';

const suite = sdkSuite();

/** Width and height of the camera picture the SDK shows in the publisher's local display. */
function capturedSize(page) {
    return page.$eval('#local video', (v) => [v.videoWidth, v.videoHeight]);
}

test('official SDK: publish, preview the same name, stop', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await suite.fx.run(async () => {
        const name = `websdk-${Date.now().toString(36)}`;
        // As the Streamer demo: the stream name is in the WebSocket URL path.
        const page = await openSdkPage(suite.fx, suite.files, 'websdk-streamer', 'official', `/${name}`);
        await page.evaluate((n) => sdk.publish('pub', n), name);
        await waitForStatus(page, 'pub', 'PUBLISHING');
        const previewId = await page.evaluate((n) => sdk.play('preview', n), name);
        await waitForStatus(page, 'preview', 'PLAYING');

        // The SDK puts the remote video in the display with the stream id.
        assert.equal(await page.$eval('#remote video', (v) => v.id), previewId);
        const frames = await expectFramesDecoded(page, '#remote video');
        t.diagnostic(`preview ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames in the window`);
        // The picture has the size the SDK captured (its default constraints ask for 320x240).
        assert.deepEqual([frames.width, frames.height], await capturedSize(page));

        await page.evaluate(() => sdk.stop('pub'));
        const pub = await waitForStatus(page, 'pub', 'UNPUBLISHED');
        const preview = await waitForStatus(page, 'preview', 'STOPPED');
        assert.deepEqual(statuses(pub), ['PUBLISHING', 'UNPUBLISHED']);
        assert.deepEqual(statuses(preview), ['PENDING', 'PLAYING', 'STOPPED']);
        assert.equal(preview[2].info, 'Stopped by publisher stop');
        assert.deepEqual(await peerConnectionStates(page), ['closed', 'closed']);
        assert.deepEqual(await page.evaluate(() => sdk.sessionEvents), ['ESTABLISHED']);
    })(t);
});

test('official SDK: a second browser plays until the publisher stops; unknown name fails', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await suite.fx.run(async () => {
        const name = `websdk-play-${Date.now().toString(36)}`;
        const publisher = await openSdkPage(suite.fx, suite.files, 'websdk-publisher', 'official');
        const viewer = await openSdkPage(suite.fx, suite.files, 'websdk-viewer', 'official');

        await publisher.evaluate((n) => sdk.publish('pub', n), name);
        await waitForStatus(publisher, 'pub', 'PUBLISHING');

        await viewer.evaluate((n) => sdk.play('play', n), name);
        await waitForStatus(viewer, 'play', 'PLAYING');
        const frames = await expectFramesDecoded(viewer, '#remote video');
        t.diagnostic(`viewer ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames in the window`);
        assert.deepEqual([frames.width, frames.height], await capturedSize(publisher));

        // The play answer puts audio and video in one msid stream, so the official SDK's
        // `srcObject = event.streams[0]` carries both.
        await t.test('the viewer also plays the sound', async () => {
            await expectFramesDecoded(viewer, '#remote video', { audio: true });
        });

        await publisher.evaluate(() => sdk.stop('pub'));
        const pub = await waitForStatus(publisher, 'pub', 'UNPUBLISHED');
        const play = await waitForStatus(viewer, 'play', 'STOPPED');
        assert.deepEqual(statuses(pub), ['PUBLISHING', 'UNPUBLISHED']);
        assert.deepEqual(statuses(play), ['PENDING', 'PLAYING', 'STOPPED']);
        assert.equal(play[2].info, 'Stopped by publisher stop');
        // The SDK keeps the element for reuse but detaches the media.
        assert.equal(await viewer.$eval('#remote video', (v) => v.srcObject), null);

        // Same session, a name nobody publishes.
        await viewer.evaluate(() => sdk.play('missing', 'nobody-publishes-this'));
        const missing = await waitForStatus(viewer, 'missing', 'FAILED');
        assert.deepEqual(statuses(missing), ['PENDING', 'FAILED']);
        assert.equal(missing[1].info, 'Stream not found');
        assert.deepEqual(await viewer.evaluate(() => sdk.sessionEvents), ['ESTABLISHED']);
    })(t);
});
