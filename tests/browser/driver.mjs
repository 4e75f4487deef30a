// The browser tier's driver: one headless Debian Chromium, driven over DevTools by puppeteer-core.
//
//   node driver.mjs READY_FILE      writes {"control": port, "http": port} to READY_FILE when ready
//
// It serves the test pages and the npm modules they load on http://127.0.0.1:<http>/ (a secure
// context for WebRTC), and takes commands as JSON lines on a TCP socket on 127.0.0.1:<control>
// (any number of connections, so every pytest event loop can open its own):
//   {"id": 1, "op": "open", "page": "rc.html"}             -> {"id": 1, "ok": true, "value": "t1"}
//   {"id": 2, "op": "eval", "tab": "t1", "expr": "..."}   -> the expression's value (awaited)
//   {"id": 3, "op": "logs", "tab": "t1"}                   -> the tab's console lines so far
//   {"id": 4, "op": "close", "tab": "t1"}
// SIGTERM closes Chromium and exits; so does the death of the parent (pytest) process.
import { createServer as createHttpServer } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { readFile, mkdtemp, rm, writeFile, rename } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import puppeteer from "puppeteer-core";
import esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const chromium = process.env.WEBPHONE_CHROMIUM || "/usr/bin/chromium";

// The official SDK as published (its own browser build); JsSIP ships CommonJS only, so it is
// bundled once, in memory, with esbuild (no network, no files written).
async function modules() {
  const jssip = await esbuild.build({
    entryPoints: [require.resolve("jssip")], bundle: true, format: "iife", globalName: "JsSIP",
    platform: "browser", write: false, logLevel: "error",
  });
  return {
    "/modules/ringcentral-web-phone.js": await readFile(
      join(here, "node_modules/ringcentral-web-phone/dist/index.iife.js")),
    "/modules/jssip.js": Buffer.from(jssip.outputFiles[0].contents),
  };
}

async function serveHttp(files) {
  const server = createHttpServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    let body = files[path];
    if (body === undefined && /^\/[a-z0-9_-]+\.(html|js)$/.test(path)) {
      body = await readFile(join(here, "pages", path.slice(1))).catch(() => undefined);
    }
    if (body === undefined) { res.writeHead(404).end(); return; }
    const type = path.endsWith(".html") ? "text/html" : "text/javascript";
    res.writeHead(200, { "content-type": `${type}; charset=utf-8`, "cache-control": "no-store" });
    res.end(body);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return server;
}

const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-default-apps", "--disable-extensions", "--mute-audio",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
  // The sandbox's wss:// uses a throw-away certificate made by the test.
  "--ignore-certificate-errors",
];

async function main() {
  const profile = await mkdtemp(join(tmpdir(), "webphone-chromium-"));
  const files = await modules();
  const http = await serveHttp(files);
  const browser = await puppeteer.launch({
    executablePath: chromium, headless: true, args: FLAGS, userDataDir: profile,
    ignoreDefaultArgs: ["--enable-automation"], protocolTimeout: 60000,
  });
  const tabs = new Map();
  let next = 0;
  const base = `http://127.0.0.1:${http.address().port}`;

  async function run(msg) {
    if (msg.op === "open") {
      const page = await browser.newPage();
      const tab = `t${++next}`;
      const logs = [];
      page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
      page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
      tabs.set(tab, { page, logs });
      await page.goto(`${base}/${msg.page}`, { waitUntil: "load" });
      return tab;
    }
    const entry = tabs.get(msg.tab);
    if (!entry) throw new Error(`no tab ${msg.tab}`);
    if (msg.op === "eval") return await entry.page.evaluate(msg.expr);
    if (msg.op === "logs") return entry.logs.slice(msg.since || 0);
    if (msg.op === "close") {
      tabs.delete(msg.tab);
      await entry.page.close();
      return null;
    }
    throw new Error(`unknown op ${msg.op}`);
  }

  const control = createTcpServer((socket) => {
    socket.setEncoding("utf8");
    let buffer = "";
    socket.on("data", (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        let msg;
        try { msg = JSON.parse(line); } catch { continue; }
        run(msg).then(
          (value) => socket.write(JSON.stringify({ id: msg.id, ok: true, value: value ?? null }) + "\n"),
          (err) => socket.write(JSON.stringify({ id: msg.id, ok: false, error: String(err && err.stack || err) }) + "\n"),
        );
      }
    });
    socket.on("error", () => {});
  });
  await new Promise((ok) => control.listen(0, "127.0.0.1", ok));

  let closing = false;
  async function shutdown() {
    if (closing) return;
    closing = true;
    control.close();
    http.close();
    await browser.close().catch(() => {});
    await rm(profile, { recursive: true, force: true }).catch(() => {});
    process.exit(0);
  }
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
  const parent = process.ppid;
  setInterval(() => { if (process.ppid !== parent) shutdown(); }, 1000).unref();
  const ready = JSON.stringify({ control: control.address().port, http: http.address().port, pid: process.pid });
  const target = process.argv[2];
  if (target) {
    await writeFile(`${target}.tmp`, ready);
    await rename(`${target}.tmp`, target);  // appears whole
  } else {
    process.stdout.write(ready + "\n");
  }
}

main().catch((err) => { process.stderr.write(String(err && err.stack || err) + "\n"); process.exit(1); });
