// chubbypy web: the page's script. No build step, no library: what the server renders works
// without it; this adds lazy expansion of the tree, live updates (server-sent events from
// /api/events, fed by the cell's handle events) and the cell page's live charts.
//
// Everything that came from the cell is put into the page as text (textContent, attribute
// values), never as markup.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page || "";
  const operator = body.dataset.operator === "1"; // the ACL admin admits the visitor: offer its actions
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const watched = new Set(JSON.parse(body.dataset.watch || "[]"));
  const PATHS_MAX = Number((document.querySelector('meta[name="watch-max"]') || {}).content || 64);
  let stream = null;
  let reconnect = null;

  // ------------------------------------------------------------------ small helpers

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function link(page, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== "") query.append(key, value);
    }
    const text = query.toString();
    return text ? `${page}?${text}` : page;
  }

  async function api(path, params) {
    const response = await fetch(link(path, params || {}), {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    const document = await response.json();
    if (!response.ok) throw Object.assign(new Error(document.message), document);
    return document;
  }

  function plural(count, one, many) {
    return `${count.toLocaleString("en")} ${count === 1 ? one : many}`;
  }

  function flash(node) {
    if (!node) return;
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
  }

  function banner(text, bad) {
    // The latest messages, newest first (a fail-over says so twice: the session's event
    // and the admin ports' new master); the same text is not repeated.
    const box = document.getElementById("banner");
    if (!box) return;
    for (const line of [...box.children]) if (line.textContent === text) line.remove();
    box.prepend(el("div", { text }));
    while (box.children.length > 3) box.lastChild.remove();
    box.classList.toggle("bad", Boolean(bad));
    box.hidden = false;
  }

  function liveState(state, text) {
    const live = document.getElementById("live");
    if (!live) return;
    live.className = `live ${state}`;
    live.textContent = text;
  }

  function nodesOf(path) {
    return document.querySelectorAll(`li.node[data-path="${CSS.escape(path)}"]`);
  }

  // ------------------------------------------------------------------ the tree

  function facts(stat) {
    if (!stat) return "";
    return stat.is_directory ? plural(stat.size, "child", "children") : plural(stat.size, "byte", "bytes");
  }

  function badges(stat, lockMode) {
    // As the server draws them (_html.badges): no read access; ephemeral; locked and how.
    const marks = [];
    if (!stat) {
      marks.push(el("span", { class: "badge muted", title: "you may not read this node", text: "no read access" }));
      return marks;
    }
    if (stat.ephemeral) marks.push(el("span", { class: "badge eph", title: "deleted when its session ends", text: "ephemeral" }));
    if (lockMode && lockMode !== "free") {
      marks.push(el("span", { class: "badge lock", title: `its lock is held (${lockMode})`, text: `locked · ${lockMode}` }));
    }
    return marks;
  }

  function treeRow(entry) {
    const stat = entry.stat;
    const directory = Boolean(stat && stat.is_directory);
    const kind = !stat ? "hidden" : directory ? "directory" : "file";
    const href = link(directory ? "/tree" : "/node", { path: entry.path });
    const toggle = directory
      ? el("a", { class: "toggle", href, title: "expand", "data-path": entry.path, "aria-expanded": "false", text: "▸" })
      : el("span", { class: "toggle leaf", text: "·" });
    const row = el(
      "div",
      { class: "row" },
      toggle,
      el("a", { class: "name", href, text: entry.name + (directory ? "/" : "") }),
      " ",
      ...badges(stat, entry.lock_mode),
      el("span", { class: "facts", text: facts(stat) }),
    );
    return el("li", { class: `node ${kind}`, "data-path": entry.path }, row);
  }

  async function fillChildren(list, path, after) {
    const listing = await api("/api/dir", { path, after });
    for (const entry of listing.entries) {
      const existing = list.querySelector(`:scope > li.node[data-path="${CSS.escape(entry.path)}"]`);
      if (!existing) list.append(treeRow(entry));
    }
    const more = list.querySelector(":scope > li.more");
    if (more) more.remove();
    if (listing.more) {
      const button = el("button", { type: "button", text: "more…" });
      button.addEventListener("click", () => fillChildren(list, path, listing.next_after));
      list.append(el("li", { class: "more" }, button));
    }
    return listing;
  }

  async function toggle(anchor) {
    const item = anchor.closest("li.node");
    const path = anchor.dataset.path;
    const open = item.querySelector(":scope > ul.tree");
    if (open) {
      open.remove();
      anchor.setAttribute("aria-expanded", "false");
      watched.delete(path);
      connect();
      return;
    }
    const list = el("ul", { class: "tree", "data-path": path });
    item.append(list);
    anchor.setAttribute("aria-expanded", "true");
    try {
      const listing = await fillChildren(list, path, "");
      if (!listing.entries.length) list.append(el("li", { class: "empty", text: "(empty)" }));
      watch([path, ...listing.entries.map((entry) => entry.path)]);
    } catch (error) {
      list.append(el("li", { class: "empty", text: `${error.error || "ERROR"}: ${error.message}` }));
    }
  }

  document.addEventListener("click", (event) => {
    const anchor = event.target.closest && event.target.closest("a.toggle[data-path]");
    if (!anchor || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    toggle(anchor);
  });

  async function refreshDirectory(path) {
    // New children appear (highlighted), deleted ones are struck out.
    const lists = document.querySelectorAll(`ul.tree[data-path="${CSS.escape(path)}"]`);
    if (!lists.length) return;
    let listing;
    try {
      listing = await api("/api/dir", { path });
    } catch (error) {
      return;
    }
    const present = new Set(listing.entries.map((entry) => entry.path));
    for (const list of lists) {
      const shown = [...list.querySelectorAll(":scope > li.node")];
      const last = shown.length ? shown[shown.length - 1].dataset.path : "";
      for (const entry of listing.entries) {
        if (list.querySelector(`:scope > li.node[data-path="${CSS.escape(entry.path)}"]`)) continue;
        if (listing.more && entry.path > last && shown.length) continue; // a later page's
        const row = treeRow(entry);
        const before = shown.find((item) => item.dataset.path > entry.path);
        if (before) list.insertBefore(row, before);
        else list.append(row);
        flash(row);
      }
      for (const item of shown) {
        const later = listing.more && item.dataset.path > (listing.next_after ? `${path}/${listing.next_after}` : "");
        if (!present.has(item.dataset.path) && !later) item.classList.add("gone");
      }
    }
    const empty = document.querySelector("p.empty");
    if (empty && listing.entries.length && page === "tree") empty.remove();
    watch(listing.entries.map((entry) => entry.path));
  }

  async function refreshRow(path) {
    // The row's facts and marks (ephemeral, locked) as the listing has them now.
    const rows = nodesOf(path);
    if (!rows.length) return;
    const cut = path.lastIndexOf("/");
    const [parent, name] = [path.slice(0, cut), path.slice(cut + 1)];
    let entry;
    try {
      const listing = await api("/api/dir", { path: parent, prefix: name, limit: 1 });
      entry = listing.entries.find((found) => found.path === path);
    } catch (error) {
      entry = undefined;
    }
    for (const item of rows) {
      if (!entry) {
        item.classList.add("gone");
        continue;
      }
      const row = item.querySelector(":scope > .row");
      if (row) {
        for (const mark of row.querySelectorAll(":scope > .badge")) mark.remove();
        const factsBox = row.querySelector(":scope > .facts");
        for (const mark of badges(entry.stat, entry.lock_mode)) row.insertBefore(mark, factsBox);
        if (factsBox) factsBox.textContent = facts(entry.stat);
      }
      flash(item);
    }
  }

  // ------------------------------------------------------------------ the node page

  async function refreshNode(path) {
    const contents = document.getElementById("contents");
    let node;
    try {
      node = await api("/api/node", { path });
    } catch (error) {
      banner(`${path}: ${error.error || "ERROR"}: ${error.message}`, true);
      return;
    }
    const stat = node.stat;
    const fields = {
      size: plural(stat.size, "byte", "bytes"),
      instance: stat.instance,
      content_generation: stat.content_generation,
      lock_generation: stat.lock_generation,
      acl_generation: stat.acl_generation,
      checksum: BigInt.asUintN(64, BigInt(stat.checksum)).toString(16).padStart(16, "0"),
    };
    for (const [field, value] of Object.entries(fields)) {
      const box = document.querySelector(`#stat dd[data-field="${field}"]`);
      if (box && box.textContent !== String(value)) {
        box.textContent = String(value);
        flash(box);
      }
    }
    if (contents && contents.classList.contains("text") && node.contents && node.contents.encoding === "utf-8" && node.contents.offset === 0) {
      contents.textContent = node.contents.data;
      flash(contents);
    } else if (contents) {
      flash(contents);
    }
    const size = document.getElementById("contents-size");
    if (size && node.contents) size.textContent = plural(node.contents.size, "byte", "bytes");
    const form = document.getElementById("edit");
    if (form) {
      const expected = form.querySelector('input[name="expected_generation"]');
      if (expected && expected.value !== String(stat.content_generation)) {
        banner(
          `${path} was changed by another client: it is at content generation ${stat.content_generation}` +
            ` (you opened ${expected.value}). Saving your edit now is refused and shows what changed.`,
        );
      }
    }
  }

  // ------------------------------------------------------------------ live updates

  function watch(paths) {
    let added = false;
    for (const path of paths) {
      if (watched.size >= PATHS_MAX) break;
      if (!watched.has(path)) {
        watched.add(path);
        added = true;
      }
    }
    if (added) connect();
  }

  // A refused stream (too many live views: the server answers one "refused" event, then
  // ends it) or one the browser gave up on (an answer other than 200: EventSource never
  // retries those) is tried again later, waiting twice as long after each refusal in a row.
  const RETRY_MAX_SECONDS = 60;
  let refusals = 0;

  function connect() {
    if (!window.EventSource || !watched.size) return;
    liveState("off", "live: connecting…");
    clearTimeout(reconnect);
    reconnect = setTimeout(open, 150); // one stream for a burst of expansions
  }

  function retryLater(why, seconds) {
    if (stream) stream.close();
    stream = null;
    const wait = Math.min(RETRY_MAX_SECONDS, Math.max(1, seconds || 5) * 2 ** Math.min(refusals, 6));
    refusals += 1;
    liveState("broken", `${why}; trying again in ${Math.round(wait)} s`);
    clearTimeout(reconnect);
    reconnect = setTimeout(open, wait * 1000);
  }

  function open() {
    if (stream) stream.close();
    const query = new URLSearchParams();
    for (const path of [...watched].slice(0, PATHS_MAX)) query.append("path", path);
    const source = new EventSource(`/api/events?${query}`);
    stream = source;
    source.addEventListener("open", () => liveState("on", "live: connecting…"));
    source.addEventListener("error", () => {
      if (source !== stream) return;
      if (source.readyState === EventSource.CLOSED) retryLater("live updates stopped: the page did not serve them", 5);
      else liveState("broken", "live updates interrupted: reconnecting…");
    });
    source.addEventListener("refused", (event) => {
      if (source !== stream) return;
      const data = JSON.parse(event.data);
      retryLater(`live updates refused: ${data.message}`, data.retry_seconds);
    });
    stream.addEventListener("change", (event) => changed(JSON.parse(event.data)));
    stream.addEventListener("watching", (event) => {
      refusals = 0;
      const count = JSON.parse(event.data).paths.length;
      liveState("on", `live: watching ${plural(count, "node", "nodes")}; changes appear as they happen`);
    });
    stream.addEventListener("failover", () => {
      banner("The master failed over: changes during the fail-over may not be shown. Reload to be sure.");
    });
    stream.addEventListener("master", (event) => {
      const data = JSON.parse(event.data);
      banner(`Fail-over: ${data.master} is master now (epoch ${data.epoch})${data.previous ? `, after ${data.previous}` : ""}.`);
    });
    stream.addEventListener("session", (event) => {
      const state = JSON.parse(event.data).state;
      if (state === "jeopardy") banner("The page lost touch with the cell's master (jeopardy): waiting for it…", true);
      else if (state === "connected") {
        const box = document.getElementById("banner");
        for (const line of [...box.children]) if (line.textContent.includes("jeopardy")) line.remove();
        box.hidden = !box.children.length;
      }
    });
    stream.addEventListener("logout", () => {
      stream.close();
      liveState("off", "logged out");
      banner("Your login ended (logged out, or idle too long). Reload to go on as anonymous, or log in again.", true);
    });
  }

  function changed(change) {
    const { path, kind } = change;
    if (kind === "children") {
      refreshDirectory(path);
      for (const item of nodesOf(path)) flash(item);
    } else if (kind === "deleted") {
      for (const item of nodesOf(path)) item.classList.add("gone");
      if (page === "node") banner(`${path} was deleted.`, true);
    } else if (page === "lock") {
      refreshLock();
    } else if (page === "node") {
      refreshNode(path);
    } else {
      refreshRow(path);
    }
  }

  // ------------------------------------------------------------------ the cell page

  function redrawChart(figure, values, ago) {
    const known = values.filter((value) => value !== null);
    const top = Math.max(...known, 0) || 1;
    const step = 300 / Math.max(values.length - 1, 1);
    const points = [];
    values.forEach((value, index) => {
      if (value !== null) points.push(`${(index * step).toFixed(1)},${(70 - (value / top) * 66 - 2).toFixed(1)}`);
    });
    figure.querySelector("polyline").setAttribute("points", points.join(" "));
    const unit = figure.dataset.unit || "";
    figure.querySelector(".value").textContent = known.length ? `${Number(known[known.length - 1].toPrecision(3))}${unit}` : "—";
    figure.querySelector(".top").textContent = `max ${Number(top.toPrecision(3))}${unit}`;
    const oldest = figure.querySelector(".axis .oldest");
    if (oldest && ago.length) oldest.textContent = `${Math.round(ago[0])} s ago`;
  }

  function replicaCells(replica, master) {
    const status = replica.status;
    if (!status) return [el("td", {}, el("b", { text: replica.replica_id })), el("td", { class: "wrap", colspan: 9, text: `unreachable: ${replica.problem}` })];
    const lease = status.lease_valid ? `${(status.lease_remaining_ms / 1000).toFixed(2)} s` : "—";
    return [
      el("td", {}, el("b", { text: replica.replica_id })),
      el("td", {}, el("span", { class: `role ${status.role}`, text: status.role })),
      el("td", { text: status.epoch }),
      el("td", { text: lease }),
      el("td", { text: status.chosen_index }),
      el("td", { text: status.applied_index }),
      el("td", { class: replica.lag ? "lag" : "", text: replica.lag }),
      el("td", { text: status.first_index }),
      el("td", { class: replica.checksum_bad ? "bad" : "", text: replica.checksum_summary }),
      el("td", { text: `${Math.floor(status.uptime_ms / 1000)} s` }),
    ];
  }

  async function refreshCell() {
    let cell;
    try {
      cell = await api("/api/cell");
    } catch (error) {
      return;
    }
    for (const figure of document.querySelectorAll("figure.chart[data-series]")) {
      redrawChart(figure, cell.charts[figure.dataset.series] || [], cell.charts.seconds_ago || []);
    }
    const heading = document.getElementById("master");
    if (heading) heading.textContent = cell.master ? `master ${cell.master}, epoch ${cell.epoch}` : "no master known";
    const rows = document.querySelector("#replicas tbody");
    if (rows) {
      rows.replaceChildren(
        ...cell.replicas.map((replica) =>
          el("tr", { class: replica.status ? (replica.replica_id === cell.master ? "master" : "") : "down", "data-replica": replica.replica_id }, ...replicaCells(replica, cell.master)),
        ),
      );
    }
  }

  // ------------------------------------------------------------------ the lock page

  function sessionLink(id) {
    return el("a", { href: link("/sessions", { id }), text: id });
  }

  function lockTable(id, head, rows, empty) {
    const old = document.getElementById(id);
    if (!old) return;
    if (!rows.length) {
      old.replaceWith(el("p", { class: "empty", id, text: empty }));
      return;
    }
    const table = el(
      "table",
      { class: "grid", id },
      el("thead", {}, el("tr", {}, ...head.map((title) => el("th", { text: title })))),
      el("tbody", {}, ...rows),
    );
    old.replaceWith(table);
  }

  async function refreshLock() {
    const path = [...watched][0];
    let lock;
    try {
      lock = await api("/api/lock", { path });
    } catch (error) {
      return;
    }
    const mode = document.getElementById("lock-mode");
    if (mode && mode.textContent !== lock.mode) {
      mode.textContent = lock.mode;
      mode.className = `mode ${lock.mode}`;
      flash(mode);
    }
    const delay = lock.lock_delay_remaining_ms;
    const fields = {
      mode: lock.mode,
      lock_generation: `${lock.lock_generation} (the sequencer a holder has names it)`,
      "lock-delay_left": delay ? `${(delay / 1000).toFixed(1)} s: no one may take it until then` : "none",
      holders: lock.holder_count,
      waiters: lock.waiter_count,
    };
    const counts = {
      "holder-count": `${lock.holder_count} in all`,
      "waiter-count": `${lock.waiter_count} in all; the first is next`,
    };
    for (const [id, text] of Object.entries(counts)) {
      const box = document.getElementById(id);
      if (box && box.textContent !== text) {
        box.textContent = text;
        flash(box);
      }
    }
    for (const [field, value] of Object.entries(fields)) {
      const box = document.querySelector(`#lock dd[data-field="${field}"]`);
      if (box && box.textContent !== String(value)) {
        box.textContent = String(value);
        flash(box);
      }
    }
    lockTable(
      "holders",
      ["Session", "Client", "Principal", "Mode", "Lock-delay if lost", ""],
      lock.holders.map((holder) =>
        el(
          "tr",
          { "data-session": holder.session_id },
          el("td", {}, sessionLink(holder.session_id)),
          el("td", { class: "wrap", text: holder.client }),
          el("td", { class: "wrap", text: holder.principal }),
          el("td", {}, el("span", { class: `mode ${holder.mode}`, text: holder.mode })),
          el("td", { text: holder.lock_delay_ms ? `${holder.lock_delay_ms / 1000} s` : "none" }),
          el("td", {}, operator ? el("a", { class: "danger", href: link("/end-session", { id: holder.session_id }), text: "End session…" }) : ""),
        ),
      ),
      "No one holds it.",
    );
    lockTable(
      "waiters",
      ["#", "Session", "Client", "Principal", "Mode", "Waiting for"],
      lock.waiters.map((waiter, index) =>
        el(
          "tr",
          { "data-session": waiter.session_id },
          el("td", { text: index + 1 }),
          el("td", {}, sessionLink(waiter.session_id)),
          el("td", { class: "wrap", text: waiter.client }),
          el("td", { class: "wrap", text: waiter.principal }),
          el("td", {}, el("span", { class: `mode ${waiter.mode}`, text: waiter.mode })),
          el("td", { text: `${(waiter.waited_ms / 1000).toFixed(1)} s` }),
        ),
      ),
      "No one waits.",
    );
  }

  // ------------------------------------------------------------------ start

  if (page === "lock") setInterval(refreshLock, 2000);
  if (page === "cell") {
    setInterval(refreshCell, 2000);
    if (window.EventSource) {
      // Only the cell-wide events (fail-overs); the cell page watches no node.
      watched.add(`/ls/${document.querySelector("header.top .cell b").textContent}`);
    }
  }
  if (watched.size) connect();
  else liveState("off", "live updates: nothing to watch here");
  void csrf;
})();
