// The Dashboard demo page: two streams published with our SDK appear as tiles (name, source,
// resolution, REC badge on the recorded one) with thumbnails from the snapshot API that change
// over time; a click plays one in the page with frames decoded while the totals count the viewer;
// a stream that stops loses its tile. A screenshot is kept in target/test-artifacts/. With
// --api-key the page says the REST API refused it until the key is typed in.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
    REPO_ROOT, STATUS_TIMEOUT_MS, TEST_TIMEOUT_MS, expectFramesDecoded, fixture, openSdkPage, serveSdkPages,
    textOf, waitForStatus, waitForText,
} from './harness.mjs';

const DASHBOARD = '/client/examples/demo/streaming/dashboard/dashboard.html';
const ARTIFACTS = join(REPO_ROOT, 'target', 'test-artifacts');
/** How long a thumbnail may take to change: the page refreshes it every 3.5 s ± 0.5 s. */
const THUMB_CHANGE_MS = 10_000;

let fx;
let files;
before(async () => { fx = await fixture(); files = await serveSdkPages(); });
after(async () => { await files?.close(); await fx?.close(); });

/** The tiles shown: [{name, source, resolution, rec, viewers}] in page order. */
function tilesOf(page) {
    return page.$$eval('#tiles .tile', (ts) => ts.map((t) => ({
        name: t.dataset.name,
        source: t.querySelector('.source').textContent,
        resolution: t.querySelector('.resolution').textContent,
        rec: !t.querySelector('.rec').hidden,
        viewers: t.querySelector('.viewers').textContent,
    })));
}

/** Wait until the tiles' names are `names` (in any order). */
async function waitForTiles(page, names) {
    const want = [...names].sort();
    try {
        await page.waitForFunction((w) => JSON.stringify([...document.querySelectorAll('#tiles .tile')]
            .map((t) => t.dataset.name).sort()) === JSON.stringify(w), want, { timeout: STATUS_TIMEOUT_MS, polling: 100 });
    } catch {
        throw new Error(`tiles ${JSON.stringify(await tilesOf(page))}, want ${JSON.stringify(want)} ` +
            `(notice: "${await textOf(page, '#notice')}")`);
    }
}

/** The thumbnail of the tile for `name`: {w, h, src} (naturalWidth/Height, the data URL). */
function thumbOf(page, name) {
    return page.$eval(`#tiles .tile[data-name="${name}"] img.thumb`,
        (i) => ({ w: i.naturalWidth, h: i.naturalHeight, src: i.getAttribute('src') || '' }));
}

test('dashboard: tiles with live thumbnails, totals, click to play', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const names = ['dash-cam-a', 'dash-cam-b'];
        const publisher = await openSdkPage(fx, files, 'publisher', 'ours');
        await publisher.evaluate(([a, b]) => {
            sdk.publish('a', a, { record: true });
            sdk.publish('b', b);
        }, names);
        await waitForStatus(publisher, 'a', 'PUBLISHING');
        await waitForStatus(publisher, 'b', 'PUBLISHING');

        // From the index page, which carries ?ws= and ?rest= over to the dashboard link.
        const page = await (await fx.browser('dashboard')).newPage('dashboard');
        const query = `?ws=${server.ws}&rest=${server.rest}`;
        await page.goto(server.webUrl(`/${query}`));
        await page.click('#demo-dashboard');
        await page.waitForURL(server.webUrl(`${DASHBOARD}${query}`));

        await waitForTiles(page, names);
        await waitForText(page, '#totalStreams', '2');
        assert.equal(await textOf(page, '#totalRecordings'), '1');
        assert.equal(await textOf(page, '#totalViewers'), '0');
        assert.equal(await page.isHidden('#notice'), true);
        const tiles = await tilesOf(page);
        t.diagnostic(`tiles ${JSON.stringify(tiles)}`);
        for (const tile of tiles) {
            assert.equal(tile.source, 'WebRTC', JSON.stringify(tile));
            assert.equal(tile.viewers, '0', JSON.stringify(tile));
            assert.equal(tile.rec, tile.name === names[0], `REC badge only on the recorded stream: ${JSON.stringify(tile)}`);
        }

        // Thumbnails: decoded pictures that change (the fake camera draws a running clock).
        const first = {};
        for (const name of names) {
            await page.waitForFunction((sel) => document.querySelector(sel)?.naturalWidth > 0,
                `#tiles .tile[data-name="${name}"] img.thumb`, { timeout: STATUS_TIMEOUT_MS, polling: 100 })
                .catch(async () => { throw new Error(`${name}: no thumbnail, tile ${JSON.stringify(await tilesOf(page))}`); });
            first[name] = { ...(await thumbOf(page, name)), at: Date.now() };
            assert.match(first[name].src, /^data:image\/(jpeg|png);base64,/);
        }
        for (const name of names) {
            await page.waitForFunction(([sel, src]) => {
                const i = document.querySelector(sel);
                return i && i.naturalWidth > 0 && i.getAttribute('src') !== src;
            }, [`#tiles .tile[data-name="${name}"] img.thumb`, first[name].src], { timeout: THUMB_CHANGE_MS, polling: 100 })
                .catch(() => { throw new Error(`${name}: thumbnail unchanged for ${THUMB_CHANGE_MS} ms`); });
            const now = await thumbOf(page, name);
            t.diagnostic(`${name}: thumbnail ${now.w}x${now.h}, changed ${Date.now() - first[name].at} ms after the first`);
            assert.ok(now.w > 0 && now.h > 0);
        }
        // The fake camera's size: from the stream object, or else from a full-size snapshot.
        for (const tile of await tilesOf(page)) {
            assert.equal(tile.resolution, '640x480', JSON.stringify(tile));
        }

        // Click a tile: it plays in the page, and the totals count the viewer.
        await page.click(`#tiles .tile[data-name="${names[1]}"]`);
        await waitForText(page, '#status', 'PLAYING');
        assert.equal(await textOf(page, '#playingName'), names[1]);
        const media = await expectFramesDecoded(page, '#remoteVideo video');
        t.diagnostic(`played ${media.width}x${media.height} ${media.codec}, ${media.decoded} frames decoded in the window`);
        await waitForText(page, '#totalViewers', '1');
        await waitForText(page, `#tiles .tile[data-name="${names[1]}"] .viewers`, '1');
        assert.equal(await textOf(page, '#totalStreams'), '2');
        assert.equal(await page.$eval(`#tiles .tile[data-name="${names[1]}"]`, (e) => e.classList.contains('playing')), true);

        // The measured bitrate (the server's metrics of each publisher) with its sparkline.
        for (const name of names) {
            const sel = `#tiles .tile[data-name="${name}"] .bitrate`;
            await page.waitForFunction((q) => /\d+(\.\d+)? (kbps|Mbps)$/.test(document.querySelector(q)?.textContent || ''),
                sel, { timeout: STATUS_TIMEOUT_MS, polling: 200 })
                .catch(async () => { throw new Error(`${name}: no bitrate shown ("${await textOf(page, sel)}")`); });
            t.diagnostic(`${name}: ${await textOf(page, sel)}`);
        }
        mkdirSync(ARTIFACTS, { recursive: true });
        const shot = join(ARTIFACTS, 'dashboard.png');
        await page.screenshot({ path: shot, fullPage: true });
        t.diagnostic(`screenshot ${shot}`);

        // Stop, then the recorded stream goes away: its tile with it.
        await page.click('#stopBtn');
        await waitForText(page, '#status', 'STOPPED');
        await publisher.evaluate(() => sdk.stop('a'));
        await waitForStatus(publisher, 'a', 'UNPUBLISHED');
        await waitForTiles(page, [names[1]]);
        await waitForText(page, '#totalStreams', '1');
        await waitForText(page, '#totalViewers', '0');
        assert.equal(await textOf(page, '#totalRecordings'), '0');
    })(t);
});

test('dashboard with --api-key: refused until the key is set, then kept', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const keyed = await fixture({ serverArgs: ['--api-key', 'dash-key-1'] });
    try {
        await keyed.run(async () => {
            const { server } = keyed;
            const page = await (await keyed.browser('dashboard-key')).newPage('dashboard');
            const url = server.webUrl(`${DASHBOARD}?ws=${server.ws}&rest=${server.rest}`);
            await page.goto(url);
            await page.waitForFunction(() => !document.getElementById('notice').hidden, null, { timeout: STATUS_TIMEOUT_MS });
            const refused = await textOf(page, '#notice');
            t.diagnostic(`no key: ${refused}`);
            assert.match(refused, /^The REST API refused: .*HTTP 401.*Set an API key/);

            await page.fill('#apiKey', 'wrong');
            await page.click('#saveKeyBtn');
            await waitForText(page, '#notice', 'The REST API refused: invalid API key or token ' +
                '(HTTP 403 with the API key set below: check it).');

            await page.fill('#apiKey', 'dash-key-1');
            await page.click('#saveKeyBtn');
            await page.waitForFunction(() => document.getElementById('notice').hidden, null, { timeout: STATUS_TIMEOUT_MS });
            await waitForText(page, '#totalStreams', '0');
            assert.equal(await page.isHidden('#empty'), false);

            // Kept in the browser: a reload reads the streams at once.
            await page.reload();
            assert.equal(await page.inputValue('#apiKey'), 'dash-key-1');
            await waitForText(page, '#totalStreams', '0');
            assert.equal(await page.isHidden('#notice'), true);
        })(t);
    } finally {
        await keyed.close();
    }
});
