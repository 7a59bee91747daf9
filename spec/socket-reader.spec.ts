import { expect } from "chai";
import net from "node:net";
import { once } from "node:events";
import { connectReading, readBytes } from "../src/io/socket-reader.js";

// Unit spec of io/socket-reader: accepted sockets whose reads skip the stream machinery.
// Plain TCP on loopback, no Redis: the module knows nothing of RESP.

interface Accepted {
  socket: net.Socket;
  chunks: Buffer[];
}

async function listen(
  pauseOnConnect: boolean,
): Promise<{ server: net.Server; port: number; accepted: Accepted[] }> {
  const accepted: Accepted[] = [];
  const server = net.createServer({ pauseOnConnect }, (raw) => {
    // Chunks are kept as given, as the request parser keeps them (zero-copy views).
    const entry: Accepted = { socket: raw, chunks: [] };
    entry.socket = readBytes(raw, (chunk) => entry.chunks.push(chunk));
    entry.socket.on("error", () => {});
    accepted.push(entry);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, port: (server.address() as net.AddressInfo).port, accepted };
}

async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  return socket;
}

function pattern(client: number, round: number, bytes: number): Buffer {
  return Buffer.alloc(bytes, `c${client}r${round};`);
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(check()).to.equal(true);
}

describe("readBytes (io/socket-reader)", () => {
  it("gives each socket its own bytes, whole and in order, while sockets take turns reading into one buffer", async () => {
    const { server, port, accepted } = await listen(true);
    const clients = await Promise.all([0, 1, 2, 3].map(() => connect(port)));
    await until(() => accepted.length === clients.length);
    // Interleaved writes, small and larger than the 64 KB read buffer, so reads of different
    // sockets follow each other: a chunk handed out without a copy would be overwritten.
    const sent: Buffer[][] = clients.map(() => []);
    for (let round = 0; round < 20; round++) {
      clients.forEach((c, i) => {
        const data = pattern(i, round, round % 5 === 0 ? 100_000 : 37 + round);
        sent[i].push(data);
        c.write(data);
      });
      await new Promise((r) => setImmediate(r));
    }
    const expected = sent.map((parts) => Buffer.concat(parts));
    // Which accepted socket is which client: match by the first bytes each one got.
    await until(() => accepted.every((a) => a.chunks.length > 0));
    await until(
      () =>
        accepted.reduce((n, a) => n + Buffer.concat(a.chunks).length, 0) ===
        expected.reduce((n, e) => n + e.length, 0),
    );
    for (const a of accepted) {
      const got = Buffer.concat(a.chunks);
      const match = expected.find((e) => e.subarray(0, 8).equals(got.subarray(0, 8)));
      expect(match, "a client's bytes").to.not.equal(undefined);
      expect(got.equals(match!), "bytes intact and in order").to.equal(true);
    }
    for (const c of clients) c.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("writes, pauses and resumes on the socket it returns; server.close() completes once the clients are gone", async () => {
    const { server, port, accepted } = await listen(true);
    const client = await connect(port);
    await until(() => accepted.length === 1);
    const { socket, chunks } = accepted[0];
    expect(socket).to.not.equal(undefined);
    socket.write("hello");
    const [reply] = (await once(client, "data")) as [Buffer];
    expect(reply.toString()).to.equal("hello");

    socket.pause();
    client.write("while paused");
    await new Promise((r) => setTimeout(r, 100));
    expect(chunks.length).to.equal(0);
    socket.resume();
    await until(() => Buffer.concat(chunks).toString() === "while paused");

    let closed = false;
    server.close(() => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 50));
    // The connection still counts: close() waits for it, as for any accepted socket.
    expect(closed).to.equal(false);
    client.end();
    await until(() => closed);
    expect(socket.destroyed).to.equal(true);
  });

  it("reads the usual way from a socket that was not accepted paused", async () => {
    const { server, port, accepted } = await listen(false);
    const client = await connect(port);
    await until(() => accepted.length === 1);
    client.write("plain");
    await until(() => Buffer.concat(accepted[0].chunks).toString() === "plain");
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("connectReading: each outgoing connection gets its own bytes, whole and in order, while they share the read buffer", async () => {
    // Servers that send: the proxy's side is the connecting one, as with its upstreams.
    const servers = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const peers: net.Socket[] = [];
        const server = net.createServer((s) => peers.push(s));
        server.listen(0, "127.0.0.1");
        await once(server, "listening");
        return { i, server, peers, port: (server.address() as net.AddressInfo).port };
      }),
    );
    const received: Buffer[][] = servers.map(() => []);
    const sockets = servers.map((s) =>
      connectReading("127.0.0.1", s.port, (chunk) => received[s.i].push(chunk)),
    );
    await Promise.all(sockets.map((s) => once(s, "connect")));
    await until(() => servers.every((s) => s.peers.length === 1));
    const sent: Buffer[][] = servers.map(() => []);
    for (let round = 0; round < 20; round++) {
      for (const s of servers) {
        const data = pattern(s.i, round, round % 5 === 0 ? 100_000 : 41 + round);
        sent[s.i].push(data);
        s.peers[0].write(data);
      }
      await new Promise((r) => setImmediate(r));
    }
    const expected = sent.map((parts) => Buffer.concat(parts));
    await until(() => received.every((r, i) => Buffer.concat(r).length === expected[i].length));
    received.forEach((r, i) =>
      expect(Buffer.concat(r).equals(expected[i]), `connection ${i}`).to.equal(true),
    );
    for (const s of sockets) s.destroy();
    for (const s of servers) {
      for (const p of s.peers) p.destroy();
      await new Promise<void>((resolve) => s.server.close(() => resolve()));
    }
  });
});
