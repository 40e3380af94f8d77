import { type Plugin, defineConfig } from "vite";

/**
 * On the viewer's route, the page's head asks for the viewer's chunk (Cornerstone, about 4 MB) at once, as a
 * module preload, instead of once the main bundle has loaded and run: it comes in and is parsed some 40 ms
 * sooner, on the way to the first image. Other routes do not load it.
 */
function preloadViewerOnItsRoute(): Plugin {
  let base = "/";
  return {
    name: "annovox-preload-viewer",
    apply: "build",
    configResolved(config) {
      base = config.base;
    },
    transformIndexHtml: {
      order: "post",
      handler(_html, context) {
        const chunk = Object.values(context.bundle ?? {}).find(
          (output) => output.type === "chunk" && output.facadeModuleId?.endsWith("/src/viewer/page.ts"),
        );
        if (!chunk) throw new Error("no chunk for src/viewer/page.ts: the viewer's preload cannot be written");
        const url = JSON.stringify(`${base}${chunk.fileName}`);
        const script =
          `if (location.hash.startsWith("#/series/")) { const link = document.createElement("link"); ` +
          `link.rel = "modulepreload"; link.href = ${url}; document.head.append(link); }`;
        return [{ tag: "script", children: script, injectTo: "head-prepend" }];
      },
    },
  };
}

/**
 * Cornerstone makes some 190 loggers with the copy of loglevel that dcmjs bundles, and each one looks for a
 * level saved in localStorage and, finding none, in document.cookie. A cookie read is a synchronous call to
 * the browser: the first one waited 75–85 ms on the way to the first image, the others 0.2–0.3 ms each. Levels
 * are saved in localStorage wherever it exists (the cookie is loglevel's fallback for browsers without it), so
 * the cookie fallback is taken out of the build.
 */
function loglevelWithoutCookieReads(): Plugin {
  const read = "var cookie = window.document.cookie;";
  return {
    name: "annovox-loglevel-without-cookie-reads",
    transform(code, id) {
      if (!id.endsWith("/dcmjs/build/dcmjs.es.js")) return null;
      if (code.split(read).length !== 2) {
        throw new Error(`dcmjs's loglevel no longer reads "${read}" once: update frontend/vite.config.ts`);
      }
      return { code: code.replace(read, 'var cookie = "";'), map: null };
    },
  };
}

// Django serves the built files under /static/ (ServeStatic, STATICFILES_DIRS = frontend/dist).
export default defineConfig({
  base: "/static/",
  plugins: [preloadViewerOnItsRoute(), loglevelWithoutCookieReads()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // Cornerstone's viewer chunk is large by nature; it is loaded only on the viewer page.
    chunkSizeWarningLimit: 5000,
  },
  // The dicom-image-loader starts its decode worker with `new URL("./decodeImageFrameWorker.js",
  // import.meta.url)`: pre-bundling it (dev server) would break that path, so it is excluded, and its
  // CommonJS dependency dicom-parser is pre-bundled instead.
  optimizeDeps: {
    exclude: ["@cornerstonejs/dicom-image-loader"],
    include: ["dicom-parser"],
  },
  // The worker imports modules (the codecs), so it is built as an ES module worker.
  worker: { format: "es" },
  // The codecs' .wasm files are fetched at run time by URL; they are emitted as assets next to the chunks.
  assetsInclude: ["**/*.wasm"],
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8000",
      "/dicomweb": "http://127.0.0.1:8000",
      "/ws": { target: "ws://127.0.0.1:8000", ws: true },
    },
  },
});
