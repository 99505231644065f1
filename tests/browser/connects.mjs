// Opens the dashboard at DASHBOARD_URL with NOTIFIER_TOKEN in headless Chromium and prints
// CONNECTED <user> once its client is connected and the page is loaded (or fails).
import { chromium } from "playwright-core";

const { DASHBOARD_URL, NOTIFIER_TOKEN } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (err) => console.error(`pageerror ${err.message}`));
  await page.goto(`${DASHBOARD_URL}#token=${NOTIFIER_TOKEN}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 15000 });
  await page.waitForSelector("#state.connected");
  console.log(`CONNECTED ${await page.textContent("#who")}`);
} finally {
  await browser.close();
}
