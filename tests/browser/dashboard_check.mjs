// Drives the dashboard in headless Chromium (Debian's, via playwright-core), step by step with
// the pytest side over stdin/stdout: it prints READY, BAR <n>, BADGE <n>, CLEARED; it waits
// for "go" lines in between so Python publishes at the right moments.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const { NOTIFIER_URL, NOTIFIER_TOKEN, SCREENSHOT } = process.env;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (line) => console.log(line);
const next = async () => (await lines.next()).value;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 700 } });
  page.on("pageerror", (err) => console.error(`pageerror ${err.message}`));
  await page.goto(`${NOTIFIER_URL}/#token=${NOTIFIER_TOKEN}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 10000 });
  await page.waitForSelector("#state.connected");
  say("READY");

  await next(); // Python created a task and reported progress
  const bar = await page.waitForSelector('[data-task="report"]', { timeout: 10000 });
  await page.waitForFunction(() => Number(document.querySelector('[data-task="report"]')?.dataset.progress) >= 60);
  say(`BAR ${await bar.getAttribute("data-progress")}`);

  await next(); // Python sent a notification
  await page.waitForFunction(() => document.querySelector("#unread").textContent === "1");
  await page.waitForSelector("li.note.unread");
  say(`BADGE ${await page.textContent("#unread")}`);
  await page.click("li.note.unread .mark-read");
  await page.waitForFunction(() => document.querySelector("#unread").textContent === "0");
  await page.waitForSelector("li.note.read");
  await page.waitForFunction(() => /\d+ ms/.test(document.querySelector("#latency").textContent));
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  say("CLEARED");
} finally {
  await browser.close();
}
process.exit(0); // the stdin reader would keep Node alive
