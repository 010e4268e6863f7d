// What `npm pack` puts in the package `sinal-client`: the client's modules, the React module,
// their declarations, README and LICENSE; no tests, pages, examples or development files.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const WEB = join(dirname(fileURLToPath(import.meta.url)), "..");

const EXPECTED = [
  "LICENSE",
  "README.md",
  "package.json",
  "react.d.ts",
  "react.js",
  "sinal.d.ts",
  "sinal.js",
  "sinal/actions.js",
  "sinal/connection.js",
  "sinal/cursor.js",
  "sinal/executions.js",
  "sinal/http.js",
  "sinal/inbox.js",
  "sinal/resource.js",
  "sinal/store.js",
  "types/api.d.ts",
  "types/events.d.ts",
];

function pack() {
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
    cwd: WEB,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  return JSON.parse(out)[0];
}

test("the package holds what a user needs and nothing else", () => {
  const { name, files, size, unpackedSize } = pack();
  assert.equal(name, "sinal-client");
  assert.deepEqual(files.map((file) => file.path).sort(), EXPECTED);
  console.log(`sinal-client: ${files.length} files, ${size} bytes packed, ${unpackedSize} unpacked`);
});

test("every module the package imports is in it, and every entry point too", () => {
  const packed = new Set(pack().files.map((file) => file.path));
  for (const path of packed) {
    if (!/\.(js|d\.ts)$/.test(path)) continue;
    const source = readFileSync(join(WEB, path), "utf8");
    for (const [, target] of source.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
      let resolved = normalize(join(dirname(path), target));
      if (path.endsWith(".d.ts")) resolved = resolved.replace(/\.js$/, ".d.ts");
      assert.ok(packed.has(resolved), `${path} imports ${target}, which is not packed`);
    }
  }
  const manifest = JSON.parse(readFileSync(join(WEB, "package.json"), "utf8"));
  for (const entry of Object.values(manifest.exports)) {
    for (const target of typeof entry === "string" ? [entry] : Object.values(entry)) {
      assert.ok(packed.has(normalize(target)), `exports names ${target}, which is not packed`);
    }
  }
});

test("react is an optional peer: only the React entry needs it", () => {
  const manifest = JSON.parse(readFileSync(join(WEB, "package.json"), "utf8"));
  assert.deepEqual(Object.keys(manifest.dependencies ?? {}), []);
  assert.ok(manifest.peerDependencies.react);
  assert.equal(manifest.peerDependenciesMeta.react.optional, true);
  for (const path of ["sinal.js", "sinal/store.js", "sinal/inbox.js", "sinal/executions.js"]) {
    assert.doesNotMatch(readFileSync(join(WEB, path), "utf8"), /from "react"/, path);
  }
});
