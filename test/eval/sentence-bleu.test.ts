/**
 * NLTK sentence BLEU and DiffuSeq's use of it: the values NLTK publishes in its doctests and unit
 * tests (nltk/nltk, nltk/translate/bleu_score.py and nltk/test/unit/translate/test_bleu.py, NLTK
 * 3.9/3.10), and hand-computed method4 cases in both argument orders.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { diffuseqBleu, fsum, meanSentenceBleu, nltkSentenceBleu, sentenceBleu } from '../../src/eval/index.js';

const split = (s: string): string[] => s.split(' ');

function close(actual: number, expected: number, tol: number, label = ''): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${label}: ${actual} vs ${expected} (tolerance ${tol})`);
}

// the doctest sentences of nltk/translate/bleu_score.py
const HYP1 = split('It is a guide to action which ensures that the military always obeys the commands of the party');
const HYP2 = split('It is to insure the troops forever hearing the activity guidebook that party direct');
const REF1 = split('It is a guide to action that ensures that the military will forever heed Party commands');
const REF2 = split('It is the guiding principle which guarantees the military forces always being under the command of the Party');
const REF3 = split('It is the practical guide for the army always to heed the directions of the party');
const NONE = { smoothing: 'method0' } as const;
const a = (n: number): string[] => new Array<string>(n).fill('a');

describe('nltkSentenceBleu against published NLTK values', () => {
  it('sentence_bleu doctests (no smoothing): 0.5045..., 0.0, BLEU-5 0.3920..., BLEU-2 0.7453..., BLEU-3 0.6240...', () => {
    const refs = [REF1, REF2, REF3];
    assert.equal(nltkSentenceBleu(refs, HYP1, NONE).toFixed(4), '0.5046');
    assert.ok(nltkSentenceBleu(refs, HYP1, NONE).toString().startsWith('0.5045'));
    assert.equal(Number(nltkSentenceBleu(refs, HYP2, NONE).toFixed(4)), 0);
    assert.ok(nltkSentenceBleu(refs, HYP1, { ...NONE, weights: [0.2, 0.2, 0.2, 0.2, 0.2] }).toString().startsWith('0.3920'));
    assert.ok(nltkSentenceBleu(refs, HYP1, { ...NONE, weights: [0.5, 0.5] }).toString().startsWith('0.7453'));
    assert.ok(nltkSentenceBleu(refs, HYP1, { ...NONE, weights: [1 / 3, 1 / 3, 1 / 3] }).toString().startsWith('0.6240'));
  });
  it('SmoothingFunction doctest: method0 and method4 both give 0.4118... (no zero count to smooth)', () => {
    assert.ok(nltkSentenceBleu([REF1], HYP1, NONE).toString().startsWith('0.4118'));
    assert.ok(nltkSentenceBleu([REF1], HYP1).toString().startsWith('0.4118'));
  });
  it('brevity_penalty doctests, through sentences of one repeated token (every precision 1, so BLEU = BP)', () => {
    assert.equal(nltkSentenceBleu([a(28), a(28)], a(12), NONE), 0.2635971381157267);
    assert.ok(nltkSentenceBleu([a(13), a(2)], a(12), NONE).toString().startsWith('0.9200'));
    // equal distance to 13 and 11: the shorter (11) is used, so no penalty
    assert.equal(nltkSentenceBleu([a(13), a(11)], a(12), NONE), 1);
    assert.ok(nltkSentenceBleu([a(11), a(8)], a(7), NONE).toString().startsWith('0.8668'));
    assert.equal(nltkSentenceBleu([a(11), a(8), a(6), a(7)], a(7), NONE), 1);
  });
  it('test_bleu.py: zero matches, full matches, fringe cases', () => {
    const noAlign = [split('The candidate has no alignment to any of the references')];
    for (let n = 1; n < 3; n++) {
      const w = new Array<number>(n).fill(1 / n);
      assert.equal(nltkSentenceBleu(noAlign, split('John loves Mary'), { ...NONE, weights: w }), 0);
      assert.equal(nltkSentenceBleu([split('John loves Mary')], split('John loves Mary'), { ...NONE, weights: w }), 1);
    }
    close(nltkSentenceBleu([split('John loves Mary')], split('John loves Mary who loves Mike'), NONE), 0, 1e-4, 'partial');
    close(nltkSentenceBleu([split('John loves Mary ?')], split('John loves Mary'), NONE), 0, 1e-4, 'n > len(hyp)');
    assert.equal(nltkSentenceBleu(noAlign, [], NONE), 0);
    assert.equal(nltkSentenceBleu([[]], split('John loves Mary'), NONE), 0);
    assert.equal(nltkSentenceBleu([[]], [], NONE), 0);
    close(nltkSentenceBleu([split('let it go')], split('let go it'), NONE), 0, 1e-4, 'let it go');
    // test_length_one_hypothesis: method4 on a one-token hypothesis without match must not throw
    assert.equal(nltkSentenceBleu(noAlign, ['Foo']), 0);
  });
});

describe('method4 and the DiffuSeq argument order (hand-computed)', () => {
  it('smooths a zero count by ln(hyp_len) / (2^k * 5) over the true n-gram count', () => {
    // hyp 'the cat sat on the mat' vs 'the cat is on the mat': p = 5/6, 3/5, 1/4, 0/3
    // method4: p4 = (1 / (2 * 5 / ln 6)) / 3 = ln 6 / 30; BP = 1 (equal lengths)
    const expected = Math.pow((5 / 6) * (3 / 5) * (1 / 4) * (Math.log(6) / 30), 0.25);
    close(nltkSentenceBleu([split('the cat is on the mat')], split('the cat sat on the mat')), expected, 1e-15, 'method4');
    close(expected, 0.2939457035, 1e-10, 'value');
  });
  it("DiffuSeq's get_bleu(recover, reference) puts the output in NLTK's reference slot", () => {
    const recover = 'John loves Mary who loves Mike';
    const reference = 'John loves Mary';
    // DiffuSeq: hypothesis = 'John loves Mary' (3), reference = recover (6):
    // p = 3/3, 2/2, 1/1, 0/1 -> p4 = ln 3 / 10; BP = exp(1 - 6/3)
    const diffuseq = Math.exp(-1) * Math.pow(Math.log(3) / 10, 0.25);
    // NLTK order: hypothesis = recover: p = 3/6, 2/5, 1/4, 0/3 -> p4 = ln 6 / 30; BP = 1 (6 > 3)
    const nltk = Math.pow(0.5 * 0.4 * 0.25 * (Math.log(6) / 30), 0.25);
    close(diffuseqBleu(recover, reference), diffuseq, 1e-15, 'diffuseq');
    close(sentenceBleu(recover, [reference]), diffuseq, 1e-15, 'default order');
    close(sentenceBleu(recover, [reference], 'nltk'), nltk, 1e-15, 'nltk order');
    close(diffuseq, 0.2117954526, 1e-10, 'diffuseq value');
    close(nltk, 0.2337664138, 1e-10, 'nltk value');
  });
  it('a one-token hypothesis: method4 does not smooth, the zero orders are left out (NLTK >= 3.9)', () => {
    // DiffuSeq order with reference 'yes' and output 'yes it is': hypothesis ['yes'], p1 = 1/1,
    // p2..p4 = 0/1 unsmoothed (hyp_len 1) and skipped; BP = exp(1 - 3/1) -> e^-2
    close(diffuseqBleu('yes it is', 'yes'), Math.exp(-2), 1e-15, 'one token');
  });
  it('nltk order uses every reference; diffuseq order the first', () => {
    // NLTK order: 'a b' against refs 'x y' and 'a b' -> identical to the second: 1... but only
    // 2 tokens: p3 = p4 = 0/1 smoothed with ln 2: (1 * 1 * ln2/10 * ln2/20)^(1/4)
    const both = Math.pow(((Math.log(2) / 10) * Math.log(2)) / 20, 0.25);
    close(sentenceBleu('a b', ['x y', 'a b'], 'nltk'), both, 1e-15, 'nltk');
    assert.equal(sentenceBleu('a b', ['x y', 'a b'], 'diffuseq'), 0);
  });
  it('meanSentenceBleu averages over sentences', () => {
    // identical 4-token sentences score 1; no overlap scores 0
    close(meanSentenceBleu(['a b c d', 'p q'], [['a b c d'], ['x y']]), 0.5, 1e-15, 'mean');
  });
});

describe('fsum (Python math.fsum, which NLTK uses to add the weighted logs)', () => {
  it('is exactly rounded: the Python documentation example and cancellation cases', () => {
    // docs.python.org math.fsum: sum([.1] * 10) = 0.9999999999999999 but fsum gives 1.0
    assert.equal(fsum(new Array<number>(10).fill(0.1)), 1);
    assert.equal(fsum([1e100, 1, -1e100, 1e-100, 1e50, -1, -1e50]), 1e-100);
    // 2^53 + 1 + 0.001 = 9007199254740994 (the 0.001 breaks the tie upwards; a naive sum gives ...992)
    assert.equal(fsum([2 ** 53, 1, 1e-3]), 9007199254740994);
    assert.equal(fsum([]), 0);
  });
});
