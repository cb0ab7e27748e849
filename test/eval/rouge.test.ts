/**
 * ROUGE as Google's rouge-score computes it: the cases of its test suite (google-research/
 * google-research, rouge/rouge_scorer_test.py, whose "ground truth" comes from ROUGE-1.5.5 runs on
 * rouge/testdata/target.txt and prediction.txt), hand-computed cases, and NLTK's Porter stemmer
 * (nltk/nltk doctest in nltk/test/stem.doctest, and test_stem.py's 'oed' case).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { corpusRouge, lcsLength, porterStem, rougeScore, rougeScoreMulti, rougeTokenize, type RougeScore } from '../../src/eval/index.js';

function near(s: RougeScore, p: number, r: number, f: number, places: number, label: string): void {
  const tol = 0.5 * 10 ** -places;
  for (const [k, got, want] of [
    ['precision', s.precision, p],
    ['recall', s.recall, r],
    ['fmeasure', s.fmeasure, f],
  ] as const) {
    assert.ok(Math.abs(got - want) <= tol, `${label} ${k}: ${got} vs ${want}`);
  }
}

// rouge/testdata/target.txt and prediction.txt, lines 1 and 2 (read with readlines(), so with '\n')
const TARGETS = [
  "ZfbCUIUuePaiLVUlCaUXxkpu XPeWing tUHfPMuZ',-Xd Y BrUgVJing M-HV.-DgdDaY.rFDJCRing Ht-LM EKBDXkME,yz'RBr q'wtion wIojNbN wL,b .a-'XdQggyFl jB-RPP'iyOIcUxer tKM L\n",
  "KsJdPByEtAor fE-Qg Dpdbring cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMtion psing sbKao Q m qiing LMmer HqqLFXe,XPY,J XsurkMer ,ed nB'wH'bWVHjWFEing tQ.saefZwJtKrTlixYpMMsJing UCAPwNHeYVjDing c T BUySKtion gMPfJpwGw p'NvxAoping eu pBwMBKV'I DNxqelhu,PHPxDEq,mtion SN\n",
];
const PREDICTIONS = [
  "rFDJCRtion Ht-LM EKtDXkME,yz'RBr q'wer wrojNbN wL,b .a-'XdQggyFl jB-RPP'iyOIcUxi\n",
  "n cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMer pstion sbKao Q m qier LMmed HqqLFXe,XPY,J XsurkMeo ,ed nB'wH'bWVHjWFEer tQ.saefZwJtKrTlixYpMMNJtion UCAPwNHeYVjD\n",
];

describe('rouge-score test suite', () => {
  it('testRouge1, testRouge2, testRougeLConsecutive, testRougeLNonConsecutive, testRougeEmpty', () => {
    near(rougeScore('testing one two', 'testing').rouge1, 1, 1 / 3, 1 / 2, 7, 'rouge1');
    near(rougeScore('testing one two', 'testing one').rouge2, 1, 1 / 2, 2 / 3, 7, 'rouge2');
    near(rougeScore('testing one two', 'testing one').rougeL, 1, 2 / 3, 4 / 5, 7, 'rougeL consecutive');
    near(rougeScore('testing one two', 'testing two').rougeL, 1, 2 / 3, 4 / 5, 7, 'rougeL non-consecutive');
    const empty = rougeScore('testing one two', '');
    for (const k of ['rouge1', 'rouge2', 'rougeL'] as const) near(empty[k], 0, 0, 0, 7, `empty ${k}`);
  });
  it('against ROUGE-1.5.5 on testdata lines 1 and 2 (5 places), without stemming', () => {
    const s0 = rougeScore(TARGETS[0]!, PREDICTIONS[0]!);
    const s1 = rougeScore(TARGETS[1]!, PREDICTIONS[1]!);
    near(s0.rouge1, 0.6875, 0.40741, 0.51163, 5, 'rouge1 line 1');
    near(s1.rouge1, 0.65385, 0.40476, 0.5, 5, 'rouge1 line 2');
    near(s0.rouge2, 0.53333, 0.30769, 0.39024, 5, 'rouge2 line 1');
    near(s1.rouge2, 0.48, 0.29268, 0.36364, 5, 'rouge2 line 2');
    near(s0.rougeL, 0.6875, 0.40741, 0.51163, 5, 'rougeL line 1');
    near(s1.rougeL, 0.65385, 0.40476, 0.5, 5, 'rougeL line 2');
  });
  it('against ROUGE-1.5.5 -m (Porter stemming): line 2 gains matches on rouge1', () => {
    const s0 = rougeScore(TARGETS[0]!, PREDICTIONS[0]!, { stem: true });
    const s1 = rougeScore(TARGETS[1]!, PREDICTIONS[1]!, { stem: true });
    near(s0.rouge1, 0.6875, 0.40741, 0.51163, 5, 'rouge1 line 1');
    near(s1.rouge1, 0.69231, 0.42857, 0.52941, 5, 'rouge1 line 2 stemmed');
    near(s0.rouge2, 0.53333, 0.30769, 0.39024, 5, 'rouge2 line 1');
    near(s1.rouge2, 0.48, 0.29268, 0.36364, 5, 'rouge2 line 2 stemmed');
  });
  it('testLcsTable: LCS of [1..5] and [2,5,3,4] is 3; none with [8,9]', () => {
    assert.equal(lcsLength(['1', '2', '3', '4', '5'], ['2', '5', '3', '4']), 3);
    assert.equal(lcsLength(['1', '2', '3', '4', '5'], ['8', '9']), 0);
  });
});

describe('rouge-score semantics (hand-computed)', () => {
  it('tokenizes lowercase [a-z0-9]+ runs, so non-ASCII letters split words', () => {
    // "café naïve, it's 3.14!" -> "caf na ve it s 3 14"
    assert.deepEqual(rougeTokenize("Café naïve, it's 3.14!"), ['caf', 'na', 've', 'it', 's', '3', '14']);
    assert.deepEqual(rougeTokenize(' / ... !! '), []);
  });
  it('the README example: rouge1 12/17, rouge2 4/15, rougeL 10/17', () => {
    // target (9 tokens): the quick brown fox jumps over the lazy dog
    // prediction (8): the quick brown dog jumps on the log
    // unigram overlap: the x2, quick, brown, jumps, dog = 6 -> P 6/8, R 6/9, F 12/17
    // bigram overlap: 'the quick', 'quick brown' = 2 -> P 2/7, R 2/8, F 4/15
    // LCS 'the quick brown jumps the' = 5 -> P 5/8, R 5/9, F 10/17
    const s = rougeScore('The quick brown fox jumps over the lazy dog', 'The quick brown dog jumps on the log.');
    near(s.rouge1, 6 / 8, 6 / 9, 12 / 17, 12, 'rouge1');
    near(s.rouge2, 2 / 7, 2 / 8, 4 / 15, 12, 'rouge2');
    near(s.rougeL, 5 / 8, 5 / 9, 10 / 17, 12, 'rougeL');
  });
  it('clips repeated n-grams and scores an empty reference as 0', () => {
    // 'the the the the' vs 'the cat the mat': overlap min(4, 2) = 2 -> P 2/4, R 2/4
    near(rougeScore('the cat the mat', 'the the the the').rouge1, 0.5, 0.5, 0.5, 12, 'clip');
    near(rougeScore('', 'testing one two').rougeL, 0, 0, 0, 12, 'empty target');
  });
  it('several references: the one with the best F-measure, per type (score_multi)', () => {
    // prediction 'a b c'
    // vs 'c b a':   rouge1 3/3 (F 1); rouge2 0 ('c b', 'b a' vs 'a b', 'b c'); rougeL LCS 1 (F 1/3)
    // vs 'a b x y': rouge1 P 2/3 R 2/4 (F 4/7); rouge2 'a b': P 1/2 R 1/3 (F 2/5); rougeL LCS 2 (F 4/7)
    const s = rougeScoreMulti(['c b a', 'a b x y'], 'a b c');
    near(s.rouge1, 1, 1, 1, 12, 'rouge1 from the first reference');
    near(s.rouge2, 1 / 2, 1 / 3, 2 / 5, 12, 'rouge2 from the second');
    near(s.rougeL, 2 / 3, 1 / 2, 4 / 7, 12, 'rougeL from the second');
    // ties keep the first reference (numpy argmax): prediction 'a b'
    // vs 'a': P 1/2, R 1/1, F 2/3; vs 'a b c d': P 2/2, R 2/4, F 2/3 -> the first
    near(rougeScoreMulti(['a', 'a b c d'], 'a b').rouge1, 1 / 2, 1, 2 / 3, 12, 'tie');
    near(rougeScoreMulti(['a b c d', 'a'], 'a b').rouge1, 1, 1 / 2, 2 / 3, 12, 'tie reversed');
  });
  it('corpus ROUGE is the mean of the sentence F-measures', () => {
    const c = corpusRouge(['testing', 'testing one'], [['testing one two'], ['testing one two']]);
    // rouge1 F: 1/2 and 4/5 -> 0.65
    assert.ok(Math.abs(c.rouge1 - 0.65) < 1e-12);
  });
});

describe('Porter stemmer (NLTK PorterStemmer(), mode NLTK_EXTENSIONS)', () => {
  it('stem.doctest: the pluralised words', () => {
    const words = [
      'caresses', 'flies', 'dies', 'mules', 'denied', 'died', 'agreed', 'owned', 'humbled', 'sized', 'meeting', 'stating',
      'siezing', 'itemization', 'sensational', 'traditional', 'reference', 'colonizer', 'plotted',
    ];
    assert.equal(words.map(porterStem).join(' '), 'caress fli die mule deni die agre own humbl size meet state siez item sensat tradit refer colon plot');
  });
  it("test_stem.py's oed case, irregular forms, and words of two letters", () => {
    assert.equal(porterStem('oed'), 'o');
    assert.equal(porterStem('skies'), 'sky');
    assert.equal(porterStem('dying'), 'die');
    assert.equal(porterStem('is'), 'is');
  });
  it('follows the paper on its examples where NLTK keeps the published rule (hand-checked)', () => {
    // step 1b: hopp(ing) -> hop, fil(ing) -> file (m = 1 and *o), fall(ing) keeps ll
    assert.equal(porterStem('hopping'), 'hop');
    assert.equal(porterStem('filing'), 'file');
    assert.equal(porterStem('falling'), 'fall');
    // step 1c (NLTK: after a consonant): happy -> happi, enjoy stays
    assert.equal(porterStem('happy'), 'happi');
    assert.equal(porterStem('enjoy'), 'enjoy');
    // step 4 (m > 1): adjustable -> adjust; step 5b: controll -> control
    assert.equal(porterStem('adjustable'), 'adjust');
    assert.equal(porterStem('controll'), 'control');
  });
});
