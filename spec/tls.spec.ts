/**
 * TLS on both sides: clients (redis-cli --tls, ioredis, node-redis) to the proxy's --tls-port,
 * and the proxy to a TLS-only redis-server and a TLS-only cluster. The spec makes its own CAs.
 */
import { execFile, execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { Cluster, Redis } from "ioredis";
import { createClient } from "redis";
import { parseArgs, UsageError } from "../src/cli.js";
import type { ProxyConfig } from "../src/config.js";
import { ChildProxy } from "./support/child-proxy.js";
import { eventually } from "./support/polling.js";
import {
  freePort,
  redisCliTlsArgs,
  startCluster,
  startProxy,
  startRedis,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
  type TlsFiles,
} from "./harness/index.js";

/**
 * A CA (`name`-ca.crt) and one certificate it signed for localhost and 127.0.0.1. The leaf has
 * no extended key usage, so the same file serves as a server's and as a client's certificate.
 */
function makePki(dir: string, name: string, days = 2): TlsFiles {
  const run = (...args: string[]): void => {
    execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run(
    "req",
    "-x509",
    "-new",
    ...ec,
    "-days",
    String(days),
    "-subj",
    `/CN=${name} CA`,
    "-keyout",
    `${name}-ca.key`,
    "-out",
    `${name}-ca.crt`,
  );
  run("req", "-new", ...ec, "-subj", "/CN=localhost", "-keyout", `${name}.key`, "-out", `${name}.csr`);
  fs.writeFileSync(path.join(dir, `${name}.ext`), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  run(
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${name}-ca.crt`,
    "-CAkey",
    `${name}-ca.key`,
    "-CAcreateserial",
    "-days",
    String(days),
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.crt`,
  );
  return {
    ca: path.join(dir, `${name}-ca.crt`),
    cert: path.join(dir, `${name}.crt`),
    key: path.join(dir, `${name}.key`),
  };
}

/** Node's TLS settings for a client presenting `client` (or no certificate) and trusting `trust`. */
function clientTls(trust: TlsFiles, client?: TlsFiles): tls.ConnectionOptions {
  return {
    ca: fs.readFileSync(trust.ca),
    ...(client !== undefined ? { cert: fs.readFileSync(client.cert), key: fs.readFileSync(client.key) } : {}),
  };
}

/** PING over a fresh TLS connection: the reply line, or the error that ended the connection. */
function tlsPing(port: number, options: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({ ...options, host: "127.0.0.1", port });
    let data = "";
    socket.setTimeout(5000, () => socket.destroy(new Error("timeout")));
    socket.on("secureConnect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk: Buffer) => {
      data += chunk.toString();
      if (data.includes("\r\n")) {
        socket.destroy();
        resolve(data.trim());
      }
    });
    socket.on("error", (err) => resolve(`error: ${err.message}`));
    socket.on("close", () => resolve(data === "" ? "error: closed" : data.trim()));
  });
}

function redisCli(port: number, files: TlsFiles, ...args: string[]): Promise<string> {
  const argv = ["-h", "127.0.0.1", "-p", String(port), ...redisCliTlsArgs(files), ...args];
  return new Promise((resolve, reject) => {
    execFile("redis-cli", argv, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.join(" ")}: ${err.message}\n${stdout}${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/** The certificate a TLS server shows a fresh connection: its SHA-256 fingerprint. */
function servedCertificate(port: number, trust: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca: trust.map((f) => fs.readFileSync(f)) }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fingerprint);
    });
    socket.on("error", reject);
  });
}

function fingerprintOf(certFile: string): string {
  return new crypto.X509Certificate(fs.readFileSync(certFile)).fingerprint256;
}

/** What the proxy needs to dial TLS upstreams signed by `pki`, presenting the same certificate. */
function upstreamTls(pki: TlsFiles): Partial<ProxyConfig> {
  return {
    upstreamTls: true,
    upstreamTlsCaCertFile: pki.ca,
    upstreamTlsCertFile: pki.cert,
    upstreamTlsKeyFile: pki.key,
  };
}

describe("TLS", function () {
  this.timeout(60_000);
  let dir: string;
  let pki: TlsFiles;
  let otherPki: TlsFiles;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "gears-proxy-tls-"));
    pki = makePki(dir, "main");
    otherPki = makePki(dir, "other");
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe("options", () => {
    it("are read from flags and from the config file alike", () => {
      const flags = parseArgs([
        "--upstream",
        "127.0.0.1:7000",
        "--tls-port",
        "6390",
        "--tls-cert-file",
        pki.cert,
        "--tls-key-file",
        pki.key,
        "--tls-ca-cert-file",
        pki.ca,
        "--tls-auth-clients",
        "optional",
        "--upstream-tls",
        "--upstream-tls-ca-cert-file",
        pki.ca,
        "--upstream-tls-servername",
        "redis.internal",
        "--upstream-tls-cert-file",
        pki.cert,
        "--upstream-tls-key-file",
        pki.key,
      ]);
      const file = path.join(dir, "tls.json");
      fs.writeFileSync(
        file,
        JSON.stringify({
          upstream: "127.0.0.1:7000",
          "tls-port": 6390,
          tlsCertFile: pki.cert,
          "tls-key-file": pki.key,
          tlsCaCertFile: pki.ca,
          "tls-auth-clients": "optional",
          upstreamTls: true,
          "upstream-tls-ca-cert-file": pki.ca,
          upstreamTlsServername: "redis.internal",
          upstreamTlsCertFile: pki.cert,
          upstreamTlsKeyFile: pki.key,
        }),
      );
      const fromFile = parseArgs(["--config", file]);
      expect(fromFile).to.deep.equal(flags);
      expect(flags).to.include({
        tlsPort: 6390,
        tlsAuthClients: "optional",
        upstreamTls: true,
        upstreamTlsServername: "redis.internal",
      });
    });

    it("refuse what cannot work, with a clear message", () => {
      const fails = (argv: string[]): string => {
        try {
          parseArgs(argv);
        } catch (err) {
          expect(err).to.be.instanceOf(UsageError);
          return (err as Error).message;
        }
        throw new Error(`accepted: ${argv.join(" ")}`);
      };
      expect(fails(["--tls-port", "6390"])).to.include("--tls-port needs --tls-cert-file");
      expect(fails(["--tls-port", "6390", "--tls-cert-file", "a", "--tls-key-file", "b"])).to.include(
        "needs --tls-ca-cert-file",
      );
      expect(fails(["--tls-auth-clients", "maybe"])).to.include("maybe");
      expect(fails(["--upstream-tls-servername", "x"])).to.include("need --upstream-tls");
      expect(fails(["--upstream-tls", "--upstream-tls-cert-file", "a"])).to.include("go together");
    });
  });

  describe("clients to the proxy", () => {
    let redis: RedisNode;
    let proxy: RunningProxy;
    let tlsPort: number;

    before(async () => {
      redis = await startRedis();
      proxy = await startProxy([{ port: redis.port }], {
        tlsPort: 0,
        tlsCertFile: pki.cert,
        tlsKeyFile: pki.key,
        tlsCaCertFile: pki.ca,
        tlsAuthClients: "yes",
      });
      tlsPort = proxy.server.tlsPort!;
    });

    after(async () => {
      await proxy.close();
      await redis.stop();
    });

    it("listens on the TLS port beside the plain one", () => {
      expect(tlsPort).to.be.a("number").and.not.equal(proxy.port);
    });

    it("serves redis-cli --tls", async () => {
      expect(await redisCli(tlsPort, pki, "SET", "tls:cli", "v1")).to.equal("OK");
      expect(await redisCli(tlsPort, pki, "GET", "tls:cli")).to.equal("v1");
      // Through the proxy to the plain upstream: the key is really there.
      expect(await redis.call("GET", "tls:cli")).to.equal("v1");
    });

    it("serves ioredis over TLS, and plain clients on the plain port at the same time", async () => {
      const secure = new Redis({
        host: "127.0.0.1",
        port: tlsPort,
        tls: clientTls(pki, pki),
        maxRetriesPerRequest: 1,
      });
      const plain = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 1 });
      try {
        expect(await secure.set("tls:io", "v2")).to.equal("OK");
        expect(await plain.get("tls:io")).to.equal("v2");
        expect(await secure.incrby("tls:io:n", 5)).to.equal(5);
      } finally {
        secure.disconnect();
        plain.disconnect();
      }
    });

    it("serves node-redis over TLS", async () => {
      const client = createClient({
        socket: {
          host: "127.0.0.1",
          port: tlsPort,
          tls: true,
          ca: fs.readFileSync(pki.ca),
          cert: fs.readFileSync(pki.cert),
          key: fs.readFileSync(pki.key),
          reconnectStrategy: false,
        },
      });
      await client.connect();
      try {
        expect(await client.hSet("tls:hash", { a: "1", b: "2" })).to.equal(2);
        expect(await client.hGetAll("tls:hash")).to.deep.equal({ a: "1", b: "2" });
      } finally {
        client.destroy();
      }
    });

    it("refuses a client certificate from another CA, and a client without one (--tls-auth-clients yes)", async () => {
      expect(await tlsPing(tlsPort, clientTls(pki, pki))).to.equal("+PONG");
      expect(await tlsPing(tlsPort, clientTls(pki, otherPki))).to.match(/^error: /);
      expect(await tlsPing(tlsPort, clientTls(pki))).to.match(/^error: /);
    });

    it("with --tls-auth-clients optional lets a client without a certificate in, not one with a foreign one", async () => {
      const optional = await startProxy([{ port: redis.port }], {
        tlsPort: 0,
        tlsCertFile: pki.cert,
        tlsKeyFile: pki.key,
        tlsCaCertFile: pki.ca,
        tlsAuthClients: "optional",
      });
      try {
        const port = optional.server.tlsPort!;
        expect(await tlsPing(port, clientTls(pki))).to.equal("+PONG");
        expect(await tlsPing(port, clientTls(pki, pki))).to.equal("+PONG");
        expect(await tlsPing(port, clientTls(pki, otherPki))).to.match(/^error: /);
      } finally {
        await optional.close();
      }
    });

    it("refuses to start when a certificate file is missing, naming it", async () => {
      const missing = path.join(dir, "nope.crt");
      let error: unknown;
      try {
        await startProxy([{ port: redis.port }], {
          tlsPort: 0,
          tlsCertFile: missing,
          tlsKeyFile: pki.key,
          tlsAuthClients: "no",
        });
      } catch (err) {
        error = err;
      }
      expect(String(error)).to.include("--tls-cert-file").and.include(missing);
    });
  });

  describe("the proxy to a TLS-only redis-server", () => {
    let redis: RedisNode;

    before(async () => {
      redis = await startRedis({ tls: pki });
    });

    after(() => redis.stop());

    it("relays commands over TLS, presenting its client certificate", async () => {
      const proxy = await startProxy([{ port: redis.port }], {
        ...upstreamTls(pki),
        upstreamTlsServername: "localhost",
      });
      const client = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 1 });
      try {
        expect(await client.set("up:tls", "yes")).to.equal("OK");
        expect(await client.get("up:tls")).to.equal("yes");
        expect(await redis.call("GET", "up:tls")).to.equal("yes");
      } finally {
        client.disconnect();
        await proxy.close();
      }
    });

    it("stops at once with a certificate error when the upstream's CA is not trusted", async () => {
      const started = Date.now();
      let error: unknown;
      try {
        await startProxy([{ port: redis.port }], { ...upstreamTls(pki), upstreamTlsCaCertFile: otherPki.ca });
      } catch (err) {
        error = err;
      }
      expect(String(error)).to.match(/certificate/i);
      expect(Date.now() - started).to.be.lessThan(9000);
    });
  });

  describe("the proxy to a TLS-only 3-master cluster", () => {
    let cluster: RedisCluster;
    let proxy: RunningProxy;
    let client: Redis;

    before(async () => {
      cluster = await startCluster({ masters: 3, tls: pki });
      proxy = await startProxy(
        cluster.nodes.map((n) => ({ port: n.port })),
        upstreamTls(pki),
      );
      client = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 1 });
    });

    after(async () => {
      client.disconnect();
      await proxy.close();
      await cluster.stop();
    });

    it("discovers the topology and reaches every master over TLS", async () => {
      const keys = Array.from({ length: 60 }, (_, i) => `ctls:${i}`);
      for (const key of keys) expect(await client.set(key, key)).to.equal("OK");
      for (const key of keys) expect(await client.get(key)).to.equal(key);
      const perMaster = await Promise.all(
        (await cluster.masters()).map(async (node) => Number(await node.call("DBSIZE"))),
      );
      expect(perMaster.every((n) => n > 0)).to.equal(true);
      expect(perMaster.reduce((a, b) => a + b, 0)).to.equal(keys.length);
    });

    it("follows a MOVED redirect to its TLS target", async () => {
      const key = "ctls:moved";
      const slot = calculateSlot(key);
      const source = await cluster.nodeForSlot(slot);
      const masters = await cluster.masters();
      const target = masters.find((n) => n !== source)!;
      expect(await client.set(key, "before")).to.equal("OK");
      await client.del(key);
      // An empty slot changes hands at once; the proxy still maps it to the source.
      const targetId = String(await target.call("CLUSTER", "MYID"));
      const sourceId = String(await source.call("CLUSTER", "MYID"));
      // Importing first, so that the target's SETSLOT NODE bumps its config epoch: without it a
      // ping the source sent before its own SETSLOT can hand the slot back to it, and the two
      // nodes then redirect to each other (Redis's migration order, as redis-cli does it).
      await target.call("CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceId);
      await source.call("CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetId);
      for (const node of [target, source, ...masters.filter((n) => n !== source && n !== target)]) {
        await node.call("CLUSTER", "SETSLOT", String(slot), "NODE", targetId);
      }
      expect(await client.set(key, "after")).to.equal("OK");
      expect(await target.call("GET", key)).to.equal("after");
    });
  });
  describe("--port off: TLS clients only", () => {
    it("is read from flags and the config file, and refused without --tls-port", () => {
      const tlsFlags = ["--tls-port", "6390", "--tls-cert-file", pki.cert, "--tls-key-file", pki.key];
      const flags = parseArgs(["--port", "off", ...tlsFlags, "--tls-auth-clients", "no"]);
      expect(flags.port).to.equal(null);
      const file = path.join(dir, "tls-only.json");
      fs.writeFileSync(file, JSON.stringify({ port: "off" }));
      expect(parseArgs(["--config", file, ...tlsFlags, "--tls-auth-clients", "no"]).port).to.equal(null);
      expect(parseArgs(["--port", "0"]).port, "0 still picks a free port").to.equal(0);
      expect(() => parseArgs(["--port", "off"])).to.throw(UsageError, "--port off needs --tls-port");
      expect(() => parseArgs(["--port", "of"])).to.throw(UsageError);
    });

    it("opens no plain port; clients and cluster-mode clients reach it over TLS", async () => {
      const redis = await startRedis();
      const proxy = await startProxy([{ port: redis.port }], {
        port: null,
        tlsPort: 0,
        tlsCertFile: pki.cert,
        tlsKeyFile: pki.key,
        tlsAuthClients: "no",
        clusterEmulation: true,
      });
      const trust = { ca: fs.readFileSync(pki.ca) };
      const cluster = new Cluster([{ host: "127.0.0.1", port: proxy.port }], {
        redisOptions: { tls: trust },
        // The certificate is for 127.0.0.1 and localhost: the announced address is one of them.
        dnsLookup: (address, callback) => callback(null, address),
      });
      try {
        expect(proxy.port, "start() gives the TLS port").to.equal(proxy.server.tlsPort);
        expect(await tlsPing(proxy.port, trust)).to.equal("+PONG");
        const info = String(await redisCli(proxy.port, { ...pki }, "INFO", "proxy"));
        expect(info).to.match(/^tcp_port:0\r?$/m);
        const slots = (await redisCli(proxy.port, { ...pki }, "CLUSTER", "SLOTS")).split("\n");
        expect(slots, "the TLS port announced").to.include(String(proxy.port));
        expect(await cluster.set("tls:only", "yes")).to.equal("OK");
        expect(await cluster.get("tls:only")).to.equal("yes");
        expect(await redis.call("GET", "tls:only")).to.equal("yes");
      } finally {
        cluster.disconnect();
        await proxy.close();
        await redis.stop();
      }
    });

    it("with both ports open, cluster emulation announces to each client the port it came in on", async () => {
      const redis = await startRedis();
      const proxy = await startProxy([{ port: redis.port }], {
        tlsPort: 0,
        tlsCertFile: pki.cert,
        tlsKeyFile: pki.key,
        tlsAuthClients: "no",
        clusterEmulation: true,
      });
      const tlsPort = proxy.server.tlsPort!;
      const plain = new Redis({ host: "127.0.0.1", port: proxy.port });
      const secure = new Redis({ host: "127.0.0.1", port: tlsPort, tls: { ca: fs.readFileSync(pki.ca) } });
      const portOf = async (client: Redis): Promise<number> => {
        const slots = (await client.call("CLUSTER", "SLOTS")) as [number, number, [string, number, string]][];
        return slots[0][2][1];
      };
      try {
        expect(await portOf(plain)).to.equal(proxy.port);
        expect(await portOf(secure)).to.equal(tlsPort);
      } finally {
        plain.disconnect();
        secure.disconnect();
        await proxy.close();
        await redis.stop();
      }
    });
  });

  describe("SIGHUP: the certificate files read again", () => {
    let live: string;
    const copy = (from: TlsFiles, to: { cert?: string; key?: string; ca?: string }): void => {
      if (to.cert !== undefined) fs.copyFileSync(from.cert, to.cert);
      if (to.key !== undefined) fs.copyFileSync(from.key, to.key);
      if (to.ca !== undefined) fs.copyFileSync(from.ca, to.ca);
    };
    const logged = (proxy: ChildProxy, text: string, times: number): Promise<number> =>
      eventually(
        async () => proxy.output().split(text).length - 1,
        (n) => n >= times,
        `the log says "${text}" ${times} time(s)`,
      );

    before(() => {
      live = fs.mkdtempSync(path.join(dir, "live-"));
    });

    it("serves new TLS clients the renewed certificate, keeps open ones, and keeps the old on a bad file", async () => {
      const cert = path.join(live, "proxy.crt");
      const key = path.join(live, "proxy.key");
      copy(pki, { cert, key });
      const redis = await startRedis();
      const tlsPort = await freePort();
      const metricsPort = await freePort();
      // Valid for 30 days, not 2: the expiry metric must move.
      const renewed = makePki(live, "renewed", 30);
      const proxy = await ChildProxy.start({
        upstreams: [{ port: redis.port }],
        args: [
          "--log-level",
          "info",
          "--tls-port",
          String(tlsPort),
          "--tls-cert-file",
          cert,
          "--tls-key-file",
          key,
          "--tls-auth-clients",
          "no",
          "--metrics-port",
          String(metricsPort),
        ],
      });
      const trust = [pki.ca, renewed.ca];
      const expiry = async (): Promise<number> => {
        const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
        const line = /^gears_proxy_tls_certificate_expiry_timestamp_seconds\{side="clients"\} (\d+)$/m.exec(
          text,
        );
        return line === null ? -1 : Number(line[1]);
      };
      const expiryOf = (file: string): number =>
        Math.floor(Date.parse(new crypto.X509Certificate(fs.readFileSync(file)).validTo) / 1000);
      const open = new Redis({
        host: "127.0.0.1",
        port: tlsPort,
        tls: { ca: trust.map((f) => fs.readFileSync(f)) },
      });
      try {
        expect(await servedCertificate(tlsPort, trust)).to.equal(fingerprintOf(pki.cert));
        expect(await open.set("tls:reload", "before")).to.equal("OK");
        expect(await expiry()).to.equal(expiryOf(pki.cert));

        copy(renewed, { cert, key });
        proxy.signal("SIGHUP");
        await logged(proxy, "TLS certificates reloaded", 1);
        expect(await servedCertificate(tlsPort, trust), "a new connection").to.equal(
          fingerprintOf(renewed.cert),
        );
        expect(await expiry(), "the renewed certificate's expiry").to.equal(expiryOf(renewed.cert));
        expect(expiryOf(renewed.cert) - expiryOf(pki.cert)).to.be.greaterThan(20 * 86400);
        expect(await open.get("tls:reload"), "a connection opened before").to.equal("before");

        // A key that is not PEM: the reload is refused as a whole, the renewed certificate stays.
        fs.writeFileSync(key, "not a key\n");
        fs.rmSync(cert);
        proxy.signal("SIGHUP");
        await logged(proxy, "TLS certificates not reloaded", 1);
        expect(proxy.output()).to.include(cert);
        expect(await servedCertificate(tlsPort, trust)).to.equal(fingerprintOf(renewed.cert));
        expect(await expiry()).to.equal(expiryOf(renewed.cert));
        expect(proxy.running, "SIGHUP does not end the proxy").to.equal(true);
        expect(await open.get("tls:reload")).to.equal("before");
      } finally {
        open.disconnect();
        await proxy.stop();
        await redis.stop();
      }
    });

    it("dials new upstream connections with the files as they are now", async () => {
      const ca = path.join(live, "upstream-ca.crt");
      copy(pki, { ca });
      const redis = await startRedis({ tls: pki });
      const proxy = await ChildProxy.start({
        upstreams: [{ port: redis.port }],
        args: [
          "--log-level",
          "info",
          "--upstream-tls",
          "--upstream-tls-ca-cert-file",
          ca,
          "--upstream-tls-cert-file",
          pki.cert,
          "--upstream-tls-key-file",
          pki.key,
        ],
      });
      const client = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 0 });
      const get = (): Promise<string> =>
        client.get("tls:up").then(
          (v) => `value ${String(v)}`,
          (err: Error) => `error ${err.message}`,
        );
      try {
        expect(await client.set("tls:up", "1")).to.equal("OK");
        // A CA that did not sign the server: new connections must fail once it is read.
        copy(otherPki, { ca });
        proxy.signal("SIGHUP");
        await logged(proxy, "TLS certificates reloaded", 1);
        await redis.call("CLIENT", "KILL", "TYPE", "normal");
        await eventually(get, (r) => r.startsWith("error"), "the proxy cannot reach Redis with the wrong CA");
        // The right CA again: the proxy reconnects.
        copy(pki, { ca });
        proxy.signal("SIGHUP");
        await logged(proxy, "TLS certificates reloaded", 2);
        await eventually(get, (r) => r === "value 1", "the proxy reaches Redis again", 15_000);
      } finally {
        client.disconnect();
        await proxy.stop();
        await redis.stop();
      }
    });
  });
});
