/**
 * Agreement with Hugging Face `tokenizers`: test/fixtures/tokenizer-refs.json holds the ids (and the
 * decoded text) that HF gives for the strings in test/fixtures/gen/tokenizer_refs.py, for the bundled
 * BERT, for GPT-2 and for the trained-small fixture. Regenerate it with that script.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { defaultTokenizer, loadTokenizer, type PipelineTokenizer } from '../../src/tokenizer/index.js';
import { gpt2Dir, repoPath } from './util.js';

interface Ref {
  text: string;
  ids: number[];
  tokens: string[];
  decoded: string;
}
type Refs = { tokenizers_version: string } & Record<'bert' | 'gpt2' | 'trained', Ref[]>;

const file = repoPath('test/fixtures/tokenizer-refs.json');
const refs: Refs | undefined = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Refs) : undefined;
const noRefs = refs ? false : 'test/fixtures/tokenizer-refs.json is missing: run test/fixtures/gen/tokenizer_refs.py where HF tokenizers is installed';

function compare(tok: PipelineTokenizer, list: readonly Ref[]): void {
  assert.ok(list.length > 0);
  for (const r of list) {
    const label = JSON.stringify(r.text).slice(0, 80);
    assert.deepEqual(tok.encode(r.text), r.ids, `ids of ${label} (HF tokens ${JSON.stringify(r.tokens)})`);
    assert.equal(tok.decode(r.ids), r.decoded, `decode of ${label}`);
  }
}

describe(`agreement with HF tokenizers ${refs?.tokenizers_version ?? ''}`, () => {
  it('bert-base-uncased: ids and decoded text', { skip: noRefs }, () => {
    compare(defaultTokenizer(), refs!.bert);
  });
  it('the trained-small tokenizer (HF loads our file and agrees)', { skip: noRefs }, () => {
    compare(loadTokenizer(repoPath('test/fixtures/tokenizers/trained-small')), refs!.trained);
  });
  const gpt2 = gpt2Dir();
  it('GPT-2: ids and decoded text', { skip: noRefs || (gpt2 ? false : 'GPT-2 tokenizer.json not on this machine (set MOE_DIFFUSEQ_GPT2_DIR)') }, () => {
    compare(loadTokenizer(gpt2!), refs!.gpt2);
  });
});
