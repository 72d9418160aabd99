// Server addresses shared by the room display and the browser-microphone page.
// Loaded before the page's own script; defines the global `serverList`.
"use strict";

// The websocket base URLs of ?servers= (comma-separated HOST:PORT, ws(s):// or
// http(s):// addresses; a bare HOST:PORT gets this page's scheme), or this page's host.
window.serverList = function serverList(text) {
  const pageScheme = location.protocol === "https:" ? "wss:" : "ws:";
  const schemes = { "ws:": "ws:", "wss:": "wss:", "http:": "ws:", "https:": "wss:" };
  const list = [];
  for (const part of (text || "").split(",").map((s) => s.trim()).filter(Boolean)) {
    let url = null;
    try { url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(part) ? part : `${pageScheme}//${part}`); } catch (_) { /* below */ }
    const scheme = url && schemes[url.protocol];
    if (!scheme || !url.host) { console.warn(`servers: ignoring ${part}`); continue; }
    const base = `${scheme}//${url.host}${url.pathname.replace(/\/+$/, "")}`;
    if (!list.includes(base)) list.push(base);
  }
  return list.length ? list : [`${pageScheme}//${location.host}`];
};
