// HLS and LL-HLS in Chromium with hls.js: the HLS Player demo page (hls.js vendored in
// static/) plays, over the server's HLS port, (1) a stream ffmpeg publishes over RTMP and (2) a
// stream the Streamer page publishes from Chromium's fake camera, each for 20 s with frames
// decoded and audio energy rising, beside the same stream over WebRTC. The delay behind the
// server (EXT-X-PROGRAM-DATE-TIME is the server's arrival clock) is sampled every 250 ms and
// printed: LL-HLS p50 must be <= 2 s, plain HLS (hls.js lowLatencyMode off) <= 6 s.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { TEST_TIMEOUT_MS, fixture, publishRtmp, rest, sleep, waitForText } from './harness.mjs';

const HLS_PAGE = '/client/examples/demo/streaming/hls-player/hls-player.html';
const STREAMER = '/client/examples/demo/streaming/streamer/streamer.html';
const PLAY_SECS = 20;

let fx;
before(async () => { fx = await fixture(); });
after(async () => { await fx?.close(); });

async function waitPublished(server, name) {
    const end = Date.now() + 15_000;
    while (Date.now() < end) {
        const r = await rest(server, '/stream/find', { name, published: true });
        if (r.status === 200) return r.body[0];
        await sleep(200);
    }
    throw new Error(`${name} not published`);
}

function pct(a, p) {
    const s = [...a].sort((x, y) => x - y);
    return s[Math.min(s.length - 1, Math.floor(s.length * p))];
}

/** Open the HLS page on `name`, play PLAY_SECS, check frames and sound; returns delay figures. */
async function playOverHls(t, name, { ll, label }) {
    const { server } = fx;
    assert.ok(server.hls > 0, 'no hls port in the ready line');
    const page = await (await fx.browser(`hls-${label}`)).newPage('hls');
    await page.goto(server.webUrl(`${HLS_PAGE}?ws=${server.ws}&hls=${server.hls}&streamName=${name}&ll=${ll}`));
    await page.click('#playBtn');
    await waitForText(page, '#status', 'PLAYING', 20_000);
    await page.waitForFunction(() => hlsStats().frames > 0, null, { timeout: 20_000 });
    const first = await page.evaluate(() => hlsStats());
    await sleep(PLAY_SECS * 1000);
    const s = await page.evaluate(() => hlsStats());
    const frames = s.frames - first.frames;
    const delays = s.delays.slice(8); // after the start-up second or two
    const p50 = pct(delays, 0.5);
    const p95 = pct(delays, 0.95);
    const rtc = s.rtcDelays.length ? pct(s.rtcDelays, 0.5) : null;
    const line = `${label}: ${ll ? 'LL-HLS' : 'HLS'} ${s.width}x${s.height} variants ${JSON.stringify(s.codecs)} playing ${s.playing}, ${frames} frames ` +
        `in ${PLAY_SECS} s (${s.dropped} dropped), delay behind the server p50 ${p50?.toFixed(2)} s ` +
        `p95 ${p95?.toFixed(2)} s (${delays.length} samples), hls.js latency ${s.latency?.toFixed(2)} s; ` +
        `WebRTC arrival-to-display p50 ${rtc === null ? '-' : (rtc * 1000).toFixed(0) + ' ms'}; ` +
        `audio energy ${first.energy.toFixed(4)} -> ${s.energy.toFixed(4)}, ${s.audioBytes - first.audioBytes} audio bytes decoded; errors ${JSON.stringify(s.errors)}`;
    const list = await (await fetch(`http://127.0.0.1:${server.hls}/${name}/media.m3u8`)).text();
    const extinf = [...list.matchAll(/#EXTINF:([\d.]+)/g)].map((m) => (+m[1]).toFixed(2));
    const target = /#EXT-X-TARGETDURATION:(\d+)/.exec(list)?.[1];
    t.diagnostic(line);
    t.diagnostic(`${label}: TARGETDURATION ${target}, segments ${extinf.join(' ')}`);
    console.log(line);
    assert.ok(frames >= PLAY_SECS * 10, `only ${frames} frames decoded in ${PLAY_SECS} s`);
    assert.ok(s.audioBytes > first.audioBytes, `no audio decoded (${first.audioBytes} -> ${s.audioBytes} bytes)`);
    assert.ok(s.energy > first.energy, `audio energy did not rise (${first.energy} -> ${s.energy})`);
    assert.ok(s.codecs && String(s.codecs).includes('opus'), `codecs ${s.codecs}`);
    assert.ok(p50 !== undefined, 'no delay samples');
    assert.ok(p50 <= (ll ? 2 : 6), `delay p50 ${p50} s over the target`);
    await page.click('#playBtn'); // Stop
    return { p50, p95, frames };
}

test('hls.js plays an RTMP stream over LL-HLS and plain HLS with picture and sound', { timeout: 4 * TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, defer) => {
        const { server } = fx;
        const encoder = publishRtmp(`rtmp://127.0.0.1:${server.rtmp}/live/hlsrtmp`);
        defer(() => encoder.kill('SIGKILL'));
        await waitPublished(server, 'hlsrtmp');
        await playOverHls(t, 'hlsrtmp', { ll: true, label: 'rtmp' });
        await playOverHls(t, 'hlsrtmp', { ll: false, label: 'rtmp-plain' });
    })(t);
});

test('hls.js plays a browser-published stream over LL-HLS and plain HLS', { timeout: 4 * TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const { server } = fx;
        const publisher = await (await fx.browser('publisher')).newPage('streamer');
        await publisher.goto(server.webUrl(`${STREAMER}?ws=${server.ws}`));
        await publisher.waitForFunction(() => document.getElementById('url').value !== '');
        const name = (await publisher.inputValue('#url')).split('/')[3];
        await publisher.click('#publishBtn');
        await waitForText(publisher, '#status', 'PUBLISHING');
        await playOverHls(t, name, { ll: true, label: 'webrtc' });
        await playOverHls(t, name, { ll: false, label: 'webrtc-plain' });
    })(t);
});
