// Drives worker.js: load the model in the worker, classify each sample there, list the results.
const params = new URLSearchParams(location.search);
const model = new URL(params.get('model') || './model/', location.href).href;
const status = document.getElementById('status');
const worker = new Worker(new URL('worker.js', import.meta.url), { type: 'module' });
const pending = new Map();
worker.onmessage = ({ data }) => {
  const wait = pending.get(data.id ?? data.type);
  pending.delete(data.id ?? data.type);
  if (data.type == 'error') wait?.reject(new Error(data.error));
  else wait?.resolve(data);
};
const ask = (key, msg) => new Promise((resolve, reject) => {
  pending.set(key, { resolve, reject });
  worker.postMessage(msg);
});

async function main() {
  const samples = await (await fetch('samples.json')).json();
  const loaded = await ask('loaded', { type: 'load', model });
  status.textContent = `model loaded in the worker in ${loaded.ms.toFixed(0)} ms`;
  const results = [];
  for (const [i, img] of samples.images.entries()) {
    const image = Float32Array.from(img, (v) => v / 16);
    const { outputs, ms } = await ask(i, { type: 'run', id: i, feeds: { image } });
    const probs = [...outputs.probabilities];
    const best = probs.indexOf(Math.max(...probs));
    results.push({ index: samples.indices[i], label: samples.labels[i], predicted: best, probabilities: probs, ms });
    const row = document.createElement('tr');
    for (const v of [samples.indices[i], samples.labels[i], best, probs[best].toFixed(3), ms.toFixed(1)]) {
      const td = document.createElement('td');
      td.textContent = v;
      row.append(td);
    }
    document.querySelector('#table tbody').append(row);
  }
  await ask('released', { type: 'release' });
  status.textContent += ` · ${results.filter((r) => r.label == r.predicted).length} of ${results.length} right`;
  window.__results = results;
  window.__done = true;
}
main().catch((e) => {
  status.textContent = String(e.message);
  status.classList.add('error');
  window.__error = String(e.message);
  window.__done = true;
});
