#!/usr/bin/env node
/* global process, console */
// Every command and subcommand the server lists, in every shape (spec/support/command-sweep.ts),
// directly and through the proxy, standalone and in front of a 3-master cluster, in RESP2 and
// RESP3. Prints every reply that differs (not only the first).
//
//   npm run build && node scripts/sweep-diff.mjs [--mode standalone|cluster|both] [--server redis|valkey]
import { parseArgs } from "node:util";
import {
  startCluster,
  startProxy,
  startRedis,
  stopAll,
  closeAllProxies,
} from "../dist/spec/harness/index.js";
import { listCommands, sweepSequence } from "../dist/spec/support/command-sweep.js";
import { resetServer, runSequence, shorten } from "../dist/spec/support/differential-runner.js";
import { describe } from "../dist/spec/support/command-generator.js";

const { values } = parseArgs({
  options: {
    mode: { type: "string", default: "both" },
    server: { type: "string", default: "redis" },
    only: { type: "string", default: "" },
    // Each shape in MULTI ... EXEC.
    multi: { type: "boolean", default: false },
    // The shapes sent while WATCHing a key.
    watch: { type: "boolean", default: false },
  },
});
const modes = values.mode === "both" ? ["standalone", "cluster"] : [values.mode];
let differed = 0;
try {
  for (const mode of modes) {
    const binary = `${values.server}-server`;
    const direct = await startRedis({ binary });
    const backend =
      mode === "cluster" ? await startCluster({ masters: 3, binary }) : await startRedis({ binary });
    const proxy = await startProxy([{ port: mode === "cluster" ? backend.nodes[0].port : backend.port }]);
    let commands = await listCommands(direct.port);
    if (values.only !== "") commands = commands.filter((c) => c.startsWith(values.only));
    for (const resp3 of [false, true]) {
      const bursts = sweepSequence(commands, mode, resp3, values.multi, values.watch);
      await Promise.all([resetServer(direct.port), resetServer(proxy.port)]);
      const a = await runSequence(direct.port, bursts);
      const b = await runSequence(proxy.port, bursts);
      for (let i = 0; i < Math.max(a.length, b.length); i++) {
        if (a[i] === b[i]) continue;
        differed++;
        const m = /^(\d+)\.(\d+) /.exec(a[i] ?? b[i] ?? "");
        const c = m === null ? "?" : describe([{ conn: "a", commands: [bursts[+m[1]].commands[+m[2]]] }]);
        console.log(
          `${values.server} ${mode} ${resp3 ? "RESP3" : "RESP2"} ${c}\n  direct: ${shorten(a[i] ?? "<nothing>", 300)}\n  proxy:  ${shorten(b[i] ?? "<nothing>", 300)}`,
        );
      }
    }
    console.log(`${values.server} ${mode}: ${commands.length} commands swept`);
    await proxy.close();
  }
} finally {
  await closeAllProxies();
  await stopAll();
}
process.exit(differed > 0 ? 1 : 0);
