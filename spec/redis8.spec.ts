/**
 * What Redis 7.2 to 8.0 changed that a client or a registration sees through the proxy, in
 * front of Redis 8.0 (`redis8-server`, scripts/redis8.sh), standalone and as a 3-master
 * cluster: hash-field expiry commands (HEXPIRE... 7.4, HSETEX/HGETEX/HGETDEL 8.0) and their
 * keyspace events, the vector sets Redis 8.0 loads as a module and HELLO's module list, what
 * the proxy answers itself in the server's version's words (CLIENT LIST fields, CLIENT KILL
 * MAXAGE, NOPERM texts, CLUSTER MYSHARDID, a tracking client's own FLUSHALL), and a failed
 * AUTH that 7.2+ drops behind a pending reply. The client, T&F and other-servers gears specs
 * run in front of Redis 8.0 as well (SERVERS_AND_MODES). Skipped without the binary unless
 * GEARS_PROXY_REDIS8=required.
 */
import { expect } from "chai";
import type { Redis } from "ioredis";
import { createClient } from "redis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES, Direct, serverAvailable } from "./support/backend.js";
import { connect, str } from "./support/gears.js";
import { eventually, sleep, within } from "./support/polling.js";
import { RawClient, toText, type Reply, type ReplyError, type Value } from "./support/raw-client.js";
import { tfLibrary } from "./support/tf.js";
import { transcript, type Step } from "./support/transcript.js";

/** An error reply's text, or the reply as text. */
const said = (reply: Reply): string => (reply instanceof Error ? reply.message : String(toText(reply)));

/** Counts every event a registration sees, by key and event name ("r8e:d:h hset"). */
const COUNT_EVENTS =
  "GB().foreach(x => execute('HINCRBY', '{r8}seen', x.key + ' ' + x.event, 1)).register('r8e:*')";

/**
 * Writes of Redis 7.4 and 8.0 under `prefix`, each once: some change their hash (and
 * notify), some change nothing (and notify nothing), some are reads flagged as writes.
 */
function hashFieldWrites(prefix: string): string[][] {
  const h = `${prefix}h`;
  return [
    ["HSET", h, "a", "1", "b", "2"],
    ["HSETEX", h, "FNX", "EX", "100", "FIELDS", "1", "a", "1"], // a is there: 0, nothing
    ["HSETEX", `${prefix}short`, "PX", "200", "FIELDS", "1", "a", "1"], // hset, hexpire; later hexpired, del
    ["HEXPIRE", h, "100", "FIELDS", "1", "nope"], // -2: nothing
    ["HEXPIRE", h, "100", "FIELDS", "1", "a"], // 1: hexpire
    ["HPEXPIRE", h, "100000", "NX", "FIELDS", "1", "a"], // 0 (a has one): nothing
    ["HPERSIST", h, "FIELDS", "1", "b"], // -1: nothing
    ["HPERSIST", h, "FIELDS", "1", "a"], // 1: hpersist
    ["HGETEX", h, "FIELDS", "1", "a"], // a read
    ["HGETEX", h, "PERSIST", "FIELDS", "1", "nope"], // null: nothing
    ["HGETEX", h, "EX", "100", "FIELDS", "1", "b"], // hexpire
    ["HGETDEL", h, "FIELDS", "1", "nope"], // null: nothing
    ["HGETDEL", h, "FIELDS", "1", "b"], // hdel
    ["VADD", `${prefix}v`, "VALUES", "2", "1", "2", "m"], // vector sets notify nothing
    ["VREM", `${prefix}v`, "nope"],
  ];
}

/** What Redis 8.0 notifies for hashFieldWrites(prefix), by "key event". */
function redisEvents(prefix: string): Record<string, number> {
  return {
    [`${prefix}h hset`]: 1,
    [`${prefix}h hexpire`]: 2,
    [`${prefix}h hpersist`]: 1,
    [`${prefix}h hdel`]: 1,
    [`${prefix}short hset`]: 1,
    [`${prefix}short hexpire`]: 1,
    [`${prefix}short hexpired`]: 1,
    [`${prefix}short del`]: 1,
  };
}

for (const mode of BACKEND_MODES)
  describe(`in front of ${Backend.label(mode, "redis8")}: what 7.2 to 8.0 changed`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let io: Redis;
    let direct: Direct;

    before(async function () {
      this.timeout(120_000);
      if (!serverAvailable("redis8")) this.skip();
      backend = await Backend.start(mode, "redis8");
      proxy = await startProxy([{ port: backend.seed.port }]);
      io = connect(proxy.port);
      direct = new Direct(backend);
    });

    after(async () => {
      io?.disconnect();
      await proxy?.close();
      await backend?.stop();
    });

    it("a registration sees the events Redis notifies for hash-field expiry and vector-set writes, no more, whether they go through the proxy (RESP2 and RESP3) or straight to the server", async () => {
      expect(str(await io.call("RG.EXECUTE", COUNT_EVENTS))).to.equal("OK");
      const resp3 = createClient({ socket: { port: proxy.port }, RESP: 3 });
      await resp3.connect();
      try {
        for (const argv of hashFieldWrites("r8e:d:")) await direct.call(...argv);
        for (const argv of hashFieldWrites("r8e:p2:")) await io.call(argv[0], ...argv.slice(1));
        for (const argv of hashFieldWrites("r8e:p3:")) await resp3.sendCommand(argv);
      } finally {
        await resp3.quit();
      }
      const expected = {
        ...redisEvents("r8e:d:"),
        ...redisEvents("r8e:p2:"),
        ...redisEvents("r8e:p3:"),
      };
      const seen = async (): Promise<Record<string, string>> => io.hgetall("{r8}seen");
      await eventually(seen, (s) => Object.keys(expected).every((k) => k in s), "every event Redis notifies");
      // A write whose notification did not come is handled from the proxy's record of it
      // after a barrier, every 200 ms: one that changed nothing would show by now.
      await sleep(1500);
      const counts = Object.fromEntries(Object.entries(await seen()).map(([k, v]) => [k, Number(v)]));
      expect(counts).to.deep.equal(expected);
    });

    it("HELLO lists the modules the server loaded (vectorset), as the server does; vector-set commands reach their key's master", async () => {
      const own = await backend.connect();
      const through = await RawClient.connect(proxy.port);
      try {
        const modules = (hello: Value): Value => {
          if (!Array.isArray(hello)) throw new Error("HELLO: expected an array");
          return hello[hello.indexOf("modules") + 1];
        };
        const listed = modules(toText(await own.call("HELLO", "2")));
        expect(listed).to.deep.equal([["name", "vectorset", "ver", 1, "path", "", "args", []]]);
        expect(modules(toText(await through.call("HELLO", "2")))).to.deep.equal(listed);
      } finally {
        own.close();
        through.close();
      }
      for (const i of [1, 2, 3, 4, 5, 6]) {
        const key = `r8v:${i}`;
        expect(await io.call("VADD", key, "VALUES", "2", "1", String(i), "m")).to.equal(1);
        expect(await io.call("VCARD", key)).to.equal(1);
        expect(await direct.call("VCARD", key)).to.equal(1);
      }
    });

    it("CLIENT KILL MAXAGE (7.4) kills the clients at least that old, with the server's errors", async () => {
      const own = await backend.connect();
      const old = await RawClient.connect(proxy.port);
      try {
        const id = String(await old.call("CLIENT", "ID"));
        expect(await io.call("CLIENT", "KILL", "ID", id, "MAXAGE", "5")).to.equal(0);
        await sleep(1100);
        expect(await io.call("CLIENT", "KILL", "ID", id, "MAXAGE", "1")).to.equal(1);
        for (const age of ["0", "-3", "x", "99999999999999999999"]) {
          const expected = String(await own.call("CLIENT", "KILL", "MAXAGE", age));
          expect(expected).to.match(/^ReplyError: ERR maxage /);
          const through = await io.call("CLIENT", "KILL", "MAXAGE", age).catch((e: Error) => e);
          expect(String(through), age).to.equal(expected);
        }
      } finally {
        own.close();
        old.close();
      }
    });

    it("CLIENT INFO and CLIENT LIST have the server's fields in its order (watch, io-thread); watch counts the keys WATCHed", async () => {
      const own = await backend.connect();
      const through = await RawClient.connect(proxy.port);
      const names = (line: Value): string[] =>
        [...String(line).matchAll(/(?:^| )([a-z-]+)=/g)].map((m) => m[1]);
      const field = (line: Value, name: string): string | undefined =>
        new RegExp(`(?:^| )${name}=([^ \\n]*)`).exec(String(line))?.[1];
      try {
        expect(names(toText(await through.call("CLIENT", "INFO")))).to.deep.equal(
          names(toText(await own.call("CLIENT", "INFO"))),
        );
        expect(field(toText(await through.call("CLIENT", "INFO")), "watch")).to.equal("0");
        // One slot, so that a cluster takes them on one WATCH connection; a repeated key counts once.
        expect(toText(await through.call("WATCH", "{w}a", "{w}b", "{w}a"))).to.equal("OK");
        expect(toText(await through.call("WATCH", "{w}c"))).to.equal("OK");
        expect(toText(await own.call("WATCH", "{w}a", "{w}b", "{w}a"))).to.equal("OK");
        expect(toText(await own.call("WATCH", "{w}c"))).to.equal("OK");
        const id = String(await through.call("CLIENT", "ID"));
        const listed = String(await io.call("CLIENT", "LIST", "ID", id));
        expect(field(listed, "watch")).to.equal(field(toText(await own.call("CLIENT", "INFO")), "watch"));
        expect(field(listed, "watch")).to.equal("3");
        expect(field(listed, "io-thread")).to.equal("0");
        await through.call("UNWATCH");
        expect(field(toText(await through.call("CLIENT", "INFO")), "watch")).to.equal("0");
        await through.call("WATCH", "{w}d");
        await through.call("MULTI");
        await through.call("EXEC");
        expect(field(toText(await through.call("CLIENT", "INFO")), "watch")).to.equal("0");
      } finally {
        own.close();
        through.close();
      }
    });

    it("AUTH and HELLO AUTH as a server ACL user with a wrong password get the server's WRONGPASS (7.2+ drops it behind a pending reply, redis/redis#15640)", async () => {
      for (const node of await backend.masters()) {
        const c = await RawClient.connect(node.port);
        expect(toText(await c.call("ACL", "SETUSER", "r8user", "on", ">right", "~*", "+@all"))).to.equal(
          "OK",
        );
        c.close();
      }
      const wrongpass = "WRONGPASS invalid username-password pair or user is disabled.";
      for (const login of [
        ["AUTH", "r8user", "wrong"],
        ["HELLO", "2", "AUTH", "r8user", "wrong"],
      ]) {
        const c = await RawClient.connect(proxy.port);
        try {
          const reply = await within(3000, `${login[0]}'s reply`, c.call(...login));
          expect(String((reply as ReplyError).message)).to.equal(wrongpass);
          expect(toText(await c.call("AUTH", "r8user", "right"))).to.equal("OK");
          expect(toText(await c.call("ACL", "WHOAMI"))).to.equal("r8user");
        } finally {
          c.close();
        }
      }
    });

    it("the proxy's own ACL (--user) refuses in the server's words: NOPERM naming the user (7.2+), ACL DRYRUN likewise", async () => {
      const rules = ["on", "nopass", "~a*", "&c", "+get", "+publish", "+config|get", "+acl"];
      const acl = await startProxy([{ port: backend.seed.port }], {
        users: ["default on nopass ~* &* +@all", `r8acl ${rules.join(" ")}`],
      });
      const own = await backend.connect();
      const through = await RawClient.connect(acl.port);
      try {
        expect(toText(await own.call("ACL", "SETUSER", "r8acl", ...rules))).to.equal("OK");
        expect(toText(await own.call("AUTH", "r8acl", "x"))).to.equal("OK");
        expect(toText(await through.call("AUTH", "r8acl", "x"))).to.equal("OK");
        for (const argv of [
          ["GET", "b"],
          ["SET", "a", "1"],
          ["PUBLISH", "d", "1"],
          ["CONFIG", "SET", "maxmemory", "0"],
          ["ACL", "DRYRUN", "r8acl", "GET", "b"],
          ["ACL", "DRYRUN", "r8acl", "SET", "a", "1"],
          ["ACL", "DRYRUN", "r8acl", "PUBLISH", "d", "1"],
        ]) {
          const expected = said(await own.call(...argv));
          expect(expected, argv.join(" ")).to.match(/^(NOPERM|User r8acl) /);
          expect(said(await through.call(...argv)), argv.join(" ")).to.equal(expected);
        }
      } finally {
        own.close();
        through.close();
        await acl.close();
      }
    });

    it("CLUSTER MYSHARDID (7.2): the emulated node's one shard in a cluster; the server's answer in front of one server", async () => {
      const first = await io.call("CLUSTER", "MYSHARDID").catch((e: Error) => e);
      if (mode === "cluster") {
        expect(first).to.match(/^[0-9a-f]{40}$/);
        const again = connect(proxy.port);
        try {
          expect(await again.call("CLUSTER", "MYSHARDID")).to.equal(first);
        } finally {
          again.disconnect();
        }
      } else {
        const own = await direct.call("CLUSTER", "MYSHARDID");
        expect(String(first)).to.equal(`ReplyError: ${(own as ReplyError).message}`);
      }
    });

    it("client tracking: a client's own FLUSHALL tells it its null before +OK (7.4 runs it in the background), FLUSHALL ASYNC after", async () => {
      const steps: Step[] = [
        { send: [["HELLO", "3"]], until: "$4\r\nargs\r\n*0\r\n" },
        { send: [["CLIENT", "TRACKING", "on"]], until: "+OK\r\n" },
        {
          send: [
            ["SET", "{r8f}k", "1"],
            ["GET", "{r8f}k"],
          ],
          until: "$1\r\n1\r\n",
        },
        { send: [["FLUSHALL"], ["PING"]], until: "+PONG\r\n" },
        { send: [["FLUSHDB"], ["PING", "b"]], until: "$1\r\nb\r\n" },
        {
          send: [
            ["FLUSHALL", "ASYNC"],
            ["PING", "c"],
          ],
          until: "$1\r\nc\r\n",
        },
      ];
      const through = await transcript(proxy.port, steps);
      const invalidated = ">2\r\n$10\r\ninvalidate\r\n_\r\n";
      expect(through.a).to.contain(`${invalidated}+OK\r\n+PONG\r\n`);
      expect(through.a).to.contain(`${invalidated}+OK\r\n$1\r\nb\r\n`);
      expect(through.a).to.contain(`+OK\r\n${invalidated}$1\r\nc\r\n`);
      if (mode === "standalone") expect(through).to.deep.equal(await transcript(backend.seed.port, steps));
    });

    it("HSETEX, HGETEX, HGETDEL and HEXPIRE reach the master of their key (COMMAND key specs)", async () => {
      for (const i of [1, 2, 3, 4, 5, 6]) {
        const key = `r8r:${i}`;
        expect(await io.call("HSETEX", key, "EX", "100", "FIELDS", "2", "f", "v", "g", "w")).to.equal(1);
        expect(await io.call("HGETEX", key, "PX", "50000", "FIELDS", "1", "f")).to.deep.equal(["v"]);
        expect(await io.call("HEXPIRE", key, "200", "FIELDS", "1", "g")).to.deep.equal([1]);
        expect(await io.call("HGETDEL", key, "FIELDS", "1", "g")).to.deep.equal(["w"]);
        // On the key's own master: a wrong node would answer MOVED.
        expect(await direct.call("HTTL", key, "FIELDS", "1", "f")).to.deep.equal([50]);
      }
    });

    it("a T&F keyspace trigger sees a hash field expire on the server (hexpired)", async () => {
      const code = tfLibrary(
        "r8expiry",
        `redis.registerKeySpaceTrigger('expired', 'r8t:', function(client, data){
           client.call('rpush', '{r8t}log', data.key + ' ' + data.event);
         });`,
      );
      expect(await io.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      try {
        await io.call("HSETEX", "r8t:h", "PX", "100", "FIELDS", "1", "f", "v");
        await eventually(
          () => io.lrange("{r8t}log", 0, -1),
          (log) => log.includes("r8t:h del"),
          "the field's expiry, then the key's deletion",
        );
        expect(await io.lrange("{r8t}log", 0, -1)).to.deep.equal([
          "r8t:h hset",
          "r8t:h hexpire",
          "r8t:h hexpired",
          "r8t:h del",
        ]);
      } finally {
        await io.call("TFUNCTION", "DELETE", "r8expiry");
      }
    });
  });
