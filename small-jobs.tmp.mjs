import { startRedis } from "/work/main/dist/spec/harness/redis.js";
import { startGears, stopChild, sleep } from "/work/main/dist/bench/support.js";
import { Redis } from "ioredis";
import fs from "node:fs";
const redis = await startRedis({ args: ["--save", ""] });
const p = await startGears(redis.port, { profileDir: "/tmp/prof-small", nodeArgs: [], args: [], cli: undefined, readyWhen: "ping" });
const c = new Redis({ port: p.port, host: "127.0.0.1" });
await c.call("RG.EXECUTE", "GB('ShardsIDReader').run()"); await sleep(1500);
const tasks = () => fs.readdirSync(`/proc/${p.child.pid}/task`).length;
for (let i = 0; i < 20; i++) { await c.call("RG.EXECUTE", "GB().map(r => r.key).run('nosuch:*')"); if (i % 5 === 0) console.log("tasks", tasks()); }
await sleep(500);
c.disconnect(); await stopChild(p.child, 5000); await redis.stop();
