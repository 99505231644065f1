// Drives the dashboard as an operator would, in headless Chromium, step by step with the
// pytest side (tests/test_dashboard.py) over stdin/stdout: it waits for a "go <step>" line,
// checks what the page shows, and answers "<STEP> <facts as JSON>".
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const { DASHBOARD_URL, NOTIFIER_TOKEN, EXPIRED_TOKEN, ARTIFACTS } = process.env;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (step, facts = {}) => console.log(`${step} ${JSON.stringify(facts)}`);
const next = async () => (await lines.next()).value;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const errors = [];
try {
  // A refused token: the page says why, in words.
  const refused = await browser.newPage({ viewport: { width: 1280, height: 500 } });
  await refused.goto(`${DASHBOARD_URL}#token=${EXPIRED_TOKEN}`);
  await refused.waitForSelector("#problem.shown", { timeout: 10000 });
  await refused.screenshot({ path: `${ARTIFACTS}/dashboard-refused.png` });
  say("REFUSED", { problem: await refused.textContent("#problem"), state: await refused.textContent("#state") });
  await refused.close();

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (err) => errors.push(err.message));
  page.on("console", (msg) => { if (msg.type() === "error") errors.push(msg.text()); });
  await page.goto(`${DASHBOARD_URL}#token=${NOTIFIER_TOKEN}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 10000 });
  await page.waitForSelector("#state.connected");
  await page.waitForSelector("#admin.shown #nodes tr");
  say("READY", { nodes: await page.locator("#nodes tr").count(), who: await page.textContent("#who") });

  await next(); // a task in a project the page never heard of, which then fails
  const row = page.locator('[data-task="deploy-1"]');
  await row.waitFor({ timeout: 10000 });
  await page.waitForSelector('[data-task="deploy-1"].failed');
  say("TASK", {
    project: await row.locator(".project").textContent(),
    message: await row.locator(".message").textContent(),
    error: await row.locator(".error").textContent(),
    times: await row.locator(".times").textContent(),
  });

  await page.selectOption("#presence-room", "project:alpha");
  await page.waitForSelector("#presence li.empty, #presence li[data-user]");
  say("PRESENCE_OPEN");
  await next(); // bob joined project:alpha
  await page.waitForSelector('#presence li[data-user="bob"]', { timeout: 10000 });
  say("PRESENCE", { users: await page.locator("#presence li[data-user]").allTextContents() });

  await page.fill("#filter-type", "task.failed");
  const shown = await page.locator("#events li:not([hidden])").allTextContents();
  say("FILTERED", { shown, total: await page.locator("#events li").count() });
  await page.fill("#filter-type", "");

  await page.fill("#refresh-seconds", "30");
  await page.click("#refresh-apply");
  await page.waitForFunction(() => document.querySelector("#interval").textContent === "30s");
  say("REFRESH", { interval: await page.textContent("#interval") });

  await next(); // a notification for the operator: the page receives it (and says so)
  const note = page.locator("#notes li", { hasText: "check the receipts" });
  await note.waitFor({ timeout: 10000 });
  await note.locator("button.receipts").click();
  // The delivered receipt is on its way: ask again (as an operator would) until it is there.
  const asked = Date.now();
  while ((await page.locator("#receipts tr").count()) === 0 && Date.now() - asked < 10000) {
    await Promise.all([
      page.waitForResponse((answer) => answer.url().includes("/receipts")),
      page.click("#receipt-show"),
    ]);
  }
  say("RECEIPTS", {
    rows: await page.locator("#receipts tr").allTextContents(),
    escalation: await page.textContent("#escalation"),
  });

  await next(); // a thousand tasks
  await page.waitForFunction(() => document.querySelectorAll("[data-task]").length >= 1001, null, { timeout: 30000 });
  // Mark one row's element: a re-render of the list would replace it.
  await page.evaluate(() => { document.querySelector('[data-task="bulk-500"]').marked = true; });
  say("BULK", { rows: await page.locator("[data-task]").count() });
  await next(); // progress for every one of them
  await page.waitForFunction(() => document.querySelector('[data-task="bulk-999"]').dataset.progress === "50", null, { timeout: 30000 });
  const kept = await page.evaluate(() => document.querySelector('[data-task="bulk-500"]').marked === true
    && document.querySelector('[data-task="bulk-500"]').dataset.progress === "50");
  await page.screenshot({ path: `${ARTIFACTS}/dashboard-operator.png`, fullPage: true });
  say("PROGRESS", { kept, rows: await page.locator("[data-task]").count(), errors });
} finally {
  await browser.close();
}
process.exit(0); // the stdin reader would keep Node alive
