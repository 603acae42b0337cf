// The demo: classify an 8x8 digit with the compiled model, show the top 5 as bars and the timing.
// The model package lies in ./model/ (python examples/web/build.py); ?model=URL/ picks another.
const params = new URLSearchParams(location.search);
const modelUrl = new URL(params.get('model') || './model/', location.href).href;
const $ = (id) => document.getElementById(id);
const canvas = $('digit');
const ctx = canvas.getContext('2d');
const pixels = new Float32Array(64); // the model's input: 1x1x8x8, ink in [0, 1]
let session;
let Tensor;

function paint() {
  const img = ctx.createImageData(8, 8);
  pixels.forEach((v, i) => img.data.set([v * 255, v * 255, v * 255, 255], i * 4));
  const small = new OffscreenCanvas(8, 8);
  small.getContext('2d').putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

async function classify() {
  paint();
  if (!session) return;
  const t = performance.now();
  const { probabilities } = await session.run({ image: new Tensor('float32', pixels, [1, 1, 8, 8]) });
  const ms = performance.now() - t;
  const top = [...probabilities.data].map((p, k) => [p, k]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  $('bars').replaceChildren(
    ...top.map(([p, k]) => {
      const li = document.createElement('li');
      li.dataset.label = k;
      li.dataset.p = p;
      li.innerHTML = '<span class="label"></span><span class="track"><span class="bar"></span></span><span class="pct"></span>';
      li.querySelector('.label').textContent = k;
      li.querySelector('.bar').style.width = `${(p * 100).toFixed(2)}%`;
      li.querySelector('.pct').textContent = `${(p * 100).toFixed(1)}%`;
      return li;
    }),
  );
  $('timing').dataset.runMs = ms;
  $('timing').textContent = `${timing} · this run ${ms.toFixed(1)} ms`;
  window.__result = { top: top.map(([p, k]) => ({ label: k, p })), ms };
}

let timing = '';
async function main() {
  const samples = await (await fetch('samples.json')).json();
  samples.images.forEach((img, i) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = samples.labels[i];
    b.title = `test digit #${samples.indices[i]} (label ${samples.labels[i]})`;
    b.onclick = () => {
      document.querySelectorAll('.samples button').forEach((x) => x.classList.toggle('on', x == b));
      img.forEach((v, j) => (pixels[j] = v / 16));
      $('caption').textContent = `test digit #${samples.indices[i]}, labelled ${samples.labels[i]}`;
      classify();
    };
    $('samples').append(b);
  });
  const pick = Number(params.get('sample') ?? 3);
  samples.images[pick].forEach((v, j) => (pixels[j] = v / 16));
  $('samples').children[pick].classList.add('on');
  $('caption').textContent = `test digit #${samples.indices[pick]}, labelled ${samples.labels[pick]}`;
  paint();

  const rt = await import(modelUrl + 'index.js');
  Tensor = rt.Tensor;
  const support = await rt.isSupported(modelUrl);
  if (!support.supported) throw new Error(`${support.reason} (see fallback.html)`);
  let t = performance.now();
  session = await rt.InferenceSession.create(modelUrl, {
    onProgress: (p) => ($('status').textContent = `loading: ${p.stage} ${p.loaded} / ${p.total}`),
  });
  const loadMs = performance.now() - t;
  const firstMs = await session.warmup();
  const runs = [];
  for (let i = 0; i < 10; i++) runs.push(await session.warmup());
  runs.sort((a, b) => a - b);
  timing = `load ${loadMs.toFixed(0)} ms · first run ${firstMs.toFixed(1)} ms · median of 10 runs ${runs[5].toFixed(1)} ms`;
  const info = session.device.adapterInfo || {};
  $('status').textContent = `WebGPU adapter: ${[info.vendor, info.architecture].filter(Boolean).join(' ') || 'unknown'}`;
  await classify();
  window.__timing = { loadMs, firstMs, medianMs: runs[5] };
  window.__done = true;
}

// drawing: paint ink into the 8x8 grid under the pointer, classify as you go
let drawing = false;
canvas.addEventListener('pointerdown', (e) => {
  drawing = true;
  canvas.setPointerCapture(e.pointerId);
  ink(e);
});
canvas.addEventListener('pointermove', (e) => drawing && ink(e));
canvas.addEventListener('pointerup', () => (drawing = false));
function ink(e) {
  const r = canvas.getBoundingClientRect();
  const x = ((e.clientX - r.left) / r.width) * 8 - 0.5;
  const y = ((e.clientY - r.top) / r.height) * 8 - 0.5;
  for (let j = 0; j < 64; j++) {
    const d = Math.hypot((j % 8) - x, Math.floor(j / 8) - y);
    pixels[j] = Math.min(1, pixels[j] + Math.max(0, 1 - d * 0.8) * 0.6);
  }
  classify();
}
$('clear').onclick = () => {
  pixels.fill(0);
  document.querySelectorAll('.samples button').forEach((x) => x.classList.remove('on'));
  $('caption').textContent = 'draw a digit in the black square';
  classify();
};

main().catch((e) => {
  $('status').textContent = `${e.name}: ${e.message}`;
  $('status').classList.add('error');
  window.__error = `${e.name}: ${e.message}`;
  window.__done = true;
});
