// The Feldpost admin console. Plain JavaScript, no build step: it signs in through the client
// API's password login, then calls the admin API on the same origin. Every value from the
// server goes into the page as text (never as markup).
"use strict";
(function () {
  const TOKEN_KEY = "feldpost.console.token";
  const USER_KEY = "feldpost.console.user";
  const LANG_KEY = "feldpost.console.lang";
  const PAGE = 25;

  const T = {
    de: {
      skip: "Zum Inhalt springen", admin: "Administration", sections: "Bereiche",
      nav_enrollments: "Einladungen", nav_users: "Benutzer", nav_rooms: "Räume",
      logout: "Abmelden", login_title: "Anmelden", username: "Benutzername", password: "Passwort",
      login: "Anmelden", enroll_title: "Neue Mitglieder einladen", enroll_new: "Einladung erstellen",
      enroll_username: "Benutzername (z. B. max.muster)",
      enroll_username_hint: "Kleinbuchstaben, Ziffern und . _ = - / +",
      enroll_displayname: "Anzeigename (optional)", enroll_minutes: "Gültig für (Minuten)",
      enroll_create: "Einladung erstellen", enroll_scan: "QR-Code zum Scannen", enroll_link: "Link",
      copy: "Kopieren", copied: "Link kopiert.", enroll_pending: "Offene Einladungen",
      enroll_show_all: "Auch verwendete, abgelaufene und zurückgezogene zeigen",
      col_user: "Benutzer", col_displayname: "Anzeigename", col_state: "Status",
      col_expires: "Läuft ab", col_actions: "Aktionen", col_role: "Rolle",
      col_last_seen: "Zuletzt aktiv", col_room: "Raum", col_alias: "Adresse",
      col_members: "Mitglieder", users_title: "Benutzer", search: "Suchen",
      users_deactivated: "Deaktivierte zeigen", prev: "Zurück", next: "Weiter",
      pw_title: "Passwort zurücksetzen", pw_new: "Neues Passwort", pw_logout: "Alle Geräte abmelden",
      pw_set: "Passwort setzen", cancel: "Abbrechen", rooms_title: "Räume",
      show_qr: "QR-Code zeigen", revoke: "Zurückziehen", reset_pw: "Passwort zurücksetzen",
      deactivate: "Deaktivieren", members: "Mitglieder zeigen",
      state_valid: "offen", state_pending: "wird verwendet", state_used: "verwendet",
      state_expired: "abgelaufen", state_revoked: "zurückgezogen",
      role_admin: "Admin", role_user: "Benutzer", active: "aktiv", deactivated: "deaktiviert",
      none: "–", empty: "Keine Einträge.", qr_alt: "QR-Code mit dem Einladungslink für {user}",
      qr_for: "Für {user}", expires_at: "Gültig bis {time}.",
      created: "Einladung für {user} erstellt.", revoked: "Einladung zurückgezogen.",
      confirm_revoke: "Einladung für {user} zurückziehen?",
      confirm_deactivate: "Konto {user} deaktivieren? Das lässt sich nicht rückgängig machen.",
      deactivated_done: "{user} wurde deaktiviert.", pw_done: "Passwort von {user} wurde gesetzt.",
      not_admin: "Dieses Konto ist kein Server-Admin.", signed_in_as: "Angemeldet als {user}",
      page: "Einträge {from}–{to} von {total}", members_of: "Mitglieder von {room}",
      login_failed: "Anmeldung fehlgeschlagen: {error}", failed: "Fehler: {error}",
      signed_out: "Abgemeldet.", session_expired: "Sitzung abgelaufen. Bitte erneut anmelden.",
      loading: "Lädt …", lang_other: "English",
    },
    en: {
      skip: "Skip to content", admin: "Administration", sections: "Sections",
      nav_enrollments: "Enrollments", nav_users: "Users", nav_rooms: "Rooms",
      logout: "Sign out", login_title: "Sign in", username: "Username", password: "Password",
      login: "Sign in", enroll_title: "Enroll new members", enroll_new: "Create an enrollment",
      enroll_username: "Username (e.g. jane.doe)",
      enroll_username_hint: "Lower-case letters, digits and . _ = - / +",
      enroll_displayname: "Display name (optional)", enroll_minutes: "Valid for (minutes)",
      enroll_create: "Create enrollment", enroll_scan: "QR code to scan", enroll_link: "Link",
      copy: "Copy", copied: "Link copied.", enroll_pending: "Pending enrollments",
      enroll_show_all: "Also show used, expired and revoked ones",
      col_user: "User", col_displayname: "Display name", col_state: "State",
      col_expires: "Expires", col_actions: "Actions", col_role: "Role",
      col_last_seen: "Last seen", col_room: "Room", col_alias: "Address",
      col_members: "Members", users_title: "Users", search: "Search",
      users_deactivated: "Show deactivated", prev: "Previous", next: "Next",
      pw_title: "Reset password", pw_new: "New password", pw_logout: "Sign out all devices",
      pw_set: "Set password", cancel: "Cancel", rooms_title: "Rooms",
      show_qr: "Show QR code", revoke: "Revoke", reset_pw: "Reset password",
      deactivate: "Deactivate", members: "Show members",
      state_valid: "pending", state_pending: "in use", state_used: "used",
      state_expired: "expired", state_revoked: "revoked",
      role_admin: "Admin", role_user: "User", active: "active", deactivated: "deactivated",
      none: "–", empty: "Nothing here.", qr_alt: "QR code with the enrollment link for {user}",
      qr_for: "For {user}", expires_at: "Valid until {time}.",
      created: "Enrollment for {user} created.", revoked: "Enrollment revoked.",
      confirm_revoke: "Revoke the enrollment for {user}?",
      confirm_deactivate: "Deactivate {user}? This cannot be undone.",
      deactivated_done: "{user} has been deactivated.", pw_done: "The password of {user} was set.",
      not_admin: "This account is not a server admin.", signed_in_as: "Signed in as {user}",
      page: "Entries {from}–{to} of {total}", members_of: "Members of {room}",
      login_failed: "Sign-in failed: {error}", failed: "Error: {error}",
      signed_out: "Signed out.", session_expired: "Session expired. Please sign in again.",
      loading: "Loading …", lang_other: "Deutsch",
    },
  };

  let lang = localStorage.getItem(LANG_KEY) ||
    ((navigator.language || "de").toLowerCase().startsWith("de") ? "de" : "en");
  let token = sessionStorage.getItem(TOKEN_KEY);
  let me = sessionStorage.getItem(USER_KEY);
  let userFrom = 0;
  let roomFrom = 0;
  let pwTarget = null;

  const $ = (id) => document.getElementById(id);

  function t(key, vars) {
    let s = (T[lang] && T[lang][key]) || T.en[key] || key;
    if (vars) {
      for (const k of Object.keys(vars)) s = s.split("{" + k + "}").join(String(vars[k]));
    }
    return s;
  }

  function applyLang() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((el) => {
      el.textContent = t(el.dataset.i18n);
    });
    document.querySelectorAll("[data-i18n-aria-label]").forEach((el) => {
      el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
    });
    const other = lang === "de" ? "en" : "de";
    $("lang").textContent = t("lang_other");
    $("lang").setAttribute("lang", other);
    if (me) $("whoami").textContent = t("signed_in_as", { user: me });
  }

  function status(msg) {
    $("error").textContent = "";
    $("status").textContent = msg || "";
  }

  function error(msg) {
    $("status").textContent = "";
    $("error").textContent = msg || "";
  }

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return t("none");
    return new Date(ms).toLocaleString(lang === "de" ? "de-DE" : "en-GB");
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && (body.error || body.errcode)) || "HTTP " + status);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (!resp.ok) {
      if (resp.status === 401 && token) {
        signedOut(t("session_expired"));
      }
      throw new ApiError(resp.status, data);
    }
    return data;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (k === "text") e.textContent = v;
        else if (k === "onclick") e.addEventListener("click", v);
        else e.setAttribute(k, v);
      }
    }
    for (const c of children) if (c) e.append(c);
    return e;
  }

  function emptyRow(tbody, cols) {
    tbody.append(el("tr", null, el("td", { colspan: String(cols), text: t("empty") })));
  }

  // ---- sign in and out ----

  function signedOut(message) {
    token = null;
    me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    $("nav").hidden = true;
    $("logout").hidden = true;
    $("whoami").textContent = "";
    document.querySelectorAll(".view").forEach((v) => { v.hidden = true; });
    $("login-view").hidden = false;
    if (message) error(message);
  }

  async function signIn(user, password) {
    const resp = await api("POST", "/_matrix/client/v3/login", {
      type: "m.login.password",
      identifier: { type: "m.id.user", user },
      password,
      initial_device_display_name: "Feldpost console",
    });
    token = resp.access_token;
    me = resp.user_id;
    try {
      await api("GET", "/_synapse/admin/v1/server_version");
    } catch (e) {
      await api("POST", "/_matrix/client/v3/logout", {}).catch(() => {});
      token = null;
      me = null;
      throw e.status === 403 ? new Error(t("not_admin")) : e;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, me);
  }

  function signedIn() {
    $("login-view").hidden = true;
    $("nav").hidden = false;
    $("logout").hidden = false;
    applyLang();
    route();
  }

  // ---- navigation ----

  function route() {
    if (!token) return;
    const name = (location.hash || "#enrollments").slice(1);
    const view = ["enrollments", "users", "rooms"].includes(name) ? name : "enrollments";
    document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== view; });
    document.querySelectorAll("#nav a").forEach((a) => {
      if (a.getAttribute("href") === "#" + view) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    if (view === "enrollments") loadEnrollments();
    if (view === "users") loadUsers();
    if (view === "rooms") loadRooms();
  }

  // ---- enrollments ----

  function svgDataUrl(svg) {
    let bin = "";
    new TextEncoder().encode(svg).forEach((b) => { bin += String.fromCharCode(b); });
    return "data:image/svg+xml;base64," + btoa(bin);
  }

  function showEnrollment(e, svg) {
    $("enroll-result").hidden = false;
    $("enroll-for").textContent = t("qr_for", { user: e.displayname ? e.displayname + " (" + e.user_id + ")" : e.user_id });
    const img = $("enroll-qr");
    img.src = svgDataUrl(svg);
    img.alt = t("qr_alt", { user: e.user_id });
    img.dataset.link = e.link;
    $("enroll-link").value = e.link;
    $("enroll-expiry").textContent = t("expires_at", { time: fmtTime(e.expiry_time) });
  }

  async function loadEnrollments() {
    const all = $("enroll-all").checked;
    const tbody = $("enroll-list");
    try {
      const data = await api("GET", "/_feldpost/admin/v1/enrollments" + (all ? "?all=true" : ""));
      tbody.replaceChildren();
      if (!data.enrollments.length) emptyRow(tbody, 5);
      for (const e of data.enrollments) {
        const actions = el("td", { class: "actions" });
        if (e.state === "valid") {
          actions.append(el("button", {
            type: "button", class: "secondary", text: t("show_qr"),
            "aria-label": t("show_qr") + ": " + e.user_id,
            onclick: async () => {
              try {
                const svg = await fetchText("/_feldpost/admin/v1/enrollments/" + e.id + "/qr.svg");
                showEnrollment(e, svg);
                $("enroll-result").scrollIntoView({ block: "nearest" });
              } catch (err) { error(t("failed", { error: err.message })); }
            },
          }));
        }
        if (e.state === "valid" || e.state === "pending") {
          actions.append(el("button", {
            type: "button", class: "danger", text: t("revoke"),
            "aria-label": t("revoke") + ": " + e.user_id,
            onclick: async () => {
              if (!window.confirm(t("confirm_revoke", { user: e.user_id }))) return;
              try {
                await api("DELETE", "/_feldpost/admin/v1/enrollments/" + e.id);
                if ($("enroll-link").value === e.link) $("enroll-result").hidden = true;
                status(t("revoked"));
                loadEnrollments();
              } catch (err) { error(t("failed", { error: err.message })); }
            },
          }));
        }
        tbody.append(el("tr", null,
          el("td", { text: e.user_id }),
          el("td", { text: e.displayname || t("none") }),
          el("td", { text: t("state_" + e.state) }),
          el("td", { text: fmtTime(e.expiry_time) }),
          actions));
      }
    } catch (err) {
      error(t("failed", { error: err.message }));
    }
  }

  async function fetchText(path) {
    const resp = await fetch(path, {
      headers: { Authorization: "Bearer " + token },
      credentials: "omit",
      cache: "no-store",
    });
    if (!resp.ok) throw new ApiError(resp.status, null);
    return resp.text();
  }

  // ---- users ----

  async function loadUsers() {
    const q = $("user-q").value.trim();
    const params = new URLSearchParams({ from: String(userFrom), limit: String(PAGE) });
    if (q) params.set("name", q);
    if ($("user-deactivated").checked) params.set("deactivated", "true");
    const tbody = $("user-list");
    try {
      const data = await api("GET", "/_synapse/admin/v2/users?" + params);
      tbody.replaceChildren();
      if (!data.users.length) emptyRow(tbody, 6);
      for (const u of data.users) {
        const actions = el("td", { class: "actions" });
        if (!u.deactivated && u.name !== me) {
          actions.append(
            el("button", {
              type: "button", class: "secondary", text: t("reset_pw"),
              "aria-label": t("reset_pw") + ": " + u.name,
              onclick: () => openPasswordForm(u.name),
            }),
            el("button", {
              type: "button", class: "danger", text: t("deactivate"),
              "aria-label": t("deactivate") + ": " + u.name,
              onclick: async () => {
                if (!window.confirm(t("confirm_deactivate", { user: u.name }))) return;
                try {
                  await api("POST", "/_synapse/admin/v1/deactivate/" + encodeURIComponent(u.name), { erase: false });
                  status(t("deactivated_done", { user: u.name }));
                  loadUsers();
                } catch (err) { error(t("failed", { error: err.message })); }
              },
            }));
        }
        const role = el("span", { class: u.admin ? "tag admin" : "tag", text: u.admin ? t("role_admin") : t("role_user") });
        const state = el("span", { class: u.deactivated ? "tag off" : "tag", text: u.deactivated ? t("deactivated") : t("active") });
        tbody.append(el("tr", null,
          el("td", { text: u.name }),
          el("td", { text: u.displayname || t("none") }),
          el("td", null, role),
          el("td", null, state),
          el("td", { text: fmtTime(u.last_seen_ts) }),
          actions));
      }
      pager("user", userFrom, data.users.length, data.total);
    } catch (err) {
      error(t("failed", { error: err.message }));
    }
  }

  function pager(prefix, from, count, total) {
    $(prefix + "-page").textContent = total
      ? t("page", { from: from + 1, to: from + count, total })
      : "";
    $(prefix + "-prev").disabled = from === 0;
    $(prefix + "-next").disabled = from + count >= total;
  }

  function openPasswordForm(user) {
    pwTarget = user;
    $("pw-user").textContent = user;
    $("pw-new").value = "";
    $("pw-form").hidden = false;
    $("pw-new").focus();
  }

  // ---- rooms ----

  async function loadRooms() {
    const q = $("room-q").value.trim();
    const params = new URLSearchParams({ from: String(roomFrom), limit: String(PAGE) });
    if (q) params.set("search_term", q);
    const tbody = $("room-list");
    try {
      const data = await api("GET", "/_synapse/admin/v1/rooms?" + params);
      tbody.replaceChildren();
      if (!data.rooms.length) emptyRow(tbody, 4);
      for (const r of data.rooms) {
        const label = r.name || r.canonical_alias || r.room_id;
        tbody.append(el("tr", null,
          el("td", null, el("div", { text: label }), el("div", { class: "hint", text: r.room_id })),
          el("td", { text: r.canonical_alias || t("none") }),
          el("td", { text: String(r.joined_members) }),
          el("td", { class: "actions" }, el("button", {
            type: "button", class: "secondary", text: t("members"),
            "aria-label": t("members") + ": " + label,
            onclick: () => showMembers(r.room_id, label),
          }))));
      }
      pager("room", roomFrom, data.rooms.length, data.total_rooms);
    } catch (err) {
      error(t("failed", { error: err.message }));
    }
  }

  async function showMembers(roomId, label) {
    try {
      const data = await api("GET", "/_synapse/admin/v1/rooms/" + encodeURIComponent(roomId) + "/members");
      $("room-members-title").textContent = t("members_of", { room: label });
      const list = $("room-member-list");
      list.replaceChildren();
      if (!data.members.length) list.append(el("li", { text: t("empty") }));
      for (const m of data.members) list.append(el("li", { text: m }));
      $("room-members").hidden = false;
      $("room-members").scrollIntoView({ block: "nearest" });
    } catch (err) {
      error(t("failed", { error: err.message }));
    }
  }

  // ---- wiring ----

  function wire() {
    $("lang").addEventListener("click", () => {
      lang = lang === "de" ? "en" : "de";
      localStorage.setItem(LANG_KEY, lang);
      applyLang();
      if (token) route();
    });
    $("logout").addEventListener("click", async () => {
      await api("POST", "/_matrix/client/v3/logout", {}).catch(() => {});
      signedOut();
      status(t("signed_out"));
    });
    $("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      status(t("loading"));
      try {
        await signIn($("login-user").value.trim(), $("login-password").value);
        $("login-password").value = "";
        status("");
        signedIn();
      } catch (err) {
        error(t("login_failed", { error: err.message }));
      }
    });
    $("enroll-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const username = $("enroll-user").value.trim();
      const body = {
        username,
        lifetime_minutes: Number($("enroll-minutes").value),
      };
      const name = $("enroll-name").value.trim();
      if (name) body.displayname = name;
      try {
        const e = await api("POST", "/_feldpost/admin/v1/enrollments", body);
        showEnrollment(e, e.qr_svg);
        status(t("created", { user: e.user_id }));
        $("enroll-form").reset();
        $("enroll-minutes").value = "15";
        loadEnrollments();
      } catch (err) {
        error(t("failed", { error: err.message }));
      }
    });
    $("enroll-copy").addEventListener("click", async () => {
      const input = $("enroll-link");
      try {
        await navigator.clipboard.writeText(input.value);
      } catch (_) {
        input.select();
      }
      status(t("copied"));
    });
    $("enroll-all").addEventListener("change", loadEnrollments);
    $("user-search").addEventListener("submit", (ev) => {
      ev.preventDefault();
      userFrom = 0;
      loadUsers();
    });
    $("user-deactivated").addEventListener("change", () => { userFrom = 0; loadUsers(); });
    $("user-prev").addEventListener("click", () => { userFrom = Math.max(0, userFrom - PAGE); loadUsers(); });
    $("user-next").addEventListener("click", () => { userFrom += PAGE; loadUsers(); });
    $("pw-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/_synapse/admin/v1/reset_password/" + encodeURIComponent(pwTarget), {
          new_password: $("pw-new").value,
          logout_devices: $("pw-logout").checked,
        });
        $("pw-form").hidden = true;
        status(t("pw_done", { user: pwTarget }));
      } catch (err) {
        error(t("failed", { error: err.message }));
      }
    });
    $("pw-cancel").addEventListener("click", () => { $("pw-form").hidden = true; });
    $("room-search").addEventListener("submit", (ev) => {
      ev.preventDefault();
      roomFrom = 0;
      loadRooms();
    });
    $("room-prev").addEventListener("click", () => { roomFrom = Math.max(0, roomFrom - PAGE); loadRooms(); });
    $("room-next").addEventListener("click", () => { roomFrom += PAGE; loadRooms(); });
    window.addEventListener("hashchange", () => { status(""); route(); });
  }

  wire();
  applyLang();
  if (token) signedIn();
})();
