import { expect } from "chai";
import { journal, notification } from "./support/journal.js";
import type { KeyEvent } from "../src/gears/events/keyspace-source.js";

/**
 * Issue 14: the write journal on its own (no Redis): a write whose value the proxy saw
 * (SET, MSET, an INCR's reply) hands its event over with that value, whether its reply or
 * its notification came first, and each write is still one event.
 */

const b = (s: string): Buffer => Buffer.from(s);
const argv = (...a: string[]): Buffer[] => a.map(b);

const plain = (events: KeyEvent[]): [string, string, string | undefined][] =>
  events.map((e) => [e.key.toString(), e.event, e.value]);

describe("gears write journal: the values of writes it saw", () => {
  it("a SET's event carries its value; its notification is then swallowed", () => {
    const { j, events } = journal();
    j.watch("set", argv("SET", "k", "v1"), [b("k")], 0)!(b("+OK\r\n"));
    j.flush();
    expect(plain(events)).to.deep.equal([["k", "set", "v1"]]);
    expect(j.confirm([notification("k", "set")])).to.deep.equal([]);
    expect(j.waiting).to.equal(0);
  });

  it("a notification that came before the reply becomes the event, with the value", () => {
    const { j, events } = journal();
    const done = j.watch("set", argv("SET", "k", "v2", "KEEPTTL"), [b("k")], 0)!;
    expect(j.confirm([notification("k", "set")])).to.deep.equal([]);
    done(b("+OK\r\n"));
    j.flush();
    expect(plain(events)).to.deep.equal([["k", "set", "v2"]]);
    expect(j.waiting).to.equal(0);
  });

  it("MSET: one event per key, each with its own value; INCRBY: the value its reply gives", () => {
    const { j, events } = journal();
    j.watch("mset", argv("MSET", "a", "1", "b", "2"), [b("a"), b("b")], 0)!(b("+OK\r\n"));
    j.watch("incrby", argv("INCRBY", "n", "5"), [b("n")], 0)!(b(":12\r\n"));
    j.flush();
    expect(plain(events)).to.deep.equal([
      ["a", "set", "1"],
      ["b", "set", "2"],
      ["n", "incrby", "12"],
    ]);
  });

  it("no value where the proxy did not see it: an HSET, a SET with EX (which waits for its notifications)", () => {
    const { j, events } = journal();
    j.watch("hset", argv("HSET", "h", "f", "v"), [b("h")], 0)!(b(":1\r\n"));
    j.watch("set", argv("SET", "e", "v", "EX", "100"), [b("e")], 0)!(b("+OK\r\n"));
    j.flush();
    expect(plain(events)).to.deep.equal([["h", "hset", undefined]]);
    const late = j.confirm([notification("e", "set"), notification("e", "expire")]);
    expect(plain(late)).to.deep.equal([
      ["e", "set", undefined],
      ["e", "expire", undefined],
    ]);
  });

  it("handled(): the notification of a write already answered is swallowed in place; others are left to confirm()", () => {
    const { j, events } = journal();
    const frame = (key: string, event: string): [Buffer, number, number, number, number] => {
      // As in a pmessage frame: the key and the event name somewhere inside a larger buffer.
      const buf = b(`..${event}..${key}..`);
      return [buf, event.length + 4, event.length + 4 + key.length, 2, 2 + event.length];
    };
    const handled = (db: number, key: string, event: string): boolean => j.handled(db, ...frame(key, event));
    expect(handled(0, "k", "set")).to.equal(false); // nothing written yet
    j.watch("set", argv("SET", "k", "v"), [b("k")], 0)!(b("+OK\r\n"));
    const inFlight = j.watch("set", argv("SET", "f", "v"), [b("f")], 0)!;
    j.watch("hset", argv("HSET", "h", "a", "1"), [b("h")], 2)!(b(":1\r\n"));
    j.flush();
    expect(plain(events)).to.deep.equal([
      ["k", "set", "v"],
      ["h", "hset", undefined],
    ]);
    expect(handled(0, "k", "hset")).to.equal(false); // another event of the key
    expect(handled(1, "k", "set")).to.equal(false); // another database
    expect(handled(0, "f", "set")).to.equal(false); // its write is in flight: confirm() holds it
    expect(handled(0, "h", "hset")).to.equal(false);
    expect(handled(2, "h", "hse")).to.equal(false);
    expect(handled(2, "h", "hset")).to.equal(true);
    expect(handled(0, "k", "set")).to.equal(true);
    expect(handled(0, "k", "set")).to.equal(false); // swallowed once only
    inFlight(b("+OK\r\n"));
    expect(j.waiting).to.equal(1);
    expect(j.confirm([notification("f", "set")])).to.deep.equal([]);
    expect(j.waiting).to.equal(0);
  });

  it("handled() with its shard and nothing queued before it: a notification of a key with a write in flight is held there, and becomes that write's one event", () => {
    const { j, events } = journal();
    const at = (key: string, event: string): [Buffer, number, number, number, number] => {
      const buf = b(`..${event}..${key}..`);
      return [buf, event.length + 4, event.length + 4 + key.length, 2, 2 + event.length];
    };
    const done = j.watch("set", argv("SET", "f", "v1"), [b("f")], 0)!;
    const other = j.watch("set", argv("SET", "g", "v2"), [b("g")], 0)!;
    // Something waits in the source's list before it: left to confirm(), which keeps the order.
    expect(j.handled(0, ...at("g", "set"), "shard-1", false)).to.equal(false);
    expect(j.handled(0, ...at("f", "set"), "shard-1", true)).to.equal(true);
    expect(j.handled(0, ...at("nowrite", "set"), "shard-1", true)).to.equal(false);
    expect(j.waiting).to.equal(1); // held
    done(b("+OK\r\n"));
    other(b("+OK\r\n"));
    j.flush();
    expect(plain(events)).to.deep.equal([
      ["f", "set", "v1"],
      ["g", "set", "v2"],
    ]);
    expect(events[0].shard).to.equal("shard-1");
    // f's notification was its event: nothing more is swallowed or awaited for it.
    expect(j.confirm([notification("g", "set")])).to.deep.equal([]);
    expect(j.waiting).to.equal(0);
    expect(plain(j.confirm([notification("f", "set")]))).to.deep.equal([["f", "set", undefined]]);
  });

  it("a hot key: thousands of writes answered before their notifications, each notification swallowed once, in any mix of handled(), confirm() and a settle", () => {
    const { j, events } = journal();
    const frame = (key: string, event: string): [Buffer, number, number, number, number] => {
      const buf = b(`..${event}..${key}..`);
      return [buf, event.length + 4, event.length + 4 + key.length, 2, 2 + event.length];
    };
    const N = 3000;
    const sadd = (n: number): void => {
      for (let i = 0; i < n; i++) j.watch("sadd", argv("SADD", "hot", `m${i}`), [b("hot")], 0)!(b(":1\r\n"));
    };
    sadd(N);
    j.flush();
    expect(events).to.have.length(N);
    expect(j.waiting).to.equal(N);
    // Past the point where the lists are cut down (1,024 dropped at their head), and on.
    for (let i = 0; i < 2500; i++)
      expect(j.handled(0, ...frame("hot", "sadd")), `notification ${i}`).to.equal(true);
    expect(j.waiting).to.equal(N - 2500);
    // More writes while some are still expected; an HSET's notification is not one of them.
    sadd(200);
    j.watch("hset", argv("HSET", "hot2", "f", "v"), [b("hot2")], 0)!(b(":1\r\n"));
    expect(j.waiting).to.equal(N - 2500 + 201);
    expect(j.handled(0, ...frame("hot", "hset"))).to.equal(false);
    expect(j.confirm([notification("hot", "sadd"), notification("hot", "sadd")])).to.deep.equal([]);
    for (let i = 0; i < 400; i++) expect(j.handled(0, ...frame("hot", "sadd"))).to.equal(true);
    expect(j.waiting).to.equal(N - 2500 + 201 - 402);
    // A settle after every write: what is still expected is no longer awaited.
    expect(j.takeUnconfirmed(Date.now())).to.deep.equal([]);
    expect(j.waiting).to.equal(0);
    // Nothing left to swallow: the next notification of the key is an event.
    expect(plain(j.confirm([notification("hot", "sadd")]))).to.deep.equal([["hot", "sadd", undefined]]);
    sadd(3);
    expect(j.waiting).to.equal(3);
    for (let i = 0; i < 3; i++) expect(j.handled(0, ...frame("hot", "sadd"))).to.equal(true);
    expect(j.handled(0, ...frame("hot", "sadd"))).to.equal(false);
    expect(j.waiting).to.equal(0);
  });

  it("keys' lists stay their own: a notification held for one key is not seen on another", () => {
    const { j, events } = journal();
    const first = j.watch("set", argv("SET", "x", "1"), [b("x")], 0)!;
    const second = j.watch("set", argv("SET", "y", "2"), [b("y")], 0)!;
    expect(j.confirm([notification("x", "set"), notification("x", "set")])).to.deep.equal([]);
    second(b("+OK\r\n"));
    first(b("+OK\r\n"));
    j.flush();
    // y's own event; x's write took one held notification and the other (another writer's) goes on.
    expect(plain(events)).to.deep.equal([
      ["y", "set", "2"],
      ["x", "set", "1"],
      ["x", "set", undefined],
    ]);
    // y's notification, still to come, is swallowed.
    expect(j.confirm([notification("y", "set")])).to.deep.equal([]);
    expect(j.waiting).to.equal(0);
  });
});
