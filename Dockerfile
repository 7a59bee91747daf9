# gears-proxy in front of an existing Redis server or cluster:
#   docker build -t gears-proxy .
#   docker run -p 6380:6380 -e UPSTREAM=redis:6379 gears-proxy [more flags, e.g. --requirepass secret]
# UPSTREAM is required (host:port; several seeds separated by commas). The image has no redis-server.
# /metrics, /healthz and /readyz are served on port 9180; the health check asks /readyz.

FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
# `npm ci` runs the `prepare` script, which compiles src/ into dist/ and bundles the guest
# libraries into dist/guest/ (typescript and esbuild are devDependencies).
RUN npm ci && npm prune --omit=dev

FROM node:20-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/guest ./dist/guest
USER node
EXPOSE 6380 9180
# node:20-slim has no curl: Node's own fetch asks /readyz (ready: upstreams answer, topology known).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9180/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["sh", "-c", ": \"${UPSTREAM:?set UPSTREAM to the Redis server, e.g. -e UPSTREAM=redis:6379}\"; exec node dist/src/cli.js --bind 0.0.0.0 --metrics-port 9180 --metrics-bind 0.0.0.0 --upstream \"$UPSTREAM\" \"$@\"", "gears-proxy"]
