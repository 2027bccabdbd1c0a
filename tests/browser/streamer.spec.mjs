// The Streamer demo page with our SDK: Start publishes the camera under the name in the URL,
// the preview plays it back from the server with frames decoded, Stop ends both.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
    TEST_TIMEOUT_MS, expectFramesDecoded, expectVideoSize, fixture, peerConnectionStates, recordSignalling, rest, textOf, waitForFrames,
    waitForText,
} from './harness.mjs';

const STREAMER = '/client/examples/demo/streaming/streamer/streamer.html';

let fx;
before(async () => { fx = await fixture(); });
after(async () => { await fx?.close(); });

test('streamer publishes, previews with frames decoded, and stops', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const browser = await fx.browser('streamer');
        const page = await browser.newPage('streamer');
        const frames = recordSignalling(page);
        // From the index page, which lists every demo and carries ?ws= over to them.
        await page.goto(server.webUrl(`/?ws=${server.ws}`));
        const links = await page.$$eval('#demos a', (as) => as.map((a) => [a.id, a.href]));
        assert.ok(links.some(([id]) => id === 'demo-streamer') && links.some(([id]) => id === 'demo-player'), JSON.stringify(links));
        for (const [id, href] of links) {
            assert.ok(href.endsWith(`?ws=${server.ws}`), `${id} -> ${href}`);
            assert.equal((await fetch(href)).status, 200, `${id} -> ${href}`);
        }
        await page.click('#demo-streamer');
        await page.waitForURL(server.webUrl(`${STREAMER}?ws=${server.ws}`));
        await page.waitForFunction(() => document.getElementById('url').value !== '');

        // The URL field is prefilled ws://<page host>:<ws port>/<8-char random name>.
        const url = await page.inputValue('#url');
        const m = new RegExp(`^ws://127\\.0\\.0\\.1:${server.ws}/([a-z0-9]{8})$`).exec(url);
        assert.ok(m, `unexpected URL field ${url}`);
        const name = m[1];
        assert.equal(await textOf(page, '#publishBtn'), 'Start');

        await page.click('#publishBtn');
        await waitForText(page, '#status', 'PUBLISHING');
        await waitForText(page, '#previewStatus', 'PLAYING');
        await waitForText(page, '#publishBtn', 'Stop');
        assert.equal(await page.isEnabled('#publishBtn'), true);
        assert.equal(await textOf(page, '#info'), '');

        // The local preview shows the camera, muted.
        const local = await page.$eval('#localVideo video', (v) => ({ w: v.videoWidth, muted: v.muted }));
        assert.ok(local.w > 0, 'local camera preview has no picture');
        assert.equal(local.muted, true);

        // The server lists the stream as published under the URL's name.
        const found = await rest(server, '/stream/find', { name, published: true });
        assert.equal(found.status, 200);
        assert.equal(found.body.length, 1);
        assert.equal(found.body[0].status, 'PUBLISHING');
        assert.equal(found.body[0].videoCodec, 'H264');

        // The preview plays from the server: a picture and decoded frames keep coming.
        const previewId = await page.$eval('#remoteVideo video', (v) => v.id);
        assert.match(previewId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        const media = await expectFramesDecoded(page, '#remoteVideo video', { audio: true });
        t.diagnostic(`preview ${media.width}x${media.height} ${media.codec}, ` +
            `${media.decoded} frames decoded and ${media.audioSamples} audio samples played in the window`);
        assert.equal(media.codec, 'video/H264');
        await expectVideoSize(t, page, '#remoteVideo video', media, [640, 480]);

        // Stop: the preview stops, then the publisher is unpublished.
        await page.click('#publishBtn');
        await waitForText(page, '#status', 'UNPUBLISHED');
        await waitForText(page, '#previewStatus', 'STOPPED');
        await waitForText(page, '#publishBtn', 'Start');
        assert.equal(await page.isEnabled('#publishBtn'), true);
        assert.equal(await page.$('#remoteVideo video'), null, 'preview video element left behind');
        assert.deepEqual(await peerConnectionStates(page), ['closed', 'closed']);
        const gone = await rest(server, '/stream/find', { name });
        assert.equal(gone.status, 404, `stream still listed: ${JSON.stringify(gone.body)}`);

        // Start again: same session, same name, the cached camera is reused.
        await page.click('#publishBtn');
        await waitForText(page, '#status', 'PUBLISHING');
        await waitForText(page, '#previewStatus', 'PLAYING');
        assert.equal(await page.$$eval('#localVideo video', (vs) => vs.length), 1);
        await expectFramesDecoded(page, '#remoteVideo video');
        await page.click('#publishBtn');
        await waitForText(page, '#status', 'UNPUBLISHED');
        await waitForText(page, '#publishBtn', 'Start');

        // What the SDK said on the wire: one `connection` as the official SDK sends it, offers
        // without candidates (no trickle ICE), and a pong for every ping (the server pings
        // every 5 s).
        const sent = (m) => frames.filter((f) => f.dir === 'sent' && f.message === m);
        const [connection, ...again] = sent('connection');
        assert.equal(again.length, 0);
        assert.equal(connection.data.length, 1);
        assert.deepEqual(
            { appKey: connection.data[0].appKey, mediaProviders: connection.data[0].mediaProviders, clientVersion: connection.data[0].clientVersion },
            { appKey: 'defaultApp', mediaProviders: ['WebRTC'], clientVersion: '2.0' });
        const offers = [...sent('publishStream'), ...sent('playStream')];
        assert.equal(offers.length, 4);
        for (const { data: [o] } of offers) {
            assert.equal(o.name, name);
            assert.match(o.sdp, /^v=0/);
            assert.doesNotMatch(o.sdp, /a=candidate/);
        }
        assert.deepEqual(sent('publishStream').map((f) => [f.data[0].published, f.data[0].status, f.data[0].record]),
            [[true, 'PENDING', false], [true, 'PENDING', false]]);
        // Stop stops the preview; its STOPPED then stops the publisher.
        assert.deepEqual(frames.filter((f) => f.dir === 'sent' && /^(unPublishStream|stopStream)$/.test(f.message))
            .map((f) => f.message), ['stopStream', 'unPublishStream', 'stopStream', 'unPublishStream']);
        await waitForFrames(frames, (fs) => fs.some((f) => f.message === 'ping'), 'a ping from the server', 7_000);
        await waitForFrames(frames, (fs) => fs.findIndex((f) => f.dir === 'sent' && f.message === 'pong') >
            fs.findIndex((f) => f.message === 'ping'), 'the pong');
        assert.deepEqual(sent('pong')[0].data, [null]);
        assert.equal(frames.filter((f) => f.raw !== undefined).length, 0, 'a frame that is not JSON');
    })(t);
});
