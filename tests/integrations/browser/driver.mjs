// Drives headless Chromium through puppeteer-core: opens one page per SDK, each in a fresh
// incognito context (so only that SDK's cookies exist), and prints what each page reported.
// usage: node driver.mjs <base url> <chromium path> <user data dir> <sdk>...
import puppeteer from "puppeteer-core";

const [base, chromium, userDataDir, ...sdks] = process.argv.slice(2);
const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  userDataDir,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
  ],
});
const results = {};
try {
  for (const sdk of sdks) {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    const logs = [];
    page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
    try {
      await page.goto(`${base}/page/${sdk}?utm_source=news&utm_medium=email&utm_campaign=spring`,
        { waitUntil: "load", timeout: 30000, referer: "http://127.0.0.1/landing" });
      await page.waitForFunction("window.__result !== undefined", { timeout: 30000 });
      results[sdk] = await page.evaluate("window.__result");
    } catch (e) {
      results[sdk] = { error: String(e), logs: logs.slice(-20) };
    }
    await context.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results));
