export { freePort, freeClusterPort, MAX_CLUSTER_PORT } from "./ports.js";
export {
  startRedis,
  redisCliTlsArgs,
  type RedisNode,
  type StartRedisOptions,
  type TlsFiles,
} from "./redis.js";
export { startCluster, SLOT_COUNT, type RedisCluster, type StartClusterOptions } from "./cluster.js";
export { stopAll, trackedCount } from "./registry.js";
export { sendCommand, RespError, type RespValue } from "./resp.js";
export { startProxy, closeAllProxies, type RunningProxy } from "./proxy.js";
