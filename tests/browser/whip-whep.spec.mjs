// WHIP and WHEP from Chromium with the npm `whip-whep` clients (medooze's WHIPClient and
// WHEPClient, unmodified), on a page served from another origin, so every request is
// cross-origin and needs sluice's CORS answers (preflight, exposed Location/ETag/Link):
// - WHIPClient publishes the fake camera; a second browser plays the stream over the WCS
//   protocol in the Player demo page with frames and sound; WHIPClient.stop() (DELETE) stops
//   the viewer.
// - the Streamer demo page publishes over the WCS protocol; WHEPClient plays it with frames.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
    TESTS_DIR, TEST_TIMEOUT_MS, expectFramesDecoded, fixture, serveFiles, textOf, waitForText,
} from './harness.mjs';

const STREAMER = '/client/examples/demo/streaming/streamer/streamer.html';
const PLAYER = '/client/examples/demo/streaming/player/player.html';

let fx;
let files;
before(async () => {
    fx = await fixture();
    files = await serveFiles({
        '/whip-whep/': join(TESTS_DIR, 'node_modules', 'whip-whep'),
        '/': join(TESTS_DIR, 'browser', 'pages'),
    });
});
after(async () => {
    await files?.close();
    await fx?.close();
});

async function clientsPage(label) {
    const page = await (await fx.browser(label)).newPage(label);
    await page.goto(files.url('/whip.html'));
    await page.waitForFunction(() => window.clientsReady === true);
    return page;
}

test('WHIPClient publishes from another origin; the Player page plays it over WCS', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const name = `whip-${Date.now()}`;
        const publisher = await clientsPage('whip');
        const t0 = Date.now();
        const resource = await publisher.evaluate((url) => window.publishWhip(url), server.webUrl(`/whip/${name}`));
        t.diagnostic(`WHIP publish connected in ${Date.now() - t0} ms; resource ${resource}`);
        assert.match(resource, new RegExp(`/whip/${name}/[0-9a-f]{32}$`));

        const viewer = await (await fx.browser('viewer')).newPage('player');
        await viewer.goto(server.webUrl(`${PLAYER}?ws=${server.ws}&streamName=${name}`));
        await viewer.click('#playBtn');
        await waitForText(viewer, '#status', 'PLAYING');
        const frames = await expectFramesDecoded(viewer, '#remoteVideo video', { audio: true });
        t.diagnostic(`WCS viewer ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames`);
        assert.deepEqual([frames.width, frames.height], [640, 480]);

        // WHIPClient.stop(): the peer connection closes and the resource is deleted.
        await publisher.evaluate(() => window.whip.stop());
        await waitForText(viewer, '#status', 'STOPPED');
        assert.equal(await textOf(viewer, '#info'), 'Stopped by publisher stop');
    })(t);
});

test('WHEPClient plays a stream the Streamer page publishes over WCS', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const publisher = await (await fx.browser('streamer')).newPage('streamer');
        await publisher.goto(server.webUrl(`${STREAMER}?ws=${server.ws}`));
        const name = (await publisher.inputValue('#url')).split('/')[3];
        await publisher.click('#publishBtn');
        await waitForText(publisher, '#status', 'PUBLISHING');

        const player = await clientsPage('whep');
        const t0 = Date.now();
        const resource = await player.evaluate((url) => window.playWhep(url), server.webUrl(`/whep/${name}`));
        t.diagnostic(`WHEP play connected in ${Date.now() - t0} ms; resource ${resource}`);
        const frames = await expectFramesDecoded(player, '#video', { audio: true });
        t.diagnostic(`WHEP viewer ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames`);
        assert.deepEqual([frames.width, frames.height], [640, 480]);
        await player.evaluate(() => window.whep.stop());
    })(t);
});

test('demo pages: the WHIP Publisher page publishes, the WHEP Player page plays, Stop ends both', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const publisher = await (await fx.browser('whip-page')).newPage('whip-publisher');
        await publisher.goto(server.webUrl('/index.html'));
        await publisher.click('#demo-whip-publisher');
        await publisher.waitForSelector('#endpoint');
        const endpoint = await publisher.inputValue('#endpoint');
        const name = decodeURIComponent(endpoint.split('/').pop());
        assert.equal(endpoint, server.webUrl(`/whip/${name}`));
        await publisher.click('#publishBtn');
        await waitForText(publisher, '#status', 'PUBLISHING');

        const player = await (await fx.browser('whep-page')).newPage('whep-player');
        await player.goto(server.webUrl(`/client/examples/demo/streaming/whep-player/whep-player.html?streamName=${name}`));
        await player.click('#playBtn');
        await waitForText(player, '#status', 'PLAYING');
        const frames = await expectFramesDecoded(player, '#remoteVideo', { audio: true });
        t.diagnostic(`WHEP page ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames`);

        await player.click('#playBtn');
        await waitForText(player, '#status', 'STOPPED');
        await publisher.click('#publishBtn');
        await waitForText(publisher, '#status', 'UNPUBLISHED');
        const found = await fetch(server.restUrl('/rest-api/stream/find'), {
            method: 'POST', body: JSON.stringify({ name, published: true }),
        });
        assert.equal(found.status, 404, 'the stream ended with the DELETE');
    })(t);
});
