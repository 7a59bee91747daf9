import { expect } from "chai";
import { startCluster, startProxy, startRedis } from "./harness/index.js";
import { serverAvailable, type ServerKind } from "./support/backend.js";
import { describe as describeBursts, type Mode } from "./support/command-generator.js";
import { KNOWN_DIFFERENCES, listCommands, sweepSequence } from "./support/command-sweep.js";
import { resetServer, runSequence, shorten } from "./support/differential-runner.js";

// Every command and subcommand the server lists, with no arguments, with a key of each type
// and with junk after it (spec/support/command-sweep.ts), alone, in MULTI ... EXEC and while
// WATCHing, RESP2 and RESP3: every reply the same directly and through the proxy, in front of one server and
// of a 3-master cluster, of each server kind on PATH (scripts/sweep-diff.mjs prints them all).
describe("command sweep: every command's errors and replies, against the server and through the proxy", function () {
  this.timeout(180_000);

  for (const server of ["redis", "valkey", "redis6", "redis8"] as ServerKind[])
    for (const mode of ["standalone", "cluster"] as Mode[])
      it(`${server}, ${mode}`, async function () {
        if (!serverAvailable(server)) this.skip();
        const binary = `${server}-server`;
        const [direct, backend] = await Promise.all([
          startRedis({ binary }),
          mode === "cluster" ? startCluster({ masters: 3, binary }) : startRedis({ binary }),
        ]);
        const proxy = await startProxy([{ port: "nodes" in backend ? backend.nodes[0].port : backend.port }]);
        try {
          const known = new Set(KNOWN_DIFFERENCES[server]?.[mode] ?? []);
          const commands = (await listCommands(direct.port)).filter((c) => !known.has(c));
          const differences: string[] = [];
          const variants: [resp3: boolean, inMulti: boolean, watching: boolean][] = [
            [false, false, false],
            [true, false, false],
            [false, true, false],
            [true, true, false],
            [false, false, true],
          ];
          for (const [resp3, inMulti, watching] of variants) {
            const bursts = sweepSequence(commands, mode, resp3, inMulti, watching);
            await Promise.all([resetServer(direct.port), resetServer(proxy.port)]);
            const a = await runSequence(direct.port, bursts);
            const b = await runSequence(proxy.port, bursts);
            for (let i = 0; i < Math.max(a.length, b.length) && differences.length < 10; i++) {
              if (a[i] === b[i]) continue;
              const m = /^(\d+)\.(\d+) /.exec(a[i] ?? b[i] ?? "");
              const c =
                m === null ? "?" : describeBursts([{ conn: "a", commands: [bursts[+m[1]].commands[+m[2]]] }]);
              differences.push(
                `${c}\n  direct: ${shorten(a[i] ?? "<nothing>")}\n  proxy:  ${shorten(b[i] ?? "<nothing>")}`,
              );
            }
          }
          expect(differences, differences.join("\n")).to.deep.equal([]);
        } finally {
          await proxy.close();
          await Promise.all([direct.stop(), backend.stop()]);
        }
      });
});
