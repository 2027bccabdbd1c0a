// RTMP re-publishing from a browser: Chromium publishes its fake camera and microphone with
// `rtmpUrl` (our SDK, then the official Flashphoner Web SDK, unmodified), and ffmpeg, listening
// as the RTMP server, receives `rtmp_<name>` with H.264 video frames of the camera's size and AAC
// audio (ffprobe counts them); `/push/find_all` lists the push while it runs, and it ends with
// the publish. Needs ffmpeg/ffprobe (Debian package ffmpeg).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
    TEST_TIMEOUT_MS, fixture, openSdkPage, rest, serveSdkPages, sleep, waitForStatus,
} from './harness.mjs';

// The server may push to this machine's loopback (the RTMP server here is ffmpeg on 127.0.0.1).
const suite = { fx: null, files: null };
before(async () => {
    suite.fx = await fixture({ serverArgs: ['--rtmp-push-allow', '127.0.0.1'] });
    suite.files = await serveSdkPages();
});
after(async () => {
    await suite.files?.close();
    await suite.fx?.close();
});

function freePort() {
    return new Promise((resolve, reject) => {
        const s = createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

/** ffmpeg listening as an RTMP server for `url`, copying `secs` seconds of what arrives to `out`. */
function listenRtmp(url, secs, out) {
    const ff = spawn('ffmpeg', ['-y', '-hide_banner', '-loglevel', 'warning', '-listen', '1', '-timeout', '30',
        '-i', url, '-c', 'copy', '-t', String(secs), '-f', 'flv', out], { stdio: ['ignore', 'ignore', 'pipe'] });
    ff.stderrText = '';
    ff.stderr.on('data', (d) => { ff.stderrText += d; });
    ff.exited = new Promise((resolve) => ff.on('exit', (code) => resolve(code)));
    return ff;
}

/** Streams of a media file: codec, size and packets read, by ffprobe. */
function probe(file) {
    const r = spawnSync('ffprobe', ['-v', 'error', '-count_packets', '-show_entries',
        'stream=codec_name,width,height,nb_read_packets', '-of', 'json', file], { encoding: 'utf8' });
    assert.equal(r.status, 0, `ffprobe: ${r.stderr}`);
    return JSON.parse(r.stdout).streams.map((s) => ({
        codec: s.codec_name, width: s.width || 0, height: s.height || 0, packets: Number(s.nb_read_packets),
    }));
}

async function waitPushes(server, pred, what) {
    const end = Date.now() + 15_000;
    let last;
    while (Date.now() < end) {
        last = await rest(server, '/push/find_all');
        if (last.status === 200 && pred(last.body)) return last.body;
        await sleep(100);
    }
    throw new Error(`${what}: /push/find_all ${JSON.stringify(last)}`);
}

for (const which of ['ours', 'official']) {
    test(`${which} SDK: publish with rtmpUrl, the RTMP server gets H.264 and AAC`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await suite.fx.run(async (t, defer) => {
            const { server } = suite.fx;
            const dir = mkdtempSync(join(tmpdir(), 'sluice-push-'));
            defer(() => rmSync(dir, { recursive: true, force: true }));
            const port = await freePort();
            const name = `push-${which}-${Date.now().toString(36)}`;
            const out = join(dir, 'got.flv');
            // Ended with the test (its publisher's browser too, by the fixture): a push left
            // running would be the next test's too.
            const ff = listenRtmp(`rtmp://127.0.0.1:${port}/live/rtmp_${name}`, 3, out);
            defer(() => ff.kill('SIGKILL'));
            await sleep(500);

            const page = await openSdkPage(suite.fx, suite.files, `rtmp-push-${which}`, which);
            const rtmpUrl = `rtmp://127.0.0.1:${port}/live`;
            await page.evaluate(([n, u]) => sdk.publish('pub', n, { rtmpUrl: u }), [name, rtmpUrl]);
            await waitForStatus(page, 'pub', 'PUBLISHING');
            const ours = (p) => p.sourceStreamName === name;
            const pushes = await waitPushes(server, (l) => l.some((p) => ours(p) && p.status === 'PROCESSED_LOCAL'),
                'push publishing');
            const push = pushes.find(ours);
            assert.equal(push.streamName, `rtmp_${name}`);
            assert.equal(push.rtmpUrl, rtmpUrl);
            assert.equal(push.sourceStreamName, name);

            const code = await Promise.race([ff.exited, sleep(30_000).then(() => 'timeout')]);
            assert.equal(code, 0, `ffmpeg: ${ff.stderrText}`);
            const streams = probe(out);
            t.diagnostic(`RTMP side: ${JSON.stringify(streams)}`);
            const video = streams.find((s) => s.codec === 'h264');
            const audio = streams.find((s) => s.codec === 'aac');
            assert.ok(video, `no H.264: ${JSON.stringify(streams)}`);
            assert.ok(audio, `no AAC: ${JSON.stringify(streams)}`);
            // The fake camera: 640x480 (our SDK) or the official SDK's default 320x240, ~20 fps.
            assert.ok(video.width >= 320 && video.height >= 240, JSON.stringify(video));
            assert.ok(video.packets >= 30, `${video.packets} video frames in 3 s`);
            assert.ok(audio.packets >= 70, `${audio.packets} AAC frames in 3 s`);

            await page.evaluate(() => sdk.stop('pub'));
            await waitForStatus(page, 'pub', 'UNPUBLISHED');
            await waitPushes(server, (l) => l.length === 0, 'push ended with the publish');
        })(t);
    });
}
