// RTMP ingest seen from a browser: ffmpeg publishes a generated H.264 + AAC stream over RTMP as
// `enc1`, and the Player demo page (our SDK) plays it in Chromium with frames decoded at the
// clip's size and audio energy rising (AAC transcoded to Opus by the server). When the encoder
// goes away the page shows STOPPED "Stopped by publisher stop".

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
    TEST_TIMEOUT_MS, expectFramesDecoded, fixture, publishRtmp, rest, sleep, textOf, waitForText,
} from './harness.mjs';

const PLAYER = '/client/examples/demo/streaming/player/player.html';

let fx;
let encoder;
before(async () => { fx = await fixture(); });
after(async () => {
    encoder?.kill('SIGKILL');
    await fx?.close();
});

async function waitPublished(server, name) {
    const end = Date.now() + 10_000;
    while (Date.now() < end) {
        const r = await rest(server, '/stream/find', { name, published: true });
        if (r.status === 200) return r.body[0];
        await sleep(100);
    }
    throw new Error(`${name} not published over RTMP (ffmpeg: ${encoder?.stderrText})`);
}

test('Chromium plays an RTMP-published stream with picture and sound', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        assert.ok(server.rtmp > 0, 'no rtmp port in the ready line');
        encoder = publishRtmp(`rtmp://127.0.0.1:${server.rtmp}/live/enc1`);
        const stream = await waitPublished(server, 'enc1');
        assert.equal(stream.mediaProvider, 'Flash');

        const viewer = await (await fx.browser('viewer')).newPage('player');
        await viewer.goto(server.webUrl(`${PLAYER}?ws=${server.ws}&streamName=enc1`));
        await viewer.click('#playBtn');
        await waitForText(viewer, '#status', 'PLAYING');
        const frames = await expectFramesDecoded(viewer, '#remoteVideo video', { audio: true });
        t.diagnostic(`viewer ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames, ` +
            `${frames.audioSamples} audio samples in the window`);
        assert.deepEqual([frames.width, frames.height], [640, 360]);
        assert.equal(frames.codec, 'video/H264');

        // The encoder disconnects: the viewer is told why.
        encoder.kill('SIGKILL');
        await waitForText(viewer, '#status', 'STOPPED');
        assert.equal(await textOf(viewer, '#info'), 'Stopped by publisher stop');
    })(t);
});
