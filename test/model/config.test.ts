/**
 * The model configuration (src/model/config.ts: SPEC defaults, presets, validation messages,
 * config.json) and the parameter table (src/model/params.ts: SPEC section 7's names and shapes,
 * initialisation).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { CpuBackend } from '../../src/backend/cpu/backend.js';
import { ConfigError } from '../../src/errors.js';
import {
  configToJson,
  DEFAULT_CONFIG,
  expertHidden,
  parseConfig,
  PRESET_NAMES,
  presetConfig,
  validateConfig,
  type ConfigOverrides,
  type ModelConfig,
} from '../../src/model/config.js';
import { Model } from '../../src/model/model.js';
import { paramSpecs } from '../../src/model/params.js';
import { microConfig } from './fixtures.js';

const be = new CpuBackend({ threads: 1 });
after(() => be.close());

/** Asserts `fn` throws a ConfigError whose message contains every part. */
function configError(fn: () => unknown, ...parts: string[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  for (const p of parts) assert.ok(err.message.includes(p), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(p)}`);
}

describe('config defaults (SPEC.md)', () => {
  it('every field has SPEC’s default', () => {
    const c = DEFAULT_CONFIG;
    assert.equal(c.modelType, 'moe-diffuseq');
    assert.equal(c.vocabSize, 30522); // bert-base-uncased, DiffuSeq's tokenizer
    assert.equal(c.embDim, 128); // e
    assert.equal(c.hidden, 768); // d
    assert.equal(c.layers, 12); // L
    assert.equal(c.heads, 12); // H
    assert.equal(c.globalTokens, 16); // G
    assert.equal(c.dropout, 0.1);
    assert.equal(c.diffusionSteps, 2000); // T
    assert.equal(c.schedule, 'sqrt');
    assert.equal(c.absorbing, true);
    assert.equal(c.gamma, 0.5);
    assert.equal(c.lossMask, 'target');
    assert.equal(c.timestepSampler, 'lossaware');
    assert.equal(c.seqLen, 128); // DiffuSeq's
    assert.equal(c.maxLen, 512);
    assert.deepEqual(c.attention, { kind: 'sliding', window: 128, dilation: 1 });
    assert.deepEqual(c.ffn, {
      kind: 'moe',
      experts: 8,
      expertHidden: null,
      topK: 2,
      auxWeight: 0.01,
      zWeight: 0.001,
      capacityFactor: null,
      sharedExperts: 0,
      balance: 'aux',
      biasRate: 0.001,
    });
    assert.doesNotThrow(() => validateConfig(structuredClone(c)));
  });

  it('expertHidden defaults to 2 d; an explicit value wins', () => {
    assert.equal(expertHidden(DEFAULT_CONFIG), 1536);
    assert.equal(expertHidden(presetConfig('tiny')), 256);
    assert.equal(expertHidden(presetConfig('tiny', { hidden: 40, heads: 4 })), 80);
    assert.equal(expertHidden(presetConfig('tiny', { ffn: { expertHidden: 24 } })), 24);
  });
});

describe('presets', () => {
  it('lists tiny, base, diffuseq-base and long', () => {
    assert.deepEqual([...PRESET_NAMES].sort(), ['base', 'diffuseq-base', 'long', 'tiny']);
  });

  it('tiny: e 64, d 128, 4 layers, 4 heads, 4 experts top-2, window 32, 4 global tokens, seqLen 128', () => {
    const c = presetConfig('tiny');
    assert.deepEqual(
      { e: c.embDim, d: c.hidden, L: c.layers, H: c.heads, E: c.ffn.experts, k: c.ffn.topK, w: c.attention.window, G: c.globalTokens, N: c.seqLen },
      { e: 64, d: 128, L: 4, H: 4, E: 4, k: 2, w: 32, G: 4, N: 128 },
    );
    assert.ok(c.maxLen >= c.seqLen);
    assert.equal(c.attention.kind, 'sliding');
    assert.equal(c.ffn.kind, 'moe');
    assert.equal(c.absorbing, true);
    assert.equal(c.diffusionSteps, 2000);
  });

  it('base is exactly the SPEC defaults', () => {
    assert.deepEqual(presetConfig('base'), DEFAULT_CONFIG);
    const c = presetConfig('base');
    assert.deepEqual([c.layers, c.hidden, c.ffn.experts, c.ffn.topK, c.attention.window, c.globalTokens], [12, 768, 8, 2, 128, 16]);
  });

  it('diffuseq-base: full attention, dense FFN, absorbing off, the rest as base', () => {
    const c = presetConfig('diffuseq-base');
    assert.equal(c.attention.kind, 'full');
    assert.equal(c.ffn.kind, 'dense');
    assert.equal(c.absorbing, false);
    const strip = (x: ModelConfig) => ({ ...x, absorbing: null, attention: { ...x.attention, kind: null }, ffn: { ...x.ffn, kind: null } });
    assert.deepEqual(strip(c), strip(DEFAULT_CONFIG));
  });

  it('long: base with seqLen 8192 and maxLen to match', () => {
    const c = presetConfig('long');
    assert.equal(c.seqLen, 8192);
    assert.equal(c.maxLen, 8192);
    assert.deepEqual({ ...c, seqLen: 0, maxLen: 0 }, { ...DEFAULT_CONFIG, seqLen: 0, maxLen: 0 });
  });

  it('overrides merge field by field (nested too) and are validated; presets are not mutated', () => {
    const c = presetConfig('tiny', { vocabSize: 100, attention: { kind: 'full' }, ffn: { topK: 1 } });
    assert.equal(c.vocabSize, 100);
    assert.deepEqual(c.attention, { kind: 'full', window: 32, dilation: 1 });
    assert.equal(c.ffn.experts, 4);
    assert.equal(c.ffn.topK, 1);
    assert.equal(presetConfig('tiny').attention.kind, 'sliding');
    assert.equal(presetConfig('tiny').ffn.topK, 2);
    c.ffn.experts = 99;
    assert.equal(presetConfig('tiny').ffn.experts, 4);
    assert.equal(DEFAULT_CONFIG.ffn.experts, 8);
    configError(() => presetConfig('tiny', { heads: 3 }), 'heads (3) must divide hidden (128)');
  });

  it('an unknown preset names the presets', () => {
    configError(() => presetConfig('huge'), "unknown preset 'huge'", 'tiny', 'base', 'diffuseq-base', 'long');
  });
});

describe('parseConfig and validateConfig messages', () => {
  const W = 'my/config.json';
  const bad = (raw: Record<string, unknown>, ...parts: string[]) => configError(() => parseConfig(raw, W), W, ...parts);

  it('a partial config is completed from the defaults; a full one round-trips through config.json', () => {
    const c = parseConfig({ hidden: 64, heads: 4, ffn: { experts: 2 } }, W);
    assert.deepEqual(c, { ...DEFAULT_CONFIG, hidden: 64, heads: 4, ffn: { ...DEFAULT_CONFIG.ffn, experts: 2 } });
    for (const name of PRESET_NAMES) {
      const p = presetConfig(name, { vocabSize: 77 });
      assert.deepEqual(parseConfig(JSON.parse(JSON.stringify(configToJson(p))), W), p, name);
    }
    const micro = microConfig({ ffn: { capacityFactor: 1.25, balance: 'bias' } });
    assert.deepEqual(parseConfig(configToJson(micro), W), micro);
    // a different base
    const t = parseConfig({ layers: 1 }, W, presetConfig('tiny'));
    assert.deepEqual(t, { ...presetConfig('tiny'), layers: 1 });
  });

  it('unknown fields, top level and nested', () => {
    bad({ hiddenSize: 768 }, "unknown field 'hiddenSize'");
    bad({ attention: { kind: 'full', size: 3 } }, "unknown field 'attention.size'");
    bad({ ffn: { numExperts: 8 } }, "unknown field 'ffn.numExperts'");
    bad({ attention: 'full' }, "'attention' must be an object");
    bad({ ffn: null }, "'ffn' must be an object");
    configError(() => parseConfig([], W), W, 'expected a JSON object');
    configError(() => parseConfig(null, W), W, 'expected a JSON object');
    bad({ modelType: 'bert' }, 'modelType must be "moe-diffuseq", got "bert"');
  });

  it('heads not dividing hidden, topK over experts, seqLen over maxLen', () => {
    bad({ hidden: 768, heads: 10 }, 'heads (10) must divide hidden (768)');
    bad({ ffn: { experts: 4, topK: 5 } }, 'ffn.topK (5) cannot exceed ffn.experts (4)');
    bad({ seqLen: 1024, maxLen: 512 }, 'seqLen (1024) is over maxLen (512)');
    assert.doesNotThrow(() => parseConfig({ seqLen: 512, maxLen: 512 }, W));
    assert.doesNotThrow(() => parseConfig({ ffn: { experts: 4, topK: 4 } }, W));
  });

  it('types and ranges of every field', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ vocabSize: 3 }, 'vocabSize must be an integer >= 4, got 3'],
      [{ vocabSize: '30522' }, 'vocabSize must be an integer >= 4, got "30522"'],
      [{ embDim: 0 }, 'embDim must be an integer >= 1, got 0'],
      [{ embDim: 1.5 }, 'embDim must be an integer >= 1, got 1.5'],
      [{ hidden: null }, 'hidden must be an integer >= 1, got null'],
      [{ layers: -1 }, 'layers must be an integer >= 0, got -1'],
      [{ heads: 0 }, 'heads must be an integer >= 1, got 0'],
      [{ maxLen: 0 }, 'maxLen must be an integer >= 1, got 0'],
      [{ seqLen: 2 }, 'seqLen must be an integer >= 4, got 2'],
      [{ globalTokens: -1 }, 'globalTokens must be an integer >= 0, got -1'],
      [{ dropout: 1 }, 'dropout must be a number in [0, 1), got 1'],
      [{ dropout: -0.1 }, 'dropout must be a number in [0, 1), got -0.1'],
      [{ diffusionSteps: 1 }, 'diffusionSteps must be an integer >= 2, got 1'],
      [{ schedule: 'quadratic' }, 'schedule must be one of sqrt, cosine, linear, got "quadratic"'],
      [{ absorbing: 1 }, 'absorbing must be true or false, got 1'],
      [{ gamma: 1.5 }, 'gamma must be a number in [0, 1], got 1.5'],
      [{ lossMask: 'source' }, 'lossMask must be one of target, all, got "source"'],
      [{ timestepSampler: 'importance' }, 'timestepSampler must be one of lossaware, uniform, got "importance"'],
      [{ attention: { kind: 'local' } }, 'attention.kind must be one of sliding, full, got "local"'],
      [{ attention: { window: -1 } }, 'attention.window must be an integer >= 0, got -1'],
      [{ attention: { dilation: 0 } }, 'attention.dilation must be an integer >= 1, got 0'],
      [{ ffn: { kind: 'sparse' } }, 'ffn.kind must be one of moe, dense, got "sparse"'],
      [{ ffn: { experts: 0, topK: 0 } }, 'ffn.experts must be an integer >= 1, got 0'],
      [{ ffn: { expertHidden: 0 } }, 'ffn.expertHidden must be an integer >= 1, got 0'],
      [{ ffn: { topK: 0 } }, 'ffn.topK must be an integer >= 1, got 0'],
      [{ ffn: { auxWeight: -0.01 } }, 'ffn.auxWeight must be a number in [0, Infinity], got -0.01'],
      [{ ffn: { zWeight: 'x' } }, 'ffn.zWeight must be a number in [0, Infinity], got "x"'],
      [{ ffn: { capacityFactor: 0 } }, 'ffn.capacityFactor must be a number in (0, Infinity], got 0'],
      [{ ffn: { sharedExperts: -1 } }, 'ffn.sharedExperts must be an integer >= 0, got -1'],
      [{ ffn: { balance: 'loss' } }, 'ffn.balance must be one of aux, bias, got "loss"'],
      [{ ffn: { biasRate: -1 } }, 'ffn.biasRate must be a number in [0, Infinity], got -1'],
    ];
    for (const [raw, msg] of cases) bad(raw, msg);
    // the valid edges
    for (const ok of [{ layers: 0 }, { globalTokens: 0 }, { dropout: 0 }, { gamma: 0 }, { gamma: 1 }, { attention: { window: 0 } }, { ffn: { capacityFactor: 1.25, expertHidden: 7, sharedExperts: 2 } }, { schedule: 'linear' }, { lossMask: 'all' }]) {
      assert.doesNotThrow(() => parseConfig(ok, W), JSON.stringify(ok));
    }
  });

  it('validateConfig checks a config built in code, with the default prefix', () => {
    configError(() => validateConfig({ ...DEFAULT_CONFIG, heads: 7 }), 'config: heads (7) must divide hidden (768)');
  });
});

describe('config.json layout (SPEC section 7)', () => {
  it('every field, camelCase, attention and ffn nested, modelType', () => {
    const j = configToJson(presetConfig('tiny', { vocabSize: 50 }));
    assert.deepEqual(Object.keys(j).sort(), [
      'absorbing', 'attention', 'diffusionSteps', 'dropout', 'embDim', 'ffn', 'gamma', 'globalTokens', 'heads', 'hidden', 'layers',
      'lossMask', 'maxLen', 'modelType', 'schedule', 'seqLen', 'timestepSampler', 'vocabSize',
    ].sort());
    assert.deepEqual(Object.keys(j['attention'] as object).sort(), ['dilation', 'kind', 'window']);
    assert.deepEqual(Object.keys(j['ffn'] as object).sort(), ['auxWeight', 'balance', 'biasRate', 'capacityFactor', 'expertHidden', 'experts', 'kind', 'sharedExperts', 'topK', 'zWeight']);
    assert.equal(j['modelType'], 'moe-diffuseq');
    assert.equal(j['vocabSize'], 50);
    // optional fields are written as null, not dropped
    assert.equal((j['ffn'] as Record<string, unknown>)['expertHidden'], null);
    assert.equal((j['ffn'] as Record<string, unknown>)['capacityFactor'], null);
  });
});

/** SPEC section 7's table, written out independently of params.ts. */
function specTable(c: ModelConfig): Map<string, number[]> {
  const { vocabSize: V, embDim: e, hidden: d, maxLen, globalTokens: G } = c;
  const t = new Map<string, number[]>();
  const lin = (name: string, out: number, inp: number) => {
    t.set(`${name}.weight`, [out, inp]);
    t.set(`${name}.bias`, [out]);
  };
  t.set('word_embeddings.weight', [V, e]);
  t.set('position_embeddings.weight', [maxLen, d]);
  lin('time_embed.0', 4 * e, e);
  lin('time_embed.2', d, 4 * e);
  lin('input_up_proj.0', d, e);
  lin('input_up_proj.2', d, d);
  t.set('input_norm.weight', [d]);
  t.set('input_norm.bias', [d]);
  if (G > 0) t.set('global_tokens', [G, d]);
  if (c.absorbing) t.set('mean_embed', [e]);
  const f = c.ffn.expertHidden ?? 2 * d;
  for (let i = 0; i < c.layers; i++) {
    for (const x of ['q', 'k', 'v', 'o']) lin(`layers.${i}.attn.${x}`, d, d);
    for (const n of ['attn_norm', 'ffn_norm']) {
      t.set(`layers.${i}.${n}.weight`, [d]);
      t.set(`layers.${i}.${n}.bias`, [d]);
    }
    if (c.ffn.kind === 'dense') {
      lin(`layers.${i}.ffn.fc1`, 4 * d, d);
      lin(`layers.${i}.ffn.fc2`, d, 4 * d);
    } else {
      const E = c.ffn.experts;
      t.set(`layers.${i}.ffn.router.weight`, [E, d]);
      if (c.ffn.balance === 'bias') t.set(`layers.${i}.ffn.expert_bias`, [E]);
      for (const [group, n] of [['experts', E], ['shared', c.ffn.sharedExperts]] as const) {
        if (n === 0) continue;
        t.set(`layers.${i}.ffn.${group}.fc1.weight`, [n, f, d]);
        t.set(`layers.${i}.ffn.${group}.fc1.bias`, [n, f]);
        t.set(`layers.${i}.ffn.${group}.fc2.weight`, [n, d, f]);
        t.set(`layers.${i}.ffn.${group}.fc2.bias`, [n, d]);
      }
    }
  }
  lin('output_down_proj.0', d, d);
  lin('output_down_proj.2', e, d);
  return t;
}

function specsOf(c: ModelConfig): Map<string, number[]> {
  const specs = paramSpecs(c);
  const m = new Map(specs.map((s) => [s.name, [...s.shape]]));
  assert.equal(m.size, specs.length, 'duplicate parameter names');
  return m;
}

describe('paramSpecs: SPEC section 7 names and shapes', () => {
  const small = (over: ConfigOverrides) => presetConfig('tiny', { vocabSize: 13, embDim: 6, hidden: 10, heads: 2, layers: 2, maxLen: 9, seqLen: 8, globalTokens: 3, ...over });

  it('moe (sliding, absorbing, global tokens)', () => {
    const c = small({ ffn: { experts: 3, topK: 2 } });
    const got = specsOf(c);
    assert.deepEqual(Object.fromEntries([...got].sort()), Object.fromEntries([...specTable(c)].sort()));
    // spot checks of the table against SPEC's text, with these numbers
    assert.deepEqual(got.get('word_embeddings.weight'), [13, 6]);
    assert.deepEqual(got.get('time_embed.0.weight'), [24, 6]);
    assert.deepEqual(got.get('time_embed.2.weight'), [10, 24]);
    assert.deepEqual(got.get('global_tokens'), [3, 10]);
    assert.deepEqual(got.get('mean_embed'), [6]);
    assert.deepEqual(got.get('layers.1.ffn.router.weight'), [3, 10]);
    assert.deepEqual(got.get('layers.1.ffn.experts.fc1.weight'), [3, 20, 10]);
    assert.deepEqual(got.get('layers.1.ffn.experts.fc2.weight'), [3, 10, 20]);
    assert.deepEqual(got.get('output_down_proj.2.weight'), [6, 10]);
    assert.ok(!got.has('layers.0.ffn.expert_bias'));
    assert.ok(!got.has('layers.0.ffn.shared.fc1.weight'));
    assert.ok(!got.has('layers.2.attn.q.weight'));
  });

  it('dense (full attention, absorbing off = diffuseq-base)', () => {
    const c = small({ absorbing: false, attention: { kind: 'full' }, ffn: { kind: 'dense' } });
    const got = specsOf(c);
    assert.deepEqual(Object.fromEntries([...got].sort()), Object.fromEntries([...specTable(c)].sort()));
    assert.deepEqual(got.get('layers.0.ffn.fc1.weight'), [40, 10]);
    assert.deepEqual(got.get('layers.0.ffn.fc2.weight'), [10, 40]);
    assert.ok(!got.has('mean_embed'));
    assert.ok(![...got.keys()].some((n) => n.includes('router') || n.includes('experts')));
  });

  it('shared experts, bias balancing (adds expert_bias, not trained), explicit expertHidden, no global tokens', () => {
    const c = small({ globalTokens: 0, ffn: { experts: 4, topK: 1, sharedExperts: 2, balance: 'bias', expertHidden: 7 } });
    const got = specsOf(c);
    assert.deepEqual(Object.fromEntries([...got].sort()), Object.fromEntries([...specTable(c)].sort()));
    assert.deepEqual(got.get('layers.0.ffn.expert_bias'), [4]);
    assert.deepEqual(got.get('layers.1.ffn.shared.fc1.weight'), [2, 7, 10]);
    assert.deepEqual(got.get('layers.1.ffn.shared.fc2.bias'), [2, 10]);
    assert.ok(!got.has('global_tokens'));
    const specs = paramSpecs(c);
    assert.deepEqual(specs.filter((s) => !s.trainable).map((s) => s.name), ['layers.0.ffn.expert_bias', 'layers.1.ffn.expert_bias']);
  });
});

describe('initialisation', () => {
  const stats = (a: ArrayLike<number>) => {
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < a.length; i++) {
      s += a[i]!;
      s2 += a[i]! ** 2;
    }
    const mean = s / a.length;
    return { mean, std: Math.sqrt(s2 / a.length - mean * mean) };
  };
  // e 256 and d 64 give tensors of 16K-64K values: sample stds within a few percent
  const cfg = presetConfig('tiny', { vocabSize: 200, embDim: 256, hidden: 64, heads: 4, layers: 1, maxLen: 64, seqLen: 64, globalTokens: 4, ffn: { experts: 2, topK: 1, expertHidden: 32 } });

  it('word embeddings N(0,1), weights N(0,0.02), biases 0, LayerNorm weights 1, mean_embed std e^-1/2', () => {
    const m = Model.init(cfg, be, 3);
    const get = (n: string) => be.toArray(m.params.get(n));
    const we = stats(get('word_embeddings.weight')); // 51200 values
    assert.ok(Math.abs(we.mean) < 0.02 && Math.abs(we.std - 1) < 0.03, `word embeddings ${JSON.stringify(we)}`);
    for (const n of ['time_embed.0.weight', 'time_embed.2.weight', 'input_up_proj.0.weight', 'position_embeddings.weight', 'layers.0.attn.q.weight', 'layers.0.ffn.experts.fc1.weight', 'output_down_proj.2.weight']) {
      const s = stats(get(n));
      assert.ok(Math.abs(s.mean) < 0.002 && Math.abs(s.std - 0.02) < 0.002, `${n} ${JSON.stringify(s)}`);
    }
    for (const spec of m.params.specs) {
      const v = get(spec.name);
      if (spec.name.endsWith('.bias')) assert.ok(v.every((x) => x === 0), `${spec.name} not zero`);
      if (/norm\.weight$/.test(spec.name)) assert.ok(v.every((x) => x === 1), `${spec.name} not one`);
      if (spec.init.kind === 'normal') assert.ok(v.some((x) => x !== 0), `${spec.name} all zero`);
    }
    assert.deepEqual(m.params.specs.filter((s) => /norm\.weight$/.test(s.name)).map((s) => s.name), ['input_norm.weight', 'layers.0.attn_norm.weight', 'layers.0.ffn_norm.weight']);
    // mean_embed has only e = 256 values: pool 8 seeds (2048 values) for its std 1/16
    const pooled: number[] = [];
    for (let seed = 10; seed < 18; seed++) {
      const mm = Model.init(cfg, be, seed);
      pooled.push(...be.toArray(mm.params.get('mean_embed')));
      mm.dispose();
    }
    const me = stats(pooled);
    assert.ok(Math.abs(me.std - 1 / 16) < 0.006 && Math.abs(me.mean) < 0.006, `mean_embed ${JSON.stringify(me)}`);
    m.dispose();
  });

  it('is deterministic in the seed, different across seeds, and the same values in float32 and float64', () => {
    const c = microConfig();
    const a = Model.init(c, be, 42);
    const b = Model.init(c, be, 42);
    const d = Model.init(c, be, 43);
    const x = Model.init(c, be, 42, 'float64');
    const fa = be.toArray(a.params.flat);
    assert.deepEqual(Array.from(be.toArray(b.params.flat)), Array.from(fa));
    const fd = be.toArray(d.params.flat);
    let differ = 0;
    for (let i = 0; i < fa.length; i++) if (fa[i] !== fd[i]) differ++;
    const normal = paramSpecs(c).filter((s) => s.init.kind === 'normal').reduce((s, p) => s + p.shape.reduce((u, v) => u * v, 1), 0);
    assert.equal(differ, normal, 'every normal-initialised value changes with the seed');
    const fx = be.toArray(x.params.flat);
    assert.ok(fx instanceof Float64Array);
    assert.deepEqual(Array.from(fa), Array.from(fx, (v) => Math.fround(v)));
    for (const m of [a, b, d, x]) m.dispose();
  });
});
