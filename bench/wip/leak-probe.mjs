// Which step of the kept-graphs test leaves live device memory behind (bf16.test's "dispose frees
// the kept buffers" failure on wip/v17-blind): node bench/wip/leak-probe.mjs <dist dir>
const dist = process.argv[2] ?? 'dist';
const { CudaBackend } = await import(`../../${dist}/src/backend/cuda/backend.js`);
const { presetConfig } = await import(`../../${dist}/src/model/config.js`);
const { Model } = await import(`../../${dist}/src/model/model.js`);
const { SamplingGraphs, sampleIds } = await import(`../../${dist}/src/sample/sampler.js`);
const be = new CudaBackend({ grouped: 'mma' });
const cfg = presetConfig('tiny', { vocabSize: 300, seqLen: 64, maxLen: 64, dropout: 0 });
const model = Model.init(cfg, be, 3);
model.precision = 'bf16';
const [B, N] = [2, 64];
const ids = Int32Array.from({ length: B * N }, (_, i) => 5 + ((i * 7) % 290));
const mask = Int32Array.from({ length: B * N }, (_, i) => (i % N >= 20 ? 1 : 0));
const rows = (b) => [Int32Array.from({ length: b * N }, (_, i) => ids[i % (B * N)]), Int32Array.from({ length: b * N }, (_, i) => mask[i % (B * N)])];
const o = (seed, graphs) => ({ sampler: 'ddim', steps: 6, seed, graphs });
const m = () => be.memory();
const mem0 = m();
const log = (what) => { const x = m(); console.log(`${dist} ${what}: live ${x.liveBytes - mem0.liveBytes} B, ${x.liveTensors - mem0.liveTensors} tensors`); };
sampleIds(model, ids, mask, B, N, o(4, false)); log('plain');
sampleIds(model, ids, mask, B, N, o(4, true)); log('graphs: true');
const kept = new SamplingGraphs();
sampleIds(model, ids, mask, B, N, o(4, kept)); log('kept 2xN');
kept.dispose(); log('disposed after one shape');
sampleIds(model, ids, mask, B, N, o(4, kept)); log('kept 2xN again');
sampleIds(model, ...rows(1), 1, N, o(4, kept)); log('kept 1xN');
for (const b of [3, 4, 5]) { sampleIds(model, ...rows(b), b, N, o(4, kept)); log(`kept ${b}xN`); }
kept.dispose(); log('disposed after five shapes');
model.precision = 'float32';
sampleIds(model, ids, mask, B, N, o(4, false)); log('f32 plain');
sampleIds(model, ids, mask, B, N, o(4, kept)); log('f32 kept');
kept.dispose(); log('disposed f32');
sampleIds(model, ids, mask, B, N, o(4, kept)); log('f32 kept again');
model.precision = 'bf16';
sampleIds(model, ids, mask, B, N, o(4, kept)); log('bf16 after f32');
kept.dispose(); log('disposed at end');
