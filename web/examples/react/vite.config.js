// Relative asset paths (`base: "./"`): the build works from any folder, such as
// /app/examples/react/dist/ of the Sinal server that serves web/. `npm run dev` proxies the API
// to a Sinal server (SINAL_URL, default http://127.0.0.1:8000), so the app and the API share an
// origin, as the cookie and Sinal's CSRF rules want (docs/react.md).
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const target = process.env.SINAL_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  base: "./",
  plugins: [react()],
  server: {
    proxy: {
      "/v1": { target, ws: true },
    },
  },
  build: {
    // One file each for the script and the style: easy to check, nothing to split at this size.
    chunkSizeWarningLimit: 1000,
  },
});
