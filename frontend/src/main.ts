const app = document.querySelector<HTMLDivElement>("#app")!;
app.innerHTML = `<h1>Annovox</h1><p>The study browser and viewer are coming.</p>`;
document.body.dataset.ready = "true";
