// Stopping ends a stream with UNPUBLISHED (publisher) or STOPPED (player) even when the
// signalling path is slower than the media path. Both SDKs send unPublishStream/stopStream and
// close their peer connection at once, so the DTLS close can reach the server before the stop
// request; here the WebSocket delays those two requests by STOP_DELAY_MS to make that order
// certain instead of a race.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { sdkSuite, TEST_TIMEOUT_MS, openSdkPage, statuses, waitForStatus } from './harness.mjs';

/** Extra latency of the stop requests on the WebSocket (a slow or proxied signalling path). */
const STOP_DELAY_MS = 300;

const suite = sdkSuite();

/** Relay the page's WebSocket through Playwright, holding back stop requests. */
async function delayStopRequests(page) {
    await page.routeWebSocket(/.*/, (ws) => {
        const server = ws.connectToServer();
        ws.onMessage((m) => {
            if (/"message":"(unPublishStream|stopStream)"/.test(m)) setTimeout(() => server.send(m), STOP_DELAY_MS);
            else server.send(m);
        });
        server.onMessage((m) => ws.send(m));
    });
}

// The server waits PEER_CLOSE_GRACE (peer_link.rs) after a DTLS close for the stop request
// that the browser sent just before it: the stream ends UNPUBLISHED/STOPPED, not FAILED.

for (const which of ['ours', 'official']) {
    test(`${which} SDK: stop gives STOPPED and UNPUBLISHED when the stop request lags`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await suite.fx.run(async () => {
            const name = `stop-${which}-${Date.now().toString(36)}`;
            const page = await openSdkPage(suite.fx, suite.files, `${which}-stop`, which, '', delayStopRequests);
            await page.evaluate((n) => sdk.publish('pub', n), name);
            await waitForStatus(page, 'pub', 'PUBLISHING');
            await page.evaluate((n) => sdk.play('play', n), name);
            await waitForStatus(page, 'play', 'PLAYING');

            await page.evaluate(() => sdk.stop('play'));
            const play = await page.waitForFunction(() => sdk.events.play.length >= 3 && sdk.events.play)
                .then((h) => h.jsonValue());
            assert.deepEqual(play.slice(2), [{ status: 'STOPPED', info: 'Stopped by user' }]);

            await page.evaluate(() => sdk.stop('pub'));
            const pub = await page.waitForFunction(() => sdk.events.pub.length >= 2 && sdk.events.pub)
                .then((h) => h.jsonValue());
            assert.deepEqual(statuses(pub), ['PUBLISHING', 'UNPUBLISHED']);
        })(t);
    });
}
