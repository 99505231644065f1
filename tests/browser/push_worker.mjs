// client_examples/notifier-sw.js in headless Chromium: PAGE_URL serves the page, the worker
// and (proxied) notifier's API on one origin. The page registers the worker and hands it the
// token; a push message (PUSH_MESSAGE, JSON) is delivered to the worker over the DevTools
// protocol, as a push service would; the worker shows it and reports `seen`. Prints SHOWN
// <title> once the notification is displayed.
import { chromium } from "playwright-core";

const { PAGE_URL, NOTIFIER_TOKEN, PUSH_MESSAGE } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const context = await browser.newContext();
  await context.grantPermissions(["notifications"], { origin: PAGE_URL });
  const page = await context.newPage();
  page.on("pageerror", (err) => console.error(`pageerror ${err.message}`));
  const cdp = await context.newCDPSession(page);
  const registered = new Promise((resolve) => {
    cdp.on("ServiceWorker.workerRegistrationUpdated", ({ registrations }) => {
      const live = registrations.find((r) => !r.isDeleted);
      if (live) resolve(live.registrationId);
    });
  });
  await cdp.send("ServiceWorker.enable");
  await page.goto(`${PAGE_URL}/#token=${NOTIFIER_TOKEN}`);
  await page.waitForFunction(() => document.body.dataset.ready === "true", null, { timeout: 15000 });
  const registrationId = await registered;
  const title = JSON.parse(PUSH_MESSAGE).title;
  const showing = () => page.evaluate(async (wanted) => {
    const registration = await navigator.serviceWorker.ready;
    const list = await registration.getNotifications();
    return list.find((n) => n.title === wanted)?.title ?? null;
  }, title);
  // As a push service does, delivered again until the worker took it (one sent while the
  // worker was still starting can be dropped); the same tag replaces a repeat.
  const deadline = Date.now() + 15000;
  let shown = null;
  while (!shown && Date.now() < deadline) {
    await cdp.send("ServiceWorker.deliverPushMessage", { origin: PAGE_URL, registrationId, data: PUSH_MESSAGE });
    const asked = Date.now();
    while (!shown && Date.now() - asked < 2000) {
      shown = await showing();
      if (!shown) await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  console.log(`SHOWN ${shown}`);
} finally {
  await browser.close();
}
