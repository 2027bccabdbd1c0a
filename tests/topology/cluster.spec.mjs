// The cluster across network namespaces (tests/topology/cluster.sh): three sluice nodes A, B,
// C (198.18.1.1-3) on one Redis, Chromium on 198.18.1.10. A browser publishes on A from its
// index page; browsers play the stream on B's and C's Player pages (each edge pulls it once
// from A, node to node), frames and sound decoded, media straight to each edge's address. A is
// killed (SIGKILL): B's and C's viewers get STOPPED "Stopped by publisher stop"; once A's claim
// has expired the same name is published on B and plays on C.

import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { sleep, textOf } from '../browser/harness.mjs';
import {
    STREAMER, TEST_TIMEOUT_MS, env, playOnPlayerPage, publishFromIndex, rest, topoFixture, waitForText,
} from './lib.mjs';

const { url } = env();
const [A, B, C] = process.env.TOPO_NODES.split(',');
const origin = (ip) => `https://${ip}:8888`;

let fx;
before(async () => { fx = await topoFixture(); });
after(async () => { await fx?.close(); });

/** Poll `fn` until it returns a truthy value, at most `ms`; returns it. */
async function until(what, ms, fn) {
    const end = Date.now() + ms;
    let last;
    while (Date.now() < end) {
        last = await fn();
        if (last) return last;
        await sleep(200);
    }
    throw new Error(`timed out waiting for ${what} (last ${JSON.stringify(last)})`);
}

test('publish on A, play on B and C; A dies; republish on B plays on C', { timeout: 2 * TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, b) => {
        const nodes = await until('three nodes in /cluster/nodes', 10_000, async () => {
            const r = await rest(b.view, origin(B), '/cluster/nodes');
            return r.status === 200 && r.body.length === 3 && r.body;
        });
        t.diagnostic(`nodes: ${nodes.map((n) => `${n.id} ${n.ws}`).join(', ')}`);
        assert.deepEqual(nodes.map((n) => n.publicIp).sort(), [A, B, C]);

        const { page: streamer, name } = await publishFromIndex(t, b.pub, url, A);
        const { page: onB } = await playOnPlayerPage(t, b.view, origin(B), B, name);
        const { page: onC } = await playOnPlayerPage(t, b.view, origin(C), C, name);
        const viewersOnA = await rest(b.view, origin(A), '/stream/find', { name, published: false });
        // A's viewers: the Streamer page's preview and one pull from each edge.
        const from = (ip) => viewersOnA.body.filter((v) => v.sessionId.startsWith(`/${ip}:`)).length;
        assert.deepEqual([from(B), from(C), viewersOnA.body.length], [1, 1, 3],
            `A serves one pull per edge: ${JSON.stringify(viewersOnA.body.map((v) => v.sessionId))}`);
        const best = await rest(b.view, origin(C), `/cluster/node?streamName=${name}`);
        t.diagnostic(`least loaded for ${name}: ${best.body.node.id}, origin ${best.body.origin}`);
        assert.equal(best.body.origin, `${A}:8080`);

        // A crashes.
        writeFileSync(join(process.env.TOPO_WORK, 'kill-a'), '');
        await until('A killed', 5_000, () => existsSync(join(process.env.TOPO_WORK, 'killed-a')));
        for (const [page, who] of [[onB, 'B'], [onC, 'C']]) {
            await waitForText(page, '#status', 'STOPPED');
            assert.equal(await textOf(page, '#info'), 'Stopped by publisher stop', `viewer on ${who}`);
        }
        await streamer.close();

        // A's claim expires with its node record; the name is then free on B.
        await until(`${name} free in the cluster`, 15_000, async () => {
            const r = await rest(b.view, origin(B), '/cluster/streams');
            return r.status === 200 && !r.body.some((s) => s.streamName === name);
        });
        const onB2 = await b.pub.newPage('streamer-b');
        await onB2.goto(`${origin(B)}${STREAMER}`);
        await onB2.waitForFunction(() => document.getElementById('url').value !== '');
        await onB2.fill('#url', `wss://${B}:8443/${name}`);
        await onB2.click('#publishBtn');
        await waitForText(onB2, '#status', 'PUBLISHING');
        const { media } = await playOnPlayerPage(t, b.view, origin(C), C, name);
        t.diagnostic(`republished on B, played on C: ${media.decoded} frames in the window`);
        const streams = await rest(b.view, origin(C), '/cluster/streams');
        assert.deepEqual(streams.body, [{ streamName: name, node: `${B}:8080` }]);
    })(t);
});
