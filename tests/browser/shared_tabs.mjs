// Three tabs of one origin sharing one connection (NotifierClient {shared: true}), in headless
// Chromium, step by step with tests/test_shared_tabs.py ("go" in, "<STEP> <JSON>" out).
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const { PAGE_URL, NOTIFIER_TOKEN } = process.env;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (step, facts = {}) => console.log(`${step} ${JSON.stringify(facts)}`);
const next = async () => (await lines.next()).value;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const errors = [];
try {
  const context = await browser.newContext();
  const tabs = [];
  for (let n = 0; n < 3; n++) {
    const tab = await context.newPage();
    tab.on("pageerror", (err) => errors.push(err.message));
    await tab.goto(`${PAGE_URL}#token=${NOTIFIER_TOKEN}`);
    await tab.waitForFunction(() => document.body.dataset.ready === "true", null, { timeout: 15000 });
    tabs.push(tab);
  }
  const state = () => Promise.all(tabs.map((tab) => tab.isClosed() ? null : tab.evaluate(() => ({
    leader: window.client._leader, received: window.received, answer: window.answer ?? null,
  }))));
  say("OPEN", { tabs: await state(), errors });

  await next(); // ten notifications
  for (const tab of tabs) await tab.waitForFunction(() => window.received.length >= 10, null, { timeout: 15000 });
  // A follower's call goes through the leader.
  await tabs[2].evaluate(async () => { window.answer = (await window.client.call("notifications.counts", {})).counts.unread; });
  say("TEN", { tabs: await state() });

  const leader = (await Promise.all(tabs.map((tab) => tab.evaluate(() => window.client._leader)))).indexOf(true);
  await tabs[leader].close();
  const left = tabs.filter((tab) => !tab.isClosed());
  await Promise.race(left.map((tab) => tab.waitForFunction(() => window.client._leader && window.client.state === "connected", null, { timeout: 15000 })));
  say("CLOSED", { closed: leader, tabs: await state() });

  await next(); // ten more, then a marker: whatever came twice came before it
  for (const tab of left) {
    await tab.waitForFunction(() => window.titles.includes("marker"), null, { timeout: 15000 });
  }
  say("TWENTY", { tabs: await state(), errors });
} finally {
  await browser.close();
}
