/**
 * Guest code run once in every fresh context, before any library or user script. It receives
 * the two raw host functions, defines the frozen global `__host` (callSync, callAsync, notify)
 * and returns the internal helpers the worker uses to enter the guest, collect the async
 * calls and notifications, and read results and errors. The helpers capture the intrinsics
 * they use up front, so a script that replaces JSON.parse or Array.prototype.join cannot
 * break them; they are reachable only through the worker's handle.
 */
export const PRELUDE_FILENAME = "<sandbox-prelude>";

export const PRELUDE_SOURCE = String.raw`(function (rawSync, rawNotify) {
  "use strict";
  const parse = JSON.parse;
  const stringify = JSON.stringify;
  const apply = Reflect.apply;
  const ErrorCtor = Error;
  const TypeErrorCtor = TypeError;
  const PromiseCtor = Promise;
  const StringCtor = String;
  const promiseResolve = Promise.resolve;
  const promiseReject = Promise.reject;
  const promiseThen = Promise.prototype.then;
  const arrayJoin = Array.prototype.join;
  const strSlice = String.prototype.slice;
  const strSplit = String.prototype.split;
  const defineProperty = Object.defineProperty;
  const freeze = Object.freeze;
  const objectCreate = Object.create;
  const join = (items) => "[" + apply(arrayJoin, items, [","]) + "]";
  const entry = (name, args) => "[" + stringify(StringCtor(name)) + "," + stringify(args) + "]";

  let notes = [];
  let queue = [];
  let waiting = [];
  let inflight = [];
  // Rounds whose answers, or some of them, come in a later entry (the worker parked them), by
  // the round's seq: { w: the round's resolve and reject pairs, left: how many still wait }.
  let parked = objectCreate(null);
  // The round deliver() just settled, when some of its calls' answers come later: park() files it.
  let unanswered = null;

  function flushNotes() {
    if (notes.length === 0) return;
    const n = notes;
    notes = [];
    rawNotify(join(n));
  }

  function invoke(path, args) {
    const parts = apply(strSplit, path, ["."]);
    let self = globalThis;
    let fn = globalThis;
    for (let i = 0; i < parts.length; i++) {
      if (fn === null || fn === undefined) break;
      self = fn;
      fn = fn[parts[i]];
    }
    if (typeof fn !== "function") throw new TypeErrorCtor(path + " is not a function");
    return apply(fn, self, args);
  }

  function describe(e) {
    try {
      if (e !== null && typeof e === "object") {
        const name = e.name;
        const message = e.message;
        if (e instanceof ErrorCtor || typeof message === "string") {
          const stack = e.stack;
          const line = e.lineNumber;
          return '{"e":1,"name":' + stringify(name === undefined ? "Error" : StringCtor(name)) +
            ',"message":' + stringify(message === undefined ? "" : StringCtor(message)) +
            ',"stack":' + stringify(typeof stack === "string" ? stack : "") +
            ',"line":' + (typeof line === "number" && line === line ? line : -1) + "}";
        }
        let text;
        try { text = stringify(e); } catch (_) { text = undefined; }
        return '{"e":0,"text":' + stringify(typeof text === "string" ? text : StringCtor(e)) + "}";
      }
      return '{"e":0,"text":' + stringify(StringCtor(e)) + "}";
    } catch (_) {
      return '{"e":0,"text":"(an unprintable value was thrown)"}';
    }
  }

  // Settles call i of a round (w: a resolve and a reject for each call) with its part r.
  function settleCall(w, i, r) {
    if (r && r[0] === 0) w[2 * i](r[1]);
    else w[2 * i + 1](new ErrorCtor(r ? StringCtor(r[1]) : "no answer from the host"));
  }

  // Settles the promises w of a round with its answer, but for the calls whose answers come
  // later (part [2]): how many of those.
  function settleRound(w, json) {
    let rs;
    try { rs = parse(json); } catch (_) { rs = []; }
    let left = 0;
    for (let i = 0; 2 * i < w.length; i++) {
      const r = rs[i];
      if (r && r[0] === 2) left++;
      else settleCall(w, i, r);
    }
    return left;
  }

  // Parked round seq's answers came: how many of its calls still wait.
  function answered(seq, p, left) {
    p.left = left;
    if (left <= 0) delete parked[seq];
    return left;
  }

  const host = freeze({
    callSync(name, ...args) {
      const argsJson = stringify(args);
      flushNotes();
      const r = rawSync(StringCtor(name), argsJson);
      if (r[0] === "1") throw new ErrorCtor(apply(strSlice, r, [1]));
      return parse(apply(strSlice, r, [1]));
    },
    callAsync(name, ...args) {
      let e;
      try {
        e = entry(name, args);
      } catch (err) {
        return apply(promiseReject, PromiseCtor, [err]);
      }
      return new PromiseCtor((resolve, reject) => {
        queue[queue.length] = e;
        waiting[waiting.length] = resolve;
        waiting[waiting.length] = reject;
      });
    },
    notify(name, ...args) {
      notes[notes.length] = entry(name, args);
      if (notes.length >= 256) flushNotes();
    },
  });
  defineProperty(globalThis, "__host", { value: host, writable: false, enumerable: false, configurable: false });
  // A library bumps steps[0] each time it calls user code: the worker's interrupt handler
  // reads it, so the time limit can apply to one call rather than to a whole entry.
  const steps = new Float64Array(1);
  defineProperty(globalThis, "__steps", { value: steps, writable: false, enumerable: false, configurable: false });

  return {
    steps,
    call(path, argsJson) {
      return invoke(path, parse(argsJson));
    },
    callAt(path, argsJson, index, value) {
      const args = parse(argsJson);
      args[index] = value;
      return invoke(path, args);
    },
    start(v) {
      const rec = { s: 0, v: undefined };
      if (v !== null && (typeof v === "object" || typeof v === "function")) {
        const then = v.then;
        if (typeof then === "function") {
          apply(promiseThen, apply(promiseResolve, PromiseCtor, [v]), [
            (x) => { rec.s = 1; rec.v = x; },
            (x) => { rec.s = 2; rec.v = x; },
          ]);
          return rec;
        }
      }
      rec.s = 1;
      rec.v = v;
      return rec;
    },
    state(rec) {
      return rec.s;
    },
    finish(rec) {
      if (rec.s === 2) return "1" + describe(rec.v);
      let s;
      try {
        s = stringify(rec.v);
      } catch (err) {
        return "1" + describe(err);
      }
      return "0" + (s === undefined ? "null" : s);
    },
    describe,
    takeNotes() {
      if (notes.length === 0) return "";
      const n = notes;
      notes = [];
      return join(n);
    },
    takeBatch() {
      if (queue.length === 0) return "";
      const q = queue;
      queue = [];
      inflight = waiting;
      waiting = [];
      return join(q);
    },
    // How many of the round's calls wait for answers that come later (then park() files it).
    deliver(json) {
      const w = inflight;
      inflight = [];
      const left = settleRound(w, json);
      if (left > 0) unanswered = { w, left };
      return left;
    },
    park(seq) {
      if (unanswered !== null) {
        parked[seq] = unanswered;
        unanswered = null;
        return;
      }
      parked[seq] = { w: inflight, left: inflight.length / 2 };
      inflight = [];
    },
    // These two: how many calls of the round still wait (0: it is done).
    resume(seq, json) {
      const p = parked[seq];
      if (p === undefined) return 0;
      return answered(seq, p, settleRound(p.w, json));
    },
    resumePart(seq, index, json) {
      const p = parked[seq];
      if (p === undefined) return 0;
      let r;
      try { r = parse(json); } catch (_) { r = undefined; }
      settleCall(p.w, index, r);
      return answered(seq, p, p.left - 1);
    },
    reset() {
      queue = [];
      waiting = [];
      inflight = [];
      unanswered = null;
    },
    resetAll() {
      queue = [];
      waiting = [];
      inflight = [];
      unanswered = null;
      parked = objectCreate(null);
    },
  };
})`;
