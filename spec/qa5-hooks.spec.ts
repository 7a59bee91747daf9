import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis } from "./harness/index.js";
import { runPython } from "./support/redis-py.js";

/**
 * A command hook's callNext() runs the hooked command on a shared upstream connection. A hook
 * of SUBSCRIBE (RedisGears refused hooks of commands not allowed in scripts) left that
 * connection in subscriber mode: the next commands of every client sent on it failed, and
 * PING came back as a subscriber's "pong".
 */
describe("qa5: hooks of commands a script may not run (redis-py)", () => {
  it("are refused with RedisGears' text; a hook's callNext() of XREAD BLOCK is refused too", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const script = path.join(os.tmpdir(), `qa5-hooks-${process.pid}.py`);
    fs.writeFileSync(
      script,
      [
        "import sys, redis",
        "r = redis.Redis(port=int(sys.argv[1]), decode_responses=True)",
        "for cmd in ['subscribe', 'multi', 'exec', 'eval', 'blpop', 'select', 'client', 'sync']:",
        "    try:",
        "        print(cmd, r.execute_command('RG.EXECUTE', \"GB('CommandReader').map(x => callNext(...x.slice(1))).register({hook: '%s'})\" % cmd))",
        "    except redis.exceptions.ResponseError as e:",
        "        print(cmd, 'error', e)",
        "p = r.pubsub()",
        "p.subscribe('ch')",
        "p.get_message(timeout=1)",
        "for i in range(20):",
        "    r.set('k%d' % i, i)",
        "print('ping', r.ping(), 'get', r.get('k19'))",
        "print('xread', r.execute_command('RG.EXECUTE', \"GB('CommandReader').map(x => { try { return callNext(...x.slice(1)) } catch (e) { return '-' + e.message } }).register({hook: 'xread'})\"))",
        "try:",
        "    print('xread-block', r.execute_command('XREAD', 'BLOCK', '10', 'STREAMS', 's', '$'))",
        "except redis.exceptions.ResponseError as e:",
        "    print('xread-block error', e)",
        "print('dump', len(r.execute_command('RG.DUMPREGISTRATIONS')))",
      ].join("\n"),
    );
    try {
      const { code, output } = await runPython(script, [String(proxy.port)]);
      expect(code, output).to.equal(0);
      for (const cmd of ["subscribe", "multi", "exec", "eval", "blpop", "select", "client", "sync"])
        expect(output, cmd).to.contain(
          `${cmd} error Can not hook a command which are not allowed inside a script`,
        );
      expect(output).to.contain("ping True get 19");
      expect(output).to.contain("xread OK");
      expect(output).to.contain("xread-block error 'xread' cannot be called from a gears script");
      expect(output).to.contain("dump 1");
    } finally {
      fs.rmSync(script, { force: true });
      await proxy.close();
      await redis.stop();
    }
  });

  // KeysReader's `commands` runs them in the proxy's path the same way: SUBSCRIBE there did the same.
  it("a KeysReader's commands of the same kind are refused too (ioredis)", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const client = new Redis(proxy.port);
    try {
      for (const command of ["subscribe", "multi", "blpop", "eval"]) {
        const error = await client
          .call("RG.EXECUTE", `GB().register('*', {commands: ['get', '${command}']})`)
          .catch((e: Error) => e.message);
        expect(error, command).to.equal("ERR Can not hook a command which are not allowed inside a script");
      }
      // XREAD/XREADGROUP block or not by their arguments: refused as RedisGears refused them.
      for (const command of ["xread", "xreadgroup"]) {
        const error = await client
          .call("RG.EXECUTE", `GB().register('*', {commands: ['${command}']})`)
          .catch((e: Error) => e.message);
        expect(error, command).to.equal("ERR Can not hook a command with moveable keys by key prefix");
      }
      expect(await client.call("RG.EXECUTE", "GB().register('*', {commands: ['get', 'set']})")).to.equal(
        "OK",
      );
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });
});

describe("hooks of commands the server does not have", () => {
  it("are refused with RedisGears' text, and nothing is registered; a known command's hook still is", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const client = new Redis(proxy.port);
    const hook = (cmd: string): Promise<unknown> =>
      client.call(
        "RG.EXECUTE",
        `GB('CommandReader').map(x => callNext(...x.slice(1))).register({hook: '${cmd}'})`,
      );
    try {
      await hook("nosuchcommand").then(
        () => expect.fail("registered"),
        (e: Error) => expect(e.message).to.equal("ERR Can not override an unexisting command"),
      );
      expect(await client.call("RG.DUMPREGISTRATIONS")).to.deep.equal([]);
      expect(await hook("HSET")).to.equal("OK");
      expect(await client.hset("h", "f", "v")).to.equal("1");
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });
});
