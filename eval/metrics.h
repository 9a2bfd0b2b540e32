/* metrics.h — per-answer scoring rules of the 14 benchmarks (reference/data_and_eval.md §B0–B15),
 * and the Python string semantics they are defined in.
 *
 * Everything here works on one prediction (the model's decoded, stripped output) and its ground
 * truth, as UTF-8 strings, and mirrors the reference Python code character for character:
 *   - py_*: str.lower() (Unicode, see py_lower for the scripts covered), str.strip()/split() with
 *     Unicode whitespace, rstrip/lstrip of a character set, len() in code points, float() parsing;
 *   - the EvalAI VQA normalisation with all its quirks, and VQA soft accuracy;
 *   - ANLS (lmms-eval form and the official RRC form), ChartQA relaxed accuracy (Cambrian and
 *     lmms-eval), OCRBench substring matching (HME rule), yes/no parsers (MME, POPE, HallusionBench),
 *     multiple-choice letter extraction (MMBench/AI2D/MMMU, SEED, MMVP, RealWorldQA), GQA and MMMU
 *     comparisons.
 * Aggregation over a benchmark (circular groups, MME acc+, POPE F1, pair accuracy, ...) lives in
 * bench.c. Not for: prompt building or anything that reads files.
 * All returned strings are malloc'd (free them); all functions are pure and thread-safe.
 */
#ifndef ASVR_EVAL_METRICS_H
#define ASVR_EVAL_METRICS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Python string semantics ------------------------------------------------------------------ */

/* str.lower(). Covers Latin (incl. Latin-1, Extended-A/B parts, Extended Additional), Greek (with
 * the final-sigma rule), Cyrillic, Armenian, Roman numerals, circled and fullwidth letters; İ
 * becomes "i̇" (two code points) as in Python. Other scripts' case pairs are left unchanged. */
char *py_lower(const char *s);
/* str.strip() (Unicode whitespace), as a new string. */
char *py_strip_dup(const char *s);
/* str.split() with no argument: *n pieces, malloc'd array of malloc'd strings (py_strv_free). */
char **py_split(const char *s, int *n);
void py_strv_free(char **v, int n);
/* str.rstrip(chars) / str.lstrip(chars) for an ASCII character set. */
char *py_rstrip_chars(const char *s, const char *chars);
char *py_lstrip_chars(const char *s, const char *chars);
/* len(s) and len(s.upper()) in code points (upper expands ß, ŉ, ǰ, ΐ, ΰ, և, ẖ–ẚ and the Latin and
 * Armenian ligatures, as Python does). */
size_t py_len(const char *s);
size_t py_upper_len(const char *s);
/* float(s): surrounding Unicode whitespace, sign, '_' between digits, exponent, inf/infinity/nan in
 * any case, Unicode decimal digits (ASCII, Arabic-Indic, Devanagari, Bengali, Thai, fullwidth).
 * Returns 0 and *out, or -1 where Python raises ValueError ("1,000", "50%", "0x10", "", "1__0"). */
int py_float(const char *s, double *out);
/* Levenshtein distance over code points, unit costs. */
size_t levenshtein(const char *a, const char *b);

/* ---- VQA (§B1) ---------------------------------------------------------------------------------- */

/* EvalAIAnswerProcessor: word_tokenize, \n/\t → space, punctuation (tested against the text
 * entering that step), at most 32 '.' removals, numbers, articles, contractions. */
char *vqa_normalize(const char *s);
/* TextVQA soft accuracy of pred against n ground truths (the reference asserts n == 10; the formula
 * mean_i min(1, #{j != i: gt_j == p}/3) is applied for any n >= 1). pred and gts are lower-cased
 * and normalised here. */
double vqa_soft_accuracy(const char *pred, const char *const *gts, int n);

/* ---- ANLS (§B3) --------------------------------------------------------------------------------- */

/* lmms-eval anls: NL = lev(norm g, norm p) / max(len(g.upper()), len(p.upper())) on the RAW strings;
 * q = 1 - min NL; q < 0.5 → 0. n == 0 → 0. */
double anls_lmms(const char *pred, const char *const *gts, int n);
/* Official RRC: per GT NL over the normalised strings, 1 - NL if NL < 0.5 else 0; max over GTs. */
double anls_rrc(const char *pred, const char *const *gts, int n);

/* ---- ChartQA (§B4) ------------------------------------------------------------------------------ */

/* Cambrian chartqa_test.py: lower both; both float() → |a-g| <= 0.05|g|; else a == g. */
int chartqa_correct_cambrian(const char *pred, const char *gt);
/* lmms-eval relaxed_correctness: trailing '%' → rstrip('%') and /100; relative check only when the
 * target is a non-zero float; else case-insensitive equality. */
int chartqa_correct_lmms(const char *pred, const char *gt);

/* ---- OCRBench (§B5) ----------------------------------------------------------------------------- */

/* Cambrian/OCRBench substring mode: any GT (normalised the same way) is a substring of pred.
 * hme: strip, \n → ' ', remove ' '; otherwise lower, strip, \n → ' '. */
int ocrbench_correct(const char *pred, const char *const *gts, int n, int hme);
/* lmms-eval: the same after folding fullwidth U+FF01–FF5E to ASCII and U+3000 to a space. */
int ocrbench_correct_lmms(const char *pred, const char *const *gts, int n, int hme);

/* ---- yes/no ------------------------------------------------------------------------------------- */

/* MME, Cambrian mme_test.py: pred.lower().rstrip('.') == gt.lower(). */
int mme_correct(const char *pred, const char *gt);
/* MME official (Bunny calculation_mme.py): lower; "yes"/"no" as is; else the first 4 code points
 * containing "yes" → "yes", "no" → "no", else "other". Returns a static string. */
const char *mme_parse_official(const char *pred);
/* POPE, Cambrian pope_test.py: pred.lower().split()[0].rstrip('.:,'); NULL for an empty output (the
 * reference crashes there; the caller scores it wrong). */
char *pope_first_token(const char *pred);
/* POPE, LLaVA eval_pope.py: text before the first '.', ',' deleted, split on ' '; a word in
 * {"No","not","no"} → 0 (no), else 1 (yes). */
int pope_llava_is_yes(const char *pred);
/* HallusionBench, VLMEvalKit YOrN_Extraction: words = split(process_punctuation(pred.lower()));
 * 1 yes, 0 no, -1 unknown. */
int yorn_extract(const char *pred);
/* HallusionBench, lmms-eval "intern" rule: "yes" is a substring of pred.lower(). */
int hb_intern_is_yes(const char *pred);

/* ---- multiple choice and short answers ---------------------------------------------------------- */

/* All start with t = pred.lower().strip() and, for kw in "answer is", "answer is:", "answer:" in
 * turn, t = t.split(kw)[-1] when kw occurs, then t = t.strip(). */
/* MMBench/AI2D/MMMU (extract_mcq_answer): .rstrip('.:,').lstrip('(').rstrip(')'), then the first
 * code point when longer than one. */
char *mcq_extract(const char *pred);
/* SEED: as mcq_extract with .rstrip('.') only. */
char *mcq_extract_seed(const char *pred);
/* MMVP: .rstrip('.:,').lstrip('(').rstrip(')') without the first-character truncation. */
char *mcq_extract_mmvp(const char *pred);
/* MMMU open questions: .rstrip('.'). */
char *open_extract(const char *pred);
/* RealWorldQA: open_extract then split()[0]; NULL for an empty result (scored wrong). */
char *rwqa_extract(const char *pred);

/* GQA: pred.lower().rstrip('.') == gt.lower(). */
int gqa_correct(const char *pred, const char *gt);
/* MMMU: t (extracted) == gt.lower(), or both float() and |gt - t| <= 0.05·|t| (relative to t). */
int mmmu_correct(const char *t, const char *gt);
/* MMVP give_options: the option texts of "(a) x (b) y" (split on '(', text after ')', strip,
 * lower); *n options. */
char **mmvp_give_options(const char *options, int *n);

#ifdef __cplusplus
}
#endif
#endif
