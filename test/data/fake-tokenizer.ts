/**
 * A tiny whitespace tokenizer implementing the package's Tokenizer interface, so that the data tests do
 * not depend on the real WordPiece/BPE implementation (written elsewhere, at the same time).
 * Ids: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, then the given words from 4 on.
 */
import type { SpecialTokens, Tokenizer } from '../../src/tokenizer/tokenizer.js';

/** The words of the default fake vocabulary, ids 4.. in this order. */
export const FAKE_WORDS = ['the', 'cat', 'sat', 'on', 'mat', 'a', 'dog', 'ran', 'far', 'away', 'and', 'home'] as const;

/** Whitespace-split, lowercase tokenizer over a fixed word list; unknown words map to [UNK]. */
export class FakeTokenizer implements Tokenizer {
  readonly kind = 'wordpiece' as const;
  readonly specials: SpecialTokens = { pad: 0, unk: 1, cls: 2, sep: 3 };
  private readonly tokens: string[];
  private readonly ids = new Map<string, number>();

  constructor(words: readonly string[] = FAKE_WORDS) {
    this.tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', ...words];
    this.tokens.forEach((t, i) => this.ids.set(t, i));
  }

  get vocabSize(): number {
    return this.tokens.length;
  }

  encode(text: string): number[] {
    return text
      .toLowerCase()
      .split(/\s+/)
      .filter((w) => w !== '')
      .map((w) => this.ids.get(w) ?? 1);
  }

  decode(ids: readonly number[]): string {
    return ids
      .filter((i) => i > 3)
      .map((i) => this.tokens[i] ?? '[UNK]')
      .join(' ');
  }

  tokenToId(token: string): number | undefined {
    return this.ids.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokens[id];
  }

  save(_dir: string): void {
    throw new Error('FakeTokenizer.save is not used by the data tests');
  }

  fingerprint(): string {
    return `fake-${this.tokens.length}`;
  }
}
