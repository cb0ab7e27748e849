/**
 * evaluate(), MBR selection (SPEC section 5, DiffuSeq's selectBest), exact match, mean length and
 * the option parsing helpers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  corpusBleu,
  corpusRouge,
  diffuseqBleu,
  evaluate,
  exactMatch,
  mbrSelect,
  meanLength,
  meanSentenceBleu,
  MetricError,
  METRICS,
  parseMetricList,
  transposeStreams,
} from '../../src/eval/index.js';

function close(actual: number | null | undefined, expected: number, tol: number, label = ''): void {
  assert.ok(typeof actual === 'number' && Math.abs(actual - expected) <= tol, `${label}: ${actual} vs ${expected} (tolerance ${tol})`);
}

const STREAMS = [
  ['The dog bit the man.', 'It was not unexpected.', 'The man bit him first.'],
  ['The dog had bit the man.', 'No one was surprised.', 'The man had bitten the dog.'],
];
const HYPS = ['The dog bit the man.', "It wasn't surprising.", 'The man had just bitten him.'];

describe('mbrSelect', () => {
  it("sums get_bleu(c_i, c_j) over j != i (DiffuSeq's row), which is not symmetric (hand-computed)", () => {
    // get_bleu('a b', 'a b c d'): hypothesis 'a b c d' vs reference 'a b': p = 2/4, 1/3, 0/2, 0/1,
    //   method4 with hyp_len 4: p3 = (ln4/10)/2, p4 = ln4/20; BP 1 -> (1/2 * 1/3 * ln4/20 * ln4/20)^(1/4) = 0.1682
    // get_bleu('a b c d', 'a b'): hypothesis 'a b': p = 1, 1, 0/1, 0/1 -> p3 = ln2/10, p4 = ln2/20;
    //   BP exp(1 - 4/2) -> e^-1 (ln2/10 * ln2/20)^(1/4) = 0.0814
    const ab = Math.pow((1 / 2) * (1 / 3) * (Math.log(4) / 20) * (Math.log(4) / 20), 0.25);
    const abcd = Math.exp(-1) * Math.pow((Math.log(2) / 10) * (Math.log(2) / 20), 0.25);
    close(diffuseqBleu('a b', 'a b c d'), ab, 1e-15, 'row of a b');
    close(diffuseqBleu('a b c d', 'a b'), abcd, 1e-15, 'row of a b c d');
    // the short candidate has the larger row sum wherever it is (the column sums would pick the other)
    assert.equal(mbrSelect(['a b', 'a b c d']), 0);
    assert.equal(mbrSelect(['a b c d', 'a b']), 1);
  });
  it('picks the consensus candidate; ties go to the lower index', () => {
    // rows: 'e f g h' scores 0 + 0; each 'a b c d' scores 1 (its twin) + 0 -> tie between 1 and 2
    assert.equal(mbrSelect(['e f g h', 'a b c d', 'a b c d']), 1);
    assert.equal(mbrSelect(['x', 'y', 'z']), 0);
    assert.equal(mbrSelect(['only']), 0);
    assert.throws(() => mbrSelect([]), MetricError);
  });
});

describe('exactMatch and meanLength', () => {
  it('exact match compares whitespace-normalised strings against every reference', () => {
    // sentence 1 equals its second reference after collapsing spaces; sentence 2 differs in case
    assert.equal(exactMatch(['  a  b ', 'The end'], [['x', 'a b'], ['the end']]), 0.5);
  });
  it('mean length counts whitespace tokens (an empty output has 0)', () => {
    // 2 + 0 + 3 tokens over 3 outputs
    assert.equal(meanLength(['a b', '', ' x\ty  z ']), 5 / 3);
  });
});

describe('evaluate', () => {
  const refs = transposeStreams(STREAMS);
  it('returns every metric, each equal to its own module', () => {
    const r = evaluate(HYPS, refs);
    assert.equal(r.sentences, 3);
    close(r.bleu, 48.530827, 1e-8, 'bleu');
    assert.equal(r.bleuSignature, 'nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp');
    close(r.sentenceBleu, meanSentenceBleu(HYPS, refs), 0, 'sentenceBleu');
    const rouge = corpusRouge(HYPS, refs);
    close(r.rougeL, rouge.rougeL, 0, 'rougeL');
    close(r.rouge1, rouge.rouge1, 0, 'rouge1');
    close(r.rouge2, rouge.rouge2, 0, 'rouge2');
    // every output has distinct words: dist1 = 1
    close(r.dist1, 1, 0, 'dist1');
    // only the first output equals a reference
    close(r.exactMatch, 1 / 3, 1e-15, 'exactMatch');
    // 5 + 3 + 6 whitespace tokens
    close(r.meanLength, 14 / 3, 1e-15, 'meanLength');
    assert.equal(r.selfBleu, null);
    assert.equal(r.div4, null);
  });
  it('computes only the requested metrics, and diversity from samples', () => {
    const r = evaluate(['a b c d', 'e f g h'], [['a b c d'], ['x']], {
      metrics: ['selfBleu', 'div4'],
      samples: [
        ['a b c d', 'a b c d'],
        ['e f g h', 'x'],
      ],
    });
    assert.deepEqual(Object.keys(r).sort(), ['div4', 'selfBleu', 'sentences']);
    close(r.selfBleu, 0.5, 1e-15, 'selfBleu');
    close(r.div4, 0.75, 1e-15, 'div4');
  });
  it('applies lowercase to every metric and passes bleu options through', () => {
    assert.equal(evaluate(['The Cat'], [['the cat']], { metrics: ['exactMatch'] }).exactMatch, 0);
    assert.equal(evaluate(['The Cat'], [['the cat']], { metrics: ['exactMatch'], lowercase: true }).exactMatch, 1);
    const r = evaluate(HYPS, refs, { metrics: ['bleu'], tokenize: 'intl', lowercase: true });
    close(r.bleu, corpusBleu(HYPS, refs, { tokenize: 'intl', lowercase: true }).score, 0, 'bleu intl lc');
    assert.equal(r.bleuSignature, 'nrefs:2|case:lc|eff:no|tok:intl|smooth:exp');
    const f = evaluate(HYPS, refs, { metrics: ['bleu'], smoothMethod: 'floor', smoothValue: 0.5 });
    assert.equal(f.bleuSignature, 'nrefs:2|case:mixed|eff:no|tok:13a|smooth:floor[0.50]');
  });
  it('sentence-bleu order can be switched to NLTK order', () => {
    const d = evaluate(['John loves Mary who loves Mike'], [['John loves Mary']], { metrics: ['sentenceBleu'] });
    const n = evaluate(['John loves Mary who loves Mike'], [['John loves Mary']], { metrics: ['sentenceBleu'], sentenceBleuOrder: 'nltk' });
    close(d.sentenceBleu, 0.2117954526, 1e-10, 'diffuseq');
    close(n.sentenceBleu, 0.2337664138, 1e-10, 'nltk');
  });
  it('refuses mismatched lengths, an empty corpus, a sentence without reference', () => {
    assert.throws(() => evaluate(['a'], [['a'], ['b']]), MetricError);
    assert.throws(() => evaluate([], []), /no sentences/);
    assert.throws(
      () => evaluate(['a', 'b'], [['a'], []]),
      (e: unknown) => e instanceof MetricError && e.index === 1,
    );
    assert.throws(() => evaluate(['a'], [['a']], { samples: [] }), MetricError);
  });
});

describe('parseMetricList and transposeStreams', () => {
  it('accepts kebab, camel and alias spellings, keeps report order, rejects unknown names', () => {
    assert.deepEqual(parseMetricList('rougeL,sentence-bleu,BLEU,length,self_bleu'), ['bleu', 'sentenceBleu', 'rougeL', 'selfBleu', 'meanLength']);
    assert.deepEqual(parseMetricList('all'), [...METRICS]);
    assert.throws(() => parseMetricList('bleu,meteor'), /unknown metric 'meteor'/);
    assert.throws(() => parseMetricList(' , '), MetricError);
  });
  it('transposes streams and checks their lengths', () => {
    assert.deepEqual(
      transposeStreams([
        ['a1', 'b1'],
        ['a2', 'b2'],
      ]),
      [
        ['a1', 'a2'],
        ['b1', 'b2'],
      ],
    );
    assert.throws(() => transposeStreams([['a'], ['a', 'b']]), MetricError);
  });
});
