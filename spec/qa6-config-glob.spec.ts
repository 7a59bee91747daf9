import { expect } from "chai";
import { startRedis, type RedisNode } from "./harness/index.js";
import { RawClient, toText } from "./support/raw-client.js";
import { TF_SETTING_NAMES, TfConfig } from "../src/gears/tf/config.js";

// CONFIG GET's patterns select T&F's settings as Redis's glob (util.c stringmatchlen) selects
// names: checked against Redis's own matching, KEYS over keys named as the settings (KEYS is
// case-sensitive where CONFIG GET is not: the patterns here are lower case).

const PATTERNS = [
  "*",
  "redisgears*",
  "redisgears_2.*",
  "*timeout",
  "*-lock-*",
  "redisgears_2.v8-*",
  "redisgears_2.v8-library-initial-memory-????",
  "redisgears_2.[e]rror-verbosity",
  "redisgears_2.[^e]*",
  "redisgears_2.[a-f]*",
  "redisgears_2.[f-a]*",
  "redisgears_2.[!e]*",
  "redisgears\\_2.*",
  "redisgears_2.error-verbosity",
  "redisgears_2.nothing",
  "redisgears_2",
  "?edisgears_2.execution-threads",
  "redisgears_2.[abc",
  "*[*]*",
];

describe("qa6: CONFIG GET's glob over T&F's settings, as Redis matches", function () {
  this.timeout(30_000);
  let server: RedisNode;
  let c: RawClient;

  before(async () => {
    server = await startRedis();
    c = await RawClient.connect(server.port);
    for (const name of TF_SETTING_NAMES) expect(await c.call("SET", name, "1")).to.equal("OK");
  });
  after(async () => {
    c?.close();
    await server?.stop();
  });

  for (const pattern of PATTERNS) {
    it(pattern, async () => {
      const want = (toText(await c.call("KEYS", pattern)) as string[]).sort();
      const got = new TfConfig()
        .entries([pattern])
        .map(([name]) => name.toString())
        .sort();
      expect(got).to.deep.equal(want);
    });
  }
});
