/**
 * Runtime limits (`GET` / `PUT /v1/admin/limits`): what is in force, and saving what changed.
 * A refused value comes back as a 422 naming its field; the message shows under that field.
 * @module admin/limits
 */

import { fieldErrors, messageOf } from "./common.js";

const NAMES = ["actions_rate", "actions_burst", "streams_per_user", "handshakes_per_s", "publish_rate"];
const LABELS = {
  actions_rate: "action rate",
  actions_burst: "action burst",
  streams_per_user: "streams per user",
  handshakes_per_s: "handshakes",
  publish_rate: "publish rate",
};

export class Limits {
  /**
   * @param {import("../sinal.js").Sinal} sinal
   * @param {{acted: () => void}} hooks
   */
  constructor(sinal, { acted }) {
    this.sinal = sinal;
    this.acted = acted;
    this.form = document.getElementById("limits");
    this.errors = fieldErrors(this.form);
    this.save = document.getElementById("limits-save");
    this.undo = document.getElementById("limits-undo");
    this.result = document.getElementById("limits-result");
    /** @type {?Record<string, number>} */
    this.inForce = null;
    this.form.addEventListener("input", () => this.markChanges());
    this.undo.addEventListener("click", () => {
      this.fill();
      this.errors.clear();
      this.result.textContent = "";
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  async load() {
    try {
      this.inForce = await this.sinal.request("GET", "/v1/admin/limits");
      this.fill();
    } catch (error) {
      this.result.textContent = `Could not read the limits: ${messageOf(error)}`;
    }
  }

  fill() {
    for (const name of NAMES) this.form.elements[name].value = this.inForce?.[name] ?? "";
    this.markChanges();
  }

  /** The fields whose value differs from what is in force (as typed, unparsed). */
  changes() {
    const changed = {};
    for (const name of NAMES) {
      const typed = this.form.elements[name].value.trim();
      if (this.inForce && typed !== String(this.inForce[name] ?? "")) changed[name] = typed;
    }
    return changed;
  }

  markChanges() {
    const changed = this.changes();
    for (const name of NAMES) {
      this.form.elements[name].closest(".field").dataset.changed = String(name in changed);
    }
    const any = Object.keys(changed).length > 0;
    this.save.disabled = !any;
    this.undo.disabled = !any;
  }

  async submit() {
    this.errors.clear();
    this.result.textContent = "";
    const body = {};
    for (const [name, typed] of Object.entries(this.changes())) {
      const value = typed === "" ? Number.NaN : Number(typed);
      if (!Number.isFinite(value)) {
        this.errors.show(name, "A number is needed.");
        return;
      }
      body[name] = value;
    }
    if (Object.keys(body).length === 0) return;
    const before = this.inForce;
    this.save.disabled = true;
    try {
      this.inForce = await this.sinal.request("PUT", "/v1/admin/limits", { body });
      this.fill();
      const said = Object.keys(body).map((name) => `${LABELS[name]} ${before?.[name]} → ${this.inForce?.[name]}`);
      this.result.textContent = `Saved: ${said.join(", ")}.`;
      this.acted();
    } catch (error) {
      const field = error?.field ?? error?.problem?.field;
      if (!(field && this.errors.show(field, messageOf(error)))) {
        this.result.textContent = `Not saved: ${messageOf(error)}`;
      }
      this.markChanges();
    }
  }
}
