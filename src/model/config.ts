/**
 * The model configuration (SPEC.md sections 2-4 and 7): every field with its default, the presets,
 * validation with clear messages, and the config.json layout (camelCase, attention and FFN nested).
 */
import { ConfigError } from '../errors.js';

/** Attention fields (`config.json` "attention"). */
export interface AttentionConfig {
  /** `sliding` (window + global tokens, linear cost) or `full` (the DiffuSeq baseline). */
  kind: 'sliding' | 'full';
  /** One-sided window w: position i attends j with |i - j| <= w (times dilation). */
  window: number;
  /** Spacing r of the window: i attends i + r k for |k| <= w. */
  dilation: number;
}

/** Feed-forward fields (`config.json` "ffn"). */
export interface FfnConfig {
  /** `moe` (mixture of experts) or `dense` (Linear(d, 4d) -> GELU -> Linear(4d, d)). */
  kind: 'moe' | 'dense';
  /** Number of experts E. */
  experts: number;
  /** Expert hidden size f; null means 2 * hidden (so top-2 costs what the dense FFN costs). */
  expertHidden: number | null;
  /** Experts chosen per token. */
  topK: number;
  /** Weight of the Switch balance loss. */
  auxWeight: number;
  /** Weight of the router z-loss. */
  zWeight: number;
  /** Per-sequence expert capacity factor; null = dropless. */
  capacityFactor: number | null;
  /** Always-on shared experts (DeepSeekMoE), each of hidden size f. */
  sharedExperts: number;
  /** `aux` (balance loss only) or `bias` (auxiliary-loss-free bias balancing, DeepSeek-V3). */
  balance: 'aux' | 'bias';
  /** Step of the bias update for balance "bias". */
  biasRate: number;
}

/** The full model configuration. */
export interface ModelConfig {
  modelType: 'moe-diffuseq';
  /** Vocabulary size V (the tokenizer's). */
  vocabSize: number;
  /** Word embedding size e (the diffusion space). */
  embDim: number;
  /** Transformer width d. */
  hidden: number;
  /** Number of transformer blocks L. */
  layers: number;
  /** Attention heads H (must divide hidden). */
  heads: number;
  /** Rows of the learned position table (the longest sequence the model can take). */
  maxLen: number;
  /** Sequence length N used in training and sampling (padded with [PAD]). */
  seqLen: number;
  /** Learned global tokens G in front of the sequence. */
  globalTokens: number;
  /** Dropout probability (training only). */
  dropout: number;
  /** Diffusion steps T. */
  diffusionSteps: number;
  /** Noise schedule. */
  schedule: 'sqrt' | 'cosine' | 'linear';
  /** Soft absorbing state on (learned vector m, random replacement of target positions). */
  absorbing: boolean;
  /** Replacement probability factor: p = gamma sqrt(1 - alphaBar_t). */
  gamma: number;
  /** `target` (SPEC: loss over target positions) or `all` (DiffuSeq's code: source positions too). */
  lossMask: 'target' | 'all';
  /** Timestep sampler of training. */
  timestepSampler: 'lossaware' | 'uniform';
  attention: AttentionConfig;
  ffn: FfnConfig;
}

/** A partial configuration (nested parts partial too), as presets and users write them. */
export type ConfigOverrides = Partial<Omit<ModelConfig, 'attention' | 'ffn'>> & {
  attention?: Partial<AttentionConfig>;
  ffn?: Partial<FfnConfig>;
};

/** SPEC defaults. maxLen and seqLen are not fixed by SPEC: 512 and DiffuSeq's 128. */
export const DEFAULT_CONFIG: ModelConfig = {
  modelType: 'moe-diffuseq',
  vocabSize: 30522,
  embDim: 128,
  hidden: 768,
  layers: 12,
  heads: 12,
  maxLen: 512,
  seqLen: 128,
  globalTokens: 16,
  dropout: 0.1,
  diffusionSteps: 2000,
  schedule: 'sqrt',
  absorbing: true,
  gamma: 0.5,
  lossMask: 'target',
  timestepSampler: 'lossaware',
  attention: { kind: 'sliding', window: 128, dilation: 1 },
  ffn: {
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
  },
};

/** Named presets. */
export const PRESETS: Readonly<Record<string, ConfigOverrides>> = {
  /** The CPU demo model: small enough to train in minutes on two cores. */
  tiny: {
    embDim: 64,
    hidden: 128,
    layers: 4,
    heads: 4,
    maxLen: 128,
    seqLen: 128,
    globalTokens: 4,
    attention: { window: 32 },
    ffn: { experts: 4, topK: 2 },
  },
  /** SPEC defaults: 12 layers, 768 hidden, 8 experts top-2, window 128, 16 global tokens. */
  base: {},
  /**
   * The DiffuSeq baseline inside this system: full attention, dense FFN, absorbing state off (the
   * other fields, global tokens included, as `base`, which is also how the PyTorch peer defines it).
   */
  'diffuseq-base': { attention: { kind: 'full' }, ffn: { kind: 'dense' }, absorbing: false },
  /** `base` for long documents: seqLen 8192. */
  long: { seqLen: 8192, maxLen: 8192 },
};

/** Names of the presets. */
export const PRESET_NAMES = Object.keys(PRESETS);

const TOP_KEYS = new Set(Object.keys(DEFAULT_CONFIG));
const ATT_KEYS = new Set(Object.keys(DEFAULT_CONFIG.attention));
const FFN_KEYS = new Set(Object.keys(DEFAULT_CONFIG.ffn));

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Merges overrides into a base config (nested parts merged field by field). */
export function mergeConfig(base: ModelConfig, over: ConfigOverrides): ModelConfig {
  return {
    ...base,
    ...(over as Partial<ModelConfig>),
    attention: { ...base.attention, ...(over.attention ?? {}) },
    ffn: { ...base.ffn, ...(over.ffn ?? {}) },
  };
}

/** The configuration of a preset, with optional overrides; validated. */
export function presetConfig(name: string, over: ConfigOverrides = {}): ModelConfig {
  const p = PRESETS[name];
  if (!p) throw new ConfigError(`unknown preset '${name}' (presets: ${PRESET_NAMES.join(', ')})`);
  return validateConfig(mergeConfig(mergeConfig(DEFAULT_CONFIG, p), over));
}

/**
 * Parses a config object (config.json, or a user's partial config over defaults): unknown fields and
 * wrong types are errors naming the field. `where` prefixes messages (a file name).
 */
export function parseConfig(raw: unknown, where = 'config', base: ModelConfig = DEFAULT_CONFIG): ModelConfig {
  if (!isObject(raw)) throw new ConfigError(`${where}: expected a JSON object`);
  for (const k of Object.keys(raw)) if (!TOP_KEYS.has(k)) throw new ConfigError(`${where}: unknown field '${k}'`, `fields: ${[...TOP_KEYS].join(', ')}`);
  if (raw['modelType'] !== undefined && raw['modelType'] !== 'moe-diffuseq') throw new ConfigError(`${where}: modelType must be "moe-diffuseq", got ${JSON.stringify(raw['modelType'])}`);
  for (const [key, keys] of [['attention', ATT_KEYS], ['ffn', FFN_KEYS]] as const) {
    const sub = raw[key];
    if (sub === undefined) continue;
    if (!isObject(sub)) throw new ConfigError(`${where}: '${key}' must be an object`);
    for (const k of Object.keys(sub)) if (!keys.has(k)) throw new ConfigError(`${where}: unknown field '${key}.${k}'`, `fields: ${[...keys].join(', ')}`);
  }
  return validateConfig(mergeConfig(base, raw as ConfigOverrides), where);
}

/** Checks every field's type and range, and their consistency; returns the config. */
export function validateConfig(c: ModelConfig, where = 'config'): ModelConfig {
  const fail = (msg: string): never => {
    throw new ConfigError(`${where}: ${msg}`);
  };
  const int = (name: string, v: unknown, min: number) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(`${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  };
  const num = (name: string, v: unknown, lo: number, hi: number, loOpen = false, hiOpen = false) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || (loOpen ? v <= lo : v < lo) || (hiOpen ? v >= hi : v > hi)) {
      fail(`${name} must be a number in ${loOpen ? '(' : '['}${lo}, ${hi}${hiOpen ? ')' : ']'}, got ${JSON.stringify(v)}`);
    }
  };
  const oneOf = (name: string, v: unknown, options: readonly string[]) => {
    if (typeof v !== 'string' || !options.includes(v)) fail(`${name} must be one of ${options.join(', ')}, got ${JSON.stringify(v)}`);
  };
  const bool = (name: string, v: unknown) => {
    if (typeof v !== 'boolean') fail(`${name} must be true or false, got ${JSON.stringify(v)}`);
  };
  int('vocabSize', c.vocabSize, 4);
  int('embDim', c.embDim, 1);
  int('hidden', c.hidden, 1);
  int('layers', c.layers, 0);
  int('heads', c.heads, 1);
  int('maxLen', c.maxLen, 1);
  int('seqLen', c.seqLen, 4);
  int('globalTokens', c.globalTokens, 0);
  num('dropout', c.dropout, 0, 1, false, true);
  int('diffusionSteps', c.diffusionSteps, 2);
  oneOf('schedule', c.schedule, ['sqrt', 'cosine', 'linear']);
  bool('absorbing', c.absorbing);
  num('gamma', c.gamma, 0, 1);
  oneOf('lossMask', c.lossMask, ['target', 'all']);
  oneOf('timestepSampler', c.timestepSampler, ['lossaware', 'uniform']);
  oneOf('attention.kind', c.attention.kind, ['sliding', 'full']);
  int('attention.window', c.attention.window, 0);
  int('attention.dilation', c.attention.dilation, 1);
  oneOf('ffn.kind', c.ffn.kind, ['moe', 'dense']);
  int('ffn.experts', c.ffn.experts, 1);
  if (c.ffn.expertHidden !== null) int('ffn.expertHidden', c.ffn.expertHidden, 1);
  int('ffn.topK', c.ffn.topK, 1);
  num('ffn.auxWeight', c.ffn.auxWeight, 0, Infinity);
  num('ffn.zWeight', c.ffn.zWeight, 0, Infinity);
  if (c.ffn.capacityFactor !== null) num('ffn.capacityFactor', c.ffn.capacityFactor, 0, Infinity, true);
  int('ffn.sharedExperts', c.ffn.sharedExperts, 0);
  oneOf('ffn.balance', c.ffn.balance, ['aux', 'bias']);
  num('ffn.biasRate', c.ffn.biasRate, 0, Infinity);
  if (c.hidden % c.heads !== 0) fail(`heads (${c.heads}) must divide hidden (${c.hidden})`);
  if (c.ffn.topK > c.ffn.experts) fail(`ffn.topK (${c.ffn.topK}) cannot exceed ffn.experts (${c.ffn.experts})`);
  if (c.seqLen > c.maxLen) fail(`seqLen (${c.seqLen}) is over maxLen (${c.maxLen}): the position table has maxLen rows`);
  return c;
}

/** Expert hidden size f (the default 2 d applied). */
export function expertHidden(c: ModelConfig): number {
  return c.ffn.expertHidden ?? 2 * c.hidden;
}

/** The config.json object (SPEC section 7): every field, camelCase, attention and ffn nested. */
export function configToJson(c: ModelConfig): Record<string, unknown> {
  return JSON.parse(JSON.stringify(c)) as Record<string, unknown>;
}
