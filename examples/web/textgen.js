// The text generator: stream words and marks from the compiled decoder with the package's
// generate.js, one per step; Stop aborts before the next step. The package (with vocab.json)
// lies in ./textgen-model/ (python examples/web/build.py); ?model=URL/ picks another, and
// ?prompt=...&n=...&start=1 fill the form and start at once.
const params = new URLSearchParams(location.search);
const modelUrl = new URL(params.get('model') || './textgen-model/', location.href).href;
const $ = (id) => document.getElementById(id);
let session, generate, resetGeneration, tokens, pattern, index, controller;

async function run() {
  const prompt = $('prompt').value;
  const pieces = prompt.match(pattern) || [];
  const unknown = pieces.filter((p) => !index.has(p));
  if (!pieces.length || unknown.length || pieces.join('') != prompt) {
    $('status').textContent = unknown.length
      ? `not among the corpus's words and marks: ${unknown.map((p) => JSON.stringify(p.trim())).join(', ')}`
      : 'write a prompt of words and marks, one space between words';
    return;
  }
  const count = Number($('length').value) || 1; // (it stops when the sequence fills the model's 64 positions)
  const temperature = Number($('temperature').value) || 0;
  const options = { maxNewTokens: count, signal: (controller = new AbortController()).signal };
  if (temperature > 0) Object.assign(options, { temperature, topK: Number($('topk').value) || 16, seed: Number($('seed').value) || 0 });
  $('go').disabled = true;
  $('stop').disabled = false;
  $('prompted').textContent = prompt;
  $('generated').textContent = '';
  window.__done = false;
  resetGeneration(session); // a new text: forget the cached sequence
  const ids = pieces.map((p) => index.get(p));
  let made = 0;
  const start = performance.now();
  try {
    for await (const id of generate(session, ids, options)) {
      $('generated').textContent += tokens[id];
      made++;
      const s = (performance.now() - start) / 1000;
      $('timing').textContent = `${made} tokens in ${s.toFixed(2)} s: ${(made / s).toFixed(1)} tokens/s`;
    }
  } finally {
    $('go').disabled = false;
    $('stop').disabled = true;
  }
  const stopped = controller.signal.aborted;
  $('status').textContent = stopped ? `stopped after ${made} tokens` : `done: ${made} tokens`;
  window.__result = { text: $('generated').textContent, count: made, stopped };
  window.__done = true;
}

async function main() {
  for (const [key, id] of [['prompt', 'prompt'], ['n', 'length'], ['temperature', 'temperature'], ['top_k', 'topk'], ['seed', 'seed']])
    if (params.has(key)) $(id).value = params.get(key);
  const vocab = await (await fetch(modelUrl + 'vocab.json')).json();
  [tokens, pattern] = [vocab.tokens, new RegExp(vocab.pattern, 'g')]; // a token: a word or mark with its space, or a newline
  index = new Map(tokens.map((t, i) => [t, i]));
  const rt = await import(modelUrl + 'index.js');
  ({ generate, resetGeneration } = await import(modelUrl + 'generate.js'));
  const support = await rt.isSupported(modelUrl);
  if (!support.supported) throw new Error(support.reason);
  const t = performance.now();
  session = await rt.InferenceSession.create(modelUrl, {
    onProgress: (p) => ($('status').textContent = `loading: ${p.stage} ${p.loaded} / ${p.total}`),
  });
  const info = session.device.adapterInfo || {};
  $('status').textContent = `loaded in ${(performance.now() - t).toFixed(0)} ms · WebGPU adapter: ${[info.vendor, info.architecture].filter(Boolean).join(' ') || 'unknown'}`;
  $('go').disabled = false;
  window.__ready = true;
  if (params.get('start')) await run();
}

const fail = (e) => {
  $('status').textContent = `${e.name}: ${e.message}`;
  $('status').classList.add('error');
  window.__error = `${e.name}: ${e.message}`;
  window.__ready = window.__done = true;
};
$('controls').onsubmit = (e) => {
  e.preventDefault();
  run().catch(fail);
};
$('stop').onclick = () => controller?.abort();
main().catch(fail);
