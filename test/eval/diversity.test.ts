/**
 * DiffuSeq's diversity measures (Shark-NLP/DiffuSeq scripts/eval_seq2seq.py: distinct_n_gram,
 * distinct_n_gram_inter_sent, diversityOfSet), on hand-computed cases.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dist1, distinctN, distinctNPooled, diversity, selfBleuOfSet } from '../../src/eval/index.js';

function close(actual: number, expected: number, tol: number, label = ''): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${label}: ${actual} vs ${expected} (tolerance ${tol})`);
}

describe('dist1 and distinct n-grams', () => {
  it('dist1 averages each output ratio; an empty output counts 0', () => {
    // 'a a b': 2 distinct / 3; '': 0; 'x y z': 3 / 3 -> (2/3 + 0 + 1) / 3 = 5/9
    close(dist1(['a a b', '', 'x y z']), 5 / 9, 1e-15, 'dist1');
    // whitespace runs do not make empty tokens (Python split())
    close(distinctN('  a \t a  ', 1), 1 / 2, 1e-15, 'whitespace');
    assert.equal(distinctN('a b c', 4), 0);
  });
  it('div4 pools the 4-grams of all samples, never across samples', () => {
    // 'a b c d e' -> abcd, bcde; 'a b c d f' -> abcd, bcdf: 3 distinct / 4
    close(distinctNPooled(['a b c d e', 'a b c d f'], 4), 3 / 4, 1e-15, 'pooled');
    // 'a b' + 'c d' joined would make 'a b c d', but they are separate samples: no 4-gram -> 0
    assert.equal(distinctNPooled(['a b', 'c d'], 4), 0);
  });
});

describe('self-BLEU (DiffuSeq order, method4)', () => {
  it('averages get_bleu(s_i, s_j) over the pairs i < j', () => {
    // identical 4-token samples score 1, disjoint ones 0: pairs (0,1) = 1, (0,2) = 0, (1,2) = 0
    close(selfBleuOfSet(['a b c d', 'a b c d', 'e f g h']), 1 / 3, 1e-15, 'pairs');
    assert.equal(selfBleuOfSet(['only one']), 0);
  });
  it('a hand-computed pair', () => {
    // get_bleu('the cat sat on the mat', 'the cat sat on a mat'): hypothesis = the second (6 tokens)
    // p = 5/6, 3/5, 2/4, 1/3 (no zero), BP = 1 -> (1/12)^(1/4)
    close(selfBleuOfSet(['the cat sat on the mat', 'the cat sat on a mat']), Math.pow(1 / 12, 0.25), 1e-15, 'pair');
  });
  it('diversity() averages both measures over sources', () => {
    // source 1: self-BLEU 1, div4 (abcd x2) 1/2; source 2: self-BLEU 0, div4 ('e f g h' only) 1
    const d = diversity([
      ['a b c d', 'a b c d'],
      ['e f g h', 'x'],
    ]);
    close(d.selfBleu, 0.5, 1e-15, 'selfBleu');
    close(d.div4, 0.75, 1e-15, 'div4');
  });
});
