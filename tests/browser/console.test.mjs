// Browser test of the admin console and the public enrollment page, with Debian's Chromium.
// An admin signs in, creates an enrollment and sees its QR code; the link the QR code encodes
// (decoded from a screenshot) registers exactly one user, and a second attempt fails.
//
// Environment: FELDPOST_URL (the running server), FELDPOST_ADMIN and FELDPOST_ADMIN_PASSWORD (an
// existing admin), SCREENSHOT_DIR (where screenshots go).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import jsQR from "jsqr";
import { PNG } from "pngjs";

const base = process.env.FELDPOST_URL;
const adminUser = process.env.FELDPOST_ADMIN;
const adminPassword = process.env.FELDPOST_ADMIN_PASSWORD;
const shots = process.env.SCREENSHOT_DIR || "screenshots";
mkdirSync(shots, { recursive: true });

let browser;

before(async () => {
  assert.ok(base && adminUser && adminPassword, "FELDPOST_URL, FELDPOST_ADMIN, FELDPOST_ADMIN_PASSWORD");
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});

after(async () => {
  await browser?.close();
});

/** A page that fails the test on any script error or blocked resource. */
async function newPage(options) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push("console error: " + m.text());
  });
  return { page, problems, context };
}

function decodeQr(png) {
  const img = PNG.sync.read(png);
  const code = jsQR(new Uint8ClampedArray(img.data), img.width, img.height);
  assert.ok(code, "a QR code is readable in the screenshot");
  return code.data;
}

async function register(username, token) {
  const resp = await fetch(base + "/_matrix/client/v3/register", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      username,
      password: "a long enough password",
      auth: { type: "m.login.registration_token", token },
    }),
  });
  return { status: resp.status, body: await resp.json() };
}

test("an admin enrolls a member by QR code, and the link registers exactly one user", async () => {
  const { page, problems, context } = await newPage({
    viewport: { width: 1366, height: 768 },
    locale: "de-DE",
  });

  // Sign in with the keyboard only.
  await page.goto(base + "/_feldpost/console/");
  await page.screenshot({ path: join(shots, "console-sign-in.png") });
  assert.equal(await page.getByRole("navigation").isVisible(), false, "no sections before signing in");
  await page.getByLabel("Benutzername", { exact: true }).focus();
  await page.keyboard.type(adminUser);
  await page.keyboard.press("Tab");
  await page.keyboard.type(adminPassword);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Neue Mitglieder einladen" }).waitFor();
  await page.screenshot({ path: join(shots, "console-enrollments-empty.png") });

  // Create an enrollment.
  await page.getByLabel("Benutzername (z. B. max.muster)").fill("rekrut");
  await page.getByLabel("Anzeigename (optional)").fill("Rekrut Müller");
  await page.getByRole("button", { name: "Einladung erstellen" }).click();
  const qr = page.getByRole("img", { name: /QR-Code mit dem Einladungslink für @rekrut:/ });
  await qr.waitFor();
  const shown = await page.getByLabel("Link").inputValue();
  assert.match(shown, /\/_feldpost\/enroll\/[A-Za-z0-9]{32}$/);
  await page.screenshot({ path: join(shots, "console-enrollment-created.png") });

  // The QR code encodes exactly the link shown next to it.
  const decoded = decodeQr(await qr.screenshot());
  assert.equal(decoded, shown);
  // It is listed as pending.
  const row = page.getByRole("row", { name: /@rekrut:/ });
  await row.waitFor();
  assert.match(await row.innerText(), /offen/);

  // The landing page, on a phone.
  const phone = await newPage({ viewport: { width: 390, height: 844 }, locale: "de-DE" });
  const landing = await phone.page.goto(decoded);
  assert.equal(landing.status(), 200);
  const csp = landing.headers()["content-security-policy"];
  assert.match(csp, /default-src 'none'/);
  const token = decoded.split("/").pop();
  assert.equal(await phone.page.locator("#token").innerText(), token);
  assert.equal(await phone.page.locator("#username").innerText(), "rekrut");
  assert.equal(await phone.page.locator("#server").innerText(), base);
  await phone.page.getByRole("button", { name: /Kopieren/ }).first().waitFor();
  await phone.page.screenshot({ path: join(shots, "enrollment-page-phone.png"), fullPage: true });
  assert.deepEqual(phone.problems, []);

  // The decoded link registers exactly one user.
  const first = await register("rekrut", token);
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.match(first.body.user_id, /^@rekrut:/);
  const second = await register("rekrut2", token);
  assert.equal(second.status, 401, JSON.stringify(second.body));
  assert.equal(second.body.errcode, "M_FORBIDDEN");
  const room = await fetch(base + "/_matrix/client/v3/createRoom", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + first.body.access_token },
    body: JSON.stringify({ name: "Stube 3" }),
  });
  assert.equal(room.status, 200);
  const again = await phone.page.goto(decoded);
  assert.equal(again.status(), 410);
  await phone.context.close();

  // The console shows it used, and the new member among the users.
  await page.getByLabel("Auch verwendete, abgelaufene und zurückgezogene zeigen").check();
  await page.getByRole("row", { name: /@rekrut:.*verwendet/ }).waitFor();
  await page.getByRole("link", { name: "Benutzer" }).click();
  await page.getByRole("searchbox").first().fill("rekrut");
  await page.keyboard.press("Enter");
  await page.getByRole("cell", { name: "Rekrut Müller" }).waitFor();
  await page.screenshot({ path: join(shots, "console-users.png") });

  // Revoking a pending enrollment makes its link useless.
  await page.getByRole("link", { name: "Einladungen" }).click();
  await page.getByLabel("Benutzername (z. B. max.muster)").fill("zweiter");
  await page.getByRole("button", { name: "Einladung erstellen" }).click();
  await page.getByRole("img", { name: /@zweiter:/ }).waitFor();
  const secondLink = await page.getByLabel("Link").inputValue();
  page.once("dialog", (d) => d.accept());
  await page.getByRole("button", { name: /Zurückziehen: @zweiter:/ }).click();
  await page.getByText("Einladung zurückgezogen.").waitFor();
  const revoked = await fetch(secondLink);
  assert.equal(revoked.status, 410);
  const refused = await register("zweiter", secondLink.split("/").pop());
  assert.equal(refused.status, 401);

  // Rooms, in English.
  await page.getByRole("button", { name: "English" }).click();
  await page.getByRole("link", { name: "Rooms" }).click();
  await page.getByRole("heading", { name: "Rooms" }).waitFor();
  await page.getByRole("button", { name: "Show members: Stube 3" }).click();
  await page.getByRole("heading", { name: "Members of Stube 3" }).waitFor();
  await page.getByRole("listitem").filter({ hasText: first.body.user_id }).waitFor();
  await page.screenshot({ path: join(shots, "console-rooms-en.png") });

  assert.deepEqual(problems, []);
  await context.close();
});

test("a non-admin cannot use the console", async () => {
  const { page, problems, context } = await newPage({ locale: "en-GB" });
  await page.goto(base + "/_feldpost/console/");
  await page.getByLabel("Username", { exact: true }).fill("rekrut");
  await page.getByLabel("Password", { exact: true }).fill("a long enough password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("This account is not a server admin.").waitFor();
  assert.equal(await page.getByRole("heading", { name: "Enroll new members" }).isVisible(), false);
  // Only the 403 of the admin check, which the console reports itself.
  assert.ok(problems.every((p) => p.includes("403")), problems.join("\n"));
  await context.close();
});
