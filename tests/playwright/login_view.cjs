// Drives the panel's login view with Playwright in Chromium, as a person on another
// machine would (tests/tests/remote_login.rs runs it): opens the view of a sandbox lane
// whose site asks for a login, sees the login form in the streamed frames, clicks into
// its fields, types, presses Enter, sees the chat page, checks that a second viewer is
// refused, and closes the view. Prints one JSON line with what it saw.
//
// node login_view.cjs PLAYWRIGHT_DIR API_URL LANE_ID SANDBOX_URL BROWSER
"use strict";

const path = require("path");
const [packageDir, api, lane, sandbox, executablePath] = process.argv.slice(2);
const { chromium } = require(path.join(packageDir, "node_modules", "playwright-core"));

const WITHIN = 30_000;

/** The colour of the image's pixel at (x, y) in the page's CSS pixels. */
async function pixel(view, x, y) {
  return view.evaluate(([x, y]) => {
    const img = document.querySelector("#screen");
    const [w, h] = img.dataset.page.split("x").map(Number);
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(Math.round((x / w) * img.naturalWidth), Math.round((y / h) * img.naturalHeight), 1, 1).data;
    return [d[0], d[1], d[2]];
  }, [x, y]);
}

/** Where a point of the lane's page is on the view's screen, in the view's pixels. */
async function onScreen(view, x, y) {
  const box = await view.locator("#screen").boundingBox();
  const [w, h] = (await view.locator("#screen").getAttribute("data-page")).split("x").map(Number);
  return { x: box.x + (x / w) * box.width, y: box.y + (y / h) * box.height };
}

const centre = (b) => ({ x: b.x + b.width / 2, y: b.y + b.height / 2 });

async function main() {
  const browser = await chromium.launch({ executablePath, headless: true });
  try {
    const view = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    const url = `${api}/panel/login?lane=${encodeURIComponent(lane)}`;
    await view.goto(url);
    await view.waitForFunction(() => Number(document.querySelector("#screen").dataset.frames ?? 0) > 0, null, { timeout: WITHIN });
    const [w, h] = (await view.locator("#screen").getAttribute("data-page")).split("x").map(Number);

    // Where the form's fields are: the same page, at the lane's viewport, in a browser of
    // our own (a fresh context: no login cookie).
    const layout = await (await browser.newContext({ viewport: { width: Math.round(w), height: Math.round(h) } })).newPage();
    await layout.goto(`${sandbox}?login=1`);
    const user = centre(await layout.locator("#user").boundingBox());
    const password = centre(await layout.locator("#password").boundingBox());
    // The button's blue, left of its label.
    const sign = await layout.locator("#sign-in").boundingBox();
    const button = { x: sign.x + 6, y: sign.y + sign.height / 2 };
    // The form shows in the frames: its button's blue, once the page has painted it.
    const blue = ([r, g, b]) => Math.abs(r - 0x3a) < 40 && Math.abs(g - 0x66) < 40 && Math.abs(b - 0xf5) < 40;
    let formPixel = await pixel(view, button.x, button.y);
    for (const until = Date.now() + WITHIN; !blue(formPixel) && Date.now() < until; ) {
      await view.waitForTimeout(100);
      formPixel = await pixel(view, button.x, button.y);
    }

    // One person at a time.
    const second = await (await browser.newContext()).newPage();
    await second.goto(url);
    await second.waitForFunction(() => document.body.dataset.ended === "error", null, { timeout: WITHIN });
    const refused = await second.locator("#status").textContent();

    let at = await onScreen(view, user.x, user.y);
    await view.mouse.click(at.x, at.y);
    await view.keyboard.type("someone");
    at = await onScreen(view, password.x, password.y);
    await view.mouse.click(at.x, at.y);
    await view.keyboard.type("secret");
    await view.keyboard.press("Enter");
    await view.waitForFunction(() => document.querySelector("#address").value.includes("/chat?"), null, { timeout: WITHIN });
    const address = await view.locator("#address").inputValue();
    // A frame of the chat page, past the one that came with the navigation.
    const frames = Number(await view.locator("#screen").getAttribute("data-frames"));
    await view.waitForFunction((n) => Number(document.querySelector("#screen").dataset.frames) > n, frames, { timeout: WITHIN }).catch(() => {});
    const chatPixel = await pixel(view, button.x, button.y);

    await view.locator("#close").click();
    await view.waitForFunction(() => document.body.dataset.ended === "closed", null, { timeout: WITHIN });
    const closed = await view.locator("#status").textContent();
    console.log(JSON.stringify({ ok: true, formPixel, chatPixel, refused, address, closed }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.log(JSON.stringify({ ok: false, error: String(e.stack ?? e) }));
  process.exit(1);
});
