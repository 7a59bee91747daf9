import { spawn, execFile, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { parseArgs, parseCommandLine, UsageError } from "../src/cli.js";
import { DEFAULT_CONFIG, type ProxyConfig } from "../src/config.js";
import { createLogger } from "../src/observability/log.js";
import { freePort, startEmbeddedRedis, type EmbeddedRedis } from "../src/upstream/embedded-redis.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CLI = path.join(ROOT, "dist/src/cli.js");
const START_SH = path.join(ROOT, "scripts/start.sh");

const tempDirs: string[] = [];

function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `gears-proxy-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

after(() => {
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** The UsageError parseArgs throws for these arguments. */
function usageErrorOf(argv: string[]): UsageError {
  try {
    parseArgs(argv, {});
  } catch (err) {
    if (err instanceof UsageError) return err;
    throw err;
  }
  throw new Error(`parseArgs accepted ${argv.join(" ")}`);
}

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Output of a child so far, and its end. */
function watch(child: ChildProcess): { output: { stdout: string; stderr: string }; done: Promise<Finished> } {
  const output = { stdout: "", stderr: "" };
  child.stdout?.on("data", (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output.stderr += chunk.toString()));
  const done = new Promise<Finished>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, ...output }));
  });
  return { output, done };
}

function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Finished> {
  return watch(spawn(process.execPath, [CLI, ...args], { env, stdio: ["ignore", "pipe", "pipe"] })).done;
}

/** A PATH directory holding `node` (and the given tools) only, so redis-server cannot be found. */
function pathWithout(tools: string[] = []): string {
  const dir = tempDir("path");
  fs.symlinkSync(process.execPath, path.join(dir, "node"));
  for (const tool of tools) {
    const found = ["/usr/bin", "/bin"].map((d) => path.join(d, tool)).find((p) => fs.existsSync(p));
    if (found) fs.symlinkSync(found, path.join(dir, tool));
  }
  return dir;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function ping(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write("PING\r\n"));
    socket.once("data", (chunk: Buffer) => {
      socket.destroy();
      resolve(chunk.toString().trim());
    });
    socket.once("error", reject);
  });
}

function redisCli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("redis-cli", ["-p", String(port), ...args], { timeout: 5000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout.trim()),
    );
  });
}

type LogLine = Record<string, unknown> & { msg?: string };

/** Resolves with the first JSON log line on stderr that matches; rejects if the process ends first. */
async function logLine(
  watched: ReturnType<typeof watch>,
  match: (line: LogLine) => boolean,
  timeoutMs = 15000,
): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  let ended = false;
  void watched.done.then(() => (ended = true));
  while (Date.now() < deadline) {
    for (const text of watched.output.stderr.split("\n")) {
      if (!text.startsWith("{")) continue;
      const line = JSON.parse(text) as LogLine;
      if (match(line)) return line;
    }
    if (ended) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`log line not seen; stderr:\n${watched.output.stderr}`);
}

describe("cli: parseArgs", () => {
  it("uses the documented defaults when given no flags", () => {
    expect(parseArgs([], {})).to.deep.equal(DEFAULT_CONFIG);
    expect(DEFAULT_CONFIG.port).to.equal(6380);
    expect(DEFAULT_CONFIG.bind).to.equal("127.0.0.1");
    expect(DEFAULT_CONFIG.dataDir).to.equal("./data");
    expect(DEFAULT_CONFIG.shutdownTimeoutMs).to.equal(10_000);
  });

  it("reads every flag into the config", () => {
    const config = parseArgs(
      [
        "--port=7000",
        "--bind",
        "0.0.0.0",
        "--upstream-user",
        "proxy",
        "--upstream-password",
        "pw",
        "--upstream-connections",
        "4",
        "--connect-timeout",
        "500",
        "--requirepass",
        "secret",
        "--maxclients",
        "50",
        "--timeout",
        "30",
        "--log-level",
        "debug",
        "--data-dir",
        "/tmp/x",
        "--proto-max-bulk-len",
        "1mb",
        "--client-output-buffer-limit",
        "1000",
        "--shutdown-timeout",
        "2500",
        "--cluster-emulation",
        "--announce-host",
        "proxy.example",
        "--announce-port",
        "7001",
      ],
      {},
    );
    const expected: ProxyConfig = {
      ...DEFAULT_CONFIG,
      port: 7000,
      bind: "0.0.0.0",
      upstreamUser: "proxy",
      upstreamPassword: "pw",
      upstreamConnections: 4,
      connectTimeoutMs: 500,
      requirepass: "secret",
      maxclients: 50,
      timeout: 30,
      logLevel: "debug",
      dataDir: "/tmp/x",
      protoMaxBulkLen: 1024 * 1024,
      clientOutputBufferLimit: 1000,
      shutdownTimeoutMs: 2500,
      clusterEmulation: true,
      announceHost: "proxy.example",
      announcePort: 7001,
    };
    expect(config).to.deep.equal(expected);
  });

  it("collects a repeated --upstream (and comma-separated seeds) in order", () => {
    const config = parseArgs(
      ["--upstream", "10.0.0.1:7000", "--upstream", "b:7001,[::1]:7002", "--port", "1"],
      {},
    );
    expect(config.upstreams).to.deep.equal([
      { host: "10.0.0.1", port: 7000 },
      { host: "b", port: 7001 },
      { host: "::1", port: 7002 },
    ]);
    expect(config.port).to.equal(1);
    expect(parseArgs(["--port", "1", "--port", "2"], {}).port, "the last repeat wins").to.equal(2);
  });

  it("reads a JSON config file with camelCase or kebab-case keys, and flags override it", () => {
    const file = path.join(tempDir("config"), "proxy.json");
    fs.writeFileSync(
      file,
      JSON.stringify({
        port: 7100,
        "log-level": "warn",
        upstream: ["a:1", "b:2"],
        maxclients: 10,
        clientOutputBufferLimit: "64mb",
        "cluster-emulation": true,
      }),
    );
    const config = parseArgs(["--config", file, "--port", "7200", "--upstream", "c:3"], {});
    expect(config.port).to.equal(7200);
    expect(config.upstreams).to.deep.equal([{ host: "c", port: 3 }]);
    expect(config.logLevel).to.equal("warn");
    expect(config.maxclients).to.equal(10);
    expect(config.clientOutputBufferLimit).to.equal(64 * 1024 * 1024);
    expect(config.clusterEmulation).to.equal(true);
    expect(parseArgs(["--config", file], {}).upstreams).to.have.length(2);
  });

  it("refuses unknown keys and bad values in the config file, naming the file", () => {
    const dir = tempDir("config");
    const unknown = path.join(dir, "unknown.json");
    fs.writeFileSync(unknown, JSON.stringify({ prot: 1 }));
    expect(usageErrorOf(["--config", unknown]).message)
      .to.include(unknown)
      .and.include('"prot"');
    const bad = path.join(dir, "bad.json");
    fs.writeFileSync(bad, JSON.stringify({ port: 70000 }));
    expect(usageErrorOf(["--config", bad]).message).to.include("70000");
    expect(usageErrorOf(["--config", path.join(dir, "missing.json")]).message).to.include("cannot read");
  });

  it("accepts sizes in bytes or with Redis units (256mb, 1gb, 10k)", () => {
    const size = (text: string): number =>
      parseArgs(["--client-output-buffer-limit", text], {}).clientOutputBufferLimit;
    expect(size("256mb")).to.equal(256 * 1024 * 1024);
    expect(size("1gb")).to.equal(1024 ** 3);
    expect(size("1GB")).to.equal(1024 ** 3);
    expect(size("10k")).to.equal(10_000);
    expect(size("12345")).to.equal(12345);
    expect(parseArgs(["--proto-max-bulk-len", "2mb"], {}).protoMaxBulkLen).to.equal(2 * 1024 * 1024);
    expect(usageErrorOf(["--client-output-buffer-limit", "12xb"]).message).to.include(
      "--client-output-buffer-limit",
    );
  });

  it("takes the upstream password from GEARS_PROXY_UPSTREAM_PASSWORD unless the flag is given", () => {
    const env = { GEARS_PROXY_UPSTREAM_PASSWORD: "from-env" };
    expect(parseArgs([], env).upstreamPassword).to.equal("from-env");
    expect(parseArgs(["--upstream-password", "flag"], env).upstreamPassword).to.equal("flag");
  });

  it("rejects bad values and unknown flags with a UsageError (exit code 2) naming the problem", () => {
    const cases: [string[], string][] = [
      [["--port", "99999"], "--port"],
      [["--port", "abc"], "--port"],
      [["--announce-port", "0"], "--announce-port"],
      [["--upstream", "nohost"], "--upstream"],
      [["--upstream", "h:70000"], "--upstream"],
      [["--maxclients", "0"], "--maxclients"],
      [["--log-level", "loud"], "log-level"],
      [["--bogus"], "Unknown argument: bogus"],
      [["stray"], "Unknown argument: stray"],
      [["--port"], "Not enough arguments following: port"],
    ];
    for (const [argv, text] of cases) {
      const err = usageErrorOf(argv);
      expect(err.exitCode, argv.join(" ")).to.equal(2);
      expect(err.message, argv.join(" ")).to.include(text);
    }
  });

  it("answers --help and --version with text to print and exit code 0", () => {
    const help = parseCommandLine(["--help"], {});
    expect(help.kind).to.equal("print");
    expect(help.kind === "print" && help.text).to.include("--upstream");
    const version = parseCommandLine(["--version"], {});
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string };
    expect(version).to.deep.equal({ kind: "print", text: pkg.version });
    expect(usageErrorOf(["--help"]).exitCode).to.equal(0);
  });
});

describe("cli: the gears-proxy process", () => {
  it("--help lists every option and exits 0", async () => {
    const result = await runCli(["--help"]);
    expect(result.code).to.equal(0);
    for (const flag of [
      "--port",
      "--bind",
      "--upstream",
      "--upstream-user",
      "--upstream-password",
      "--upstream-connections",
      "--requirepass",
      "--maxclients",
      "--timeout",
      "--log-level",
      "--data-dir",
      "--proto-max-bulk-len",
      "--client-output-buffer-limit",
      "--cluster-emulation",
      "--announce-host",
      "--announce-port",
      "--config",
      "--version",
    ]) {
      expect(result.stdout).to.include(flag);
    }
  });

  it("--port 99999 exits 2 with a message on stderr", async () => {
    const result = await runCli(["--port", "99999"]);
    expect(result.code).to.equal(2);
    expect(result.stderr).to.include("--port").and.include("99999");
  });

  it("an unknown flag (--bogus) exits 2 with a message on stderr", async () => {
    const result = await runCli(["--bogus"]);
    expect(result.code).to.equal(2);
    expect(result.stderr).to.include("Unknown argument: bogus");
  });

  it("without redis-server on PATH and no --upstream, exits non-zero with the install hint", async () => {
    const cwd = tempDir("cwd");
    const result = await runCli(["--port", "0", "--data-dir", path.join(cwd, "data")], {
      PATH: pathWithout(),
    });
    expect(result.code).to.not.equal(0);
    expect(result.stderr).to.include("redis-server was not found on PATH");
    expect(result.stderr).to.include("apt-get install redis-server").and.include("brew install redis");
    expect(result.stderr).to.include("--upstream host:port");
  });

  it("scripts/start.sh without redis-server (and no apt-get) prints how to install it and exits 1", async () => {
    const child = spawn("/bin/sh", [START_SH], {
      env: { PATH: pathWithout(["dirname", "id"]) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const result = await watch(child).done;
    expect(result.code).to.equal(1);
    expect(result.stderr).to.include("redis-server was not found").and.include("--upstream host:port");
  });
});

describe("embedded redis-server", () => {
  let redis: EmbeddedRedis | undefined;
  afterEach(async () => redis?.stop());

  it("startEmbeddedRedis starts a redis-server that answers PING, and stop() ends its process", async () => {
    const dataDir = path.join(tempDir("embedded"), "nested", "data");
    redis = await startEmbeddedRedis(dataDir, createLogger("silent"));
    expect(redis.host).to.equal("127.0.0.1");
    expect(redis.dataDir).to.equal(dataDir);
    expect(fs.statSync(dataDir).isDirectory()).to.equal(true);
    expect(await ping(redis.port)).to.equal("+PONG");
    expect(await redisCli(redis.port, "config", "get", "dir")).to.include(fs.realpathSync(dataDir));
    expect(isAlive(redis.pid)).to.equal(true);
    await redis.stop();
    expect(isAlive(redis.pid)).to.equal(false);
    await redis.stop(); // a second stop is harmless
  });
});

describe("npm start (zero-config)", () => {
  it("npm start with no flags serves redis-cli and SIGINT stops the proxy and its redis-server", async function () {
    this.timeout(40000);
    const cwd = tempDir("start");
    const port = await freePort();
    const child = spawn("/bin/sh", [START_SH, "--port", String(port)], {
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const watched = watch(child);
    let redisPid = 0;
    try {
      const started = await logLine(watched, (l) =>
        String(l.msg).startsWith("started embedded redis-server"),
      );
      redisPid = started.pid as number;
      expect(started.dir).to.equal(fs.realpathSync(path.join(cwd, "data")));
      await logLine(watched, (l) => String(l.msg).startsWith("gears-proxy listening"));
      expect(await redisCli(port, "set", "a", "1")).to.equal("OK");
      expect(await redisCli(port, "get", "a")).to.equal("1");
      child.kill("SIGINT");
      const result = await watched.done;
      expect(result.code, result.stderr).to.equal(0);
      expect(isAlive(redisPid)).to.equal(false);
      expect(fs.existsSync(path.join(cwd, "data", "dump.rdb"))).to.equal(true);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      if (redisPid && isAlive(redisPid)) process.kill(redisPid, "SIGKILL");
    }
  });
});

describe("a proxy killed with SIGKILL, started again on the same data directory", () => {
  it("stops the redis-server the killed one left running (it saves), and serves what it held", async function () {
    this.timeout(60000);
    const dataDir = path.join(tempDir("orphan"), "data");
    const start = async (): Promise<{
      child: ChildProcess;
      watched: ReturnType<typeof watch>;
      port: number;
    }> => {
      const port = await freePort();
      const child = spawn(process.execPath, [CLI, "--port", String(port), "--data-dir", dataDir], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      return { child, watched: watch(child), port };
    };
    const pids: number[] = [];
    const children: ChildProcess[] = [];
    try {
      const first = await start();
      children.push(first.child);
      const started = await logLine(first.watched, (l) =>
        String(l.msg).startsWith("started embedded redis-server"),
      );
      const orphan = started.pid as number;
      pids.push(orphan);
      await logLine(first.watched, (l) => String(l.msg).startsWith("gears-proxy listening"));
      expect(await redisCli(first.port, "set", "through", "proxy")).to.equal("OK");
      // A second proxy on the same directory while the first runs: refused, the first's server untouched.
      const other = await start();
      children.push(other.child);
      const second = await Promise.race([
        other.watched.done,
        new Promise<Finished>((resolve) =>
          setTimeout(() => {
            other.child.kill("SIGKILL");
            resolve({ code: 0, signal: null, ...other.watched.output });
          }, 10000),
        ),
      ]);
      expect(second.code, "the second proxy's exit").to.not.equal(0);
      expect(second.stderr).to.include("another running gears-proxy");
      expect(isAlive(orphan)).to.equal(true);
      first.child.kill("SIGKILL");
      await first.watched.done;
      expect(isAlive(orphan), "the killed proxy's redis-server still runs").to.equal(true);
      // Written after the last save: only in the orphan's memory.
      expect(await redisCli(started.port as number, "set", "after", "kill")).to.equal("OK");
      const again = await start();
      children.push(again.child);
      await logLine(again.watched, (l) => String(l.msg).startsWith("an embedded redis-server left running"));
      const restarted = await logLine(again.watched, (l) =>
        String(l.msg).startsWith("started embedded redis-server"),
      );
      pids.push(restarted.pid as number);
      await logLine(again.watched, (l) => String(l.msg).startsWith("gears-proxy listening"));
      expect(isAlive(orphan)).to.equal(false);
      expect(await redisCli(again.port, "get", "through")).to.equal("proxy");
      expect(await redisCli(again.port, "get", "after")).to.equal("kill");
      again.child.kill("SIGINT");
      expect((await again.watched.done).code).to.equal(0);
    } finally {
      for (const child of children)
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      for (const pid of pids) if (isAlive(pid)) process.kill(pid, "SIGKILL");
    }
  });
});
