import { defineConfig } from "vite";

// Django serves the built files under /static/ (WhiteNoise, STATICFILES_DIRS = frontend/dist).
export default defineConfig({
  base: "/static/",
  build: { outDir: "dist", emptyOutDir: true },
  server: { proxy: { "/api": "http://127.0.0.1:8000", "/dicomweb": "http://127.0.0.1:8000" } },
});
