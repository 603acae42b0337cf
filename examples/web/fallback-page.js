import { createSession } from './fallback.js';

const params = new URLSearchParams(location.search);
const model = new URL(params.get('model') || './model/', location.href).href;
const ortUrl = params.get('ort') ? new URL(params.get('ort'), location.href).href : undefined;

async function main() {
  const samples = await (await fetch('samples.json')).json();
  const { backend, reason, session, Tensor } = await createSession(model, { ortUrl });
  document.getElementById('backend').textContent = backend == 'webgpu' ? 'running on WebGPU' : `running on WASM: ${reason}`;
  const image = Float32Array.from(samples.images[3], (v) => v / 16);
  const out = await session.run({ image: new Tensor('float32', image, [1, 1, 8, 8]) });
  const probs = [...out.probabilities.data];
  const best = probs.indexOf(Math.max(...probs));
  document.getElementById('status').textContent = `test digit labelled ${samples.labels[3]}: predicted ${best}`;
  window.__result = { backend, reason, probabilities: probs };
  window.__done = true;
}
main().catch((e) => {
  document.getElementById('status').textContent = `${e.name}: ${e.message}`;
  window.__error = `${e.name}: ${e.message}`;
  window.__done = true;
});
