// Bundle the Worker for raw workerd (what wrangler would do): Prisma's query-compiler .wasm becomes a
// separate module listed in worker.capnp, and pg's require() of Node built-ins reads workerd's
// nodejs_compat modules.
import { copyFileSync } from "node:fs";
import { builtinModules } from "node:module";
import * as esbuild from "esbuild";

const builtins = new Set(builtinModules);
const nodeBuiltins = {
  name: "node-builtins",
  setup(build) {
    build.onResolve({ filter: /\.wasm\?module$/ }, () => ({ path: "./query_compiler.wasm", external: true }));
    build.onResolve({ filter: /^cloudflare:/ }, (args) => ({ path: args.path, external: true }));
    build.onResolve({ filter: /^(node:)?[a-z_/]+$/ }, (args) => {
      const name = args.path.replace(/^node:/, "");
      if (!builtins.has(name)) return undefined;
      if (args.kind === "require-call") return { path: name, namespace: "node-builtin" };
      return { path: `node:${name}`, external: true };
    });
    // A require()d built-in becomes a small bundled module whose CommonJS exports are the built-in's.
    build.onLoad({ filter: /.*/, namespace: "node-builtin" }, (args) => ({
      contents: `import m from "node:${args.path}"; module.exports = m;`,
      loader: "js",
    }));
  },
};

await esbuild.build({
  entryPoints: ["src/worker.ts"],
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  conditions: ["workerd", "worker"],
  mainFields: ["module", "main"],
  outfile: "build/worker.mjs",
  plugins: [nodeBuiltins],
  logLevel: "warning",
});
copyFileSync("build/generated/internal/query_compiler_fast_bg.wasm", "build/query_compiler.wasm");
