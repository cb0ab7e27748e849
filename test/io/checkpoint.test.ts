/**
 * Model folders (src/io/checkpoint.ts, SPEC section 7): exact save/load round trips, the config.json
 * layout, every refusal (tensors, config, tokenizer) with a message naming what is wrong.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { diffusionLoss } from '../../src/diffusion/loss.js';
import { CheckpointError, ConfigError } from '../../src/errors.js';
import { CONFIG_FILE, loadModel, paramTensors, readConfig, saveModel, saveModelFolder, WEIGHTS_FILE } from '../../src/io/checkpoint.js';
import { readSafetensors, writeSafetensors, type TensorToWrite } from '../../src/io/safetensors.js';
import { configToJson, type ModelConfig } from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { paramSpecs } from '../../src/model/params.js';
import { trainBpeSync } from '../../src/tokenizer/index.js';
import { microBatch, microConfig, microNoise } from '../model/fixtures.js';

const be = new CpuBackend({ threads: 1 });
const root = mkdtempSync(join(tmpdir(), 'moe-diffuseq-checkpoint-'));
after(() => {
  be.close();
  rmSync(root, { recursive: true, force: true });
});

let nDirs = 0;
const newDir = (name: string) => join(root, `${name}-${nDirs++}`);

/** Asserts `fn` throws an error of `type` whose message contains every part. */
function throwsWith(fn: () => unknown, type: typeof CheckpointError | typeof ConfigError, ...parts: string[]): Error {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof type, `expected a ${type.name}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  for (const p of parts) assert.ok(err.message.includes(p), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(p)}`);
  return err;
}

function bits(a: Float32Array | Float64Array | Int32Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
}

function lossOf(model: Model) {
  const cfg = model.config;
  const batch = microBatch(cfg, 3, cfg.seqLen);
  const noise = microNoise(cfg, batch);
  return diffusionLoss(model, batch, noise, { train: false, backward: false, returnX0: true });
}

/** A saved micro model folder (F32, no tokenizer); returns its folder and the model's tensors. */
function savedFolder(name: string, cfg: ModelConfig = microConfig()): { dir: string; tensors: TensorToWrite[] } {
  const dir = newDir(name);
  const m = Model.init(cfg, be, 11);
  saveModel(dir, m);
  const tensors = paramTensors(m.params);
  m.dispose();
  return { dir, tensors };
}

describe('save and load round trips', () => {
  it('float32: bitwise-equal parameters and an equal loss; the folder holds config.json and model.safetensors', () => {
    const cfg = microConfig();
    const m = Model.init(cfg, be, 5);
    const dir = newDir('f32');
    saveModel(dir, m);
    assert.deepEqual(readdirSync(dir).sort(), [CONFIG_FILE, WEIGHTS_FILE].sort());
    const { model, tokenizer, metadata } = loadModel(dir, be);
    assert.equal(tokenizer, null);
    assert.equal(metadata['format'], 'pt');
    assert.equal(metadata['modelType'], 'moe-diffuseq');
    assert.deepEqual(model.config, cfg);
    assert.equal(model.dtype, 'float32');
    assert.equal(bits(be.toArray(model.params.flat)), bits(be.toArray(m.params.flat)));
    const a = lossOf(m);
    const b = lossOf(model);
    assert.deepEqual(b.terms, a.terms);
    assert.equal(bits(b.x0!), bits(a.x0!));
    // the weights file: SPEC names and shapes, F32
    const file = readSafetensors(join(dir, WEIGHTS_FILE));
    const specs = paramSpecs(cfg);
    assert.deepEqual([...file.tensors.keys()].sort(), specs.map((s) => s.name).sort());
    for (const s of specs) {
      const t = file.tensors.get(s.name)!;
      assert.equal(t.dtype, 'F32', s.name);
      assert.deepEqual(t.shape, [...s.shape], s.name);
      assert.equal(bits(t.data), bits(be.toArray(m.params.get(s.name))), s.name);
    }
    m.dispose();
    model.dispose();
  });

  it('float64 saved as F64: bitwise-equal and the same loss; saved as F32 (the default): rounded to float32', () => {
    const cfg = microConfig({ absorbing: false, attention: { kind: 'full' }, ffn: { kind: 'dense' } });
    const m = Model.init(cfg, be, 6, 'float64');
    // make the values need float64 (the init draws are float64 already; add a tiny offset to be sure)
    be.write(m.params.flat, Float64Array.from(be.toArray(m.params.flat), (v, i) => v + i * 1e-12));
    const d64 = newDir('f64');
    saveModel(d64, m, { dtype: 'F64' });
    const l64 = loadModel(d64, be, { dtype: 'float64' });
    assert.equal(l64.model.dtype, 'float64');
    assert.equal(bits(be.toArray(l64.model.params.flat)), bits(be.toArray(m.params.flat)));
    assert.deepEqual(lossOf(l64.model).terms, lossOf(m).terms);
    assert.equal(readSafetensors(join(d64, WEIGHTS_FILE)).tensors.get('word_embeddings.weight')!.dtype, 'F64');
    const d32 = newDir('f64as32');
    saveModel(d32, m);
    const l32 = loadModel(d32, be, { dtype: 'float64' });
    assert.deepEqual(Array.from(be.toArray(l32.model.params.flat)), Array.from(be.toArray(m.params.flat), (v) => Math.fround(v)));
    for (const x of [m, l64.model, l32.model]) x.dispose();
  });

  it('a float32 folder loads into float64 with the same values; saving again over a folder replaces it cleanly', () => {
    const { dir, tensors } = savedFolder('reload');
    const { model } = loadModel(dir, be, { dtype: 'float64' });
    for (const t of tensors) assert.deepEqual(Array.from(be.toArray(model.params.get(t.name))), Array.from(t.data), t.name);
    const other = Model.init(model.config, be, 99);
    saveModel(dir, other);
    assert.deepEqual(readdirSync(dir).sort(), [CONFIG_FILE, WEIGHTS_FILE].sort(), 'no temp files left');
    const back = loadModel(dir, be).model;
    assert.equal(bits(be.toArray(back.params.flat)), bits(be.toArray(other.params.flat)));
    for (const x of [model, other, back]) x.dispose();
  });

  it('config.json: every SPEC section 7 field, attention and ffn nested, modelType; parsed back equal', () => {
    const cfg = microConfig({ ffn: { capacityFactor: 1.5, balance: 'bias' } });
    const { dir } = savedFolder('json', cfg);
    const j = JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(Object.keys(j).sort(), [
      'absorbing', 'attention', 'diffusionSteps', 'dropout', 'embDim', 'ffn', 'gamma', 'globalTokens', 'heads', 'hidden', 'layers',
      'lossMask', 'maxLen', 'modelType', 'schedule', 'seqLen', 'timestepSampler', 'vocabSize',
    ]);
    assert.deepEqual(Object.keys(j['attention'] as object).sort(), ['dilation', 'kind', 'window']);
    assert.deepEqual(Object.keys(j['ffn'] as object).sort(), ['auxWeight', 'balance', 'biasRate', 'capacityFactor', 'expertHidden', 'experts', 'kind', 'sharedExperts', 'topK', 'zWeight']);
    assert.equal(j['modelType'], 'moe-diffuseq');
    assert.deepEqual(j, configToJson(cfg));
    assert.deepEqual(j['ffn'], { ...cfg.ffn });
    assert.deepEqual(readConfig(dir), cfg);
  });
});

describe('refusals: tensors', () => {
  const rewrite = (name: string, edit: (t: TensorToWrite[]) => TensorToWrite[]) => {
    const { dir, tensors } = savedFolder(name);
    writeSafetensors(join(dir, WEIGHTS_FILE), edit(tensors), { format: 'pt' });
    return dir;
  };

  it('a missing tensor', () => {
    const dir = rewrite('missing', (t) => t.filter((x) => x.name !== 'layers.1.attn.k.weight'));
    throwsWith(() => loadModel(dir, be), CheckpointError, join(dir, WEIGHTS_FILE), "tensor 'layers.1.attn.k.weight' is missing", 'expects shape [8, 8]');
  });

  it('an extra tensor', () => {
    const dir = rewrite('extra', (t) => [...t, { name: 'layers.7.attn.q.weight', dtype: 'F32', shape: [2], data: [1, 2] }]);
    throwsWith(() => loadModel(dir, be), CheckpointError, join(dir, WEIGHTS_FILE), 'tensors not in this config: layers.7.attn.q.weight');
  });

  it('a wrong shape (same size, transposed; and a different size)', () => {
    const t1 = rewrite('shape', (t) => t.map((x) => (x.name === 'time_embed.0.weight' ? { ...x, shape: [...x.shape].reverse() } : x)));
    throwsWith(() => loadModel(t1, be), CheckpointError, "tensor 'time_embed.0.weight' has shape [4, 16], the config expects [16, 4]");
    const t2 = rewrite('size', (t) => t.map((x) => (x.name === 'mean_embed' ? { ...x, shape: [5], data: [1, 2, 3, 4, 5] } : x)));
    throwsWith(() => loadModel(t2, be), CheckpointError, "tensor 'mean_embed' has shape [5], the config expects [4]");
  });

  it('an integer tensor where the config expects floats', () => {
    const dir = rewrite('int', (t) => t.map((x) => (x.name === 'input_norm.bias' ? { ...x, dtype: 'I32', data: Array.from(x.data, () => 0) } : x)));
    throwsWith(() => loadModel(dir, be), CheckpointError, "tensor 'input_norm.bias' is I32, expected a float type");
  });

  it('weights that do not match a (valid) edited config: fewer layers, another FFN', () => {
    const { dir } = savedFolder('cfgedit');
    const path = join(dir, CONFIG_FILE);
    const j = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    writeFileSync(path, JSON.stringify({ ...j, layers: 1 }));
    throwsWith(() => loadModel(dir, be), CheckpointError, 'tensors not in this config: layers.1.');
    writeFileSync(path, JSON.stringify({ ...j, ffn: { ...(j['ffn'] as object), kind: 'dense' } }));
    throwsWith(() => loadModel(dir, be), CheckpointError, 'not in this config', 'layers.0.ffn.router.weight');
  });

  it('a damaged weights file or none at all', () => {
    const { dir } = savedFolder('damaged');
    const w = join(dir, WEIGHTS_FILE);
    const bytes = readFileSync(w);
    writeFileSync(w, bytes.subarray(0, bytes.length - 10));
    throwsWith(() => loadModel(dir, be), CheckpointError, w, 'past the data section');
    rmSync(w);
    throwsWith(() => loadModel(dir, be), CheckpointError, w, 'cannot read (ENOENT)');
  });
});

describe('refusals: config.json', () => {
  const withConfig = (name: string, text: string) => {
    const { dir } = savedFolder(name);
    writeFileSync(join(dir, CONFIG_FILE), text);
    return dir;
  };
  const good = () => configToJson(microConfig());

  it('no config.json: not a model folder', () => {
    const dir = newDir('empty');
    mkdirSync(dir);
    const e = throwsWith(() => loadModel(dir, be), CheckpointError, dir, 'not a model folder (no config.json)');
    assert.match((e as CheckpointError).hint ?? '', /moe-diffuseq init/);
  });

  it('invalid JSON', () => {
    const dir = withConfig('badjson', '{"modelType": "moe-diffuseq", ');
    throwsWith(() => loadModel(dir, be), CheckpointError, join(dir, CONFIG_FILE), 'invalid JSON');
  });

  it('missing modelType, or another one', () => {
    const { modelType: _, ...rest } = good();
    const dir = withConfig('nomodeltype', JSON.stringify(rest));
    throwsWith(() => loadModel(dir, be), CheckpointError, join(dir, CONFIG_FILE), 'missing modelType "moe-diffuseq"');
    const d2 = withConfig('bert', JSON.stringify({ ...good(), modelType: 'bert' }));
    throwsWith(() => loadModel(d2, be), ConfigError, join(d2, CONFIG_FILE), 'modelType must be "moe-diffuseq", got "bert"');
    const d3 = withConfig('array', '[]');
    assert.throws(() => loadModel(d3, be), (e: unknown) => (e instanceof CheckpointError || e instanceof ConfigError) && e.message.includes(join(d3, CONFIG_FILE)));
  });

  it('an unknown field, top level or nested', () => {
    const dir = withConfig('unknown', JSON.stringify({ ...good(), hidden_size: 8 }));
    throwsWith(() => loadModel(dir, be), ConfigError, join(dir, CONFIG_FILE), "unknown field 'hidden_size'");
    const g = good();
    const d2 = withConfig('unknown2', JSON.stringify({ ...g, attention: { ...(g['attention'] as object), blockSize: 64 } }));
    throwsWith(() => loadModel(d2, be), ConfigError, join(d2, CONFIG_FILE), "unknown field 'attention.blockSize'");
  });

  it('heads not dividing hidden, and other invalid values', () => {
    const dir = withConfig('heads', JSON.stringify({ ...good(), heads: 3 }));
    throwsWith(() => loadModel(dir, be), ConfigError, join(dir, CONFIG_FILE), 'heads (3) must divide hidden (8)');
    const d2 = withConfig('seqlen', JSON.stringify({ ...good(), seqLen: 10 }));
    throwsWith(() => loadModel(d2, be), ConfigError, 'seqLen (10) is over maxLen (9)');
    const d3 = withConfig('topk', JSON.stringify({ ...good(), ffn: { ...(good()['ffn'] as object), topK: 4 } }));
    throwsWith(() => loadModel(d3, be), ConfigError, 'ffn.topK (4) cannot exceed ffn.experts (3)');
  });
});

describe('tokenizers in model folders', () => {
  // two small byte-level BPE tokenizers of the same size (261 specials + bytes, then 2 merges)
  const tokA = trainBpeSync(['the cat sat on the mat, the end', 'the the the'], { vocabSize: 263 });
  const tokB = trainBpeSync(['zzz yyy zzz yyy qqq zzz'], { vocabSize: 263 });
  const tokC = trainBpeSync(['the cat sat on the mat, the end', 'the the the cat cat sat'], { vocabSize: 265 });

  it('the fixtures: A and B have the same size and different fingerprints, C another size', () => {
    assert.equal(tokA.vocabSize, 263);
    assert.equal(tokB.vocabSize, 263);
    assert.notEqual(tokA.fingerprint(), tokB.fingerprint());
    assert.equal(tokC.vocabSize, 265);
  });

  const withTokenizer = (name: string) => {
    const dir = newDir(name);
    const m = Model.init(microConfig({ vocabSize: 263 }), be, 2);
    saveModel(dir, m, { tokenizer: tokA });
    m.dispose();
    return dir;
  };

  it('is saved with the model, its fingerprint in the metadata, and loaded back', () => {
    const dir = withTokenizer('tok');
    assert.ok(existsSync(join(dir, 'tokenizer.json')));
    const { model, tokenizer, metadata } = loadModel(dir, be);
    assert.equal(metadata['tokenizer_fingerprint'], tokA.fingerprint());
    assert.ok(tokenizer);
    assert.equal(tokenizer.vocabSize, 263);
    assert.equal(tokenizer.fingerprint(), tokA.fingerprint());
    assert.deepEqual(tokenizer.encode('the cat'), tokA.encode('the cat'));
    model.dispose();
  });

  it('a tokenizer whose size differs from config.vocabSize is refused (on load and on save)', () => {
    const dir = withTokenizer('toksize');
    tokC.save(dir);
    throwsWith(() => loadModel(dir, be), CheckpointError, dir, 'the tokenizer has 265 ids but config.json says vocabSize 263');
    const { model } = loadModel(dir, be, { noTokenizer: true });
    model.dispose();
    const d2 = newDir('toksave');
    const m = Model.init(microConfig({ vocabSize: 263 }), be, 2);
    throwsWith(() => saveModel(d2, m, { tokenizer: tokC }), ConfigError, 'tokenizer has 265 ids', 'vocabSize is 263');
    assert.ok(!existsSync(join(d2, CONFIG_FILE)) && !existsSync(join(d2, WEIGHTS_FILE)), 'nothing written');
    m.dispose();
  });

  it('a different tokenizer of the same size (fingerprint mismatch) is refused', () => {
    const dir = withTokenizer('tokfp');
    tokB.save(dir);
    throwsWith(() => loadModel(dir, be), CheckpointError, dir, 'the tokenizer differs from the one the model was saved with', tokB.fingerprint(), tokA.fingerprint());
    // the right one put back loads again
    tokA.save(dir);
    loadModel(dir, be).model.dispose();
  });

  it('a folder copied without its tokenizer loads, with tokenizer null', () => {
    const dir = withTokenizer('tokcopy');
    const d2 = newDir('tokcopy2');
    mkdirSync(d2);
    for (const f of [CONFIG_FILE, WEIGHTS_FILE]) copyFileSync(join(dir, f), join(d2, f));
    const r = loadModel(d2, be);
    assert.equal(r.tokenizer, null);
    r.model.dispose();
  });

  it('saveModelFolder writes host tensors (e.g. EMA weights) the same way', () => {
    const { dir, tensors } = savedFolder('hostsrc');
    const d2 = newDir('host');
    saveModelFolder(d2, readConfig(dir), tensors);
    assert.deepEqual(readFileSync(join(d2, WEIGHTS_FILE)), readFileSync(join(dir, WEIGHTS_FILE)));
    assert.deepEqual(readFileSync(join(d2, CONFIG_FILE), 'utf8'), readFileSync(join(dir, CONFIG_FILE), 'utf8'));
  });
});
