import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import type { Redis } from "ioredis";
import {
  startCluster,
  startProxy,
  startRedis,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
} from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { connect, outcome, run, str } from "./support/gears.js";
import { waitUntil } from "./support/polling.js";
import { connectSocket, encode } from "./support/raw-client.js";

/**
 * Large results of batch executions: a KeysOnlyReader run over 1,000,000 keys at the default
 * settings returns every key (results leave the guest batch by batch and are held by the proxy
 * as RESP bytes), and results past the limits fail with an error naming the setting to raise.
 * The keys are made on the server with DEBUG POPULATE.
 */

const KEYS = 1_000_000;

const DEBUG_ARGS = ["--enable-debug-command", "yes", "--save", ""];

/** A hashtag whose slot `node` serves, so DEBUG POPULATE's keys on it are its own. */
async function tagFor(cluster: RedisCluster, port: number): Promise<string> {
  for (let i = 0; ; i++) {
    const tag = `{t${i}}`;
    if ((await cluster.nodeForSlot(calculateSlot(tag))).port === port) return tag;
  }
}

for (const mode of BACKEND_MODES) {
  describe(`gears large results: ${Backend.label(mode)} behind the proxy`, function () {
    this.timeout(120_000);
    let single: RedisNode | null = null;
    let cluster: RedisCluster | null = null;
    let masters: RedisNode[] = [];
    let proxy: RunningProxy;
    let io: Redis;
    /** Every key on the server, by master: a prefix per master ("key" standalone). */
    const prefixes: string[] = [];
    const counts: number[] = [];

    before(async () => {
      if (mode === "standalone") single = await startRedis({ args: DEBUG_ARGS });
      else cluster = await startCluster({ masters: 3, args: DEBUG_ARGS });
      masters = cluster === null ? [single!] : await cluster.masters();
      for (const [i, node] of masters.entries()) {
        const prefix = cluster !== null ? await tagFor(cluster, node.port) : "key";
        const n = Math.floor(KEYS / masters.length) + (i < KEYS % masters.length ? 1 : 0);
        await node.cli("DEBUG", "POPULATE", String(n), prefix);
        prefixes.push(prefix);
        counts.push(n);
      }
      proxy = await startProxy([{ port: masters[0].port }]);
      io = connect(proxy.port);
    });

    after(async () => {
      io?.disconnect();
      await proxy?.close();
      await (single ?? cluster)?.stop();
    });

    afterEach(async () => {
      await io.call("RG.CONFIGSET", "MaxResultsMB", "256", "ScriptMemoryLimitMB", "64");
    });

    it("RG.EXECUTE of GB('KeysOnlyReader').run() over 1,000,000 keys returns exactly the keys, at default settings", async () => {
      const dbsize = (await Promise.all(masters.map((m) => m.call("DBSIZE")))).map(Number);
      expect(dbsize.reduce((a, b) => a + b, 0)).to.equal(KEYS);
      expect(await io.call("RG.CONFIGGET", "ScriptMemoryLimitMB")).to.deep.equal([64]);
      const out = await run(io, "GB('KeysOnlyReader').run()");
      expect(out.errors).to.deep.equal([]);
      expect(out.results).to.have.length(KEYS);
      const seen = new Set(out.results.map(str));
      expect(seen.size, "no key twice").to.equal(KEYS);
      // A sample straight from each master: KEYS of a narrow pattern.
      for (const [i, node] of masters.entries()) {
        const pattern = `${prefixes[i]}:1234*`;
        const sample = (await node.call("KEYS", pattern)) as string[];
        expect(sample.length).to.be.greaterThan(0);
        for (const key of sample) expect(seen.has(key), `${key} in the results`).to.equal(true);
        expect(seen.has(`${prefixes[i]}:${counts[i] - 1}`)).to.equal(true);
      }
    });

    it("a large result holds the spare isolate back while it runs; the spare is made again once it is over", async () => {
      await waitUntil("a spare ready before the run", () => proxy.server.warmIsolates.spares === 1);
      // One key in ten: about 1.6 MB of results, past the 1 MB that makes an execution large.
      const running = run(io, "GB('KeysOnlyReader').run('*1')");
      await waitUntil("the run holds the spares back", () => {
        const warm = proxy.server.warmIsolates;
        return warm.holding === 1 && warm.spares === 0;
      });
      const reply = await running;
      expect(reply.errors).to.deep.equal([]);
      // Keys <prefix>:0 .. <prefix>:<count - 1> on each master: those ending in 1.
      const ending1 = counts.reduce((sum, n) => sum + Math.floor((n + 8) / 10), 0);
      expect(reply.results).to.have.length(ending1);
      await waitUntil(
        "a spare again once the run is over",
        () => {
          const warm = proxy.server.warmIsolates;
          return warm.holding === 0 && warm.spares === 1;
        },
        10_000,
      );
    });

    it("UNBLOCKING: RG.GETRESULTSBLOCKING and RG.GETRESULTS answer a streamed result set from the same buffers", async () => {
      const pattern = ":12*";
      const expected = new Set<string>();
      for (const [i, node] of masters.entries()) {
        for (const key of (await node.call("KEYS", `${prefixes[i]}${pattern}`)) as string[])
          expected.add(key);
      }
      const script = `GB('KeysOnlyReader').run('*${pattern}')`;
      const id = str(await io.call("RG.EXECUTE", script, "UNBLOCKING"));
      const blocking = outcome(await io.call("RG.GETRESULTSBLOCKING", id));
      expect(blocking.errors).to.deep.equal([]);
      expect(blocking.results).to.have.length(expected.size);
      expect(new Set(blocking.results.map(str))).to.deep.equal(expected);
      const again = outcome(await io.call("RG.GETRESULTS", id));
      expect(again.results.map(str)).to.deep.equal(blocking.results.map(str));
      expect(await io.call("RG.DROPEXECUTION", id)).to.equal("OK");
    });

    it("results past MaxResultsMB fail with an error naming MaxResultsMB, and the next run works", async () => {
      expect(await io.call("RG.CONFIGSET", "MaxResultsMB", "1")).to.deep.equal(["OK"]);
      const out = await run(io, "GB('KeysOnlyReader').run()");
      expect(out.results).to.deep.equal([]);
      expect(out.errors).to.have.length(1);
      expect(out.errors[0]).to.match(/exceed MaxResultsMB \(1 MB\).*RG\.CONFIGSET MaxResultsMB/);
      // A small result fits under the same limit.
      const small = await run(io, `GB('KeysOnlyReader').run('${prefixes[0]}:1234?')`);
      expect(small.errors).to.deep.equal([]);
      expect(small.results).to.have.length(10);
    });

    it("a global step holding every record in the script fails with an error naming ScriptMemoryLimitMB", async () => {
      await io.call("RG.CONFIGSET", "ScriptMemoryLimitMB", "16");
      const out = await run(io, "GB('KeysOnlyReader').sort().run()");
      expect(out.results).to.deep.equal([]);
      expect(out.errors).to.have.length(1);
      expect(out.errors[0]).to.match(
        /memory limit of 16 MB \(ScriptMemoryLimitMB: raise it with RG\.CONFIGSET/,
      );
    });

    it("streamed results keep non-ASCII text intact (bulk lengths in bytes); a lone surrogate becomes U+FFFD", async () => {
      const pattern = `${prefixes[0]}:1234?`;
      const keys = ((await masters[0].call("KEYS", pattern)) as string[]).sort();
      expect(keys).to.have.length(10);
      const out = await run(io, `GB('KeysOnlyReader').map(k => k + 'é€😀').run('${pattern}')`);
      expect(out.errors).to.deep.equal([]);
      expect(out.results.map(str).sort()).to.deep.equal(keys.map((k) => `${k}é€😀`));
      const lone = await run(io, `GB('KeysOnlyReader').map(k => k + '\\ud800').run('${pattern}')`);
      expect(lone.results.map(str).sort()).to.deep.equal(keys.map((k) => `${k}\ufffd`));
    });

    it("RESP3: a streamed result with nulls comes in RESP3 form", async () => {
      const socket = await connectSocket(proxy.port);
      let data = Buffer.alloc(0);
      socket.on("data", (chunk: Buffer) => (data = Buffer.concat([data, chunk])));
      try {
        socket.write(encode(["HELLO", "3"]));
        await waitUntil("HELLO 3 answered", () => data.includes("proto"));
        await new Promise((resolve) => setTimeout(resolve, 50));
        const mark = data.length;
        const script = `GB('KeysOnlyReader').map(k => k.endsWith('7') ? null : k).run('${prefixes[0]}:1234?')`;
        socket.write(encode(["RG.EXECUTE", script]));
        await waitUntil(
          "RG.EXECUTE answered",
          () => data.subarray(mark).toString().endsWith("*0\r\n"),
          20_000,
        );
        const reply = data.subarray(mark).toString();
        expect(reply.startsWith("*2\r\n*10\r\n")).to.equal(true);
        expect(reply).to.include("_\r\n");
        expect(reply).not.to.include("$-1\r\n");
        expect(reply).to.include(`${prefixes[0]}:12341`);
      } finally {
        socket.destroy();
      }
    });
  });
}
