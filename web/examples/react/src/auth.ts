/**
 * Where the app gets its Sinal token.
 *
 * A real app asks its own backend, which knows the user's session and mints a short-lived token
 * for Sinal; `getToken` is called before each request, so it must return a token that is still
 * valid, renewing it a little before it expires. Here, `?token_url=/path` names such an endpoint
 * (answering `{"token": "..."}`); otherwise a token pasted on the sign-in form is used (kept for
 * this tab); with neither, requests carry the browser's `sinal_token` cookie.
 */

const STORAGE_KEY = "sinal-example:token";

export type GetToken = () => Promise<string | null>;

export function tokenSource(): GetToken | undefined {
  const url = new URLSearchParams(location.search).get("token_url");
  if (url) return fromEndpoint(url);
  const pasted = sessionStorage.getItem(STORAGE_KEY);
  if (pasted) return async () => pasted;
  return undefined;
}

export function savePastedToken(token: string): void {
  sessionStorage.setItem(STORAGE_KEY, token.trim());
}

/** Tokens from the platform's endpoint, each reused until a little before it expires. */
function fromEndpoint(url: string): GetToken {
  let cached: { token: string; renewAt: number } | null = null;
  let pending: Promise<string | null> | null = null;
  return () => {
    if (cached && Date.now() < cached.renewAt) return Promise.resolve(cached.token);
    pending ??= (async () => {
      try {
        const response = await fetch(url, { cache: "no-store" });
        if (!response.ok) return null;
        const { token } = (await response.json()) as { token: string };
        cached = { token, renewAt: renewAt(token) };
        return token;
      } finally {
        pending = null;
      }
    })();
    return pending;
  };
}

/** A quarter of the token's life before it expires, at most 30 s before. */
function renewAt(token: string): number {
  const expires = expiry(token);
  if (expires === null) return Date.now() + 60_000;
  return expires - Math.min(30_000, Math.max(0, expires - Date.now()) / 4);
}

/** The token's `exp`, in ms since the epoch (the app only reads it; Sinal verifies it). */
function expiry(token: string): number | null {
  try {
    const payload = token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
    const { exp } = JSON.parse(atob(payload)) as { exp?: number };
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}
