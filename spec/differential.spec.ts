import { expect } from "chai";
import {
  startCluster,
  startProxy,
  startRedis,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
} from "./harness/index.js";
import type { Burst, GenCommand, Mode } from "./support/command-generator.js";
import { serverAvailable, type ServerKind } from "./support/backend.js";
import { check, fuzzSeed, report, type Ports } from "./support/differential.js";
import { firstDivergence, runSequence, shorten } from "./support/differential-runner.js";

// Generated command sequences (spec/support/command-generator.ts: every data type's commands
// with valid and invalid arguments, binary and large values, databases, transactions with
// errors, scripts and functions that fail, HELLO 2/3 switches, inline commands, unknown
// commands, names in any case; pipelined in bursts on three connections) run on raw
// connections against one redis-server directly and through the proxy in front of another, or
// of a 3-master cluster; every reply must be the same bytes. A divergence is reported with its
// seed and a sequence shrunk to what still shows it. Long runs: scripts/fuzz-diff.mjs, or
// DIFFUZZ_SEEDS=500 DIFFUZZ_FROM=1000 DIFFUZZ_BURSTS=120 with this spec.

const SEEDS = Number(process.env.DIFFUZZ_SEEDS ?? 30);
const FROM = Number(process.env.DIFFUZZ_FROM ?? 1);
const BURSTS = Number(process.env.DIFFUZZ_BURSTS ?? 80);

/** A literal sequence: [connection, ...commands] per burst. */
function bursts(...spec: [string, ...string[][]][]): Burst[] {
  return spec.map(([conn, ...commands]) => ({
    conn,
    commands: commands.map((argv): GenCommand => ({ argv: argv.map((a) => Buffer.from(a)) })),
  }));
}

/** The same sequence, directly and through the proxy: no reply differs. */
async function expectSame(ports: Ports, mode: Mode, sequence: Burst[]): Promise<void> {
  const found = await check(ports, sequence);
  if (found !== null) expect.fail(report(0, mode, sequence, found));
}

/**
 * Divergences the generator found, fixed in the proxy: each sequence as shrunk, and the fix
 * it checks. Some depend on which of two connections the server reads first, so they repeat.
 */
const STANDALONE_REGRESSIONS: [name: string, sequence: Burst[]][] = [
  [
    "HELLO AUTH and AUTH with a user's name take any password when none is set (the default user is nopass)",
    bursts(["a", ["HELLO", "2", "AUTH", "default", "pw"]], ["a", ["AUTH", "default", "pw"], ["AUTH", "pw"]]),
  ],
  [
    "a MULTI refused for its arity starts no transaction, even for the commands pipelined behind it",
    bursts(["a", ["MULTI", "extra"], ["SET", "k"], ["SET", "k", "v"], ["EXEC"], ["GET", "k"]]),
  ],
  [
    "RESP3: KEYS and DBSIZE run before the FLUSHDB pipelined behind them (fan-out parts on the client's connection)",
    bursts(
      ["a", ["HELLO", "3"]],
      ...Array.from({ length: 5 }, (): [string, ...string[][]] => [
        "a",
        ["SET", "k1", "v"],
        ["KEYS", "k1"],
        ["DBSIZE"],
        ["FLUSHDB"],
        ["DBSIZE"],
      ]),
    ),
  ],
  [
    "HELLO SETNAME names the client even when a later option is refused (Redis 7.0)",
    bursts(["a", ["HELLO", "3", "SETNAME", "early", "NOPE"], ["CLIENT", "GETNAME"]]),
  ],
  [
    "HELLO switching protocol mid-pipeline: the commands after it do not overtake those before it",
    bursts(
      ...Array.from({ length: 5 }, (): [string, ...string[][]] => [
        "c",
        ["SET", "k3", "v"],
        ["HELLO", "3"],
        ["DEL", "w_2", "k3"],
        ["HELLO", "2"],
        ["XDEL", "k3", "1-1"],
        ["GET", "k3"],
      ]),
    ),
  ],
  [
    "HELLO 3 while WATCHing: the watched connection answers in RESP3 too, and in RESP2 after HELLO 2",
    bursts(
      ["a", ["WATCH", "k"]],
      ["a", ["HELLO", "3"], ["MGET", "x", "y"], ["HGETALL", "h"], ["MULTI"], ["GET", "x"], ["EXEC"]],
      ["a", ["WATCH", "k"], ["HELLO", "2"], ["MGET", "x"], ["UNWATCH"], ["MGET", "x"]],
      ["b", ["WATCH", "k"], ["MGET", "x"], ["UNWATCH"], ["MGET", "x"]],
      // RESET waits for the GETDEL's reply on the watched connection before it lets it go.
      ["c", ["WATCH", "k4", "x"]],
      ["c", ["HELLO", "3"], ["GETDEL", "k4"], ["RESET"], ["GET", "k4"]],
    ),
  ],
];

/**
 * In front of other servers: Valkey 8's CLIENT CAPA (any capability OK, the arity error without
 * one); Redis 6.x's words for SELECT of a non-number and for SCRIPT DEBUG's modes.
 */
const OTHER_SERVER_REGRESSIONS: [server: ServerKind, name: string, sequence: Burst[]][] = [
  [
    "valkey",
    "CLIENT CAPA answers OK, whatever the capabilities",
    bursts(
      [
        "a",
        ["CLIENT", "CAPA", "redirect"],
        ["CLIENT", "CAPA", "x", "y"],
        ["CLIENT", "CAPA"],
        ["CLIENT", "capa", "REDIRECT"],
      ],
      ["c", ["HELLO", "3"], ["CLIENT", "CAPA", "redirect"]],
    ),
  ],
  [
    "redis6",
    "SELECT of a non-number and SCRIPT DEBUG of an unknown mode, in 6.x's words",
    bursts(["a", ["SELECT", "z"], ["SELECT", "1"], ["SELECT", "0"]], ["a", ["SCRIPT", "DEBUG", "MAYBE"]]),
  ],
  [
    "redis6",
    "CLIENT SETNAME, KILL and UNBLOCK of the wrong arity, in 6.x's words",
    bursts([
      "a",
      ["CLIENT", "SETNAME", "a", "b"],
      ["CLIENT", "setname"],
      ["CLIENT", "KILL"],
      ["CLIENT", "UNBLOCK"],
      ["CLIENT", "UNBLOCK", "1", "TIMEOUT", "x"],
    ]),
  ],
];

/** Divergences that show the same in front of one server and of a cluster. */
const BOTH_REGRESSIONS: [name: string, sequence: Burst[]][] = [
  [
    "CLIENT UNBLOCK: the reason checked before the id, an id as Redis reads integers, more than 4 arguments the subcommand's syntax error",
    bursts([
      "a",
      ["CLIENT", "UNBLOCK", "x", "x"],
      ["CLIENT", "UNBLOCK", "1", "x", "x"],
      ["CLIENT", "unblock", "1", "x", "x"],
      ["CLIENT", "UNBLOCK", "007"],
      ["CLIENT", "UNBLOCK", "99999", "error"],
      ["CLIENT", "UNBLOCK"],
    ]),
  ],
  [
    "SCRIPT DEBUG NO behind another command of the same pipeline: the server's error; alone: OK",
    bursts(
      ["c", ["HELLO", "3", "NOPE"], ["SCRIPT", "DEBUG", "NO"]],
      ["a", ["PING"], ["SCRIPT", "DEBUG", "NO"], ["SCRIPT", "DEBUG", "NO"]],
      ["a", ["SCRIPT", "DEBUG", "NO"]],
      ["a", ["SCRIPT", "DEBUG", "MAYBE"]],
      ["a", ["SCRIPT", "DEBUG"]],
    ),
  ],
];

const CLUSTER_REGRESSIONS: [name: string, sequence: Burst[]][] = [
  [
    "SCAN: its arity error, and cursors Redis reads as invalid (spaces, hex) are invalid through the proxy too",
    bursts([
      "a",
      ["SCAN"],
      ["SCAN", " 0"],
      ["SCAN", "0 "],
      ["SCAN", "0x1"],
      ["SCAN", "18446744073709551616"],
      // A sign alone is no number to strtoul: invalid.
      ["SCAN", "+"],
      ["SCAN", "-"],
    ]),
  ],
  [
    "EVAL whose key count exceeds its arguments: the server's error, not CROSSSLOT",
    bursts([
      "a",
      ["EVAL", "return 1", "9", "{a}k1", "{a}k2", "m3", "m2"],
      ["ZUNIONSTORE", "{a}d", "5", "{b}k", "{c}k"],
      ["FCALL", "nosuch", "4", "{a}k", "{b}k"],
    ]),
  ],
  [
    "DBSIZE and KEYS while WATCHing count every master's keys",
    bursts(
      ["a", ["MSET", "{a}k", "1", "{b}k", "2", "{c}k", "3"]],
      ["a", ["WATCH", "{a}k"], ["DBSIZE"], ["KEYS", "{b}*"], ["UNWATCH"]],
    ),
  ],
  [
    "SCRIPT FLUSH: an EVALSHA of a flushed script meets NOSCRIPT, not the proxy's copy",
    bursts(
      ["a", ["EVAL", "return #KEYS", "1", "{a}k"], ["SCRIPT", "FLUSH"]],
      ["a", ["EVALSHA", "cb35aa5ca859d59b3e50fa6f9efbe7e14b5215dd", "1", "{b}k"]],
    ),
  ],
  [
    "SCRIPT EXISTS after an EVAL on one master: 1, as the proxy loads it wherever EVALSHA goes",
    bursts(
      ["a", ["EVAL", "return 2", "1", "{a}k"]],
      ["a", ["SCRIPT", "EXISTS", "7f923f79fe76194c868d7e1d0820de36700eb649", "0000"]],
      ["a", ["EVALSHA", "7f923f79fe76194c868d7e1d0820de36700eb649", "1", "{b}k"]],
    ),
  ],
  [
    "EVALSHA pipelined ahead of its EVAL: NOSCRIPT, as on one server (no reload of a script learnt after it left)",
    bursts(["a", ["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"], ["EVAL", "return 1", "0"]]),
  ],
  [
    "an EVAL refused for its key count leaves no script behind: its EVALSHA meets NOSCRIPT",
    bursts(
      ["a", ["EVAL", "return 5", "x", "{a}k"], ["EVAL", "return 5", "2", "{a}k"], ["EVAL", "return 5", "-1"]],
      ["a", ["EVALSHA", "4ca238f611c9d0ae4e9a75a5dbac22aedc379801", "1", "{b}k"]],
    ),
  ],
  [
    "an EVAL queued in a transaction that a WATCH stopped leaves no script behind",
    bursts(
      ["a", ["WATCH", "{a}k"]],
      ["b", ["SET", "{a}k", "changed"]],
      ["a", ["MULTI"], ["EVAL", "return 6", "1", "{a}k"], ["EXEC"]],
      [
        "a",
        ["EVALSHA", "432b214c7272676165213cde73c96473ae722648", "1", "{b}k"],
        ["SCRIPT", "EXISTS", "432b214c7272676165213cde73c96473ae722648"],
      ],
    ),
  ],
  [
    "an EVALSHA on a master that lacks the script runs before the commands pipelined behind it",
    bursts(
      ["a", ["EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "{a}k", "v"]],
      [
        "a",
        ["EVALSHA", "d8f2fad9f8e86a53d2a6ebd960b33c4972cacc37", "1", "{c}k", "2"],
        ["SCARD", "{c}k"],
        ["EVALSHA", "d8f2fad9f8e86a53d2a6ebd960b33c4972cacc37", "1", "{b}k", "3"],
        ["GET", "{b}k"],
      ],
      [
        "c",
        ["HELLO", "3"],
        ["EVALSHA", "d8f2fad9f8e86a53d2a6ebd960b33c4972cacc37", "1", "{b}j", "4"],
        ["GET", "{b}j"],
      ],
    ),
  ],
  [
    "SCRIPT EXISTS after an EVAL inside MULTI: 1",
    bursts(
      ["a", ["MULTI"], ["EVAL", "return 3", "1", "{a}k"], ["EXEC"]],
      ["a", ["SCRIPT", "EXISTS", "09d3822de862f46d784e6a36848b4f0736dda47a"]],
    ),
  ],
  [
    "HELLO switching protocol mid-pipeline: the commands after it do not overtake those before it",
    bursts(
      ...Array.from({ length: 5 }, (): [string, ...string[][]] => [
        "c",
        ["SET", "{b}k3", "v"],
        ["HELLO", "3"],
        ["DEL", "{b}w_2", "{b}k3"],
        ["HELLO", "2"],
        ["XDEL", "{b}k3", "1-1"],
        ["GET", "{b}k3"],
      ]),
    ),
  ],
  [
    "HELLO 3 while WATCHing: the watched connection answers in RESP3 too",
    bursts(
      ["a", ["WATCH", "{a}k"]],
      ["a", ["HELLO", "3"], ["MGET", "{a}x", "{a}y"], ["MULTI"], ["GET", "{a}x"], ["EXEC"]],
    ),
  ],
];

describe("differential: generated command sequences against Redis, and through the proxy", function () {
  this.timeout(120_000);

  describe("with a password (redis-server --requirepass, the proxy's --requirepass)", () => {
    it("HELLO before AUTH: NOAUTH in the words of the server behind the proxy (7.0's have no <proto>)", async () => {
      const [direct, backend] = await Promise.all([startRedis({ password: "pw" }), startRedis()]);
      const proxy = await startProxy([{ port: backend.port }], { requirepass: "pw" });
      try {
        const sequence = bursts([
          "a",
          ["HELLO", "3", "SETNAME", "early"],
          ["GET", "k"],
          ["AUTH", "bad"],
          ["HELLO", "3", "AUTH", "default", "bad"],
          ["AUTH", "pw"],
          ["CLIENT", "GETNAME"],
        ]);
        const found = firstDivergence(
          await runSequence(direct.port, sequence),
          await runSequence(proxy.port, sequence),
        );
        if (found !== null)
          expect.fail(`${shorten(found.direct)}\nthrough the proxy: ${shorten(found.proxy)}`);
      } finally {
        await proxy.close();
        await Promise.all([direct.stop(), backend.stop()]);
      }
    });
  });

  describe("other servers against the proxy in front of the same server", () => {
    for (const [server, name, sequence] of OTHER_SERVER_REGRESSIONS)
      for (const mode of ["standalone", "cluster"] as const)
        it(`${server}: ${name} (${mode})`, async function () {
          if (!serverAvailable(server)) this.skip();
          const binary = `${server}-server`;
          const [direct, backend] = await Promise.all([
            startRedis({ binary }),
            mode === "cluster" ? startCluster({ masters: 3, binary }) : startRedis({ binary }),
          ]);
          const proxy = await startProxy([
            { port: "nodes" in backend ? backend.nodes[0].port : backend.port },
          ]);
          try {
            // A cluster refuses SELECT n itself: only the rest there.
            const shown =
              mode === "cluster"
                ? sequence.filter((b) => !/^select$/i.test(b.commands[0].argv[0].toString()))
                : sequence;
            await expectSame({ direct: direct.port, proxy: proxy.port }, mode, shown);
          } finally {
            await proxy.close();
            await Promise.all([direct.stop(), backend.stop()]);
          }
        });
  });

  describe("one redis-server against the proxy in front of another", () => {
    let direct: RedisNode;
    let backend: RedisNode;
    let proxy: RunningProxy;
    let ports: Ports;
    before(async () => {
      [direct, backend] = await Promise.all([startRedis(), startRedis()]);
      proxy = await startProxy([{ port: backend.port }]);
      ports = { direct: direct.port, proxy: proxy.port };
    });
    after(async () => {
      await proxy?.close();
      await Promise.all([direct?.stop(), backend?.stop()]);
    });

    it(`${SEEDS} seeds of ${BURSTS} bursts (from seed ${FROM}): every reply the same`, async () => {
      for (let seed = FROM; seed < FROM + SEEDS; seed++) {
        const divergence = await fuzzSeed(ports, "standalone", seed, BURSTS);
        if (divergence !== null) expect.fail(divergence);
      }
    });

    for (const [name, sequence] of [...STANDALONE_REGRESSIONS, ...BOTH_REGRESSIONS])
      it(name, () => expectSame(ports, "standalone", sequence));
  });

  describe("one redis-server against the proxy in front of a 3-master cluster", () => {
    let direct: RedisNode;
    let cluster: RedisCluster;
    let proxy: RunningProxy;
    let ports: Ports;
    before(async () => {
      [direct, cluster] = await Promise.all([startRedis(), startCluster({ masters: 3 })]);
      proxy = await startProxy([{ port: cluster.nodes[0].port }]);
      ports = { direct: direct.port, proxy: proxy.port };
    });
    after(async () => {
      await proxy?.close();
      await Promise.all([direct?.stop(), cluster?.stop()]);
    });

    it(`${SEEDS} seeds of ${BURSTS} bursts (from seed ${FROM}): every reply the same`, async () => {
      for (let seed = FROM; seed < FROM + SEEDS; seed++) {
        const divergence = await fuzzSeed(ports, "cluster", seed, BURSTS);
        if (divergence !== null) expect.fail(divergence);
      }
    });

    for (const [name, sequence] of [...CLUSTER_REGRESSIONS, ...BOTH_REGRESSIONS])
      it(name, () => expectSame(ports, "cluster", sequence));
  });
});
