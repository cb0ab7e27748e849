/**
 * moe-diffuseq: the library entry point. Long-document diffusion language models (MoE-DiffuSeq)
 * trained, sampled and evaluated from Node.js.
 */
export type { Backend, Tensor, DType, FloatDType } from './backend/backend.js';
export { CpuBackend, type CpuBackendOptions } from './backend/cpu/backend.js';
export { createBackend } from './backend/create.js';
export { PhiloxStream } from './backend/philox.js';
export * from './errors.js';
export { VERSION } from './version.js';
export { DEFAULT_CONFIG, PRESETS, PRESET_NAMES, presetConfig, parseConfig, type ModelConfig, type ConfigOverrides } from './model/config.js';
export { Model, resolvePrecision, PRECISIONS, type Precision } from './model/model.js';
export { diffusionLoss, drawNoise, queueDiffusionLoss, type LossBatch, type LossNoise, type LossTerms, type PendingLoss } from './diffusion/loss.js';
export { alphaBars } from './diffusion/schedule.js';
export { loadModel, saveModel, type LoadedModel } from './io/checkpoint.js';
export { readSafetensors, writeSafetensors } from './io/safetensors.js';
export { train, type TrainResult, type TrainControls } from './train/trainer.js';
export { DEFAULT_TRAIN_OPTIONS, type TrainOptions } from './train/options.js';
export { resolveModelDir } from './train/checkpoints.js';
export { runDemo } from './train/demo.js';
export { generate, type GenerateOptions, type Generated } from './sample/generate.js';
export { load, type LoadedDiffusionModel, type LoadOptions as SampleLoadOptions } from './sample/load.js';
export { SamplingGraphs, sampleIds, samplingTimesteps } from './sample/sampler.js';
export * from './eval/index.js';
export * from './tokenizer/index.js';
export * from './data/index.js';
