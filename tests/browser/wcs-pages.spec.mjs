// Official WCS demo pages from the Web SDK package (npm @flashphoner/websdk), unmodified, served
// by sluice's own web port where WCS serves them (/client2/examples/demo/streaming/...), driven
// as a WCS user drives them:
// - Console: the node added by address turns green with its figures (/?action=stat), its
//   streams are listed (stream/find_all) and TERMINATE ends one (the publisher gets UNPUBLISHED);
// - Media Devices Manager: publish and play; the connection quality (from the server's
//   inbound/outboundVideoRate reports) is shown on both sides, and a play size asked for is
//   reported as not applied rather than silently ignored;
// - Stream Diagnostic: publish with a session debug log, stop, and the page's "Download debug
//   logs" link serves the log (client lines and the server's side of the conversation);
// - WebRTC as RTMP re-publishing: the page's publish with `rtmpUrl` arrives at a second sluice's
//   RTMP ingest as `rtmp_<name>`, H.264 with the page's picture size, with audio;
// - Console, pulled view: a stream of a second sluice pulled over WebRTC through the console's
//   own pull call is listed as remote->local and plays here.

import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
    REPO_ROOT, STATUS_TIMEOUT_MS, TESTS_DIR, TEST_TIMEOUT_MS, expectFramesDecoded, fixture, openSdkPage,
    serveSdkPages, startServer, textOf, waitForStatus, waitForText,
} from './harness.mjs';

const DEMOS = '/client2/examples/demo/streaming';

/** A static folder: ours (static/) plus the official package at /client2, as WCS lays it out. */
function staticWithOfficialPages() {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-static-'));
    for (const entry of readdirSync(join(REPO_ROOT, 'static'))) {
        symlinkSync(join(REPO_ROOT, 'static', entry), join(dir, entry));
    }
    symlinkSync(join(TESTS_DIR, 'node_modules', '@flashphoner', 'websdk'), join(dir, 'client2'));
    return dir;
}

let fx;
let files;
let staticDir;
before(async () => {
    staticDir = staticWithOfficialPages();
    // The second sluice of the RTMP and pull tests runs on loopback: allowed explicitly.
    fx = await fixture({
        serverArgs: ['--static-dir', staticDir, '--rtmp-push-allow', '127.0.0.1', '--pull-allow', '127.0.0.1'],
    });
    files = await serveSdkPages();
});
after(async () => {
    await files?.close();
    await fx?.close();
    if (staticDir) rmSync(staticDir, { recursive: true, force: true });
});

/** Open an official demo page on the server's web port. */
async function openDemo(label, path) {
    const page = await (await fx.browser(label)).newPage(label);
    await page.goto(fx.server.webUrl(`${DEMOS}/${path}`));
    return page;
}

test('console: the node is green with its figures, lists the streams, TERMINATE ends one', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const publisher = await openSdkPage(fx, files, 'publisher', 'official', '/');
        await publisher.evaluate(() => sdk.publish('c1', 'console-cam'));
        await waitForStatus(publisher, 'c1', 'PUBLISHING');

        const page = await openDemo('console', 'console/console.html');
        const node = `127.0.0.1:${server.rest}`;
        const id = node.replace(/[.:]/g, '');
        await page.fill('#nodeIp', node);
        await page.click('#addNodeFormSubmit');
        // Green once /?action=stat answers; the figures row shows one stream in, one WebSocket.
        await page.waitForSelector(`[id="${id}"].list-group-item-success`, { timeout: STATUS_TIMEOUT_MS });
        await waitForText(page, `[id="${id}-state-in"]`, '1');
        const row = {
            cpu: await textOf(page, `[id="${id}-state-cpu"]`),
            mem: await textOf(page, `[id="${id}-state-mem"]`),
            threads: await textOf(page, `[id="${id}-state-threads"]`),
            ws: await textOf(page, `[id="${id}-state-ws"]`),
            out: await textOf(page, `[id="${id}-state-out"]`),
        };
        t.diagnostic(`console node row ${JSON.stringify(row)}`);
        assert.ok(Number(row.mem) > 0 && Number(row.threads) > 1 && Number(row.cpu) >= 0, JSON.stringify(row));
        assert.ok(Number(row.ws) >= 1, JSON.stringify(row));
        assert.equal(row.out, '0');

        // Select the node: its streams are listed, with TERMINATE.
        await page.click(`[id="${id}"]`);
        await page.waitForFunction(() => [...document.querySelectorAll('#streamsTableBody tr')]
            .some((tr) => tr.textContent.includes('console-cam')), null, { timeout: STATUS_TIMEOUT_MS, polling: 100 });
        const rowText = await page.$eval('#streamsTableBody tr', (tr) => tr.textContent);
        assert.match(rowText, /console-cam.*WebRTC.*PUBLISHING.*IN/s);
        await page.click('#streamsTableBody tr button.btn-danger');
        const events = await waitForStatus(publisher, 'c1', 'UNPUBLISHED');
        assert.equal(events.at(-1).info, 'Stopped by rest /terminate', JSON.stringify(events));
    })(t);
});

test('media devices manager: quality shown from the server rate reports, play size noted', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const page = await openDemo('manager', 'media_devices_manager/media_device_manager.html');
        await page.fill('#urlServer', server.wsUrl('/'));
        await page.click('#connectBtn');
        await waitForText(page, '#connectStatus', 'ESTABLISHED');
        await page.fill('#publishStream', 'mdm-cam');
        await page.click('#publishBtn');
        await waitForText(page, '#publishStatus', 'PUBLISHING');
        // Ask for a smaller picture than the camera's 640x480.
        await page.uncheck('#receiveDefaultSize');
        await page.fill('#receiveWidth', '320');
        await page.fill('#receiveHeight', '240');
        await page.fill('#playStream', 'mdm-cam');
        await page.click('#playBtn');
        await waitForText(page, '#playStatus', 'PLAYING');
        const frames = await expectFramesDecoded(page, '#remoteVideo video');
        t.diagnostic(`played ${frames.width}x${frames.height}, ${frames.decoded} frames decoded`);
        assert.equal(frames.width, 640, 'the published size is sent (no transcoding)');

        // The quality is the SDK's comparison of its own byte counters with the server's
        // reports: it appears only when those reports arrive.
        const qualities = ['PERFECT', 'GOOD', 'BAD'];
        for (const side of ['outConnectionStat', 'inConnectionStat']) {
            await page.waitForFunction(([sel, q]) => q.includes(document.querySelector(sel)?.textContent),
                [`#quality-${side}`, qualities], { timeout: STATUS_TIMEOUT_MS, polling: 200 })
                .catch(async () => {
                    throw new Error(`${side}: no quality shown ("${await textOf(page, `#${side}`)}")`);
                });
            t.diagnostic(`${side} quality ${await textOf(page, `#quality-${side}`)}`);
        }
        // The server's own view of the same streams, with its measured rates.
        const res = await fetch(server.restUrl('/stream/find'), {
            method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'mdm-cam' }),
        });
        const streams = await res.json();
        for (const s of streams) {
            assert.ok(s.metrics && s.metrics.videoRate > 0 && s.metrics.fps > 0, JSON.stringify(s));
            assert.equal(s.metrics.width, 640, JSON.stringify(s.metrics));
            if (!s.published) assert.match(s.info, /^Play size not applied.* 320x240$/, s.info);
        }
    })(t);
});

test('stream diagnostic: the debug log of a publish is offered for download', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const page = await openDemo('diagnostic', 'stream-diagnostic/stream-diagnostic.html');
        await page.fill('#url', server.wsUrl('/diag-cam'));
        await page.click('#publishBtn');
        await waitForText(page, '#status', 'PUBLISHING');
        await page.waitForFunction(() => document.querySelector('#publishBtn').textContent === 'Stop'
            && !document.querySelector('#publishBtn').disabled, null, { timeout: STATUS_TIMEOUT_MS, polling: 100 });
        await page.click('#publishBtn');
        await waitForText(page, '#status', 'UNPUBLISHED');
        await page.waitForSelector('#downloadDiv', { state: 'visible', timeout: STATUS_TIMEOUT_MS });
        const href = await page.$eval('#link', (a) => a.href);
        t.diagnostic(`debug log link ${href}`);
        assert.ok(href.startsWith(server.webUrl('/client/session-logs/session-')), href);
        const res = await fetch(href);
        assert.equal(res.status, 200);
        const text = await res.text();
        assert.match(text, /client: .*Publish stream diag-cam/i, 'the SDK\'s own lines');
        assert.match(text, /in: \{"message":"publishStream"/, 'what the client sent');
        assert.match(text, /out: .*"status":"PUBLISHING"/, 'what the server sent');
        assert.match(text, /out: .*"status":"UNPUBLISHED"/);
    })(t);
});

/** POST to a server's REST API; the parsed body. */
async function restJson(server, path, body) {
    const res = await fetch(server.restUrl(path), {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json().catch(() => null) };
}

test('webrtc as rtmp re-publishing: the page\'s stream arrives at an RTMP server', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const receiver = await startServer();
    try {
        await fx.run(async () => {
            const page = await openDemo('republisher', 'webrtc-as-rtmp-republishing/webrtc-as-rtmp-republishing.html');
            await page.fill('#url', fx.server.wsUrl('/'));
            await page.fill('#rtmpUrl', `rtmp://127.0.0.1:${receiver.rtmp}/live`);
            await page.fill('#streamName', 'restream1');
            await page.click('#publishBtn');
            await waitForText(page, '#status', 'PUBLISHING');
            // The link the page shows for third-party players.
            assert.equal(await textOf(page, '#player'), `rtmp://127.0.0.1:${receiver.rtmp}/live/rtmp_restream1`);
            let found = null;
            const end = Date.now() + STATUS_TIMEOUT_MS;
            while (Date.now() < end) {
                const r = await restJson(receiver, '/stream/find', { name: 'rtmp_restream1' });
                if (r.status === 200 && r.body?.[0]?.width > 0) { found = r.body[0]; break; }
                await new Promise((res) => setTimeout(res, 200));
            }
            assert.ok(found, 'rtmp_restream1 never arrived at the RTMP server');
            t.diagnostic(`arrived: ${found.mediaProvider} ${found.videoCodec} ${found.width}x${found.height} audio ${found.audioCodec}`);
            assert.equal(found.mediaProvider, 'Flash');
            assert.ok(found.width >= 320 && found.height >= 240, 'the picture size from the SPS of the pushed H.264');
            assert.equal(found.hasAudio, true);
            const push = await fetch(fx.server.restUrl('/push/find_all')).then((r) => r.json());
            assert.ok(push.some((p) => p.sourceStreamName === 'restream1' && p.streamName === 'rtmp_restream1'), JSON.stringify(push));
            await page.click('#publishBtn'); // Stop
            await waitForText(page, '#status', 'UNPUBLISHED');
        })(t);
    } finally {
        await receiver.stop({ keepLog: false });
    }
});

test('console: a stream of another node pulled over WebRTC is listed and plays here', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const origin = await startServer();
    try {
        await fx.run(async () => {
            const { server } = fx;
            // The SDK test page, connected to the origin.
            const publisher = await (await fx.browser('origin-publisher')).newPage('origin-publisher');
            await publisher.goto(files.url('/sdk.html?sdk=official'));
            const status = await publisher.evaluate((url) => sdk.connect(url), origin.wsUrl('/'));
            assert.equal(status, 'ESTABLISHED');
            await publisher.evaluate(() => sdk.publish('o1', 'origin-cam'));
            await waitForStatus(publisher, 'o1', 'PUBLISHING');

            const page = await openDemo('console-pull', 'console/console.html');
            const node = `127.0.0.1:${server.rest}`;
            const id = node.replace(/[.:]/g, '');
            await page.fill('#nodeIp', node);
            await page.click('#addNodeFormSubmit');
            await page.waitForSelector(`[id="${id}"].list-group-item-success`, { timeout: STATUS_TIMEOUT_MS });
            await page.click(`[id="${id}"]`);
            // The page's pull form, as its modal fills it, and its own pullStream().
            await page.evaluate(([uri]) => {
                $('#pullUrl').val(uri);
                $('#pullLocalName').val('edge-cam');
                $('#pullRemoteName').val('origin-cam');
                pullStream();
            }, [origin.wsUrl('/')]);
            await page.selectOption('#streamsTableInfoType', 'pulled');
            await page.click('#streamsTableInfoTypeBtn');
            await page.waitForFunction(() => [...document.querySelectorAll('#streamsTableBody tr')]
                .some((tr) => tr.textContent.includes('origin-cam->edge-cam') && tr.textContent.includes('PUBLISHING')),
            null, { timeout: STATUS_TIMEOUT_MS, polling: 100 });

            // A viewer of this node plays the pulled stream.
            const viewer = await openSdkPage(fx, files, 'edge-viewer', 'official', '/');
            await viewer.evaluate(() => sdk.play('v1', 'edge-cam'));
            await waitForStatus(viewer, 'v1', 'PLAYING');
            const frames = await expectFramesDecoded(viewer, '#remote video', { audio: true });
            t.diagnostic(`edge viewer ${frames.width}x${frames.height}, ${frames.decoded} frames, ${frames.audioSamples} audio samples`);
            assert.ok(frames.width > 0 && frames.height > 0);

            // TERMINATE in the pulled view ends the pull.
            await page.click('#streamsTableBody tr button.btn-danger');
            const events = await waitForStatus(viewer, 'v1', 'STOPPED');
            assert.equal(events.at(-1).info, 'Stopped by publisher stop');
        })(t);
    } finally {
        await origin.stop({ keepLog: false });
    }
});
