import { defineConfig } from "vite";

// Django serves the built files under /static/ (ServeStatic, STATICFILES_DIRS = frontend/dist).
export default defineConfig({
  base: "/static/",
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
