// Scenario 1, defaults: the server started with no flags in its own network namespace
// (198.18.0.1), Chromium in another (198.18.0.2). The URL the server printed is https on the
// address it detected; from it a user opens the index page, follows the Streamer link and
// publishes (the https page is a secure context, so the camera works), and a second user plays
// the stream on the Player page of the same origin, with frames decoded and sound. Media flows
// straight to 198.18.0.1:31000.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { textOf } from '../browser/harness.mjs';
import {
    STREAMER, TEST_TIMEOUT_MS, checkPrintedUrl, env, rest, streamerAndPlayer, topoFixture, waitForText,
} from './lib.mjs';

const { url, host } = env();

let fx;
before(async () => { fx = await topoFixture(); });
after(async () => { await fx?.close(); });

test(`the printed URL is https on ${host}`, () => {
    checkPrintedUrl(url, host);
});

test('index -> Streamer publishes, Player plays with frames decoded', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, b) => {
        await streamerAndPlayer(t, b, url, host);
    })(t);
});

test('the Streamer page over plain http from another host says the camera needs https', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, b) => {
        // The plain-http web port, as a user who typed http:// would open it: not a secure
        // context, so the browser offers no camera. The page must say so, not stay blank.
        const page = await b.pub.newPage('insecure-streamer');
        const res = await page.goto(`http://${host}:9091${STREAMER}`);
        assert.equal(res.status(), 200);
        assert.equal(await page.evaluate(() => window.isSecureContext), false);
        await page.waitForFunction(() => /camera needs https or localhost/i.test(document.getElementById('notifyFlash').textContent));
        const notice = await textOf(page, '#notifyFlash');
        assert.ok(notice.includes(`https://${host}:8888${STREAMER}`), `notice names the https page: ${notice}`);
        await page.click('#publishBtn');
        await waitForText(page, '#status', 'FAILED');
        await page.waitForFunction(() => /camera needs https or localhost/.test(document.getElementById('info').textContent));
        t.diagnostic(`page says: ${notice} / ${await textOf(page, '#info')}`);
    })(t);
});

test('the management REST API refuses other hosts by default; TURN credentials stay open', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, b) => {
        const origin = new URL(url).origin;
        const refused = await rest(b.pub, origin, '/stream/find_all', undefined, { key: null });
        assert.equal(refused.status, 401, JSON.stringify(refused));
        assert.match(refused.body.error, /--api-key/);
        const terminate = await rest(b.pub, origin, '/stream/terminate', { published: true }, { key: null });
        assert.equal(terminate.status, 401);
        const creds = await rest(b.pub, origin, '/turn/credentials', undefined, { key: null });
        assert.equal(creds.status, 200, JSON.stringify(creds));
        assert.ok(creds.body.username && creds.body.credential);
        t.diagnostic(`refusal: ${refused.body.error}`);
    })(t);
});
