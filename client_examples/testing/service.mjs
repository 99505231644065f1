// Test helpers: a real notifier process, tokens signed like the service's, REST publishing.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");
export const SECRET = "js-test-secret-" + "z".repeat(40);

const b64url = (data) => Buffer.from(data).toString("base64url");

/** An HS256 JWT, as `notifier token` would print. */
export function sign({ sub, projects = [], role = "user", ttl = 3600 }) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, projects, role, iat: now, exp: now + ttl }));
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

function freePort() {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => done(port));
    });
  });
}

/** `python -m notifier serve` on its own port and data directory. */
export class Service {
  static async start() {
    const service = new Service(await freePort(), mkdtempSync(join(tmpdir(), "notifier-js-")));
    await service.start();
    return service;
  }

  constructor(port, dataDir) {
    this.port = port;
    this.dataDir = dataDir;
    this.url = `http://127.0.0.1:${port}`;
  }

  async start() {
    const python = process.env.NOTIFIER_PYTHON ?? join(ROOT, ".venv", "bin", "python");
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("NOTIFIER_")));
    this.child = spawn(python, ["-m", "notifier", "serve"], {
      cwd: ROOT,
      stdio: ["ignore", "inherit", "inherit"],
      env: {
        ...env,
        NOTIFIER_PORT: String(this.port),
        NOTIFIER_DATA_DIR: this.dataDir,
        NOTIFIER_JWT_SECRET: SECRET,
        NOTIFIER_LOG_LEVEL: "WARNING",
        NOTIFIER_REFRESH_INTERVAL_SECONDS: "0",
      },
    });
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null) throw new Error(`service exited with ${this.child.exitCode}`);
      try {
        if ((await fetch(`${this.url}/healthz`)).ok) return;
      } catch {}
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("service did not become healthy");
  }

  /** SIGTERM and wait for the exit. */
  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGTERM");
    await exited;
  }

  async rest(method, path, body, token = sign({ sub: "svc", role: "publisher" })) {
    const response = await fetch(this.url + path, {
      method,
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  }

  publish(room, type, data = {}) {
    return this.rest("POST", "/api/v1/publish", { room, type, data });
  }
}

/** Resolve when `condition()` holds; fail after `ms`. */
export async function until(condition, ms = 5000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
