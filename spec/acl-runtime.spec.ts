/**
 * The proxy's users changed while it runs (--aclfile / --user), against real redis-server:
 * ACL SETUSER, DELUSER, LOAD, SAVE and LOG with Redis 7.0's semantics and error texts, the
 * connected clients following their user's changes, scripts checked against their user as it
 * is now, and --threads 2 applying each change on both threads. ioredis, redis-cli, redis-py.
 */
import { expect } from "chai";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { ChildProxy } from "./support/child-proxy.js";
import { RawClient, ReplyError, toText, type Reply, type Value } from "./support/raw-client.js";
import { runPython } from "./support/redis-py.js";
import { eventually } from "./support/polling.js";

const FILE_USERS = [
  "user default on nopass ~* &* +@all",
  "user admin on >adminpw ~* &* +@all",
  "user app on >ap ~app:* &news +@all -@admin",
];

const NO_CMD = (name: string): string => `NOPERM this user has no permissions to run the '${name}' command`;
const NO_KEY = "NOPERM this user has no permissions to access one of the keys used as arguments";
const WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled.";
const NO_ACLFILE =
  "ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.";

async function errorOf(c: RawClient, ...args: string[]): Promise<string> {
  const reply = await c.call(...args);
  if (!(reply instanceof ReplyError))
    throw new Error(`expected an error for ${args.join(" ")}, got ${JSON.stringify(toText(reply))}`);
  return reply.message;
}

/** Resolves true once the server closed the connection, false if it is still open after `ms`. */
function closedWithin(c: RawClient, ms = 2000): Promise<boolean> {
  return Promise.race([
    c.closed.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), ms)),
  ]);
}

function redisCli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile("redis-cli", ["-p", String(port), ...args], { timeout: 5000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout.trim()),
    ),
  );
}

/** A reply as text, its errors as their messages (an EXEC's refused elements). */
function withErrors(reply: Reply): unknown {
  if (reply instanceof ReplyError) return reply.message;
  if (Array.isArray(reply)) return reply.map(withErrors);
  return Buffer.isBuffer(reply) ? reply.toString() : reply;
}

/** ACL LOG's entries as objects (RESP2: flat arrays of field, value). */
function logEntries(reply: Value): Record<string, Value>[] {
  return (reply as Value[][]).map((flat) => {
    const entry: Record<string, Value> = {};
    for (let i = 0; i < flat.length; i += 2) entry[String(flat[i])] = flat[i + 1];
    return entry;
  });
}

describe("ACL at run time: SETUSER, DELUSER, LOAD, SAVE, LOG (the proxy's users)", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let dir: string;
  let aclfile: string;
  const open: RawClient[] = [];
  const ioredis: Redis[] = [];
  const login = async (user: string, password: string): Promise<RawClient> => {
    const c = await RawClient.connect(proxy.port);
    open.push(c);
    expect(await c.text("AUTH", user, password)).to.equal("OK");
    return c;
  };
  const anonymous = async (): Promise<RawClient> => {
    const c = await RawClient.connect(proxy.port);
    open.push(c);
    return c;
  };

  before(async () => {
    redis = await startRedis();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "acl-runtime-"));
    aclfile = path.join(dir, "users.acl");
    fs.writeFileSync(aclfile, FILE_USERS.join("\n") + "\n");
    proxy = await startProxy([{ port: redis.port }], { aclfile });
  });
  afterEach(() => {
    for (const c of open.splice(0)) c.close();
    for (const c of ioredis.splice(0)) c.disconnect();
  });
  after(async () => {
    await proxy?.close();
    await redis?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("ACL SETUSER creates a user; a change reaches its connected client's next command (ioredis)", async () => {
    const admin = await login("admin", "adminpw");
    expect(
      await admin.text("ACL", "SETUSER", "carol", "on", ">cpw", "~carol:*", "+@all", "-@admin"),
    ).to.equal("OK");
    expect(await admin.text("ACL", "LIST")).to.include(
      `user carol on #${sha("cpw")} ~carol:* resetchannels +@all -@admin`,
    );
    const carol = new Redis({
      port: proxy.port,
      username: "carol",
      password: "cpw",
      maxRetriesPerRequest: 0,
    });
    ioredis.push(carol);
    expect(await carol.set("carol:1", "v")).to.equal("OK");
    expect(await carol.get("carol:1")).to.equal("v");
    expect(await admin.text("ACL", "SETUSER", "carol", "-get")).to.equal("OK");
    await carol.get("carol:1").then(
      () => expect.fail("GET should be refused"),
      (err: Error) => expect(err.message).to.equal(NO_CMD("get")),
    );
    expect(await admin.text("ACL", "SETUSER", "carol", "+get", "resetkeys", "~other:*")).to.equal("OK");
    await carol.get("carol:1").then(
      () => expect.fail("carol:1 should be refused"),
      (err: Error) => expect(err.message).to.equal(NO_KEY),
    );
    expect(await carol.get("other:1")).to.equal(null);
    // Allowed everything now: the client takes the path without checks.
    expect(await admin.text("ACL", "SETUSER", "carol", "allkeys", "allchannels", "+@all")).to.equal("OK");
    expect(await carol.get("carol:1")).to.equal("v");
    expect(await carol.call("CONFIG", "GET", "maxmemory")).to.have.length(2);
    expect(await admin.text("ACL", "DELUSER", "carol")).to.equal(1);
  });

  it("a bad rule changes nothing (all-or-nothing); selectors and first-argument rules are refused", async () => {
    const admin = await login("admin", "adminpw");
    const before = await admin.text("ACL", "GETUSER", "app");
    expect(await errorOf(admin, "ACL", "SETUSER", "app", "-get", "bogus")).to.equal(
      "ERR Error in ACL SETUSER modifier 'bogus': Syntax error",
    );
    expect(await errorOf(admin, "ACL", "SETUSER", "app", "-get", "+nosuchcommand")).to.equal(
      "ERR Error in ACL SETUSER modifier '+nosuchcommand': Unknown command or category name in ACL",
    );
    expect(await errorOf(admin, "ACL", "SETUSER", "app", "(~x:*", "+get)")).to.equal(
      "ERR Error in ACL SETUSER modifier '(~x:*': selectors are not supported by gears-proxy",
    );
    expect(await errorOf(admin, "ACL", "SETUSER", "app", "+select|0")).to.equal(
      "ERR Error in ACL SETUSER modifier '+select|0': first-argument rules (command|arg) are not supported by gears-proxy",
    );
    expect(await errorOf(admin, "ACL", "SETUSER", "app", "<notapassword")).to.equal(
      "ERR Error in ACL SETUSER modifier '<notapassword': The password you are trying to remove from the user does not exist",
    );
    expect(await errorOf(admin, "ACL", "SETUSER", "bad name")).to.equal(
      "ERR Usernames can't contain spaces or null characters",
    );
    expect(await admin.text("ACL", "GETUSER", "app")).to.deep.equal(before);
    expect(await admin.text("ACL", "GETUSER", "nobodyyet")).to.equal(null);
    expect(await errorOf(admin, "ACL", "SETUSER", "nobodyyet", "on", "bogus")).to.match(
      /^ERR Error in ACL SETUSER/,
    );
    expect(await admin.text("ACL", "USERS")).to.not.include("nobodyyet");
  });

  it("a user turned off or given another password keeps its connections (Redis 7.0); new logins follow the change", async () => {
    const admin = await login("admin", "adminpw");
    expect(await admin.text("ACL", "SETUSER", "dave", "on", ">d1", "~*", "+@all")).to.equal("OK");
    const dave = await login("dave", "d1");
    expect(await admin.text("ACL", "SETUSER", "dave", "resetpass", ">d2")).to.equal("OK");
    expect(await dave.text("PING")).to.equal("PONG");
    expect(await errorOf(await anonymous(), "AUTH", "dave", "d1")).to.equal(WRONGPASS);
    await login("dave", "d2");
    expect(await admin.text("ACL", "SETUSER", "dave", "off")).to.equal("OK");
    expect(await dave.text("ACL", "WHOAMI")).to.equal("dave");
    expect(await errorOf(await anonymous(), "AUTH", "dave", "d2")).to.equal(WRONGPASS);
    await admin.call("ACL", "DELUSER", "dave");
  });

  it("ACL DELUSER: not default; answers how many it deleted; their clients are disconnected, the asking one after its reply", async () => {
    const admin = await login("admin", "adminpw");
    expect(await errorOf(admin, "ACL", "DELUSER", "eve", "default")).to.equal(
      "ERR The 'default' user cannot be removed",
    );
    for (const name of ["eve", "frank"])
      expect(await admin.text("ACL", "SETUSER", name, "on", `>${name}`, "~*", "+@all")).to.equal("OK");
    const eve = await login("eve", "eve");
    const eve2 = await login("eve", "eve");
    const frank = await login("frank", "frank");
    expect(await admin.text("ACL", "DELUSER", "eve", "nosuchuser")).to.equal(1);
    expect(await closedWithin(eve)).to.equal(true);
    expect(await closedWithin(eve2)).to.equal(true);
    expect(await frank.text("PING")).to.equal("PONG");
    expect(await errorOf(await anonymous(), "AUTH", "eve", "eve")).to.equal(WRONGPASS);
    // frank deletes himself: he gets the answer, then the connection closes.
    expect(await frank.text("ACL", "DELUSER", "frank")).to.equal(1);
    expect(await closedWithin(frank)).to.equal(true);
    expect(await admin.text("ACL", "USERS")).to.deep.equal(["admin", "app", "default"]);
  });

  it("a user that loses channels loses its subscribed clients; its other clients stay", async () => {
    const admin = await login("admin", "adminpw");
    expect(
      await admin.text(
        "ACL",
        "SETUSER",
        "sub",
        "on",
        ">s",
        "~*",
        "resetchannels",
        "&news",
        "&sports",
        "+@all",
      ),
    ).to.equal("OK");
    const subscriber = await login("sub", "s");
    expect(await subscriber.text("SUBSCRIBE", "news")).to.deep.equal(["subscribe", "news", 1]);
    const plain = await login("sub", "s");
    // A channel added: nothing lost.
    expect(await admin.text("ACL", "SETUSER", "sub", "&weather")).to.equal("OK");
    expect(await closedWithin(subscriber, 300)).to.equal(false);
    expect(await admin.text("ACL", "SETUSER", "sub", "resetchannels", "&news")).to.equal("OK");
    expect(await closedWithin(subscriber)).to.equal(true);
    expect(await plain.text("PING")).to.equal("PONG");
    await admin.call("ACL", "DELUSER", "sub");
  });

  it("the default user changed: clients that never AUTHed follow it", async () => {
    const admin = await login("admin", "adminpw");
    const c = await anonymous();
    expect(await c.text("SET", "k:default", "1")).to.equal("OK");
    try {
      expect(await admin.text("ACL", "SETUSER", "default", "-set")).to.equal("OK");
      expect(await errorOf(c, "SET", "k:default", "2")).to.equal(NO_CMD("set"));
    } finally {
      expect(await admin.text("ACL", "SETUSER", "default", "+@all")).to.equal("OK");
    }
    expect(await c.text("SET", "k:default", "2")).to.equal("OK");
    // default given a password: clients already in stay; a new one must AUTH until it is nopass again.
    try {
      expect(await admin.text("ACL", "SETUSER", "default", "resetpass", ">defpw")).to.equal("OK");
      expect(await c.text("PING")).to.equal("PONG");
      const late = await anonymous();
      expect(await errorOf(late, "PING")).to.equal("NOAUTH Authentication required.");
      expect(await admin.text("ACL", "SETUSER", "default", "nopass")).to.equal("OK");
      expect(await late.text("PING")).to.equal("PONG");
    } finally {
      await admin.call("ACL", "SETUSER", "default", "nopass");
    }
  });

  it("gears: a registration's execute() is checked against its user as it is now; a deleted user's are refused", async () => {
    const admin = await login("admin", "adminpw");
    expect(await admin.text("ACL", "SETUSER", "reg", "on", ">r", "~*", "&*", "+@all")).to.equal("OK");
    const reg = await login("reg", "r");
    expect(
      await reg.text(
        "RG.EXECUTE",
        "GB().foreach(r => execute('SET', 'copy:' + r.key, String(r.value))).register('regsrc:*')",
      ),
    ).to.equal("OK");
    const ids = (await admin.text("RG.DUMPREGISTRATIONS")) as Value[][];
    const mine = ids.filter((r) => JSON.stringify(r).includes("regsrc:*")).map((r) => String(r[1]));
    try {
      await admin.call("SET", "regsrc:1", "a");
      await eventually(
        () => admin.text("GET", "copy:regsrc:1"),
        (v) => v === "a",
        "the registration copies",
      );
      expect(await admin.text("ACL", "SETUSER", "reg", "-set")).to.equal("OK");
      await admin.call("SET", "regsrc:2", "b");
      await admin.call("SET", "regsrc:flush", "x");
      await new Promise((r) => setTimeout(r, 500));
      expect(await admin.text("GET", "copy:regsrc:2")).to.equal(null);
      // Logged as Redis logs a module's refused call.
      const refusal = logEntries(await admin.text("ACL", "LOG")).find((e) => e.username === "reg");
      expect([refusal?.reason, refusal?.context, refusal?.object]).to.deep.equal([
        "command",
        "module",
        "set",
      ]);
      expect(String(refusal?.["client-info"])).to.match(/ fd=-1 .* user=reg /);
      expect(await admin.text("ACL", "SETUSER", "reg", "+set")).to.equal("OK");
      await admin.call("SET", "regsrc:3", "c");
      await eventually(
        () => admin.text("GET", "copy:regsrc:3"),
        (v) => v === "c",
        "allowed again",
      );
      expect(await admin.text("ACL", "DELUSER", "reg")).to.equal(1);
      await admin.call("SET", "regsrc:4", "d");
      await new Promise((r) => setTimeout(r, 500));
      expect(await admin.text("GET", "copy:regsrc:4")).to.equal(null);
    } finally {
      for (const id of mine) await admin.call("RG.UNREGISTER", id);
    }
  });

  it("EXEC after the user's rules changed: each queued command now refused answers Redis' NOPERM in its place, the rest run (as on Redis itself)", async () => {
    // The same user and the same steps on Redis directly (its own ACL) and through the proxy
    // (the proxy's ACL): the replies must be the same.
    const rules = ["on", ">mp", "~mx:*", "&*", "+@all", "-@admin"];
    const run = async (
      c: RawClient,
      changer: RawClient,
      withUser: string[],
      db = "0",
    ): Promise<unknown[]> => {
      expect(await changer.text("ACL", "SETUSER", "mx", "reset", ...rules)).to.equal("OK");
      expect(await changer.text("SELECT", db)).to.equal("OK");
      await changer.call("DEL", "mx:a", "mx:b", "mx:c", "other:mx");
      expect(await c.text("AUTH", "mx", "mp")).to.equal("OK");
      expect(await c.text("SELECT", db)).to.equal("OK");
      expect(await c.text("MULTI")).to.equal("OK");
      for (const cmd of [
        ["SET", "mx:a", "1"],
        ["INCR", "mx:b"],
        ["GET", "mx:a"],
        ["SET", "mx:c", "3"],
      ])
        expect(await c.text(...cmd)).to.equal("QUEUED");
      expect(await changer.text("ACL", "SETUSER", "mx", ...withUser)).to.equal("OK");
      const exec = await c.call("EXEC");
      const values = await changer.text("MGET", "mx:a", "mx:b", "mx:c");
      return [withErrors(exec), values];
    };
    const direct = await RawClient.connect(redis.port);
    open.push(direct);
    const directUser = await RawClient.connect(redis.port);
    open.push(directUser);
    const admin = await login("admin", "adminpw");
    const viaProxy = await anonymous();
    expect(await admin.text("ACL", "LOG", "RESET")).to.equal("OK");
    try {
      // A command taken away, then the keys; in database 0 and in another (where the proxy's
      // MULTI may carry a SELECT of its own).
      for (const db of ["0", "3"])
        for (const change of [["-incr"], ["resetkeys", "~mx:b"]]) {
          const onRedis = await run(directUser, direct, change, db);
          const throughProxy = await run(viaProxy, admin, change, db);
          expect(throughProxy).to.deep.equal(onRedis);
        }
      for (const c of [direct, directUser, admin, viaProxy])
        expect(await c.text("SELECT", "0")).to.equal("OK");
      const [exec] = await run(viaProxy, admin, ["-incr"]);
      expect((exec as unknown[])[1]).to.equal(
        "NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: no permission to execute the command or subcommand",
      );
      const log = logEntries(await admin.text("ACL", "LOG")).map((e) => [e.reason, e.context, e.object]);
      expect(log[0]).to.deep.equal(["command", "multi", "incr"]);
      // With WATCH the server's queue cannot be filled again without losing the watch: none of it runs.
      expect(await admin.text("ACL", "SETUSER", "mx", "reset", ...rules)).to.equal("OK");
      await admin.call("DEL", "mx:a", "mx:b");
      expect(await viaProxy.text("WATCH", "mx:a")).to.equal("OK");
      expect(await viaProxy.text("MULTI")).to.equal("OK");
      expect(await viaProxy.text("SET", "mx:a", "1")).to.equal("QUEUED");
      expect(await viaProxy.text("INCR", "mx:b")).to.equal("QUEUED");
      expect(await admin.text("ACL", "SETUSER", "mx", "-incr")).to.equal("OK");
      expect(await errorOf(viaProxy, "EXEC")).to.match(
        /^EXECABORT Transaction discarded because of: NOPERM ACLs rules changed .*no permission to execute the command or subcommand$/,
      );
      expect(await admin.text("MGET", "mx:a", "mx:b")).to.deep.equal([null, null]);
      // The client goes on outside any transaction, unwatched.
      expect(await viaProxy.text("SET", "mx:a", "2")).to.equal("OK");
      // Commands queued after a TFCALL (run by the proxy after EXEC) are looked at too.
      expect(await admin.text("ACL", "SETUSER", "mx", "reset", ...rules)).to.equal("OK");
      await admin.call("DEL", "mx:a");
      expect(
        await admin.text(
          "TFUNCTION",
          "LOAD",
          "REPLACE",
          "#!js api_version=1.0 name=mxlib\nredis.registerFunction('f', function(){ return 1; });",
        ),
      ).to.equal("OK");
      expect(await viaProxy.text("MULTI")).to.equal("OK");
      expect(await viaProxy.text("SET", "mx:a", "1")).to.equal("QUEUED");
      expect(await viaProxy.text("TFCALL", "mxlib.f", "0")).to.equal("QUEUED");
      expect(await viaProxy.text("GET", "mx:a")).to.equal("QUEUED");
      expect(await admin.text("ACL", "SETUSER", "mx", "-get")).to.equal("OK");
      expect(await errorOf(viaProxy, "EXEC")).to.match(/^EXECABORT .*no permission to execute the command/);
      expect(await admin.text("GET", "mx:a")).to.equal(null);
      // EXEC itself taken away: the transaction is discarded, as Redis' execCommandAbort words it.
      expect(await admin.text("ACL", "SETUSER", "mx", "reset", ...rules)).to.equal("OK");
      expect(await viaProxy.text("MULTI")).to.equal("OK");
      expect(await viaProxy.text("SET", "mx:a", "1")).to.equal("QUEUED");
      expect(await admin.text("ACL", "SETUSER", "mx", "-exec")).to.equal("OK");
      expect(await errorOf(viaProxy, "EXEC")).to.equal(
        "EXECABORT Transaction discarded because of: NOPERM this user has no permissions to run the 'exec' command",
      );
      expect(await admin.text("GET", "mx:a")).to.equal(null);
      expect(await viaProxy.text("GET", "mx:a")).to.equal(null);
      await admin.call("TFUNCTION", "DELETE", "mxlib");
      // A SLOWLOG RESET refused at EXEC leaves the slow log as it was.
      expect(await admin.text("CONFIG", "SET", "slowlog-log-slower-than", "0")).to.equal("OK");
      try {
        expect(await admin.text("ACL", "SETUSER", "mx", "reset", ...rules, "+slowlog")).to.equal("OK");
        expect(await viaProxy.text("MULTI")).to.equal("OK");
        expect(await viaProxy.text("SLOWLOG", "RESET")).to.equal("QUEUED");
        expect(await viaProxy.text("SET", "mx:a", "1")).to.equal("QUEUED");
        expect(await admin.text("ACL", "SETUSER", "mx", "-slowlog")).to.equal("OK");
        const before = Number(await admin.text("SLOWLOG", "LEN"));
        expect(before).to.be.greaterThan(3);
        const exec = (await viaProxy.call("EXEC")) as Reply[];
        expect(exec[0]).to.be.instanceOf(ReplyError);
        expect(Number(await admin.text("SLOWLOG", "LEN"))).to.be.at.least(before);
      } finally {
        expect(await admin.text("CONFIG", "SET", "slowlog-log-slower-than", "10000")).to.equal("OK");
      }
    } finally {
      await direct.call("ACL", "DELUSER", "mx");
      await admin.call("ACL", "DELUSER", "mx");
    }
  });

  it("ACL LOG: refused commands, keys and channels, failed AUTH, grouped as Redis 7.0 groups them; count; RESET", async () => {
    const admin = await login("admin", "adminpw");
    expect(await admin.text("ACL", "LOG", "RESET")).to.equal("OK");
    const app = await login("app", "ap");
    await errorOf(app, "CONFIG", "GET", "maxmemory");
    await errorOf(app, "GET", "secret:1");
    await errorOf(app, "GET", "secret:1");
    await errorOf(app, "PUBLISH", "private", "x");
    expect(await app.text("MULTI")).to.equal("OK");
    await errorOf(app, "GET", "secret:2");
    await app.call("DISCARD");
    await errorOf(await anonymous(), "HELLO", "3", "AUTH", "app", "wrong");
    await errorOf(await anonymous(), "AUTH", "app", "wrong");
    const entries = logEntries(await admin.text("ACL", "LOG"));
    const brief = entries.map((e) => [e.reason, e.context, e.object, e.username, e.count]);
    expect(brief).to.deep.equal([
      ["auth", "toplevel", "AUTH", "app", 1],
      ["auth", "toplevel", "HELLO", "app", 1],
      ["key", "multi", "secret:2", "app", 1],
      ["channel", "toplevel", "private", "app", 1],
      ["key", "toplevel", "secret:1", "app", 2],
      ["command", "toplevel", "config|get", "app", 1],
    ]);
    expect(Number(entries[0]["age-seconds"])).to.be.within(0, 5);
    expect(String(entries[2]["client-info"])).to.match(/ user=app /);
    expect(logEntries(await admin.text("ACL", "LOG", "2"))).to.have.length(2);
    expect(await errorOf(admin, "ACL", "LOG", "x")).to.equal("ERR value is not an integer or out of range");
    expect(await errorOf(app, "ACL", "LOG")).to.equal(NO_CMD("acl|log"));
    expect(await admin.text("ACL", "LOG", "RESET")).to.equal("OK");
    expect(await admin.text("ACL", "LOG")).to.deep.equal([]);
    // CONFIG SET acllog-max-len through the proxy bounds the proxy's log too.
    expect(await admin.text("CONFIG", "SET", "acllog-max-len", "2")).to.equal("OK");
    try {
      for (const key of ["secret:a", "secret:b", "secret:c"]) await errorOf(app, "GET", key);
      expect(logEntries(await admin.text("ACL", "LOG")).map((e) => e.object)).to.deep.equal([
        "secret:c",
        "secret:b",
      ]);
    } finally {
      expect(await admin.text("CONFIG", "SET", "acllog-max-len", "128")).to.equal("OK");
    }
    expect(await admin.text("ACL", "LOG", "RESET")).to.equal("OK");
    // A refused command with the wrong arity gets the arity error, and no entry, as Redis
    // checks the arity first.
    expect(await errorOf(app, "CONFIG", "GET")).to.equal(
      "ERR wrong number of arguments for 'config|get' command",
    );
    expect(await errorOf(app, "EXEC", "x")).to.equal(
      "EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command",
    );
    expect(await admin.text("ACL", "LOG")).to.deep.equal([]);
    const help = (await admin.text("ACL", "HELP")) as string[];
    for (const sub of ["SETUSER", "DELUSER", "LOAD", "SAVE", "LOG"])
      expect(help.some((l) => l.startsWith(sub))).to.equal(true);
  });

  it("ACL SETUSER, DELUSER, LOAD, SAVE need @admin; redis-cli and redis-py change users too", async function () {
    this.timeout(240_000);
    const app = await login("app", "ap");
    for (const sub of ["SETUSER", "DELUSER"])
      expect(await errorOf(app, "ACL", sub, "x")).to.equal(NO_CMD(`acl|${sub.toLowerCase()}`));
    for (const sub of ["LOAD", "SAVE"])
      expect(await errorOf(app, "ACL", sub)).to.equal(NO_CMD(`acl|${sub.toLowerCase()}`));
    const admin = ["--user", "admin", "--pass", "adminpw", "--no-auth-warning"];
    expect(
      await redisCli(proxy.port, ...admin, "ACL", "SETUSER", "clier", "on", ">cl", "~cli:*", "+@all"),
    ).to.equal("OK");
    expect(
      await redisCli(proxy.port, "--user", "clier", "--pass", "cl", "--no-auth-warning", "SET", "cli:1", "x"),
    ).to.equal("OK");
    expect(await redisCli(proxy.port, ...admin, "ACL", "DELUSER", "clier")).to.equal("1");
    const script = path.join(os.tmpdir(), `acl-runtime-py-${process.pid}.py`);
    fs.writeFileSync(
      script,
      [
        "import sys, redis",
        "port = int(sys.argv[1])",
        "r = redis.Redis(port=port, username='admin', password='adminpw', decode_responses=True)",
        "r.acl_log_reset()",
        "print('setuser', r.acl_setuser('pyuser', enabled=True, passwords=['+pypw'], keys=['py:*'], commands=['+@all']))",
        "u = redis.Redis(port=port, username='pyuser', password='pypw', decode_responses=True)",
        "print('set', u.set('py:1', 'v'))",
        "try:",
        "    u.get('other:1')",
        "except redis.exceptions.NoPermissionError as e:",
        "    print('noperm', e)",
        "log = r.acl_log()",
        "print('log', log[0]['reason'], log[0]['object'], log[0]['username'])",
        "print('deluser', r.acl_deluser('pyuser'))",
      ].join("\n"),
    );
    try {
      const { code, output } = await runPython(script, [String(proxy.port)]);
      expect(code, output).to.equal(0);
      expect(output).to.contain("setuser True");
      expect(output).to.contain("set True");
      expect(output).to.contain("noperm");
      expect(output).to.contain("log key other:1 pyuser");
      expect(output).to.contain("deluser 1");
    } finally {
      fs.rmSync(script, { force: true });
    }
  });

  it("ACL SAVE writes the users in ACL LIST form (temp file, then rename); ACL LOAD reads them back", async () => {
    const admin = await login("admin", "adminpw");
    expect(
      await admin.text("ACL", "SETUSER", "saved", "on", ">sv", "%R~ro:*", "&ch", "-@all", "+get"),
    ).to.equal("OK");
    const list = (await admin.text("ACL", "LIST")) as string[];
    expect(await admin.text("ACL", "SAVE")).to.equal("OK");
    expect(fs.readFileSync(aclfile, "utf8")).to.equal(list.map((l) => `${l}\n`).join(""));
    expect(fs.readdirSync(dir)).to.deep.equal(["users.acl"]);
    expect(await admin.text("ACL", "LOAD")).to.equal("OK");
    // ACL LOAD disconnects the clients of every user but default, the asking one included.
    expect(await closedWithin(admin)).to.equal(true);
    expect(await (await login("admin", "adminpw")).text("ACL", "LIST")).to.deep.equal(list);
    const saved = await login("saved", "sv");
    expect(await saved.text("GET", "ro:1")).to.equal(null);
    expect(await errorOf(saved, "SET", "ro:1", "x")).to.equal(NO_CMD("set"));
  });

  it("ACL LOAD: a bad line leaves the users as they were and names the line; a good file replaces them, disconnecting the clients of every user but default", async () => {
    const admin = await login("admin", "adminpw");
    const before = await admin.text("ACL", "LIST");
    fs.writeFileSync(aclfile, [...FILE_USERS, "user broken on +nosuch", "usr typo"].join("\n") + "\n");
    expect(await errorOf(admin, "ACL", "LOAD")).to.equal(
      `ERR ${aclfile}:4: Error in applying operation '+nosuch': Unknown command or category name in ACL. ` +
        `${aclfile}:5 should start with user keyword followed by the username. ` +
        "WARNING: ACL errors detected, no change to the previously active ACL rules was performed",
    );
    expect(await admin.text("ACL", "LIST")).to.deep.equal(before);
    const app = await login("app", "ap");
    const anon = await anonymous();
    fs.writeFileSync(
      aclfile,
      [...FILE_USERS.slice(0, 2), "user app on >ap2 ~app:* +@all -@admin"].join("\n") + "\n",
    );
    expect(await admin.text("ACL", "LOAD")).to.equal("OK");
    // As Redis 7.0: the clients of the old users (default aside) are disconnected, the asking one too.
    expect(await closedWithin(app)).to.equal(true);
    expect(await closedWithin(admin)).to.equal(true);
    expect(await anon.text("PING")).to.equal("PONG");
    expect(await errorOf(await anonymous(), "AUTH", "app", "ap")).to.equal(WRONGPASS);
    const app2 = await login("app", "ap2");
    expect(await errorOf(app2, "PUBLISH", "news", "x")).to.match(/^NOPERM/);
    expect(await (await login("admin", "adminpw")).text("ACL", "USERS")).to.deep.equal([
      "admin",
      "app",
      "default",
    ]);
  });

  it("without an aclfile (--user lines), ACL LOAD and SAVE answer Redis' error", async () => {
    const other = await startProxy([{ port: redis.port }], { users: ["default on nopass ~* &* +@all"] });
    try {
      const c = await RawClient.connect(other.port);
      open.push(c);
      expect(await errorOf(c, "ACL", "LOAD")).to.equal(NO_ACLFILE);
      expect(await errorOf(c, "ACL", "SAVE")).to.equal(NO_ACLFILE);
      expect(await c.text("ACL", "SETUSER", "x", "on", "nopass")).to.equal("OK");
      expect(await c.text("ACL", "USERS")).to.deep.equal(["default", "x"]);
    } finally {
      await other.close();
    }
  });
});

describe("ACL at run time with --threads 2: a change made on one thread holds on both", function () {
  this.timeout(90_000);
  let redis: RedisNode;
  let proxy: ChildProxy;
  const open: RawClient[] = [];

  /** A raw connection and the pid of the thread that serves it. */
  async function connection(): Promise<[RawClient, number]> {
    const c = await RawClient.connect(proxy.port);
    open.push(c);
    const info = String(await c.text("INFO", "proxy"));
    return [c, Number(/^process_id:(\d+)/m.exec(info)![1])];
  }

  /** Two connections served by different threads. */
  async function onTwoThreads(): Promise<[RawClient, RawClient, number, number]> {
    const [first, pid] = await connection();
    for (let i = 0; i < 8; i++) {
      const [other, otherPid] = await connection();
      if (otherPid !== pid) return [first, other, pid, otherPid];
    }
    throw new Error("eight connections all landed on one thread");
  }

  before(async () => {
    redis = await startRedis();
    proxy = await ChildProxy.start({
      upstreams: [{ port: redis.port }],
      args: ["--threads", "2", "--user", "default on nopass ~* &* +@all"],
    });
    await eventually(
      async () => {
        const c = await RawClient.connect(proxy.port);
        try {
          return String(await c.text("INFO", "proxy"));
        } finally {
          c.close();
        }
      },
      (info) => /^threads:2\r?$/m.test(info),
      "both threads ready",
    );
  });
  afterEach(() => {
    for (const c of open.splice(0)) c.close();
  });
  after(async () => {
    await proxy?.stop();
    await redis?.stop();
  });

  it("SETUSER on one thread: AUTH and the user's clients on the other follow; DELUSER disconnects them there", async () => {
    const [a, b] = await onTwoThreads();
    expect(await a.text("ACL", "SETUSER", "tu", "on", ">tp", "~t:*", "+@all")).to.equal("OK");
    expect(await b.text("AUTH", "tu", "tp")).to.equal("OK");
    expect(await b.text("SET", "t:1", "v")).to.equal("OK");
    expect(await a.text("ACL", "SETUSER", "tu", "-set")).to.equal("OK");
    expect(await errorOf(b, "SET", "t:1", "w")).to.equal(NO_CMD("set"));
    expect(await a.text("ACL", "LIST")).to.deep.equal(await b.text("ACL", "LIST"));
    // ACL LOG from either thread lists the refusal made on the other.
    expect(logEntries(await a.text("ACL", "LOG")).map((e) => e.object)).to.include("set");
    expect(await a.text("ACL", "DELUSER", "tu")).to.equal(1);
    expect(await closedWithin(b)).to.equal(true);
    expect(await a.text("ACL", "USERS")).to.deep.equal(["default"]);
    expect(await a.text("ACL", "LOG", "RESET")).to.equal("OK");
    const [, c2] = await onTwoThreads();
    expect(await c2.text("ACL", "LOG")).to.deep.equal([]);
  });

  it("a thread started again takes the users of the running thread, not the startup ones", async () => {
    const [a, , pidA, pidB] = await onTwoThreads();
    expect(await a.text("ACL", "SETUSER", "late", "on", ">lp", "~*", "+@all")).to.equal("OK");
    process.kill(pidB, "SIGKILL");
    // The supervisor starts another thread; each connection is dealt to either one.
    await eventually(
      async () => {
        const c = await RawClient.connect(proxy.port);
        try {
          const info = String(await c.text("INFO", "proxy"));
          const pid = Number(/^process_id:(\d+)/m.exec(info)![1]);
          return pid !== pidA && pid !== pidB && /^threads:2\r?$/m.test(info)
            ? toText(await c.call("AUTH", "late", "lp"))
            : "other";
        } catch {
          return "failed";
        } finally {
          c.close();
        }
      },
      (reply) => reply === "OK",
      "the new thread knows the user made at run time",
      30_000,
    );
  });
});

function sha(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
