// Snapshots from a browser: the Stream Snapshot demo page with our SDK, and the unmodified
// official Web SDK, take a PNG of a stream published from Chromium's fake camera.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
    TEST_TIMEOUT_MS, fixture, openSdkPage, serveSdkPages, waitForStatus, waitForStreamEvents, waitForText,
} from './harness.mjs';

const PAGE = '/client/examples/demo/streaming/stream-snapshot/stream-snapshot.html';

let fx;
let files;
before(async () => { fx = await fixture(); files = await serveSdkPages(); });
after(async () => { await files?.close(); await fx?.close(); });

/** Width and height from a PNG's IHDR chunk. */
function pngSize(base64) {
    const b = Buffer.from(base64, 'base64');
    assert.equal(b.subarray(1, 4).toString(), 'PNG', 'a PNG');
    return [b.readUInt32BE(16), b.readUInt32BE(20)];
}

test('Stream Snapshot page: a PNG of the published camera at its size', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const page = await (await fx.browser('snapshot-page')).newPage('snapshot');
        await page.goto(fx.server.webUrl(`${PAGE}?ws=${fx.server.ws}`));
        await page.click('#publishBtn');
        await waitForText(page, '#status', 'PUBLISHING');
        const started = Date.now();
        await page.click('#snapshotBtn');
        await waitForText(page, '#snapshotStatus', 'completed');
        t.diagnostic(`snapshot shown ${Date.now() - started} ms after the click`);
        const img = await page.$eval('#snapshotImg', (i) => ({ w: i.naturalWidth, h: i.naturalHeight, src: i.src }));
        assert.deepEqual([img.w, img.h], [640, 480]);
        assert.deepEqual(pngSize(img.src.replace(/^data:image\/png;base64,/, '')), [640, 480]);
    })(t);
});

test('official Web SDK: stream.snapshot() gives snapshotCompleted with a PNG', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const page = await openSdkPage(fx, files, 'snapshot-official', 'official');
        const name = `snap-${Date.now()}`;
        await page.evaluate((n) => sdk.publish('pub', n), name);
        await waitForStatus(page, 'pub', 'PUBLISHING');
        const size = await page.waitForFunction(() => {
            const v = document.querySelector('#local video');
            return v && v.videoWidth > 0 && [v.videoWidth, v.videoHeight];
        }, null, { timeout: 10_000 }).then((h) => h.jsonValue());
        // As the WCS demo: a fresh stream object of the same name, never played.
        await page.evaluate((n) => { sdk.create('snap', { name: n }); sdk.call('snap', 'snapshot'); }, name);
        const [ev] = await waitForStreamEvents(page, 'snap', 1);
        assert.equal(ev.type, 'snapshotCompleted', JSON.stringify(ev).slice(0, 300));
        const got = pngSize(ev.payload.snapshot);
        t.diagnostic(`camera ${size.join('x')}, snapshot ${got.join('x')}`);
        assert.deepEqual(got, size);

        // Unknown name: snapshotFailed with the reason.
        await page.evaluate(() => { sdk.create('nope', { name: 'no-such-stream' }); sdk.call('nope', 'snapshot'); });
        const [bad] = await waitForStreamEvents(page, 'nope', 1);
        assert.deepEqual([bad.type, bad.payload.info], ['snapshotFailed', 'Stream not found']);
    })(t);
});
