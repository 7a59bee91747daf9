/**
 * The gears and T&F figures on /metrics (observability/metrics.ts, gears/metric-figures.ts):
 * exact counts after a known mix of executions, events and calls, against a real redis-server.
 */
import fs from "node:fs";
import { expect } from "chai";
import { Redis } from "ioredis";
import { startRedis, startProxy, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually } from "./support/polling.js";
import { hasSample, metricsPage, sample } from "./support/metrics.js";
import { run } from "./support/gears.js";
import { tfLibrary } from "./support/tf.js";

describe("gears and T&F metrics (--metrics-port)", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let c: Redis;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([redis], { metricsPort: 0 });
    c = new Redis(proxy.port);
  });
  after(async () => {
    c.disconnect();
    await proxy.close();
    await redis.stop();
  });

  const page = (): Promise<string> => metricsPage(proxy);

  it("counts RG.EXECUTE executions by final state, with their duration histogram", async () => {
    await c.set("gm:a", "1");
    await c.set("gm:b", "2");
    const before = await page();
    for (let i = 0; i < 3; i++)
      expect((await run(c, "GB().map(r => r.key).run('gm:*')")).errors).to.deep.equal([]);
    const failing = await run(c, "GB().map(r => { throw new Error('gm boom'); }).run('gm:*')");
    expect(failing.errors.length).to.be.greaterThan(0);
    const after = await eventually(
      page,
      (p) =>
        sample(p, 'gears_proxy_gears_executions_total{state="failed"}') >
        sample(before, 'gears_proxy_gears_executions_total{state="failed"}'),
      "the failed execution counted",
    );
    const delta = (series: string): number => sample(after, series) - sample(before, series);
    expect(delta('gears_proxy_gears_executions_total{state="done"}')).to.equal(3);
    expect(delta('gears_proxy_gears_executions_total{state="failed"}')).to.equal(1);
    expect(delta('gears_proxy_gears_executions_total{state="aborted"}')).to.equal(0);
    expect(delta('gears_proxy_gears_execution_duration_seconds_count{state="done"}')).to.equal(3);
    expect(delta('gears_proxy_gears_execution_duration_seconds_bucket{le="+Inf",state="done"}')).to.equal(3);
    expect(sample(after, 'gears_proxy_gears_execution_duration_seconds_sum{state="done"}')).to.be.greaterThan(
      0,
    );
    // Blocking executions are dropped once answered: none is kept running.
    expect(sample(after, 'gears_proxy_gears_executions{status="running"}')).to.equal(0);
  });

  it("counts an aborted UNBLOCKING execution and shows it running until then", async () => {
    const before = await page();
    const busy = "const t = Date.now(); while (Date.now() - t < 4000) {}";
    const id = String(
      await c.call("RG.EXECUTE", `GB('ShardsIDReader').map(() => { ${busy} return 1; }).run()`, "UNBLOCKING"),
    );
    await eventually(
      page,
      (p) => sample(p, 'gears_proxy_gears_executions{status="running"}') === 1,
      "the execution shown running",
    );
    expect(await c.call("RG.ABORTEXECUTION", id)).to.equal("OK");
    const after = await eventually(
      page,
      (p) =>
        sample(p, 'gears_proxy_gears_executions_total{state="aborted"}') >
        sample(before, 'gears_proxy_gears_executions_total{state="aborted"}'),
      "the abort counted",
    );
    const delta = (series: string): number => sample(after, series) - sample(before, series);
    expect(delta('gears_proxy_gears_executions_total{state="aborted"}')).to.equal(1);
    expect(delta('gears_proxy_gears_executions_total{state="done"}')).to.equal(0);
    expect(sample(after, 'gears_proxy_gears_executions{status="aborted"}')).to.equal(1);
    expect(sample(after, 'gears_proxy_gears_executions{status="running"}')).to.equal(0);
    expect(await c.call("RG.DROPEXECUTION", id)).to.equal("OK");
  });

  it("shows each registration's events seen, handled and failed, its queue, isolate memory and leases", async () => {
    const script =
      "GB().foreach(r => { if (r.key === 'gmev:bad') throw new Error('bad key'); }).register('gmev:*', {mode: 'async'})";
    expect(await c.call("RG.EXECUTE", script)).to.equal("OK");
    const dump = (await c.call("RG.DUMPREGISTRATIONS")) as unknown[][];
    const id = String(dump[dump.length - 1][dump[dump.length - 1].indexOf("id") + 1]);
    const labels = `{registration="${id}",reader="KeysReader"}`;
    const handled = `gears_proxy_gears_registration_events_handled_total${labels}`;
    const failed = `gears_proxy_gears_registration_events_failed_total${labels}`;
    // One write at a time: events that arrive together run as one batch and share its outcome.
    let after = "";
    for (const [key, expected] of [
      ["gmev:1", [1, 0]],
      ["gmev:2", [2, 0]],
      ["gmev:bad", [2, 1]],
    ] as const) {
      await c.set(key, "x");
      after = await eventually(
        page,
        (p) => sample(p, handled) + sample(p, failed) === expected[0] + expected[1],
        `the event of ${key} run`,
      );
      expect([sample(after, handled), sample(after, failed)]).to.deep.equal(expected);
    }
    expect(sample(after, `gears_proxy_gears_registration_events_seen_total${labels}`)).to.equal(3);
    expect(sample(after, `gears_proxy_gears_registration_events_handled_total${labels}`)).to.equal(2);
    expect(sample(after, `gears_proxy_gears_registration_events_failed_total${labels}`)).to.equal(1);
    expect(sample(after, `gears_proxy_gears_registration_queue_length${labels}`)).to.equal(0);
    expect(hasSample(after, `gears_proxy_gears_registration_oldest_event_age_seconds${labels}`)).to.equal(
      true,
    );
    expect(sample(after, `gears_proxy_gears_registration_oldest_event_age_seconds${labels}`)).to.equal(0);
    // The registration's session keeps an isolate alive; this proxy alone holds the one shard's lease.
    expect(sample(after, "gears_proxy_gears_isolate_memory_bytes")).to.be.greaterThan(100_000);
    expect(sample(after, "gears_proxy_gears_event_leases_held")).to.equal(1);
    await c.call("RG.UNREGISTER", id);
    const gone = await page();
    expect(hasSample(gone, `gears_proxy_gears_registration_events_seen_total${labels}`)).to.equal(false);
  });

  it("shows a registration's queue and the age of its oldest event while a slow run holds it", async () => {
    const script =
      "GB().foreach(r => { if (r.key === 'gmq:slow') { const t = Date.now(); while (Date.now() - t < 1000) {} } }).register('gmq:*', {mode: 'async'})";
    expect(await c.call("RG.EXECUTE", script)).to.equal("OK");
    const dump = (await c.call("RG.DUMPREGISTRATIONS")) as unknown[][];
    const entry = dump.find(
      (d) => String(d[d.indexOf("reader") + 1]) === "KeysReader" && JSON.stringify(d).includes("gmq:"),
    )!;
    const labels = `{registration="${String(entry[entry.indexOf("id") + 1])}",reader="KeysReader"}`;
    await c.set("gmq:slow", "x");
    await c.set("gmq:2", "x");
    await c.set("gmq:3", "x");
    await eventually(
      page,
      (p) =>
        sample(p, `gears_proxy_gears_registration_queue_length${labels}`) >= 2 &&
        sample(p, `gears_proxy_gears_registration_oldest_event_age_seconds${labels}`) > 0,
      "events waiting behind the slow run, with an age",
    );
    const drained = await eventually(
      page,
      (p) => sample(p, `gears_proxy_gears_registration_events_handled_total${labels}`) === 3,
      "the three events run",
    );
    expect(sample(drained, `gears_proxy_gears_registration_queue_length${labels}`)).to.equal(0);
    expect(sample(drained, `gears_proxy_gears_registration_oldest_event_age_seconds${labels}`)).to.equal(0);
    expect(sample(drained, `gears_proxy_gears_registration_events_seen_total${labels}`)).to.equal(3);
  });

  it("counts T&F function calls and errors by library and function, trigger runs and failures", async () => {
    const body = [
      "redis.registerFunction('ok', function(){ return 1; });",
      "redis.registerFunction('fails', function(){ throw 'no'; });",
      "redis.registerKeySpaceTrigger('watch', 'gmtf:', function(client, data){",
      "  if (data.key === 'gmtf:bad') throw 'bad trigger';",
      "});",
      "redis.registerStreamTrigger('reader', 'gmst:', function(client, data){});",
    ].join("\n");
    await c.call("TFUNCTION", "LOAD", "REPLACE", tfLibrary("gmlib", body));
    const before = await page();
    for (let i = 0; i < 3; i++) expect(await c.call("TFCALL", "gmlib.ok", "0")).to.equal(1);
    for (let i = 0; i < 2; i++) await c.call("TFCALL", "gmlib.fails", "0").catch(() => null);
    await c.call("TFCALL", "gmlib.nosuch", "0").catch(() => null);
    for (let i = 1; i <= 3; i++) await c.xadd("gmst:s", `${i}-1`, "n", String(i));
    await c.set("gmtf:1", "x");
    await c.set("gmtf:bad", "x");
    const after = await eventually(
      page,
      (p) =>
        sample(p, 'gears_proxy_tf_trigger_runs_total{library="gmlib",trigger="watch"}') === 2 &&
        sample(p, 'gears_proxy_tf_stream_trigger_records_total{library="gmlib",trigger="reader"}') === 3,
      "both keyspace trigger runs and the three stream records counted",
    );
    const delta = (series: string): number => sample(after, series) - sample(before, series);
    expect(delta('gears_proxy_tf_function_calls_total{library="gmlib",function="ok"}')).to.equal(3);
    expect(delta('gears_proxy_tf_function_errors_total{library="gmlib",function="ok"}')).to.equal(0);
    expect(delta('gears_proxy_tf_function_calls_total{library="gmlib",function="fails"}')).to.equal(2);
    expect(delta('gears_proxy_tf_function_errors_total{library="gmlib",function="fails"}')).to.equal(2);
    // A function that does not exist is no series (clients cannot grow the label set at will).
    expect(
      hasSample(after, 'gears_proxy_tf_function_calls_total{library="gmlib",function="nosuch"}'),
    ).to.equal(false);
    expect(sample(after, 'gears_proxy_tf_trigger_failures_total{library="gmlib",trigger="watch"}')).to.equal(
      1,
    );
    await c.call("TFUNCTION", "DELETE", "gmlib");
  });

  it("the README's Metrics table lists exactly the gears_proxy_* metrics /metrics serves", async () => {
    const readme = fs.readFileSync(new URL("../../README.md", import.meta.url), "utf8");
    const table = readme.slice(readme.indexOf("## Metrics"), readme.indexOf("## SLOWLOG"));
    const listed = new Set<string>();
    for (const row of table.split("\n").filter((l) => l.startsWith("| `gears_proxy_"))) {
      for (const m of row.split("|")[1].matchAll(/`(gears_proxy_\w+)`/g)) listed.add(m[1]);
    }
    const served = new Set([...(await page()).matchAll(/^# HELP (gears_proxy_\w+)/gm)].map((m) => m[1]));
    expect([...listed].sort()).to.deep.equal([...served].sort());
  });
});
