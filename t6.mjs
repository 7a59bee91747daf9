import { startCluster, startProxy, stopAll, closeAllProxies } from "/work/wt-qa/dist/spec/harness/index.js";
import { createCluster } from "redis";
import { Cluster } from "ioredis";
import calculateSlot from "cluster-key-slot";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const c = await startCluster({ masters: 3, replicasPerMaster: 1 });
const p = await startProxy([{ port: c.nodes[0].port }]);
const mode = process.argv[2];
const [label, port] = mode === "direct" ? ["direct", c.nodes[0].port] : ["proxy", p.port];
const got = { nr: [], io: [], nrsub: [], errs: [] };
const nr = createCluster({ rootNodes: [{ socket: { port, host: "127.0.0.1" } }] });
nr.on("error", (e) => got.errs.push("nr:" + e.message));
await nr.connect();
await nr.sSubscribe("sch", (m) => got.nr.push(m));
await nr.subscribe("ch", (m) => got.nrsub.push(m));
const io = new Cluster([{ host: "127.0.0.1", port }], { shardedSubscribers: false });
io.on("smessage", (ch, m) => got.io.push(m)); io.on("error", (e) => got.errs.push("io:" + e.message));
await io.ssubscribe("sch");
const pub = new Cluster([{ host: "127.0.0.1", port }]);
await pub.spublish("sch", "before"); await pub.publish("ch", "before");
await sleep(300);
const owner = await c.nodeForSlot(calculateSlot("sch"));
await owner.kill();
await c.waitForState(true, 30000);
for (let i = 0; i < 20; i++) {
  await sleep(500);
  try { await pub.spublish("sch", "after" + i); await pub.publish("ch", "after" + i); } catch (e) { got.errs.push("pub:" + e.message); }
  if (got.nr.length > 1 && got.io.length > 1 && got.nrsub.length > 1) break;
}
console.log(label, JSON.stringify(got));
await closeAllProxies(); await stopAll(); process.exit(0);
