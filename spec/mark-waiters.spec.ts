import { expect } from "chai";
import { MarkWaiters } from "../src/gears/events/mark-waiters.js";

describe("MarkWaiters", () => {
  /** Lets resolved promises run their callbacks. */
  const settle = () => new Promise((r) => setImmediate(r));

  it("resolves at once when there is no mark", async () => {
    const w = new MarkWaiters<string>();
    let woke = false;
    void w.wait(new Map()).then(() => (woke = true));
    await settle();
    expect(woke).to.equal(true);
    expect(w.size).to.equal(0);
  });

  it("wakes a waiter only once every one of its marks is reached, each waiter on its own marks", async () => {
    const done = new Map<string, number>([
      ["a", 0],
      ["b", 0],
    ]);
    const reached = (k: string, mark: number) => (done.get(k) ?? 0) >= mark;
    const w = new MarkWaiters<string>();
    const woke: string[] = [];
    void w.wait(new Map([["a", 2]])).then(() => woke.push("first"));
    void w
      .wait(
        new Map([
          ["a", 1],
          ["b", 1],
        ]),
      )
      .then(() => woke.push("second"));
    done.set("a", 1);
    w.check(reached);
    await settle();
    expect(woke).to.deep.equal([]);
    done.set("b", 1);
    w.check(reached);
    await settle();
    expect(woke).to.deep.equal(["second"]);
    expect(w.size).to.equal(1);
    // Later events (a counter moving past the mark) do not matter: the mark was the waiter's.
    done.set("a", 5);
    w.check(reached);
    await settle();
    expect(woke).to.deep.equal(["second", "first"]);
    expect(w.size).to.equal(0);
  });
});
