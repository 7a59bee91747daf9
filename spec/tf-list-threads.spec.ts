import { expect } from "chai";
import { Backend, BACKEND_MODES, Direct } from "./support/backend.js";
import { ChildProxy } from "./support/child-proxy.js";
import { eventually } from "./support/polling.js";
import { ReplyError, toText, type RawClient, type Value } from "./support/raw-client.js";
import { connectionsOnBothThreads } from "./support/thread-connections.js";
import { tfLibrary as lib } from "./support/tf.js";

// A --threads proxy is one proxy to its users. Each thread runs the keyspace triggers of the
// shards it holds and reads the streams whose leases it holds, so each counted only those:
// TFUNCTION LIST vvv through a connection of one thread showed num_trigger 10, through the
// other 0. The thread answering now merges every thread's figures (src/gears/tf/list-stats.ts).

const CONNECTIONS = 4;
const KEYS = 24;
const RECORDS = 12;

const LIBRARY = lib(
  "tlt",
  `redis.registerKeySpaceTrigger('k', 'tlt:', function(client, data){
     if (data.key.includes('bad')) throw 'bad key ' + data.key;
   });
   redis.registerStreamTrigger('s', 'tltst:', function(client, data){});`,
);

/** A RESP2 map (a flat array of names and values) as an object. */
function fields(flat: Value): Record<string, Value> {
  const pairs = flat as Value[];
  const out: Record<string, Value> = {};
  for (let i = 0; i + 1 < pairs.length; i += 2) out[String(pairs[i])] = pairs[i + 1];
  return out;
}

for (const mode of BACKEND_MODES) {
  describe(`TFUNCTION LIST with --threads 2 in front of ${Backend.label(mode)}: every thread's trigger figures, the same through every connection`, function () {
    this.timeout(120_000);
    let backend: Backend;
    let direct: Direct;
    let proxy: ChildProxy;
    const conns: RawClient[] = [];

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      direct = new Direct(backend);
      proxy = await ChildProxy.start({
        upstreams: [backend.seed],
        args: ["--threads", "2"],
        readyTimeoutMs: 60_000,
      });
      conns.push(...(await connectionsOnBothThreads(proxy.port, CONNECTIONS)));
      expect(toText(await conns[0].call("TFUNCTION", "LOAD", LIBRARY))).to.equal("OK");
    });
    after(async () => {
      for (const c of conns.splice(0)) c.close();
      await proxy?.kill();
      await backend?.stop();
    });

    /** TFUNCTION LIST vvv of the library through every connection, as objects. */
    const listings = (): Promise<Record<string, Value>[]> =>
      Promise.all(
        conns.map(async (c) => {
          const reply = await c.call("TFUNCTION", "LIST", "LIBRARY", "tlt", "vvv");
          if (reply instanceof ReplyError) throw reply;
          const libs = toText(reply) as Value[];
          expect(libs).to.have.length(1);
          return fields(libs[0]);
        }),
      );

    it("counts the keyspace trigger runs and stream records of both threads, writes through every connection and straight to the server", async () => {
      // Keys of several slots (on a cluster, of every master): each thread runs some.
      for (let i = 0; i < KEYS; i++) {
        const key = `tlt:${i}`;
        if (i % 2 === 0) await conns[i % CONNECTIONS].call("HSET", key, "f", "v");
        else await direct.call("HSET", key, "f", "v");
      }
      // The newest failure is last_error on every connection, whichever thread ran it.
      await conns[1].call("HSET", "tlt:bad", "f", "v");
      for (let i = 0; i < RECORDS; i++) {
        const stream = `tltst:${i % 6}`;
        if (i % 2 === 0) await conns[i % CONNECTIONS].call("XADD", stream, "*", "n", String(i));
        else await direct.call("XADD", stream, "*", "n", String(i));
      }
      const summary = async (): Promise<string[]> =>
        (await listings()).map((l) => {
          const [k] = (l.keyspace_triggers as Value[]).map(fields);
          const [s] = (l.stream_triggers as Value[]).map(fields);
          const streams = (s.streams as Value[]).map(fields);
          const records = streams.reduce((n, st) => n + Number(st.total_record_processed), 0);
          const pending = streams.reduce((n, st) => n + (st.pending_ids as Value[]).length, 0);
          return [
            `keyspace ${String(k.num_trigger)}/${String(k.num_success)}/${String(k.num_failed)}/${String(k.num_finished)}`,
            `last_error ${String(k.last_error)}`,
            `streams ${streams.length} records ${records} pending ${pending}`,
            `pending_jobs ${String(l.pending_jobs)}`,
          ].join(", ");
        });
      const expected = [
        `keyspace ${KEYS + 1}/${KEYS}/1/${KEYS + 1}`,
        "last_error bad key tlt:bad",
        `streams 6 records ${RECORDS} pending 0`,
        "pending_jobs 0",
      ].join(", ");
      const seen = await eventually(
        summary,
        (all) => all.every((s) => s === expected),
        "every write counted, on every connection",
        20_000,
      );
      expect(seen).to.deep.equal(Array(CONNECTIONS).fill(expected));
      // The layout stays T&F's: the fields of a keyspace trigger and a stream, in its order.
      const [l] = await listings();
      expect(Object.keys(fields((l.keyspace_triggers as Value[])[0]))).to.deep.equal([
        "name",
        "description",
        "num_trigger",
        "num_success",
        "num_failed",
        "num_finished",
        "last_error",
        "last_execution_time",
        "total_execution_time",
        "num_queued_over_bound",
      ]);
      const [s] = (l.stream_triggers as Value[]).map(fields);
      expect(Object.keys(fields((s.streams as Value[])[0]))).to.deep.equal([
        "name",
        "last_processed_time",
        "total_processed_time",
        "last_lag",
        "total_lag",
        "total_record_processed",
        "pending_ids",
        "id_to_read_from",
        "last_error",
      ]);
    });

    it("a stream's id_to_read_from is its last record's, on every connection", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const conn = conns[i % CONNECTIONS];
        ids.push(String(toText(await conn.call("XADD", "tltst:ids", "*", "n", String(i)))));
      }
      const readFrom = async (): Promise<Value[]> =>
        (await listings()).map((l) => {
          const [s] = (l.stream_triggers as Value[]).map(fields);
          const st = (s.streams as Value[]).map(fields).find((x) => x.name === "tltst:ids");
          return st === undefined ? null : [st.id_to_read_from, st.total_record_processed];
        });
      const last = ids[ids.length - 1];
      expect(
        await eventually(
          readFrom,
          (all) => all.every((x) => JSON.stringify(x) === JSON.stringify([last, 4])),
          "the last record read, on every connection",
          20_000,
        ),
      ).to.deep.equal(Array(CONNECTIONS).fill([last, 4]));
    });
  });
}
