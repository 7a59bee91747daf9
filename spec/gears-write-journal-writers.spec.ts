import { expect } from "chai";
import { journal, notification } from "./support/journal.js";
import type { KeyEvent } from "../src/gears/events/keyspace-source.js";

/**
 * The write journal on its own (no Redis): each event says who wrote it (KeyEvent.by), a
 * T&F function's write ("function", which fires no keyspace trigger) or another client's, when
 * two writes of one key cross: notifications held before both replies, replies in another
 * order than the writes ran.
 */

const b = (s: string): Buffer => Buffer.from(s);
const argv = (...a: string[]): Buffer[] => a.map(b);

const writers = (events: KeyEvent[]): string[] => events.map((e) => `${e.event}:${e.by ?? "?"}`);

describe("gears write journal: who wrote each event", () => {
  it("two writes of one key whose notifications were both held: each notification takes one writer", () => {
    const { j, events } = journal();
    const client = j.watch("hdel", argv("HDEL", "k", "a"), [b("k")], 0, false)!;
    const fn = j.watch("hdel", argv("HDEL", "k", "b"), [b("k")], 0, true)!;
    expect(j.confirm([notification("k", "hdel"), notification("k", "hdel")])).to.deep.equal([]);
    client(b(":1\r\n"));
    fn(b(":1\r\n"));
    j.flush();
    expect(writers(events)).to.deep.equal(["hdel:client", "hdel:function"]);
  });

  it("replies in another order than the writes ran: each notification takes the writer of its own event", () => {
    const { j } = journal();
    const fn = j.watch("srem", argv("SREM", "k", "m"), [b("k")], 0, true)!;
    const client = j.watch("hdel", argv("HDEL", "k", "f"), [b("k")], 0, false)!;
    client(b(":1\r\n"));
    fn(b(":1\r\n"));
    const out = j.confirm([notification("k", "srem"), notification("k", "hdel")]);
    expect(writers(out)).to.deep.equal(["srem:function", "hdel:client"]);
  });

  it("an exact write's event says its writer, from its reply", () => {
    const { j, events } = journal();
    j.watch("hset", argv("HSET", "k", "f", "v"), [b("k")], 0, true)!(b(":1\r\n"));
    j.watch("hset", argv("HSET", "k", "g", "v"), [b("k")], 0)!(b(":1\r\n"));
    j.flush();
    expect(writers(events)).to.deep.equal(["hset:function", "hset:client"]);
  });
});
