// Instant start, measured: how long a viewer waits for its first decoded frame, from the SDK's
// play() to `framesDecoded > 0` in Chromium's getStats, for sources that cannot make a keyframe
// on request (an RTMP encoder with a keyframe every 4 s) and for a browser publisher. A viewer
// gets the GOP the server holds as soon as its peer connects, so it does not wait for the next
// keyframe. Figures are printed (p50 and worst of 6 plays each), not asserted: see BENCHMARKS.md.
// What is asserted: every play decodes frames.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
    STATUS_TIMEOUT_MS, TEST_TIMEOUT_MS, fixture, inboundMedia, openSdkPage, publishRtmp, serveSdkPages, sleep,
    waitForStatus,
} from './harness.mjs';

const PLAYS = 6;

let fx;
let files;
let encoder;
before(async () => { fx = await fixture(); files = await serveSdkPages(); });
after(async () => { encoder?.kill('SIGKILL'); await files?.close(); await fx?.close(); });

/** Play `name` PLAYS times from one page; the ms from play() to the first decoded frame, each. */
async function firstFrameTimes(page, name) {
    const times = [];
    for (let i = 0; i < PLAYS; i++) {
        const key = `p${i}`;
        const t0 = Date.now();
        await page.evaluate(([k, n]) => sdk.play(k, n), [key, name]);
        let decoded = 0;
        while (Date.now() - t0 < STATUS_TIMEOUT_MS) {
            decoded = (await inboundMedia(page)).framesDecoded;
            if (decoded > 0) break;
            await sleep(10);
        }
        assert.ok(decoded > 0, `play ${i} of ${name}: no frame decoded`);
        times.push(Date.now() - t0);
        await page.evaluate((k) => sdk.stop(k), key);
        await waitForStatus(page, key, 'STOPPED');
        // Land the next play at another point of the source's GOP.
        await sleep(700 + i * 310);
    }
    return times;
}

function summary(times) {
    const s = [...times].sort((a, b) => a - b);
    return `p50 ${s[Math.floor(s.length / 2)]} ms, worst ${s.at(-1)} ms (${times.join(', ')})`;
}

test('first frame: RTMP encoder with a keyframe every 4 s, and a browser publisher', { timeout: TEST_TIMEOUT_MS * 2 }, async (t) => {
    await fx.run(async () => {
        encoder = publishRtmp(`rtmp://127.0.0.1:${fx.server.rtmp}/live/ff-gop4`, { gop: 120 });
        const viewer = await openSdkPage(fx, files, 'viewer', 'ours');
        await sleep(5000); // a full GOP held
        const rtmp = await firstFrameTimes(viewer, 'ff-gop4');
        t.diagnostic(`RTMP (GOP 4 s): ${summary(rtmp)}`);

        const publisher = await openSdkPage(fx, files, 'publisher', 'ours');
        await publisher.evaluate(() => sdk.publish('cam', 'ff-browser'));
        await waitForStatus(publisher, 'cam', 'PUBLISHING');
        await sleep(1000);
        const browser = await firstFrameTimes(viewer, 'ff-browser');
        t.diagnostic(`browser publisher: ${summary(browser)}`);
    })(t);
});
