// <notifier-inbox> in headless Chromium, step by step with tests/test_inbox_element.py over
// stdin/stdout ("go" lines in, "<STEP> <facts as JSON>" lines out), with screenshots.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const { PAGE_URL, NOTIFIER_TOKEN, ARTIFACTS } = process.env;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (step, facts = {}) => console.log(`${step} ${JSON.stringify(facts)}`);
const next = async () => (await lines.next()).value;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const errors = [];
const dialogs = [];
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 760 } });
  page.on("pageerror", (err) => errors.push(err.message));
  page.on("console", (msg) => { if (msg.type() === "error") errors.push(msg.text()); });
  page.on("dialog", async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });
  await page.goto(`${PAGE_URL}#token=${NOTIFIER_TOKEN}`);
  const inbox = page.locator("notifier-inbox");
  try {
    await page.waitForFunction(() => document.querySelector("notifier-inbox")?.dataset.ready === "true", null, { timeout: 15000 });
  } catch (err) {
    const state = await page.evaluate(() => ({ ...document.querySelector("notifier-inbox")?.dataset }));
    throw new Error(`not ready: ${JSON.stringify(state)} ${errors.join(" | ")}`);
  }
  await inbox.locator("[part=bell]").click();
  await page.waitForFunction(() => !document.querySelector("notifier-inbox").shadowRoot.querySelector("[part=empty]").hidden);
  await page.screenshot({ path: `${ARTIFACTS}/inbox-empty.png` });
  say("EMPTY", { empty: await inbox.locator("[part=empty]").isVisible(), errors });

  const items = inbox.locator("[part~=item]:not([hidden])");
  const count = () => page.evaluate(() => document.querySelector("notifier-inbox").shadowRoot.querySelectorAll("[part~=item]").length);
  await next(); // three notifications, one titled with markup
  await page.waitForFunction(() => document.querySelector("notifier-inbox").shadowRoot.querySelectorAll("[part~=item]").length === 3);
  await page.screenshot({ path: `${ARTIFACTS}/inbox-3.png` });
  say("THREE", {
    titles: await inbox.locator("[part=title]").allTextContents(),
    images: await page.evaluate(() => document.querySelector("notifier-inbox").shadowRoot.querySelectorAll("img").length),
    badge: await inbox.locator("[part=badge]").textContent(),
    tabs: await inbox.locator("[part~=tab]").allTextContents(),
    actions: await inbox.locator("[part~=action]").allTextContents(),
    dialogs,
  });

  // The keyboard: the first item has focus when the panel opens; Enter marks it read.
  await inbox.locator("[part=bell]").click();
  await inbox.locator("[part=bell]").click();
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("ArrowUp");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("notifier-inbox").shadowRoot.querySelector("[part=badge]").textContent === "2");
  say("KEYBOARD", { badge: await inbox.locator("[part=badge]").textContent() });

  await next(); // a category tab
  await inbox.locator("[part~=tab]", { hasText: "billing" }).click();
  say("TAB", { shown: await items.locator("[part=title]").allTextContents() });
  await inbox.locator("[part~=tab]", { hasText: "All" }).click();

  await next(); // 497 more: 500 in all
  await page.waitForFunction(() => document.querySelector("notifier-inbox").shadowRoot.querySelectorAll("[part~=item]").length >= 500, null, { timeout: 30000 });
  // Mark one item's element: rendering the list again would replace it.
  await page.evaluate(() => { document.querySelector("notifier-inbox").shadowRoot.querySelector("[part~=item]:last-child").marked = true; });
  say("FIVE_HUNDRED", { items: await count() });
  await next(); // one more arrives, one is archived elsewhere
  await page.waitForFunction(() => document.querySelector("notifier-inbox").shadowRoot.querySelectorAll("[part~=item]").length === 500, null, { timeout: 15000 });
  const kept = await page.evaluate(() => document.querySelector("notifier-inbox").shadowRoot.querySelector("[part~=item]:last-child").marked === true);
  await page.screenshot({ path: `${ARTIFACTS}/inbox-500.png` });
  say("KEPT", { kept, items: await count(), first: await items.first().locator("[part=title]").textContent() });

  await page.setViewportSize({ width: 360, height: 700 });
  await page.screenshot({ path: `${ARTIFACTS}/inbox-narrow.png` });
  const box = await inbox.locator("[part=panel]").boundingBox();
  say("NARROW", { left: box.x, right: box.x + box.width });

  await page.setViewportSize({ width: 900, height: 760 });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: `${ARTIFACTS}/inbox-dark.png` });
  const background = await inbox.locator("[part=panel]").evaluate((panel) => getComputedStyle(panel).backgroundColor);
  await inbox.locator("[part~=item]").first().locator("button", { hasText: "Archive" }).click();
  await page.waitForFunction(() => document.querySelector("notifier-inbox").shadowRoot.querySelectorAll("[part~=item]").length === 499);
  await page.keyboard.press("Escape");
  say("DARK", { background, items: await count(), open: await inbox.locator("[part=panel]").isVisible(), errors });
} finally {
  await browser.close();
}
