/**
 * The proxy's own users (--aclfile / --user) against real redis-server, standalone and a
 * 3-master cluster: NOPERM for commands, keys and channels worded as Redis 7.0 words them,
 * AUTH / HELLO AUTH / WRONGPASS, the ACL subcommands the proxy answers, gears ownership and
 * scripts' rights, with raw RESP, ioredis and redis-py.
 */
import { expect } from "chai";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { RawClient, ReplyError, toText, type Value } from "./support/raw-client.js";
import { runPython } from "./support/redis-py.js";
import { eventually } from "./support/polling.js";
import { globMatch } from "../src/acl/glob.js";
import { AclCatalogue, type AclCommandSource } from "../src/acl/catalogue.js";
import { allowedLeaves, applyRule, describeRules, newUser, type UserSpec } from "../src/acl/rules.js";
import { parseArgs } from "../src/cli.js";

const USERS = [
  "default on nopass ~* &* +@all",
  "admin on >adminpw ~* &* +@all",
  "nogears on >ng ~* &* +@all -@gears",
  "reader on >rd ~* &* -@all +@read +@connection +acl|whoami",
  "app on >ap ~app:* &news* +@all -@admin",
  "alice on >al ~* &* +@all -@admin",
  "bob on >bo ~* &* +@all -@admin",
  "off off >x +@all ~*",
];

const NO_CMD = (name: string): string => `NOPERM this user has no permissions to run the '${name}' command`;
const NO_KEY = "NOPERM this user has no permissions to access one of the keys used as arguments";
const NO_CHANNEL = "NOPERM this user has no permissions to access one of the channels used as arguments";
const WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled.";

/** A raw connection logged in as `user`. */
async function as(port: number, user: string, password: string): Promise<RawClient> {
  const c = await RawClient.connect(port);
  expect(await c.text("AUTH", user, password)).to.equal("OK");
  return c;
}

async function errorOf(c: RawClient, ...args: string[]): Promise<string> {
  const reply = await c.call(...args);
  if (!(reply instanceof ReplyError))
    throw new Error(`expected an error for ${args.join(" ")}, got ${JSON.stringify(toText(reply))}`);
  return reply.message;
}

for (const mode of BACKEND_MODES) {
  describe(`ACL: the proxy's users, in front of ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    const open: RawClient[] = [];
    const login = async (user: string, password: string): Promise<RawClient> => {
      const c = await as(proxy.port, user, password);
      open.push(c);
      return c;
    };

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }], { users: USERS });
    });
    after(async () => {
      for (const c of open) c.close();
      await proxy?.close();
      await backend?.stop();
    });

    it("a user without @gears gets NOPERM for RG.EXECUTE and TFCALL; another user runs them", async () => {
      const c = await login("nogears", "ng");
      expect(await errorOf(c, "RG.EXECUTE", "GB().run()")).to.equal(NO_CMD("rg.execute"));
      expect(await errorOf(c, "TFCALL", "lib.f", "0")).to.equal(NO_CMD("tfcall"));
      expect(await errorOf(c, "RG.PYEXECUTE", "GB().run()")).to.equal(NO_CMD("rg.pyexecute"));
      expect(await c.text("SET", "ng:1", "v")).to.equal("OK");
      const alice = await login("alice", "al");
      expect(await alice.text("RG.EXECUTE", "GB('ShardsIDReader').count().run()")).to.be.an("array");
    });

    it("a read-only user (+@read) cannot SET, but reads", async () => {
      const admin = await login("admin", "adminpw");
      expect(await admin.text("SET", "ro:1", "v")).to.equal("OK");
      const c = await login("reader", "rd");
      expect(await errorOf(c, "SET", "ro:1", "w")).to.equal(NO_CMD("set"));
      expect(await errorOf(c, "CONFIG", "SET", "maxmemory", "0")).to.equal(NO_CMD("config|set"));
      expect(await c.text("GET", "ro:1")).to.equal("v");
      expect(await admin.text("GET", "ro:1")).to.equal("v");
    });

    it("a user limited to ~app:* cannot read other:1, nor touch it among other keys; its channels are checked", async () => {
      const admin = await login("admin", "adminpw");
      await admin.call("SET", "other:1", "secret");
      const c = await login("app", "ap");
      expect(await c.text("SET", "app:1", "mine")).to.equal("OK");
      expect(await c.text("GET", "app:1")).to.equal("mine");
      expect(await errorOf(c, "GET", "other:1")).to.equal(NO_KEY);
      expect(await errorOf(c, "DEL", "app:1", "other:1")).to.equal(NO_KEY);
      expect(await errorOf(c, "PUBLISH", "sports", "x")).to.equal(NO_CHANNEL);
      expect(await c.text("PUBLISH", "news.today", "x")).to.equal(0);
      const sub = await login("app", "ap");
      expect(await errorOf(sub, "SUBSCRIBE", "news.a", "sports")).to.equal(NO_CHANNEL);
      // PSUBSCRIBE's patterns must be granted as they are written, not matched.
      expect(await errorOf(sub, "PSUBSCRIBE", "news.*")).to.equal(NO_CHANNEL);
      expect(await sub.text("PSUBSCRIBE", "news*")).to.deep.equal(["psubscribe", "news*", 1]);
      // Inside MULTI a refused command aborts the transaction, as Redis flags it.
      expect(await c.text("MULTI")).to.equal("OK");
      expect(await errorOf(c, "GET", "other:1")).to.equal(NO_KEY);
      expect(await errorOf(c, "EXEC")).to.match(/^EXECABORT/);
      expect(await admin.text("GET", "other:1")).to.equal("secret");
    });

    it("one user cannot read, drop or abort another's execution results; the owner and +@admin can", async () => {
      const alice = await login("alice", "al");
      const bob = await login("bob", "bo");
      const admin = await login("admin", "adminpw");
      const id = String(await alice.text("RG.EXECUTE", "GB('ShardsIDReader').count().run()", "UNBLOCKING"));
      await eventually(
        () => alice.call("RG.GETRESULTS", id),
        (r) => !(r instanceof ReplyError),
        "the execution's results",
      );
      const denied = "NOPERM this user has no permissions to access another user's execution";
      expect(await errorOf(bob, "RG.GETRESULTS", id)).to.equal(denied);
      expect(await errorOf(bob, "RG.GETRESULTSBLOCKING", id)).to.equal(denied);
      expect(await errorOf(bob, "RG.GETEXECUTION", id)).to.equal(denied);
      expect(await errorOf(bob, "RG.DROPEXECUTION", id)).to.equal(denied);
      expect(await errorOf(bob, "RG.ABORTEXECUTION", id)).to.equal(denied);
      const results = (await admin.text("RG.GETRESULTS", id)) as Value[];
      expect(results[1]).to.deep.equal([]);
      expect(await alice.text("RG.DROPEXECUTION", id)).to.equal("OK");
    });

    it("one user cannot unregister another's registration; +@admin can", async () => {
      const alice = await login("alice", "al");
      const bob = await login("bob", "bo");
      const admin = await login("admin", "adminpw");
      expect(await alice.text("RG.EXECUTE", "GB().register('aclreg:*')")).to.equal("OK");
      const regs = (await alice.text("RG.DUMPREGISTRATIONS")) as Value[][];
      const id = String(regs[regs.length - 1][1]);
      expect(await errorOf(bob, "RG.UNREGISTER", id)).to.equal(
        "NOPERM this user has no permissions to access another user's registration",
      );
      expect(await admin.text("RG.UNREGISTER", id)).to.equal("OK");
    });

    it("a script's execute() runs with the rights of the user who ran it", async () => {
      const admin = await login("admin", "adminpw");
      await admin.call("SET", "other:2", "secret");
      const app = await login("app", "ap");
      const reply = (await app.text(
        "RG.EXECUTE",
        "GB('ShardsIDReader').collect().limit(1).map(() => execute('GET', 'other:2')).run()",
      )) as Value[];
      expect(reply[0]).to.deep.equal([]);
      expect(String(reply[1])).to.contain(NO_KEY);
      const ok = (await admin.text(
        "RG.EXECUTE",
        "GB('ShardsIDReader').collect().limit(1).map(() => execute('GET', 'other:2')).run()",
      )) as Value[];
      expect(ok).to.deep.equal([["secret"], []]);
    });

    it("T&F: a library records its loader; its functions run with that user's rights; TFCALL keys are checked", async () => {
      const admin = await login("admin", "adminpw");
      await admin.call("SET", "other:3", "secret");
      const app = await login("app", "ap");
      const code = [
        "#!js api_version=1.0 name=acllib",
        "redis.registerFunction('peek', function(client, name){ return client.call('get', name); });",
      ].join("\n");
      try {
        expect(await app.text("TFUNCTION", "LOAD", code)).to.equal("OK");
        const libs = (await app.text("TFUNCTION", "LIST")) as Value[][];
        const entry = libs.find((l) => l.includes("acllib"))!;
        expect(entry[entry.indexOf("user") + 1]).to.equal("app");
        expect(await errorOf(app, "TFCALL", "acllib.peek", "0", "other:3")).to.contain(
          NO_KEY.replace(/^NOPERM /, ""),
        );
        expect(await errorOf(app, "TFCALL", "acllib.peek", "1", "other:3")).to.equal(NO_KEY);
        // The admin calls the app's function: it still runs with the app's rights.
        expect(await errorOf(admin, "TFCALL", "acllib.peek", "0", "other:3")).to.contain(
          NO_KEY.replace(/^NOPERM /, ""),
        );
        expect(await app.text("SET", "app:3", "mine")).to.equal("OK");
        expect(await admin.text("TFCALL", "acllib.peek", "0", "app:3")).to.equal("mine");
      } finally {
        await admin.call("TFUNCTION", "DELETE", "acllib");
      }
    });

    it("AUTH, HELLO AUTH and WRONGPASS as Redis answers them", async () => {
      const c = await RawClient.connect(proxy.port);
      open.push(c);
      expect(await c.text("ACL", "WHOAMI")).to.equal("default");
      expect(await errorOf(c, "AUTH", "alice", "wrong")).to.equal(WRONGPASS);
      expect(await errorOf(c, "AUTH", "nobody", "x")).to.equal(WRONGPASS);
      expect(await errorOf(c, "AUTH", "off", "x")).to.equal(WRONGPASS);
      expect(await errorOf(c, "AUTH", "x")).to.match(
        /^ERR AUTH <password> called without any password configured/,
      );
      expect(await errorOf(c, "HELLO", "2", "AUTH", "reader", "bad")).to.equal(WRONGPASS);
      expect(await c.text("ACL", "WHOAMI")).to.equal("default");
      const hello = (await c.text("HELLO", "2", "AUTH", "reader", "rd")) as Value[];
      expect(hello).to.include("proto");
      expect(await c.text("ACL", "WHOAMI")).to.equal("reader");
      expect(String(await c.text("CLIENT", "INFO"))).to.contain(" user=reader ");
      expect(await errorOf(c, "SET", "x", "1")).to.equal(NO_CMD("set"));
      expect(await c.text("RESET")).to.equal("RESET");
      expect(await c.text("ACL", "WHOAMI")).to.equal("default");
    });

    it("CLIENT KILL USER ends the clients logged in as that user", async () => {
      const admin = await login("admin", "adminpw");
      const victim = await RawClient.connect(proxy.port);
      expect(await victim.text("AUTH", "bob", "bo")).to.equal("OK");
      expect(await admin.text("CLIENT", "KILL", "USER", "bob")).to.be.at.least(1);
      await victim.closed;
      expect(await errorOf(admin, "CLIENT", "KILL", "USER", "nosuch")).to.equal("ERR No such user 'nosuch'");
    });

    it("ACL WHOAMI, USERS, LIST, CAT and DRYRUN answer for the proxy's users", async () => {
      const c = await login("admin", "adminpw");
      expect(await c.text("ACL", "WHOAMI")).to.equal("admin");
      expect(await c.text("ACL", "USERS")).to.deep.equal([
        "admin",
        "alice",
        "app",
        "bob",
        "default",
        "nogears",
        "off",
        "reader",
      ]);
      const list = (await c.text("ACL", "LIST")) as string[];
      expect(list).to.include("user default on nopass ~* &* +@all");
      expect(list.find((l) => l.startsWith("user app "))).to.match(
        /^user app on #[0-9a-f]{64} ~app:\* resetchannels &news\* \+@all -@admin$/,
      );
      expect(list.find((l) => l.startsWith("user reader "))).to.match(
        /^user reader on #[0-9a-f]{64} ~\* &\* -@all \+@read \+@connection \+acl\|whoami$/,
      );
      const categories = (await c.text("ACL", "CAT")) as string[];
      expect(categories).to.include.members(["read", "write", "admin", "dangerous", "scripting", "gears"]);
      const gears = (await c.text("ACL", "CAT", "gears")) as string[];
      expect(gears).to.include.members([
        "rg.execute",
        "rg.getresults",
        "rg.unregister",
        "tfcall",
        "tfcallasync",
        "tfunction",
      ]);
      expect(await errorOf(c, "ACL", "CAT", "nosuch")).to.equal("ERR Unknown category 'nosuch'");
      expect(await c.text("ACL", "DRYRUN", "reader", "get", "k")).to.equal("OK");
      expect(await c.text("ACL", "DRYRUN", "reader", "set", "k", "v")).to.equal(
        "This user has no permissions to run the 'set' command",
      );
      expect(await c.text("ACL", "DRYRUN", "app", "get", "other:1")).to.equal(
        "This user has no permissions to access the 'other:1' key",
      );
      expect(await c.text("ACL", "DRYRUN", "app", "publish", "sports", "x")).to.equal(
        "This user has no permissions to access the 'sports' channel",
      );
      expect(await c.text("ACL", "DRYRUN", "nogears", "rg.execute", "x")).to.equal(
        "This user has no permissions to run the 'rg.execute' command",
      );
      expect(await errorOf(c, "ACL", "DRYRUN", "nobody", "get", "k")).to.equal("ERR User 'nobody' not found");
      expect(await errorOf(c, "ACL", "DRYRUN", "reader", "nocmd", "k")).to.equal(
        "ERR Command 'nocmd' not found",
      );
      expect(await errorOf(c, "ACL", "DRYRUN", "reader", "get")).to.equal(
        "ERR wrong number of arguments for 'get' command",
      );
      expect(await errorOf(c, "ACL", "NOSUCH")).to.equal("ERR unknown subcommand 'NOSUCH'. Try ACL HELP.");
      const reader = await login("reader", "rd");
      expect(await errorOf(reader, "ACL", "LIST")).to.equal(NO_CMD("acl|list"));
    });

    it("ioredis with username and password options", async () => {
      const io = new Redis({
        port: proxy.port,
        host: "127.0.0.1",
        username: "reader",
        password: "rd",
        lazyConnect: true,
      });
      const bad = new Redis({
        port: proxy.port,
        host: "127.0.0.1",
        username: "reader",
        password: "nope",
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      const badErrors: string[] = [];
      bad.on("error", (e: Error) => badErrors.push(e.message));
      try {
        await io.connect();
        expect(await io.call("ACL", "WHOAMI")).to.equal("reader");
        expect(await io.get("ro:none")).to.equal(null);
        let error = "";
        await io.set("x", "1").catch((e: Error) => (error = e.message));
        expect(error).to.equal(NO_CMD("set"));
        // ioredis reports the refused AUTH as an error event, then gives up connecting.
        await bad.connect().catch(() => {});
        expect(badErrors.join("\n")).to.contain(WRONGPASS);
      } finally {
        io.disconnect();
        bad.disconnect();
      }
    });

    it("redis-py with username and password options", async function () {
      this.timeout(240_000);
      const script = path.join(os.tmpdir(), `acl-py-${process.pid}-${mode}.py`);
      fs.writeFileSync(
        script,
        [
          "import sys, redis",
          "port = int(sys.argv[1])",
          "r = redis.Redis(port=port, username='app', password='ap', decode_responses=True)",
          "print('whoami', r.acl_whoami())",
          "r.set('app:py', 'v')",
          "print('get', r.get('app:py'))",
          "try:",
          "    r.get('other:1')",
          "except redis.exceptions.NoPermissionError as e:",
          "    print('noperm', e)",
          "try:",
          "    redis.Redis(port=port, username='app', password='bad').ping()",
          "except redis.exceptions.AuthenticationError as e:",
          "    print('autherror', e)",
        ].join("\n"),
      );
      try {
        const { code, output } = await runPython(script, [String(proxy.port)]);
        expect(code, output).to.equal(0);
        expect(output).to.contain("whoami app");
        expect(output).to.contain("get v");
        expect(output).to.contain(`noperm ${NO_KEY.replace(/^NOPERM /, "")}`);
        expect(output).to.contain("autherror invalid username-password pair or user is disabled.");
      } finally {
        fs.rmSync(script, { force: true });
      }
    });
  });
}

describe("ACL: loading users", function () {
  this.timeout(60_000);
  let backend: Backend;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "acl-spec-"));

  before(async () => {
    backend = await Backend.start("standalone");
  });
  after(async () => {
    await backend?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("reads an aclfile; a default user with a password makes clients AUTH first", async () => {
    const file = path.join(dir, "users.acl");
    fs.writeFileSync(
      file,
      [
        "user default on >defpw ~* &* +@all",
        `user hashed on #${createHash("sha256").update("hashed").digest("hex")} ~* +@all`,
        "",
        "user w on >w %W~w:* %R~r:* +@all",
      ].join("\n"),
    );
    const proxy = await startProxy([{ port: backend.seed.port }], { aclfile: file });
    const c = await RawClient.connect(proxy.port);
    try {
      expect(await errorOf(c, "GET", "k")).to.equal("NOAUTH Authentication required.");
      expect(await c.text("AUTH", "defpw")).to.equal("OK");
      expect(await c.text("ACL", "WHOAMI")).to.equal("default");
      expect(await c.text("AUTH", "hashed", "hashed")).to.equal("OK");
      expect(await c.text("ACL", "WHOAMI")).to.equal("hashed");
      expect(await c.text("AUTH", "w", "w")).to.equal("OK");
      // %W~ grants writes only, %R~ reads only, checked on each key spec's flags as Redis
      // checks them (SET reads its key only with GET; COPY reads its source, writes its target).
      expect(await c.text("SET", "w:1", "v")).to.equal("OK");
      expect(await errorOf(c, "SET", "w:1", "v", "GET")).to.equal(NO_KEY);
      expect(await c.text("LPUSH", "w:l", "x")).to.equal(1);
      expect(await errorOf(c, "GET", "w:1")).to.equal(NO_KEY);
      expect(await errorOf(c, "SET", "r:1", "v")).to.equal(NO_KEY);
      expect(await c.text("GET", "r:1")).to.equal(null);
      expect(await c.text("COPY", "r:1", "w:2")).to.equal(0);
      expect(await errorOf(c, "COPY", "w:1", "r:2")).to.equal(NO_KEY);
      expect(await errorOf(c, "BITFIELD", "w:1", "GET", "u8", "0")).to.equal(NO_KEY);
    } finally {
      c.close();
      await proxy.close();
    }
  });

  it("an execution's and a registration's owner survive a restart of the proxy", async () => {
    const users = [
      "default on nopass ~* &* +@all",
      "alice on >al ~* +@all -@admin",
      "bob on >bo ~* +@all -@admin",
      "admin on >ad ~* +@all",
    ];
    const first = await startProxy([{ port: backend.seed.port }], { users });
    const alice = await as(first.port, "alice", "al");
    expect(await alice.text("RG.EXECUTE", "GB().register('restartreg:*')", "ID", "alicesession")).to.equal(
      "OK",
    );
    alice.close();
    await first.close();
    const second = await startProxy([{ port: backend.seed.port }], { users });
    const bob = await as(second.port, "bob", "bo");
    const admin = await as(second.port, "admin", "ad");
    try {
      const regs = (await eventually(
        () => admin.text("RG.DUMPREGISTRATIONS"),
        (r) => Array.isArray(r) && r.length > 0,
        "the restored registration",
      )) as Value[][];
      const id = String(regs[0][1]);
      expect(await errorOf(bob, "RG.UNREGISTER", id)).to.equal(
        "NOPERM this user has no permissions to access another user's registration",
      );
      expect(await admin.text("RG.UNREGISTER", id)).to.equal("OK");
    } finally {
      bob.close();
      admin.close();
      await second.close();
    }
  });

  it("refuses a bad rule, naming the file and line, and users from both a file and --user", async () => {
    const file = path.join(dir, "bad.acl");
    fs.writeFileSync(file, "user ok on nopass +@all\nuser bad on +nosuchcommand\n");
    let error = "";
    await startProxy([{ port: backend.seed.port }], { aclfile: file }).catch(
      (e: Error) => (error = e.message),
    );
    expect(error).to.equal(
      `${file}:2: error in user declaration '+nosuchcommand': Unknown command or category name in ACL`,
    );
    error = "";
    await startProxy([{ port: backend.seed.port }], { aclfile: file, users: ["x on"] }).catch(
      (e: Error) => (error = e.message),
    );
    expect(error).to.contain("not both");
    error = "";
    await startProxy([{ port: backend.seed.port }], { users: ["x on #abc"] }).catch(
      (e: Error) => (error = e.message),
    );
    expect(error).to.contain("The password hash must be exactly 64 characters");
  });

  it("without users, ACL commands go to the server as before", async () => {
    const proxy = await startProxy([{ port: backend.seed.port }]);
    const c = await RawClient.connect(proxy.port);
    try {
      expect(await c.text("ACL", "WHOAMI")).to.equal("default");
      const list = (await c.text("ACL", "LIST")) as string[];
      expect(list[0]).to.match(/^user default on nopass/);
    } finally {
      c.close();
      await proxy.close();
    }
  });
});

describe("ACL: glob patterns as Redis matches them", () => {
  it("matches *, ?, classes, ranges, negation and escapes", () => {
    expect(globMatch("app:*", "app:1")).to.equal(true);
    expect(globMatch("app:*", "other:1")).to.equal(false);
    expect(globMatch("a?c", "abc")).to.equal(true);
    expect(globMatch("a?c", "ac")).to.equal(false);
    expect(globMatch("k[0-9]", "k7")).to.equal(true);
    expect(globMatch("k[^0-9]", "k7")).to.equal(false);
    expect(globMatch("k[ab]", "kb")).to.equal(true);
    expect(globMatch("a\\*", "a*")).to.equal(true);
    expect(globMatch("a\\*", "ab")).to.equal(false);
    expect(globMatch("*:*:x", "a:b:x")).to.equal(true);
    expect(globMatch("", "")).to.equal(true);
  });
});

for (const mode of BACKEND_MODES) {
  describe(`ACL: users of the server's own ACL through the proxy (no aclfile), in front of ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    const open: RawClient[] = [];
    const connect = async (): Promise<RawClient> => {
      const c = await RawClient.connect(proxy.port);
      open.push(c);
      return c;
    };

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      // Each node keeps its own users, as in any Redis Cluster: the user is made on every master.
      for (const node of await backend.masters()) {
        const direct = await RawClient.connect(node.port);
        const rules = ["on", ">123", "+@scripting", "+@transaction", "+set", "+get", "+acl|whoami", "~x*"];
        expect(await direct.text("ACL", "SETUSER", "bob", ...rules)).to.equal("OK");
        direct.close();
      }
    });
    after(async () => {
      for (const c of open) c.close();
      await proxy?.close();
      await backend?.stop();
    });

    it("AUTH user pass: the client's commands then run as that server user", async () => {
      const c = await connect();
      expect(await c.text("AUTH", "bob", "123")).to.equal("OK");
      expect(await c.text("ACL", "WHOAMI")).to.equal("bob");
      expect(String(await c.text("CLIENT", "INFO"))).to.contain(" user=bob ");
      // Keys on every shard: each node's connection is authenticated as bob.
      for (const key of ["x1", "x2", "x3", "xa", "xb", "xc"])
        expect(await c.text("SET", key, "v")).to.equal("OK");
      expect(await errorOf(c, "SET", "y1", "v")).to.equal(NO_KEY);
      expect(await errorOf(c, "HSET", "x1", "f", "v")).to.equal(NO_CMD("hset"));
      // What Redis's own "Script ACL check" test does.
      expect(await c.text("EVAL", "return redis.acl_check_cmd('set','xx',1)", "1", "xx")).to.equal(1);
      expect(await c.text("EVAL", "return redis.acl_check_cmd('hset','xx','f',1)", "1", "xx")).to.equal(null);
      if (mode === "cluster") {
        // Its connections are per node: a transaction cannot follow its keys across them.
        expect(await errorOf(c, "MULTI")).to.match(
          /^ERR MULTI as a user of the cluster's own ACL is not supported/,
        );
      } else {
        expect(await c.text("MULTI")).to.equal("OK");
        expect(await c.text("SET", "x1", "w")).to.equal("QUEUED");
        expect(await c.text("EXEC")).to.deep.equal(["OK"]);
      }
      expect(await c.text("RESET")).to.equal("RESET");
      expect(await c.text("ACL", "WHOAMI")).to.equal("default");
      expect(await c.text("HSET", "x1h", "f", "v")).to.equal(1);
    });

    it("node-redis in RESP3 (HELLO 3 AUTH): the user's connections speak the client's protocol", async () => {
      const client = createClient({
        socket: { port: proxy.port, host: "127.0.0.1" },
        username: "bob",
        password: "123",
      });
      client.on("error", () => {});
      await client.connect();
      try {
        expect(await client.sendCommand(["ACL", "WHOAMI"])).to.equal("bob");
        expect(await client.set("x7", "v")).to.equal("OK");
        expect(await client.get("x7")).to.equal("v");
        let error = "";
        await client.set("y7", "v").catch((e: Error) => (error = e.message));
        expect(error).to.equal(NO_KEY);
        expect(await client.eval("return redis.acl_check_cmd('get','x7')", { keys: ["x7"] })).to.equal(1);
        // A double is a RESP3 type: a RESP2 connection would have sent the bulk string "3.5".
        expect(await client.eval("return {double=3.5}", { keys: ["x7"] })).to.equal(3.5);
      } finally {
        await client.quit();
      }
    });

    it("CLIENT KILL USER knows default and the server users its clients logged in as", async () => {
      const admin = await connect();
      expect(await errorOf(admin, "CLIENT", "KILL", "USER", "wrong_user")).to.equal(
        "ERR No such user 'wrong_user'",
      );
      const victim = await RawClient.connect(proxy.port);
      expect(await victim.text("AUTH", "bob", "123")).to.equal("OK");
      expect(await admin.text("CLIENT", "KILL", "USER", "bob")).to.equal(1);
      await victim.closed;
    });

    it("a wrong password gets the server's WRONGPASS and leaves the client as it was", async () => {
      const c = await connect();
      expect(await errorOf(c, "AUTH", "bob", "nope")).to.equal(WRONGPASS);
      expect(await errorOf(c, "AUTH", "nobody", "nope")).to.equal(WRONGPASS);
      expect(await c.text("ACL", "WHOAMI")).to.equal("default");
      expect(await errorOf(c, "HELLO", "2", "AUTH", "bob", "nope")).to.equal(WRONGPASS);
      expect(await c.text("HSET", "x2h", "f", "v")).to.equal(1);
    });

    it("HELLO AUTH, ioredis and redis-py log in as the server user too", async function () {
      this.timeout(240_000);
      const c = await connect();
      const hello = (await c.text("HELLO", "2", "AUTH", "bob", "123")) as Value[];
      expect(hello.slice(0, 2)).to.deep.equal(["server", "redis"]);
      expect(await c.text("ACL", "WHOAMI")).to.equal("bob");
      // Commands pipelined right behind AUTH already run as the user.
      const raw = await RawClient.connect(proxy.port);
      open.push(raw);
      raw.write("*3\r\n$4\r\nAUTH\r\n$3\r\nbob\r\n$3\r\n123\r\n*3\r\n$3\r\nSET\r\n$2\r\ny9\r\n$1\r\nv\r\n");
      expect(toText(await raw.next())).to.equal("OK");
      expect(((await raw.next()) as ReplyError).message).to.equal(NO_KEY);
      const io = new Redis({
        port: proxy.port,
        host: "127.0.0.1",
        username: "bob",
        password: "123",
        lazyConnect: true,
        enableReadyCheck: false,
      });
      try {
        await io.connect();
        expect(await io.call("ACL", "WHOAMI")).to.equal("bob");
        let error = "";
        await io.set("y2", "v").catch((e: Error) => (error = e.message));
        expect(error).to.equal(NO_KEY);
      } finally {
        io.disconnect();
      }
      const script = path.join(os.tmpdir(), `acl-py-upstream-${process.pid}-${mode}.py`);
      fs.writeFileSync(
        script,
        [
          "import sys, redis",
          "r = redis.Redis(port=int(sys.argv[1]), username='bob', password='123', decode_responses=True)",
          "print('whoami', r.acl_whoami())",
          "try:",
          "    r.set('y3', 'v')",
          "except redis.exceptions.NoPermissionError as e:",
          "    print('noperm', e)",
        ].join("\n"),
      );
      try {
        const { code, output } = await runPython(script, [String(proxy.port)]);
        expect(code, output).to.equal(0);
        expect(output).to.contain("whoami bob");
        expect(output).to.contain(`noperm ${NO_KEY.replace(/^NOPERM /, "")}`);
      } finally {
        fs.rmSync(script, { force: true });
      }
    });
  });
}

describe("ACL: options", () => {
  it('--aclfile, repeated --user, and "user" in the config file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "acl-options-"));
    try {
      expect(parseArgs(["--aclfile", "/etc/users.acl"], {}).aclfile).to.equal("/etc/users.acl");
      expect(parseArgs(["--user", "a on >x +@all", "--user", "b off"], {}).users).to.deep.equal([
        "a on >x +@all",
        "b off",
      ]);
      expect(parseArgs(["--user", "a on nopass"], {}).users).to.deep.equal(["a on nopass"]);
      const file = path.join(dir, "config.json");
      fs.writeFileSync(file, JSON.stringify({ user: ["user app on >p ~app:* +@all", "ops on >o +@all"] }));
      expect(parseArgs(["--config", file], {}).users).to.deep.equal([
        "user app on >p ~app:* +@all",
        "ops on >o +@all",
      ]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("ACL: rules as Redis 7.0 keeps and describes them", () => {
  const source = (name: string, categories: string[], subs: [string, string[]][] = []): AclCommandSource => ({
    name,
    arity: -1,
    categories,
    subcommands: new Map(
      subs.map(([sub, cats]) => [
        sub,
        { name: `${name}|${sub}`, arity: -2, categories: cats, subcommands: new Map() },
      ]),
    ),
  });
  const catalogue = new AclCatalogue(
    [
      source("get", ["read", "string", "fast"]),
      source("set", ["write", "string", "slow"]),
      source("flushall", ["keyspace", "write", "slow", "dangerous"]),
      source(
        "config",
        [],
        [
          ["get", ["admin", "slow", "dangerous"]],
          ["set", ["admin", "slow", "dangerous"]],
        ],
      ),
    ],
    ["rg.execute", "rg.getresults", "tfcall"],
  );
  const user = (...rules: string[]): UserSpec => {
    const u = newUser("u");
    for (const r of rules) {
      const error = applyRule(u, r, catalogue);
      if (error !== null) throw new Error(`${r}: ${error}`);
    }
    return u;
  };

  it("a repeated rule replaces its earlier occurrence; +@all and -@all start over", () => {
    expect(describeRules(user("on", "+get", "+set", "-get"))).to.equal("on resetchannels -@all +set -get");
    expect(describeRules(user("+get", "allcommands", "-@dangerous"))).to.equal(
      "off resetchannels +@all -@dangerous",
    );
    expect(describeRules(user("+@all", "nocommands", "+config|get"))).to.equal(
      "off resetchannels -@all +config|get",
    );
  });

  it("passwords, keys and channels", () => {
    const u = user("on", ">a", ">b", "<a", "%R~r:*", "%W~w:*", "%RW~rw:*", "~k:*", "&ch*");
    expect(u.passwords).to.have.length(1);
    expect(describeRules(u)).to.match(
      /^on #[0-9a-f]{64} %R~r:\* %W~w:\* ~rw:\* ~k:\* resetchannels &ch\* -@all$/,
    );
    expect(describeRules(user("on", ">a", "nopass", "allkeys", "allchannels"))).to.equal(
      "on nopass ~* &* -@all",
    );
    expect(describeRules(user("on", ">a", "~x", "reset"))).to.equal("off resetchannels -@all");
  });

  it("the allowed commands: categories, subcommands, @gears and prefixes", () => {
    expect([...allowedLeaves(user("+@read", "+@admin", "-config|set"), catalogue)].sort()).to.deep.equal([
      "config|get",
      "get",
    ]);
    expect([...allowedLeaves(user("+@all", "-@gears", "+rg.get*"), catalogue)].sort()).to.deep.equal([
      "config|get",
      "config|set",
      "flushall",
      "get",
      "rg.getresults",
      "set",
    ]);
    expect([...allowedLeaves(user("+config"), catalogue)].sort()).to.deep.equal(["config|get", "config|set"]);
  });

  it("refuses what Redis refuses, with its reasons", () => {
    const u = newUser("u");
    expect(applyRule(u, "+nosuch", catalogue)).to.equal("Unknown command or category name in ACL");
    expect(applyRule(u, "+@nosuch", catalogue)).to.equal("Unknown command or category name in ACL");
    expect(applyRule(u, "#abc", catalogue)).to.match(/^The password hash must be exactly 64 characters/);
    expect(applyRule(u, "bogus", catalogue)).to.equal("Syntax error");
    expect(applyRule(u, "%X~k", catalogue)).to.equal("Syntax error");
    expect(applyRule(u, "<notset", catalogue)).to.equal(
      "The password you are trying to remove from the user does not exist",
    );
    expect(applyRule(user("allkeys"), "%R~x", catalogue)).to.match(
      /^Adding a pattern after the \* pattern \(or the 'allkeys' flag\)/,
    );
    expect(applyRule(user("allchannels"), "&x", catalogue)).to.match(
      /^Adding a pattern after the \* pattern \(or the 'allchannels' flag\)/,
    );
  });
});
