/**
 * What the parts of the admin page share: times, devices, "partial" answers, field errors and
 * the confirmation dialog.
 * @module admin/common
 */

import { ago, h } from "../ui.js";

/** A time as people read it, with the relative form after it: "14:02:11 (5 min ago)". */
export function timeElement(iso, { relative = true } = {}) {
  if (!iso) return h("span", { class: "muted", text: "–" });
  const then = new Date(iso);
  if (Number.isNaN(then.getTime())) return h("span", { text: String(iso) });
  const sameDay = then.toDateString() === new Date().toDateString();
  const absolute = sameDay ? then.toLocaleTimeString() : then.toLocaleString();
  return h("time", { datetime: iso, title: then.toISOString() }, relative ? `${absolute} (${ago(iso)})` : absolute);
}

/** "Chrome on Android" from a User-Agent; the raw text when nothing is recognised. */
export function device(userAgent) {
  if (!userAgent) return "Unknown device";
  const browser =
    [
      [/Edg\//, "Edge"],
      [/OPR\//, "Opera"],
      [/Firefox\//, "Firefox"],
      [/Chrom(e|ium)\//, "Chrome"],
      [/Safari\//, "Safari"],
      [/okhttp|Dalvik/i, "Android app"],
      [/CFNetwork|Darwin/, "iOS app"],
      [/curl\//, "curl"],
      [/python-httpx|python-requests|aiohttp/i, "Python"],
    ].find(([pattern]) => pattern.test(userAgent))?.[1] ?? null;
  const system =
    [
      [/Android/, "Android"],
      [/iPhone|iPad|iOS/, "iOS"],
      [/Mac OS X|Macintosh/, "macOS"],
      [/Windows/, "Windows"],
      [/CrOS/, "ChromeOS"],
      [/Linux/, "Linux"],
    ].find(([pattern]) => pattern.test(userAgent))?.[1] ?? null;
  if (browser && system) return `${browser} on ${system}`;
  return browser ?? system ?? userAgent.slice(0, 60);
}

/** Whether a device is a phone or tablet, by its User-Agent. */
export function isMobile(userAgent) {
  return /Mobile|Android|iPhone|iPad/.test(userAgent ?? "");
}

export const TRANSPORTS = { sse: "SSE", longpoll: "Long-poll", ws: "WebSocket" };

/**
 * Show or hide the warning of an answer gathered from only some nodes.
 * @param {HTMLElement} element
 * @param {{partial?: boolean, unreachable_nodes?: string[]}} reply
 * @param {(id: string) => string} name a node's name from its id
 */
export function showPartial(element, reply, name) {
  const missing = reply?.partial ? reply.unreachable_nodes ?? [] : [];
  element.hidden = !reply?.partial;
  if (!reply?.partial) {
    element.textContent = "";
    return;
  }
  const which = missing.length ? missing.map(name).join(", ") : "some nodes";
  element.textContent = `Partial answer: ${which} did not answer in time, so what they hold is missing here.`;
}

/**
 * The errors of a form's fields: `data-field` elements hold them, next to their inputs.
 * @param {HTMLFormElement} form
 */
export function fieldErrors(form) {
  const slots = [...form.querySelectorAll(".field-error[data-field]")];
  const inputOf = (slot) => {
    const id = slot.id.replace(/-error$/, "");
    return form.querySelector(`#${CSS.escape(id)}`);
  };
  return {
    clear() {
      for (const slot of slots) {
        slot.textContent = "";
        inputOf(slot)?.removeAttribute("aria-invalid");
      }
    },
    /** Show `message` at `field` (or a field it begins with); false when no slot fits. */
    show(field, message, { focus = true } = {}) {
      const slot =
        slots.find((candidate) => candidate.dataset.field === field) ??
        slots.find((candidate) => field && field.startsWith(`${candidate.dataset.field}.`));
      if (!slot) return false;
      slot.textContent = message;
      const input = inputOf(slot);
      input?.setAttribute("aria-invalid", "true");
      if (focus) input?.focus();
      return true;
    },
  };
}

/** The message of a failed request, without the "HTTP 500" noise when there is a detail. */
export function messageOf(error) {
  if (error?.status === 0) return "the server could not be reached";
  return error?.problem?.detail ?? error?.message ?? String(error);
}

const dialog = document.getElementById("confirm");

/**
 * Ask before an act: a modal dialog with a note for the audit log.
 * @param {{title: string, text: string, confirm: string}} what
 * @returns {Promise<?{reason: string}>} null when cancelled
 */
export function confirmAct({ title, text, confirm }) {
  const returnTo = document.activeElement;
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-text").textContent = text;
  dialog.querySelector("#confirm-ok").textContent = confirm;
  const reason = dialog.querySelector("#confirm-reason");
  reason.value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    const cancel = dialog.querySelector("#confirm-cancel");
    const onCancel = () => dialog.close("cancel");
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener(
      "close",
      () => {
        cancel.removeEventListener("click", onCancel);
        // Focus goes back where it was, the button that asked (if it is still there).
        if (returnTo?.isConnected) returnTo.focus();
        resolve(dialog.returnValue === "confirm" ? { reason: reason.value.trim() } : null);
      },
      { once: true },
    );
    dialog.showModal();
    // The safe choice first: Enter in the note confirms, a stray Enter on open does not.
    cancel.focus();
  });
}
