// What a publisher does reaches its viewers: mute/unmute notices and data arrive as STREAM_EVENT,
// a snapshot request is answered with a stream event, and when the publisher's session closes
// the viewer gets STOPPED "Stopped by publisher stop". Run across SDKs both ways: our SDK
// publishing to the official one, and the official one publishing to ours.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
    sdkSuite,
    TEST_TIMEOUT_MS, openSdkPage, statuses, waitForStatus, waitForStreamEvents,
} from './harness.mjs';

const suite = sdkSuite();

/** Whether the publisher page's local track of `kind` is enabled. */
function localTrackEnabled(page, kind) {
    return page.$eval('#local video', (v, k) => v.srcObject.getTracks().find((t) => t.kind === k).enabled, kind);
}

for (const [pubSdk, viewSdk] of [['ours', 'official'], ['official', 'ours']]) {
    test(`stream events from a ${pubSdk}-SDK publisher reach a ${viewSdk}-SDK viewer`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await suite.fx.run(async () => {
            const name = `events-${pubSdk}-${Date.now().toString(36)}`;
            const pub = await openSdkPage(suite.fx, suite.files, `${pubSdk}-publisher`, pubSdk);
            const viewer = await openSdkPage(suite.fx, suite.files, `${viewSdk}-viewer`, viewSdk);
            await pub.evaluate((n) => sdk.publish('pub', n), name);
            await waitForStatus(pub, 'pub', 'PUBLISHING');
            await viewer.evaluate((n) => sdk.play('play', n), name);
            await waitForStatus(viewer, 'play', 'PLAYING');

            // Mute: the local track is disabled and the viewer is told.
            await pub.evaluate(() => sdk.call('pub', 'muteAudio'));
            assert.equal(await localTrackEnabled(pub, 'audio'), false);
            assert.equal(await pub.evaluate(() => sdk.call('pub', 'isAudioMuted')), true);
            let events = await waitForStreamEvents(viewer, 'play', 1);
            assert.equal(events[0].type, 'audioMuted');
            // WCS pages read payload.streamName of mute notices (Media Devices Manager).
            assert.equal(events[0].payload?.streamName, name);

            await pub.evaluate(() => sdk.call('pub', 'sendData', { hello: 'world', n: 1 }));
            await pub.evaluate(() => sdk.call('pub', 'unmuteAudio'));
            await pub.evaluate(() => sdk.call('pub', 'muteVideo'));
            assert.equal(await localTrackEnabled(pub, 'audio'), true);
            assert.equal(await localTrackEnabled(pub, 'video'), false);
            events = await waitForStreamEvents(viewer, 'play', 4);
            assert.deepEqual(events.map((e) => e.type), ['audioMuted', 'data', 'audioUnmuted', 'videoMuted']);
            assert.deepEqual(events[1].payload, { hello: 'world', n: 1 });
            // Stream events never change the stream status.
            assert.equal(await viewer.evaluate(() => sdk.call('play', 'status')), 'PLAYING');

            // Snapshot, as the Stream Snapshot demo: a NEW stream object named as the published one.
            await viewer.evaluate((n) => sdk.create('snap', { name: n }), name);
            await viewer.evaluate(() => sdk.call('snap', 'snapshot'));
            const [snap] = await waitForStreamEvents(viewer, 'snap', 1);
            if (snap.type === 'snapshotCompleted') {
                assert.match(snap.payload.snapshot, /^iVBORw0KGgo/, 'snapshot is not a base64 PNG');
            } else {
                assert.equal(snap.type, 'snapshotFailed');
                assert.ok(typeof snap.payload.info === 'string' && snap.payload.info.length > 0, 'snapshotFailed without info');
                t.diagnostic(`snapshot failed: ${snap.payload.info}`);
            }
            assert.equal(await viewer.evaluate(() => sdk.call('snap', 'status')), 'NEW');
            assert.deepEqual(await viewer.evaluate(() => sdk.events.snap), []);

            // The publisher's session closes: its stream fails locally, the viewer is stopped.
            await pub.evaluate(() => sdk.disconnect());
            await pub.waitForFunction(() => sdk.sessionEvents.includes('DISCONNECTED'));
            assert.deepEqual(statuses(await waitForStatus(pub, 'pub', 'FAILED')), ['PUBLISHING', 'FAILED']);
            const play = await waitForStatus(viewer, 'play', 'STOPPED');
            assert.deepEqual(statuses(play), ['PENDING', 'PLAYING', 'STOPPED']);
            assert.equal(play[2].info, 'Stopped by publisher stop');
            assert.deepEqual(await viewer.evaluate(() => sdk.sessionEvents), ['ESTABLISHED']);
        })(t);
    });
}
