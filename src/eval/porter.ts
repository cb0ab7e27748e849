/**
 * The Porter stemmer as NLTK's `PorterStemmer()` runs it by default (mode `NLTK_EXTENSIONS`), which
 * is what Google's rouge-score uses for `use_stemmer=True`. That mode is Porter (1980) plus Martin
 * Porter's later changes and a few NLTK ones: an irregular-forms table, words of one or two letters
 * left alone, `-ies`/`-ied` on four-letter words kept as `-ie` (dies -> die), `-alli` handled before
 * `-bli`, `-fulli` and `-logi` rules, the y -> i rule only after a consonant, and the "short word"
 * cvc test extended to two-letter stems. Input is expected in lowercase (ROUGE lowercases first).
 *
 * Structure: each step is a list of (suffix, replacement, condition) rules; the first rule whose
 * suffix matches decides, and if its condition fails the word is left unchanged by that step (no
 * later rule is tried), as in NLTK's `_apply_rule_list`.
 */

/** Irregular forms mapped straight to their stem (NLTK's table). */
const IRREGULAR: ReadonlyMap<string, string> = new Map([
  ['sky', 'sky'],
  ['skies', 'sky'],
  ['dying', 'die'],
  ['lying', 'lie'],
  ['tying', 'tie'],
  ['news', 'news'],
  ['innings', 'inning'],
  ['inning', 'inning'],
  ['outings', 'outing'],
  ['outing', 'outing'],
  ['cannings', 'canning'],
  ['canning', 'canning'],
  ['howe', 'howe'],
  ['proceed', 'proceed'],
  ['exceed', 'exceed'],
  ['succeed', 'succeed'],
]);

function isVowelLetter(ch: string): boolean {
  return ch === 'a' || ch === 'e' || ch === 'i' || ch === 'o' || ch === 'u';
}

/** Porter's consonant: not a, e, i, o, u, and not a y that follows a consonant. */
function isConsonant(word: string, i: number): boolean {
  const ch = word[i]!;
  if (isVowelLetter(ch)) return false;
  if (ch === 'y') return i === 0 ? true : !isConsonant(word, i - 1);
  return true;
}

/** Porter's measure m: the number of vowel-run / consonant-run transitions ("vc" pairs). */
function measure(stem: string): number {
  let m = 0;
  let prevVowel = false;
  for (let i = 0; i < stem.length; i++) {
    const cons = isConsonant(stem, i);
    if (cons && prevVowel) m++;
    prevVowel = !cons;
  }
  return m;
}

function hasPositiveMeasure(stem: string): boolean {
  return measure(stem) > 0;
}

function containsVowel(stem: string): boolean {
  for (let i = 0; i < stem.length; i++) if (!isConsonant(stem, i)) return true;
  return false;
}

/** Condition *d: ends with a double consonant. */
function endsDoubleConsonant(word: string): boolean {
  const n = word.length;
  return n >= 2 && word[n - 1] === word[n - 2] && isConsonant(word, n - 1);
}

/** Condition *o: ends consonant-vowel-consonant with the last not w, x, y; or (NLTK) is a two-letter vc word. */
function endsCvc(word: string): boolean {
  const n = word.length;
  if (n >= 3 && isConsonant(word, n - 3) && !isConsonant(word, n - 2) && isConsonant(word, n - 1)) {
    const last = word[n - 1]!;
    if (last !== 'w' && last !== 'x' && last !== 'y') return true;
  }
  return n === 2 && !isConsonant(word, 0) && isConsonant(word, 1);
}

/** A suffix rule; the special suffix `*d` means "ends with a double consonant" (remove both letters). */
type Rule = readonly [suffix: string, replacement: string, condition: ((stem: string) => boolean) | null];

function applyRules(word: string, rules: readonly Rule[]): string {
  for (const [suffix, replacement, condition] of rules) {
    if (suffix === '*d') {
      if (endsDoubleConsonant(word)) {
        const stem = word.slice(0, -2);
        return condition === null || condition(stem) ? stem + replacement : word;
      }
      continue;
    }
    if (word.endsWith(suffix)) {
      const stem = suffix === '' ? word : word.slice(0, -suffix.length);
      return condition === null || condition(stem) ? stem + replacement : word;
    }
  }
  return word;
}

function step1a(word: string): string {
  // NLTK: 'dies' -> 'die' (but 'flies' -> 'fli')
  if (word.endsWith('ies') && word.length === 4) return word.slice(0, -3) + 'ie';
  return applyRules(word, [
    ['sses', 'ss', null],
    ['ies', 'i', null],
    ['ss', 'ss', null],
    ['s', '', null],
  ]);
}

function step1b(word: string): string {
  // NLTK: 'died' -> 'die', 'spied' -> 'spi'
  if (word.endsWith('ied')) return word.slice(0, -3) + (word.length === 4 ? 'ie' : 'i');
  if (word.endsWith('eed')) {
    const stem = word.slice(0, -3);
    return measure(stem) > 0 ? stem + 'ee' : word;
  }
  let stem: string | undefined;
  for (const suffix of ['ed', 'ing']) {
    if (word.endsWith(suffix)) {
      const s = word.slice(0, -suffix.length);
      if (containsVowel(s)) {
        stem = s;
        break;
      }
    }
  }
  if (stem === undefined) return word;
  const base = stem;
  const last = base[base.length - 1] ?? '';
  return applyRules(base, [
    ['at', 'ate', null],
    ['bl', 'ble', null],
    ['iz', 'ize', null],
    // a double consonant loses one letter, except ll, ss, zz
    ['*d', last, () => last !== 'l' && last !== 's' && last !== 'z'],
    // short words get their e back: fil(ing) -> file
    ['', 'e', (s) => measure(s) === 1 && endsCvc(s)],
  ]);
}

function step1c(word: string): string {
  // NLTK: y -> i only after a consonant that is not the whole stem (happy -> happi, enjoy, by stay)
  return applyRules(word, [['y', 'i', (s) => s.length > 1 && isConsonant(s, s.length - 1)]]);
}

function step2(word: string): string {
  // NLTK: apply alli -> al first and, if it fires, run step 2 again on the result
  if (word.endsWith('alli') && hasPositiveMeasure(word.slice(0, -4))) return step2(word.slice(0, -4) + 'al');
  const pos = hasPositiveMeasure;
  return applyRules(word, [
    ['ational', 'ate', pos],
    ['tional', 'tion', pos],
    ['enci', 'ence', pos],
    ['anci', 'ance', pos],
    ['izer', 'ize', pos],
    ['bli', 'ble', pos],
    ['alli', 'al', pos],
    ['entli', 'ent', pos],
    ['eli', 'e', pos],
    ['ousli', 'ous', pos],
    ['ization', 'ize', pos],
    ['ation', 'ate', pos],
    ['ator', 'ate', pos],
    ['alism', 'al', pos],
    ['iveness', 'ive', pos],
    ['fulness', 'ful', pos],
    ['ousness', 'ous', pos],
    ['aliti', 'al', pos],
    ['iviti', 'ive', pos],
    ['biliti', 'ble', pos],
    ['fulli', 'ful', pos],
    // the 'l' of logi stays with the stem for the measure, so geo-logi works like archaeo-logi
    ['logi', 'log', () => hasPositiveMeasure(word.slice(0, -3))],
  ]);
}

function step3(word: string): string {
  const pos = hasPositiveMeasure;
  return applyRules(word, [
    ['icate', 'ic', pos],
    ['ative', '', pos],
    ['alize', 'al', pos],
    ['iciti', 'ic', pos],
    ['ical', 'ic', pos],
    ['ful', '', pos],
    ['ness', '', pos],
  ]);
}

function step4(word: string): string {
  const gt1 = (s: string): boolean => measure(s) > 1;
  return applyRules(word, [
    ['al', '', gt1],
    ['ance', '', gt1],
    ['ence', '', gt1],
    ['er', '', gt1],
    ['ic', '', gt1],
    ['able', '', gt1],
    ['ible', '', gt1],
    ['ant', '', gt1],
    ['ement', '', gt1],
    ['ment', '', gt1],
    ['ent', '', gt1],
    ['ion', '', (s) => measure(s) > 1 && (s.endsWith('s') || s.endsWith('t'))],
    ['ou', '', gt1],
    ['ism', '', gt1],
    ['ate', '', gt1],
    ['iti', '', gt1],
    ['ous', '', gt1],
    ['ive', '', gt1],
    ['ize', '', gt1],
  ]);
}

function step5a(word: string): string {
  // both e-rules are tried (unlike the other steps): (m>1) E -> ; (m=1 and not *o) E ->
  if (word.endsWith('e')) {
    const stem = word.slice(0, -1);
    const m = measure(stem);
    if (m > 1) return stem;
    if (m === 1 && !endsCvc(stem)) return stem;
  }
  return word;
}

function step5b(word: string): string {
  return applyRules(word, [['ll', 'l', () => measure(word.slice(0, -1)) > 1]]);
}

/** Stems one lowercase word with NLTK's default Porter stemmer. */
export function porterStem(word: string): string {
  const stem = word.toLowerCase();
  const irregular = IRREGULAR.get(word);
  if (irregular !== undefined) return irregular;
  if (word.length <= 2) return stem;
  return step5b(step5a(step4(step3(step2(step1c(step1b(step1a(stem))))))));
}
