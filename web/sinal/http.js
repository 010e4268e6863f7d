/**
 * REST calls with the caller's credentials, RFC 9457 problems as errors, and stream tickets.
 * @module sinal/http
 */

/** An error answer of the API (`status` > 0, `problem` is its problem+json body), or no answer
 * at all (`status` 0: the server could not be reached). */
export class SinalError extends Error {
  /**
   * @param {number} status HTTP status, 0 when there was no answer
   * @param {?{title?: string, detail?: string, field?: string, status?: number}} problem
   * @param {string} [message]
   */
  constructor(status, problem, message) {
    super(message ?? problem?.detail ?? `HTTP ${status}`);
    this.name = "SinalError";
    this.status = status;
    this.problem = problem ?? null;
    /** The request field at fault, when the server named one. */
    this.field = problem?.field ?? null;
  }
}

export class Http {
  /**
   * @param {string} baseUrl the server, "" for the page's own origin
   * @param {?(() => (string | null | Promise<string | null>))} getToken a bearer token source;
   *   without it, requests carry the browser's cookies (`sinal_token`)
   */
  constructor(baseUrl, getToken) {
    this.baseUrl = new URL(baseUrl || "/", globalThis.location?.href).href.replace(/\/+$/, "");
    this.getToken = getToken ?? null;
    /** @type {?{ticket: string, until: number}} */
    this.cached = null;
    /** @type {?string} */
    this.ticketToken = null;
  }

  /** An absolute URL for `path`, with `params` (an object or a list of pairs) appended. */
  url(path, params = []) {
    const url = new URL(this.baseUrl + path);
    const pairs = Array.isArray(params) ? params : Object.entries(params);
    for (const [name, value] of pairs) {
      if (value !== undefined && value !== null) url.searchParams.append(name, String(value));
    }
    return url;
  }

  /**
   * One JSON request; resolves with the parsed answer (null when empty).
   * @param {string} method
   * @param {string} path
   * @param {{body?: unknown, params?: object, signal?: AbortSignal}} [options]
   * @returns {Promise<any>}
   * @throws {SinalError}
   */
  async request(method, path, { body, params, signal, token: given } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = given !== undefined ? given : this.getToken ? await this.getToken() : null;
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(this.url(path, params), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "include",
        cache: "no-store",
        signal,
      });
    } catch (error) {
      if (error?.name === "AbortError") throw error;
      throw new SinalError(0, null, `cannot reach the server (${error?.message ?? error})`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) throw new SinalError(response.status, data);
    return data;
  }

  /** GET `path` with query `params`. */
  get(path, params, options = {}) {
    return this.request("GET", path, { ...options, params });
  }

  /** POST `body` (omit it for an empty body) to `path`. */
  post(path, body) {
    return this.request("POST", path, { body });
  }

  /**
   * A stream ticket for URLs that cannot carry a header (EventSource, WebSocket), reused
   * until shortly before it expires. A ticket never outlives the token it is minted from, so
   * `expires_in` may be short when the token is about to expire.
   * @returns {Promise<string>}
   */
  async ticket() {
    if (this.cached && this.cached.until > Date.now()) return this.cached.ticket;
    const token = this.getToken ? await this.getToken() : null;
    const { ticket, expires_in: ttl } = await this.request("POST", "/v1/auth/ticket", { token });
    const reuse = ttl > 10 ? ttl - 5 : ttl / 2; // seconds
    this.cached = { ticket, until: Date.now() + reuse * 1000 };
    /** The token the last ticket was minted from (null: the cookie). */
    this.ticketToken = token;
    return ticket;
  }

  /** Drop the cached ticket (it was refused, or the token behind it expired). */
  forgetTicket() {
    this.cached = null;
  }
}
