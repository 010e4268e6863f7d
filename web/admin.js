/**
 * The admin page (`/app/admin`): alerts, nodes, live counters, the dashboard, connections and users,
 * broadcast, limits and the audit log. Each part is a module of `web/admin/`; this one checks
 * access and starts them.
 *
 * Access: the admin API answers 401 without a sign-in (the sign-in panel, as on the other
 * pages) and 403 to a sign-in without the admin role ("Admins only"). The page's own address
 * answers 403 in that case too, which shows the panel before any request is made.
 */

import { messageOf } from "./admin/common.js";
import { Alerts } from "./admin/alerts.js";
import { Audit } from "./admin/audit.js";
import { Broadcast } from "./admin/broadcast.js";
import { Connections } from "./admin/connections.js";
import { Dashboard } from "./admin/dashboard.js";
import { Limits } from "./admin/limits.js";
import { LiveCounters, Nodes } from "./admin/nodes.js";
import { setPageTitle, startPage } from "./ui.js";

const { sinal, signedOut } = startPage();
const main = document.getElementById("main");
const status = document.getElementById("admin-status");
const problem = document.getElementById("admin-error");

/** The part of the page that is not for this visitor gives way to `panel`. */
function only(panel) {
  main.hidden = true;
  document.getElementById("sections").hidden = true;
  panel.hidden = false;
  panel.querySelector("h1, h2")?.focus();
}

function forbidden() {
  only(document.getElementById("forbidden"));
  setPageTitle("Admins only · Sinal");
}

// The server said 403 for the page itself: no need to ask the API first.
if (performance.getEntriesByType?.("navigation")?.[0]?.responseStatus === 403) forbidden();

main.dataset.state = "checking";
status.textContent = "Checking your access…";

const nodes = new Nodes(sinal);
const audit = new Audit(sinal, nodes);
const acted = () => audit.load();
const connections = new Connections(sinal, nodes, { acted });
const limits = new Limits(sinal, { acted });
new Broadcast(sinal, { acted });
const live = new LiveCounters(sinal, nodes);
const dashboard = new Dashboard(sinal, nodes);
const alerts = new Alerts(sinal);

async function start() {
  try {
    await nodes.load();
  } catch (error) {
    main.setAttribute("aria-busy", "false");
    if (error?.status === 403) forbidden();
    else if (!signedOut(error)) {
      status.textContent = "";
      problem.hidden = false;
      problem.textContent =
        error?.status === 404
          ? "This server has no admin API (404): it is older than this page."
          : `Could not reach the admin API: ${messageOf(error)}. Reload to try again.`;
    }
    return;
  }
  main.dataset.state = "ready";
  main.setAttribute("aria-busy", "false");
  document.getElementById("sections").hidden = false;
  status.textContent = "";
  live.start();
  await Promise.all([
    alerts.start(),
    dashboard.start(),
    connections.search(),
    limits.load(),
    audit.load(),
  ]);
}

start();
