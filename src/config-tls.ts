/**
 * The TLS settings of both sides, built from the PEM files the options name. The files are read
 * once at start, so a missing or unreadable file stops the proxy with a message naming it.
 */
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import type tls from "node:tls";
import type { ProxyConfig } from "./config.js";

function readPem(file: string, option: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new Error(`${option} ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** What tls.createServer needs for --tls-port; undefined when the TLS port is off. */
export function clientTlsOptions(config: ProxyConfig): tls.TlsOptions | undefined {
  if (config.tlsPort === undefined || config.tlsCertFile === undefined || config.tlsKeyFile === undefined) {
    return undefined;
  }
  const auth = config.tlsAuthClients;
  return {
    cert: readPem(config.tlsCertFile, "--tls-cert-file"),
    key: readPem(config.tlsKeyFile, "--tls-key-file"),
    ...(config.tlsCaCertFile !== undefined
      ? { ca: readPem(config.tlsCaCertFile, "--tls-ca-cert-file") }
      : {}),
    requestCert: auth !== "no",
    // "optional" lets a client without a certificate in; one that shows a bad certificate is
    // still turned away (ProxyServer checks socket.authorized), as Redis does.
    rejectUnauthorized: auth === "yes",
  };
}

/** What tls.connect needs for every upstream node; undefined without --upstream-tls. */
export function upstreamTlsOptions(config: ProxyConfig): tls.ConnectionOptions | undefined {
  if (!config.upstreamTls) return undefined;
  return {
    ...(config.upstreamTlsCaCertFile !== undefined
      ? { ca: readPem(config.upstreamTlsCaCertFile, "--upstream-tls-ca-cert-file") }
      : {}),
    ...(config.upstreamTlsCertFile !== undefined
      ? { cert: readPem(config.upstreamTlsCertFile, "--upstream-tls-cert-file") }
      : {}),
    ...(config.upstreamTlsKeyFile !== undefined
      ? { key: readPem(config.upstreamTlsKeyFile, "--upstream-tls-key-file") }
      : {}),
    ...(config.upstreamTlsServername !== undefined ? { servername: config.upstreamTlsServername } : {}),
  };
}

/**
 * The TLS settings in use, re-read on demand (SIGHUP) so that renewed certificates take effect
 * without a restart. The upstream options stay one object, shared by every node's connections
 * and read at each dial: a reload changes it in place, and the next connection uses the new
 * files while open ones keep their session.
 */
export class TlsFiles {
  client: tls.TlsOptions | undefined;
  readonly upstream: tls.ConnectionOptions | undefined;

  constructor(private readonly config: ProxyConfig) {
    this.client = clientTlsOptions(config);
    this.upstream = upstreamTlsOptions(config);
  }

  /** Whether any TLS file is in use (a reload has something to do). */
  get inUse(): boolean {
    return this.client !== undefined || this.upstream !== undefined;
  }

  /**
   * When each certificate the proxy shows stops being valid (ms since the epoch): the one TLS
   * clients get (`clients`) and the one shown to upstream servers (`upstream`).
   */
  expiries(): { side: "clients" | "upstream"; expiresAt: number }[] {
    const out: { side: "clients" | "upstream"; expiresAt: number }[] = [];
    const add = (side: "clients" | "upstream", cert: unknown): void => {
      if (!Buffer.isBuffer(cert)) return;
      // The first certificate of the file: the leaf, ahead of any chain.
      out.push({ side, expiresAt: Date.parse(new X509Certificate(cert).validTo) });
    };
    add("clients", this.client?.cert);
    add("upstream", this.upstream?.cert);
    return out;
  }

  /** Reads every file again; all or nothing: a file that cannot be read leaves the old settings. */
  reload(): void {
    const client = clientTlsOptions(this.config);
    const upstream = upstreamTlsOptions(this.config);
    if (this.upstream !== undefined && upstream !== undefined) {
      for (const key of Object.keys(this.upstream)) delete this.upstream[key as keyof tls.ConnectionOptions];
      Object.assign(this.upstream, upstream);
    }
    this.client = client;
  }
}
