// Scenario 2, 1:1 NAT as in a container or a cloud VM: the server runs with no flags and only
// SLUICE_PUBLIC_IP=198.18.0.100 in its environment; its host has 198.18.0.1, and the client
// namespace DNATs 198.18.0.100 to it (nftables, output hook), so the browser only ever knows
// 198.18.0.100. Through that address:
//   - the printed URL is https://198.18.0.100:8888/;
//   - index -> Streamer publishes, the Player page plays (media to 198.18.0.100:31000);
//   - the Firewall Traversal page publishes and plays with every packet relayed by the
//     server's TURN, over UDP and over TCP (forced relay; the page shows "relay udp|tcp");
//   - the official Web SDK (npm @flashphoner/websdk, on a page served from 127.0.0.1 in the
//     client namespace, a secure context) publishes to wss://198.18.0.100:8443, a second
//     browser plays;
//   - ffmpeg publishes over RTMP to rtmp://198.18.0.100:1935 and the Player page plays it;
//   - the server pulls, over WebRTC, a stream of a second sluice (the origin) that runs with no
//     flags on the client host, and the Player page plays it from the server: the server is the
//     ICE client there, from behind its NAT.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
    assertRelayed, expectFramesDecoded, openSdkPage, publishRtmp, selectedPairs, serveSdkPages, sleep, textOf,
    waitForStatus,
} from '../browser/harness.mjs';
import {
    FIREWALL, PORTS, TEST_TIMEOUT_MS, assertDirectTo, checkPrintedUrl, env, playOnPlayerPage, rest,
    streamerAndPlayer, topoFixture, waitForText, waitPublished,
} from './lib.mjs';

const { url, host } = env();
const origin = new URL(url).origin;

let fx;
let files;
let encoder;
before(async () => {
    fx = await topoFixture();
    files = await serveSdkPages();
});
after(async () => {
    encoder?.kill('SIGKILL');
    await files?.close();
    await fx?.close();
});

test(`the printed URL is https on the public address ${host}`, () => {
    checkPrintedUrl(url, host);
});

test('index -> Streamer publishes, Player plays with frames decoded', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, b) => {
        await streamerAndPlayer(t, b, url, host);
    })(t);
});

/** The Firewall Traversal page, once it has its TURN credentials from the https REST API. */
async function firewallPage(browser, label) {
    const page = await browser.newPage(label);
    await page.goto(`${origin}${FIREWALL}`);
    await page.waitForFunction(() => document.getElementById('turnCredential').getAttribute('data-loaded') === 'true')
        .catch(async () => {
            throw new Error(`${label}: no TURN credentials: info "${await textOf(page, '#info')}"`);
        });
    return page;
}

for (const transport of ['udp', 'tcp']) {
    test(`Firewall Traversal page: publish and play relayed by TURN over ${transport.toUpperCase()}`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await fx.run(async (t, b) => {
            const turnUrl = `turn:${host}:${PORTS.turn}?transport=${transport}`;
            const statsBefore = await rest(b.pub, origin, '/turn/stats');
            const publisher = await firewallPage(b.pub, `fw-pub-${transport}`);
            assert.equal(await publisher.inputValue('#turnUrl'), `turn:${host}:${PORTS.turn}?transport=tcp`);
            assert.equal(await publisher.inputValue('#url'), `wss://${host}:${PORTS.wss}`);
            assert.equal(await publisher.isChecked('#forceRelay'), true);
            await publisher.fill('#turnUrl', turnUrl);
            const name = await publisher.inputValue('#streamName');
            await publisher.click('#publishBtn');
            await waitForText(publisher, '#publishStatus', 'PUBLISHING');

            const viewer = await firewallPage(b.view, `fw-play-${transport}`);
            await viewer.fill('#turnUrl', turnUrl);
            await viewer.fill('#streamName', name);
            await viewer.click('#playBtn');
            await waitForText(viewer, '#playStatus', 'PLAYING');
            const media = await expectFramesDecoded(viewer, '#remoteVideo video');
            t.diagnostic(`viewer ${media.width}x${media.height} ${media.codec}, ${media.decoded} frames in the window`);

            // The page's own display of the path media took, and getStats, both sides first.
            const shown = [];
            for (const [page, id] of [[publisher, '#publishPath'], [viewer, '#playPath']]) {
                await page.waitForFunction((sel) => document.querySelector(sel).getAttribute('data-path'), id);
                shown.push(await page.$eval(id, (e) => e.getAttribute('data-path')));
            }
            t.diagnostic(`the pages show publish "${shown[0]}", play "${shown[1]}"`);
            const pubPairs = await selectedPairs(publisher);
            const playPairs = await selectedPairs(viewer);
            t.diagnostic(`publisher ${JSON.stringify(pubPairs)}`);
            t.diagnostic(`viewer ${JSON.stringify(playPairs)}`);
            assert.deepEqual(shown, [`relay ${transport}`, `relay ${transport}`], 'the pages\' path display');
            assertRelayed(pubPairs, transport, 'publisher');
            assertRelayed(playPairs, transport, 'viewer');
            const statsAfter = await rest(b.pub, origin, '/turn/stats');
            t.diagnostic(`TURN stats ${JSON.stringify(statsAfter.body)}`);
            if (statsBefore.status === 200 && statsAfter.status === 200) {
                assert.ok(statsAfter.body.allocationsTotal - statsBefore.body.allocationsTotal >= 2, JSON.stringify(statsAfter.body));
            }

            await publisher.click('#publishBtn');
            await waitForText(publisher, '#publishStatus', 'UNPUBLISHED');
            await waitForText(viewer, '#playStatus', 'STOPPED');
        })(t);
    });
}

test('official Web SDK publishes to wss://, a second browser plays', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, b) => {
        const wss = `wss://${host}:${PORTS.wss}`;
        const on = (browser) => ({ browser: async () => browser, server: { wsUrl: (path = '') => `${wss}${path}` } });
        const name = `topo-sdk-${Date.now().toString(36)}`;
        const publisher = await openSdkPage(on(b.pub), files, 'sdk-pub', 'official');
        assert.equal(await publisher.evaluate(() => window.isSecureContext), true);
        await publisher.evaluate((n) => sdk.publish('pub', n), name);
        await waitForStatus(publisher, 'pub', 'PUBLISHING');

        const viewer = await openSdkPage(on(b.view), files, 'sdk-play', 'official');
        await viewer.evaluate((n) => sdk.play('play', n), name);
        await waitForStatus(viewer, 'play', 'PLAYING');
        const media = await expectFramesDecoded(viewer, '#remote video', { audio: true });
        t.diagnostic(`viewer ${media.width}x${media.height} ${media.codec}, ${media.decoded} frames, ` +
            `${media.audioSamples} audio samples in the window`);
        await assertDirectTo(publisher, host, 'SDK publisher');
        await assertDirectTo(viewer, host, 'SDK viewer');

        await publisher.evaluate(() => sdk.stop('pub'));
        await waitForStatus(publisher, 'pub', 'UNPUBLISHED');
        const play = await waitForStatus(viewer, 'play', 'STOPPED');
        assert.equal(play.at(-1).info, 'Stopped by publisher stop');
    })(t);
});

test('ffmpeg publishes over RTMP, the Player page plays it', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, b) => {
        const name = `topo-rtmp-${Date.now().toString(36)}`;
        encoder = publishRtmp(`rtmp://${host}:${PORTS.rtmp}/live/${name}`);
        const stream = await waitPublished(b.view, origin, name, encoder);
        assert.equal(stream.mediaProvider, 'Flash');
        const { page, media } = await playOnPlayerPage(t, b.view, origin, host, name);
        assert.deepEqual([media.width, media.height], [640, 360]);
        assert.equal(media.codec, 'video/H264');
        encoder.kill('SIGKILL');
        await waitForText(page, '#status', 'STOPPED');
        assert.equal(await textOf(page, '#info'), 'Stopped by publisher stop');
    })(t);
});

test('the management REST API answers other hosts with the operator API key only', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, b) => {
        const none = await rest(b.pub, origin, '/stream/find_all', undefined, { key: null });
        assert.equal(none.status, 401, JSON.stringify(none));
        const wrong = await rest(b.pub, origin, '/stream/find_all', undefined, { key: 'not-the-key' });
        assert.equal(wrong.status, 403, JSON.stringify(wrong));
        const ok = await rest(b.pub, origin, '/stream/find_all');
        assert.equal(ok.status, 200, JSON.stringify(ok));
        assert.ok(Array.isArray(ok.body));
        t.diagnostic(`without key: ${none.status} ${none.body.error}; wrong key: ${wrong.status}; with key: ${ok.status}`);
    })(t);
});

test('the server behind NAT pulls a stream over WebRTC from an origin on another host', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    // The origin: a second sluice on the client host (198.18.0.2), no flags, as a user starts it,
    // in a folder of its own; ffmpeg publishes to it over RTMP.
    const cwd = mkdtempSync(join(process.env.TOPO_WORK || tmpdir(), 'origin-'));
    const log = openSync(join(cwd, 'origin.log'), 'w');
    const originServer = spawn(process.env.TOPO_BIN, [], { cwd, stdio: ['ignore', 'pipe', log] });
    let out = '';
    originServer.stdout.on('data', (d) => { out += d; });
    try {
        await fx.run(async (t, b) => {
            const end = Date.now() + 15_000;
            while (!/^sluice ready /m.test(out) && Date.now() < end) await sleep(100);
            assert.match(out, /^sluice ready /m, 'the origin never got ready');
            const originHost = '198.18.0.2';
            const name = `topo-origin-${Date.now().toString(36)}`;
            encoder = publishRtmp(`rtmp://${originHost}:${PORTS.rtmp}/live/${name}`);
            // The origin has the stream (asked from its own host, as its REST API wants).
            const originStream = await waitForOrigin(name, encoder);
            t.diagnostic(`origin: ${originStream.mediaProvider} ${originStream.width}x${originStream.height}`);

            // The server behind NAT pulls it (the operator's API key), as `${name}-edge`.
            const local = `${name}-edge`;
            const pulled = await rest(b.view, origin, '/pull/pull',
                { uri: `ws://${originHost}:8080/`, remoteStreamName: name, localStreamName: local });
            assert.equal(pulled.status, 200, JSON.stringify(pulled));
            assert.equal(pulled.body.status, 'PUBLISHING');
            const { media } = await playOnPlayerPage(t, b.view, origin, host, local);
            assert.deepEqual([media.width, media.height], [640, 360]);
            const term = await rest(b.view, origin, '/pull/terminate', { localStreamName: local });
            assert.equal(term.status, 200);
        })(t);
    } finally {
        encoder?.kill('SIGKILL');
        originServer.kill('SIGTERM');
        await new Promise((r) => originServer.once('exit', r));
        closeSync(log);
    }
});

/** Wait until the origin (on this host) lists `name` as published; its stream object. */
async function waitForOrigin(name, encoder) {
    const end = Date.now() + 15_000;
    let last = null;
    while (Date.now() < end) {
        const res = await fetch('http://127.0.0.1:8081/rest-api/stream/find', {
            method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, published: true }),
        }).catch((e) => ({ status: 0, json: async () => String(e) }));
        last = { status: res.status, body: await res.json().catch(() => null) };
        if (last.status === 200 && last.body?.[0]?.width > 0) return last.body[0];
        if (encoder?.exitInfo) break;
        await sleep(200);
    }
    throw new Error(`${name} not published on the origin: ${JSON.stringify(last)}, ffmpeg ${encoder?.stderrText}`);
}
