/**
 * sacreBLEU corpus BLEU: the 13a / intl / char tokenizers, the scoring from statistics, and the
 * values sacreBLEU publishes in its own test suite and README (mjpost/sacrebleu, test/test_bleu.py,
 * test/test_sentence_bleu.py, README.md), plus hand-computed cases.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  bleuSignature,
  computeBleu,
  corpusBleu,
  formatBleu,
  MetricError,
  tokenize13a,
  tokenizeChar,
  tokenizeIntl,
  transposeStreams,
  type BleuOptions,
} from '../../src/eval/index.js';

/** sacreBLEU's own tolerance in test_bleu.py. */
const EPSILON = 1e-8;

function close(actual: number, expected: number, tol: number, label = ''): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${label}: ${actual} vs ${expected} (tolerance ${tol})`);
}

// mjpost/sacrebleu test/test_bleu.py `_refs` / `_hyps` (the README example): two reference streams
const STREAMS = [
  ['The dog bit the man.', 'It was not unexpected.', 'The man bit him first.'],
  ['The dog had bit the man.', 'No one was surprised.', 'The man had bitten the dog.'],
];
const HYPS = ['The dog bit the man.', "It wasn't surprising.", 'The man had just bitten him.'];
const REFS = transposeStreams(STREAMS);

/** sacreBLEU's `raw_corpus_bleu(hyps, refs, smooth_value)`: floor smoothing, no tokenizer, effective order. */
function rawCorpusBleu(hyps: string[], refs: string[][], smoothValue?: number): number {
  return corpusBleu(hyps, refs, { tokenize: 'none', smoothMethod: 'floor', effectiveOrder: true, ...(smoothValue !== undefined ? { smoothValue } : {}) }).score / 100;
}

describe('13a tokenizer (mteval-v13a)', () => {
  it('splits punctuation but keeps apostrophes, decimals, thousands and word-internal hyphens', () => {
    assert.equal(tokenize13a('Hello, world!'), 'Hello , world !');
    // '.' after a digit at the end: rule 2 needs a non-digit before it, rule 3 matches '.' + the pad space
    assert.equal(tokenize13a("It's 3.14 and 1,000."), "It's 3.14 and 1,000 .");
    // a dash after a digit is split, one between letters is not
    assert.equal(tokenize13a('x-ray 1990-2000'), 'x-ray 1990 - 2000');
    // each period after a letter is split: e . g . U . S . A .
    assert.equal(tokenize13a('e.g. U.S.A.'), 'e . g . U . S . A .');
    assert.equal(tokenize13a("wasn't"), "wasn't");
  });
  it('unescapes four entities in mteval order, drops <skipped>, joins hyphenated line breaks', () => {
    assert.equal(tokenize13a('&quot;hi&quot; &amp; &lt;b&gt;'), '" hi " & < b >');
    // &amp; is unescaped after &quot;, so "&amp;quot;" becomes the text "&quot;", then & and ; are split
    assert.equal(tokenize13a('&amp;quot;'), '& quot ;');
    assert.equal(tokenize13a('a <skipped>b'), 'a b');
    assert.equal(tokenize13a('Hyphen-\nated and\nmore'), 'Hyphenated and more');
  });
  it('collapses whitespace as Python str.split() does (NBSP, U+001C and NEL split; BOM does not)', () => {
    assert.equal(tokenize13a('  a\t\tb\u00a0c\u001cd\u0085e  '), 'a b c d e');
    assert.equal(tokenize13a('zero\ufeffwidth'), 'zero\ufeffwidth');
  });
  it('intl splits Unicode punctuation except between numbers, and every symbol', () => {
    // ',' after '4' (a number) is not split by rule 1 but is by rule 2 (followed by a space);
    // '.' and '-' between digits stay; '$' is a symbol (Sc); 'x-ray': '-' after a letter is split
    assert.equal(tokenizeIntl('3.14, 1990-2000 $5 x-ray.'), '3.14 , 1990-2000 $ 5 x - ray .');
    assert.equal(tokenizeIntl('«Bonjour»'), '« Bonjour »');
  });
  it('char makes every code point a token', () => {
    assert.equal(tokenizeChar('ab c\u{1F600}'), 'a b c \u{1F600}');
  });
});

describe('computeBleu (sacreBLEU BLEU.compute_bleu)', () => {
  it('reproduces test_scoring: counts [9,7,5,3] / [10,8,6,4], lengths 11 and 11', () => {
    // (0.9 * 0.875 * 0.8333 * 0.75)^(1/4) = 0.49219^(1/4) = 0.83759
    close(computeBleu([9, 7, 5, 3], [10, 8, 6, 4], 11, 11).score / 100, 0.8375922397, EPSILON, 'test_scoring');
  });
  it('reproduces test_degenerate_statistics: exactly 0 with floor smoothing', () => {
    const cases: [number[], number[], number, number, number][] = [
      [[0, 0, 0, 0], [4, 4, 2, 1], 0, 1, 0.0],
      [[0, 0, 0, 0], [10, 11, 12, 0], 14, 10, 0.0],
      [[0, 0, 0, 0], [0, 0, 0, 0], 0, 0, 0.0],
      [[6, 5, 4, 0], [6, 5, 4, 3], 6, 6, 0.0],
      [[0, 0, 0, 0], [0, 0, 0, 0], 0, 0, 0.1],
      [[0, 0, 0, 0], [0, 0, 0, 0], 1, 5, 0.01],
    ];
    for (const [c, t, sys, ref, offset] of cases) {
      assert.equal(computeBleu(c, t, sys, ref, { smoothMethod: 'floor', smoothValue: offset }).score, 0, JSON.stringify([c, t, sys, ref, offset]));
    }
  });
  it('exp smoothing halves the pseudo-count at each missing order (hand-computed)', () => {
    // counts [5,3,1,0] of [6,5,4,3]: p4 = 100 / (2 * 3); no missing order before it
    // BLEU = ((500/6) * 60 * 25 * (100/6))^(1/4) = 2083333.3^(1/4) = 37.99
    const s = computeBleu([5, 3, 1, 0], [6, 5, 4, 3], 6, 6, { smoothMethod: 'exp' });
    close(s.score, Math.pow((500 / 6) * 60 * 25 * (100 / 6), 0.25), 1e-12, 'exp');
    // two missing orders: p3 = 100 / (2 * 4), p4 = 100 / (4 * 3)
    const t = computeBleu([5, 3, 0, 0], [6, 5, 4, 3], 6, 6, { smoothMethod: 'exp' });
    close(t.score, Math.pow((500 / 6) * 60 * 12.5 * (100 / 12), 0.25), 1e-12, 'exp twice');
  });
  it('add-k adds k to orders 2..4 only; brevity penalty exp(1 - r/c)', () => {
    // counts [2,1,0,0] of [3,2,1,0], k = 1: p = 2/3, 2/3, 1/2, 1/1; c = 3 < r = 4: BP = exp(1 - 4/3)
    const s = computeBleu([2, 1, 0, 0], [3, 2, 1, 0], 3, 4, { smoothMethod: 'add-k' });
    close(s.score, 100 * Math.exp(1 - 4 / 3) * Math.pow((2 / 3) * (2 / 3) * 0.5 * 1, 0.25), 1e-12, 'add-k');
    close(s.bp, Math.exp(-1 / 3), 1e-15, 'bp');
  });
  it('effective order averages over the orders the hypotheses reach (hand-computed)', () => {
    // hyp 'the cat' vs ref 'the cat sat on the mat': p1 = 2/2, p2 = 1/1, no trigram: BP = exp(1 - 6/2)
    // without effective order the missing orders have precision 0 -> log floored -> BLEU 0
    assert.equal(corpusBleu(['the cat'], [['the cat sat on the mat']]).score, 0);
    close(corpusBleu(['the cat'], [['the cat sat on the mat']], { effectiveOrder: true }).score, 100 * Math.exp(-2), 1e-12, 'eff');
  });
});

describe('corpusBleu against published sacreBLEU values', () => {
  it('test_corpus_bleu: the README example with each tokenizer and smoothing', () => {
    const cases: [BleuOptions, number][] = [
      [{}, 48.530827],
      [{ tokenize: 'none' }, 49.1919566],
      [{ tokenize: '13a' }, 48.530827],
      [{ tokenize: 'intl' }, 43.91623493],
      [{ smoothMethod: 'none' }, 48.530827],
    ];
    for (const [opts, expected] of cases) close(corpusBleu(HYPS, REFS, opts).score, expected, EPSILON, JSON.stringify(opts));
    // "ensure that empty hypotheses are not removed"
    assert.equal(corpusBleu(['', '', ''], REFS).score, 0);
  });
  it('README: the verbose line, and variable references (the first sentence with one reference)', () => {
    const s = corpusBleu(HYPS, REFS);
    assert.equal(formatBleu(s), 'BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)');
    assert.deepEqual([s.counts, s.totals], [
      [14, 7, 5, 3],
      [17, 14, 11, 8],
    ]);
    assert.equal(bleuSignature(2), 'nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp');
    const variable = [[STREAMS[1]![0]!], REFS[1]!, REFS[2]!];
    assert.equal(formatBleu(corpusBleu(HYPS, variable)), 'BLEU = 29.44 82.4/42.9/27.3/12.5 (BP = 0.889 ratio = 0.895 hyp_len = 17 ref_len = 19)');
  });
  it('test_max_ngram_order: 77.65 60.50 53.93 48.53 46.14 43.28 for orders 1..6', () => {
    const expected = ['77.65', '60.50', '53.93', '48.53', '46.14', '43.28'];
    expected.forEach((e, i) => assert.equal(corpusBleu(HYPS, REFS, { maxNgramOrder: i + 1 }).score.toFixed(2), e, `order ${i + 1}`));
  });
  it('test_raw_bleu and test_effective_order (raw_corpus_bleu, floor 0.01)', () => {
    assert.equal(rawCorpusBleu(['this is a test', 'another test'], [['ref1'], ['ref2']], 0.01), 0);
    close(rawCorpusBleu(['this is a test'], [['this is a test']], 0.01), 1.0, EPSILON, 'identical');
    // p = 3/4, 2/3, 1/2, 0.01/1 -> (0.0025)^(1/4) = 0.2236
    close(rawCorpusBleu(['this is a fest'], [['this is a test']], 0.01), 0.223606797749979, EPSILON, 'fest');
    // 'test' vs 'a test': p1 = 1, effective order 1, BP = exp(1 - 2/1)
    close(rawCorpusBleu(['test'], [['a test']], 0.01), 0.3678794411714425, EPSILON, 'test');
    close(rawCorpusBleu(['a test'], [['a test']], 0.01), 1.0, EPSILON, 'a test');
    close(rawCorpusBleu(['a little test'], [['a test']], 0.01), 0.03218297948685433, EPSILON, 'a little test');
  });
  it('test_statistics and test_offset', () => {
    const hyp = ['am I am a character sequence'];
    const ref = [['I am a symbol string sequence a a']];
    const s = corpusBleu(hyp, ref, { tokenize: 'none', smoothMethod: 'floor', smoothValue: 0.01, effectiveOrder: true });
    assert.deepEqual([s.counts, s.totals], [
      [4, 2, 1, 0],
      [6, 5, 4, 3],
    ]);
    assert.equal(rawCorpusBleu(hyp, ref, 0), 0);
    close(rawCorpusBleu(hyp, ref), 0.1555722182, EPSILON, 'default floor 0.1');
  });
  it('test_sentence_bleu: smoothing, tokenizer and case variants on issue #98 (published to 1e-3)', () => {
    const ref = 'producţia de zahăr brut se exprimă în zahăr alb;';
    const sys = 'Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;';
    const cases: [BleuOptions, number][] = [
      [{ smoothMethod: 'exp' }, 8.493],
      [{ smoothMethod: 'none' }, 0.0],
      [{ smoothMethod: 'floor' }, 4.51688],
      [{ smoothMethod: 'floor', smoothValue: 0.1 }, 4.51688],
      [{ smoothMethod: 'floor', smoothValue: 0.5 }, 10.1],
      [{ smoothMethod: 'add-k' }, 14.882],
      [{ smoothMethod: 'add-k', smoothValue: 1 }, 14.882],
      [{ smoothMethod: 'add-k', smoothValue: 2 }, 21.389],
      [{ tokenize: 'none' }, 7.347],
      [{ tokenize: 'intl' }, 8.493],
      [{ tokenize: 'char' }, 40.8759],
      [{ tokenize: 'char', lowercase: true }, 42.0267],
    ];
    for (const [opts, expected] of cases) close(corpusBleu([sys], [[ref]], { ...opts, effectiveOrder: true }).score, expected, 1e-3, JSON.stringify(opts));
    // issue #141: no match at all is 0 whatever the smoothing
    for (const smoothMethod of ['exp', 'none', 'floor', 'add-k'] as const) {
      assert.equal(corpusBleu(['this is a cat'], [['okay thanks']], { smoothMethod, effectiveOrder: true }).score, 0, smoothMethod);
    }
  });
  it('clips by the best single reference and takes the closest reference length (ties: shorter)', () => {
    // hyp 'a a a b' (4 tokens), refs 'a b c' (3) and 'a a x y z' (5): both 1 away -> ref_len 3
    // unigrams: a clipped to max(1, 2) = 2, b 1 -> 3/4
    const s = corpusBleu(['a a a b'], [['a b c', 'a a x y z']], { tokenize: 'none' });
    assert.equal(s.refLen, 3);
    assert.equal(s.counts[0], 3);
  });
  it('an empty reference string is a real, empty reference (sacreBLEU >= 2.1)', () => {
    // hyp 'a b' (2) with refs '' (0) and 'a b c d e' (5): 0 is closer (2 away vs 3)
    assert.equal(corpusBleu(['a b'], [['', 'a b c d e']]).refLen, 0);
  });
  it('refuses mismatched lengths and a sentence without reference', () => {
    assert.throws(() => corpusBleu(['a', 'b'], [['a']]), MetricError);
    assert.throws(
      () => corpusBleu(['a', 'b'], [['a'], []]),
      (e: unknown) => e instanceof MetricError && e.index === 1,
    );
  });
});
