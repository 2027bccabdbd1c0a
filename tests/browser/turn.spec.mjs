// Firewall traversal through sluice's embedded TURN server: Chromium with iceTransportPolicy
// "relay" and only sluice's TURN server publishes, a second browser plays, and every packet
// goes through a TURN allocation. Checked in getStats: the selected candidate pair's local
// candidate is `relay`, with the relay protocol asked for (tcp or udp), and frames are decoded.
// Once with our Firewall Traversal demo page (TURN over TCP, then UDP), once with the official
// Web SDK's mediaOptions in a page of our own (TURN over TCP).
//
// The server runs with its default relay policy (no --turn-allow-peer): relays may reach its
// own media port, which is all a browser talking to sluice needs.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
    STATUS_TIMEOUT_MS, TEST_TIMEOUT_MS, assertRelayed, expectFramesDecoded, fixture, rest, selectedPairs, serveSdkPages,
    waitForText,
} from './harness.mjs';

const PAGE = '/client/examples/demo/streaming/firewall-traversal/firewall-traversal.html';

let fx;
let files;
let turnPort;
before(async () => {
    fx = await fixture();
    files = await serveSdkPages();
    const creds = await rest(fx.server, '/turn/credentials');
    assert.equal(creds.status, 200, JSON.stringify(creds.body));
    turnPort = +/:(\d+)\?transport=tcp$/.exec(creds.body.urls[1])[1];
});
after(async () => {
    await files?.close();
    await fx?.close();
});

async function turnStats() {
    const r = await fetch(fx.server.restUrl('/turn/stats'));
    return r.json();
}

/** Open the demo page and wait for the credentials it fetches from the REST API. */
async function demoPage(label) {
    const page = await (await fx.browser(label)).newPage(label);
    await page.goto(fx.server.webUrl(`${PAGE}?ws=${fx.server.ws}&rest=${fx.server.rest}`));
    await page.waitForFunction(() => document.getElementById('turnCredential').getAttribute('data-loaded') === 'true',
        null, { timeout: STATUS_TIMEOUT_MS });
    return page;
}

for (const transport of ['tcp', 'udp']) {
    test(`demo page publishes and plays through TURN over ${transport.toUpperCase()}`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await fx.run(async () => {
            const before = await turnStats();
            const publisher = await demoPage(`pub-${transport}`);
            // The form as the page fills it: the page host, the server's TURN port over TCP,
            // time-limited credentials, Force relay checked.
            assert.equal(await publisher.inputValue('#turnUrl'), `turn:127.0.0.1:${turnPort}?transport=tcp`);
            assert.match(await publisher.inputValue('#turnUser'), /^\d+:firewall-traversal$/);
            assert.ok((await publisher.inputValue('#turnCredential')).length >= 20);
            assert.equal(await publisher.isChecked('#forceRelay'), true);
            assert.equal(await publisher.inputValue('#url'), `ws://127.0.0.1:${fx.server.ws}`);
            if (transport === 'udp') {
                await publisher.fill('#turnUrl', `turn:127.0.0.1:${turnPort}?transport=udp`);
            }
            const name = await publisher.inputValue('#streamName');
            await publisher.click('#publishBtn');
            await waitForText(publisher, '#publishStatus', 'PUBLISHING');

            const viewer = await demoPage(`play-${transport}`);
            if (transport === 'udp') {
                await viewer.fill('#turnUrl', `turn:127.0.0.1:${turnPort}?transport=udp`);
            }
            await viewer.fill('#streamName', name);
            await viewer.click('#playBtn');
            await waitForText(viewer, '#playStatus', 'PLAYING');
            const frames = await expectFramesDecoded(viewer, '#remoteVideo video');
            t.diagnostic(`viewer ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames in the window`);

            const pub = await selectedPairs(publisher);
            const play = await selectedPairs(viewer);
            t.diagnostic(`publisher ${JSON.stringify(pub)}; viewer ${JSON.stringify(play)}`);
            assertRelayed(pub, transport, 'publisher');
            assertRelayed(play, transport, 'viewer');
            // The page shows the path it took.
            await viewer.waitForFunction(() => document.getElementById('playPath').getAttribute('data-path'));
            assert.equal(await viewer.$eval('#playPath', (e) => e.getAttribute('data-path')), `relay ${transport}`);

            // And the server relayed it: allocations made, media both ways.
            const after = await turnStats();
            t.diagnostic(`TURN stats ${JSON.stringify(after)}`);
            assert.ok(after.allocationsTotal - before.allocationsTotal >= 2, JSON.stringify(after));
            assert.ok(after.toPeer.packets - before.toPeer.packets > 100, JSON.stringify(after));
            assert.ok(after.toClient.packets - before.toClient.packets > 100, JSON.stringify(after));
            assert.equal(after.authFailures, 0, JSON.stringify(after));

            await publisher.click('#publishBtn');
            await waitForText(publisher, '#publishStatus', 'UNPUBLISHED');
            await waitForText(viewer, '#playStatus', 'STOPPED');
        })(t);
    });
}

test('official Web SDK publishes and plays with mediaOptions through TURN over TCP', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const creds = await rest(fx.server, '/turn/credentials');
        const iceServer = {
            urls: `turn:127.0.0.1:${turnPort}?transport=tcp`,
            username: creds.body.username,
            credential: creds.body.credential,
        };
        const open = async (label) => {
            const page = await (await fx.browser(label)).newPage(label);
            await page.goto(files.url('/turn.html'));
            assert.equal(await page.evaluate(([u, s]) => turn.connect(u, s), [fx.server.wsUrl(), iceServer]), 'ESTABLISHED');
            return page;
        };
        const waitFor = (page, kind, status) => page.waitForFunction(([k, s]) => turn.status(k).includes(s),
            [kind, status], { timeout: STATUS_TIMEOUT_MS, polling: 50 }).catch(async () => {
            throw new Error(`${kind}: no ${status}: ${JSON.stringify(await page.evaluate((k) => turn.status(k), kind))}`);
        });
        const name = `turn-sdk-${Date.now().toString(36)}`;
        const publisher = await open('sdk-pub');
        await publisher.evaluate((n) => turn.start('publish', n), name);
        await waitFor(publisher, 'publish', 'PUBLISHING');
        const viewer = await open('sdk-play');
        await viewer.evaluate((n) => turn.start('play', n), name);
        await waitFor(viewer, 'play', 'PLAYING');
        const frames = await expectFramesDecoded(viewer, '#remote video');
        t.diagnostic(`viewer ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames in the window`);
        const pub = await selectedPairs(publisher);
        const play = await selectedPairs(viewer);
        t.diagnostic(`publisher ${JSON.stringify(pub)}; viewer ${JSON.stringify(play)}`);
        assertRelayed(pub, 'tcp', 'publisher');
        assertRelayed(play, 'tcp', 'viewer');
    })(t);
});
