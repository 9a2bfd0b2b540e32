/* test_metrics.c — the per-answer scoring rules of eval/metrics.h against the test vectors of
 * reference/data_and_eval.md (§B0–B15), plus cases derived by hand from the metric definitions
 * there (each says where its expected value comes from). */
#include <math.h>

#include "metrics.h"
#include "test.h"

size_t vqa_contractions_count(void);

#define T_STR_EQ(got_expr, want)                                                                   \
    do {                                                                                           \
        char *g_ = (got_expr);                                                                     \
        T_CHECK(g_ && strcmp(g_, (want)) == 0, "got '%s', want '%s'", g_ ? g_ : "(null)", (want)); \
        free(g_);                                                                                  \
    } while (0)
/* measured 0 (exact here); 1e-14 leaves a few double roundings of scores in [0, 1] */
#define T_NEAR(a, b) T_CHECK(fabs((a) - (b)) < 1e-14, "%.12g != %.12g", (double)(a), (double)(b))

static void test_vqa_normalize(void) {
    /* §B1 test vectors (computed with the reference class) */
    static const char *const v[][2] = {
        {"Two dogs.", "2 dogs"},     {"The answer is 3.5", "answer is 3.5"}, {"1,000", "1000"},
        {"yes, it is!", "yes it is"}, {"dont", "don't"},                     {"coca-cola", "coca cola"},
        {"a-b c", "b c"},             {"a - b", "b"},                         {"(a)", ""},
        {"a(b)", "b"},                {"U.S.A.", "usa"},                      {"5 p.m.", "5 pm"},
        {"it's 3:00", "it 's 3:00"},  {"The cat's toy", "cat 's toy"},        {"3.14.", "3.14"},
        {"a.b", "ab"},                {"$5", "$5"},                           {"50%", "50%"},
        {"None", "0"},                {"one hundred", "1 hundred"},           {"the the", ""},
        {"jan. 2nd, 2019", "jan 2nd 2019"}, {"covid-19", "covid 19"},         {"tab\tsep\nnl", "tab sep nl"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) T_STR_EQ(vqa_normalize(v[i][0]), v[i][1]);
    /* 40 dots → 8 remain (the 32 passed as re.sub's count) */
    char dots[41];
    memset(dots, '.', 40);
    dots[40] = 0;
    T_STR_EQ(vqa_normalize(dots), "........");
    /* The table holds the 120 keys of §B1. */
    T_EQ_INT(vqa_contractions_count(), 120);
    /* Derived from §B1: the upstream value somebody'd → somebodyd; keys with capitals (Im, Ive) never
     * match after lower-casing; let's maps to itself. */
    T_STR_EQ(vqa_normalize("somebody'd"), "somebodyd");
    T_STR_EQ(vqa_normalize("Im"), "im");
    T_STR_EQ(vqa_normalize("Ive"), "ive");
    T_STR_EQ(vqa_normalize("youre"), "you're");
    /* Punctuation tested against the text entering step 3, not the edited text: in "a-b - c" the
     * " -" occurrence makes every '-' deleted, so "a-b" fuses. */
    T_STR_EQ(vqa_normalize("x-y - z"), "xy z");
    /* '?' and ',' are deleted in step 1; "'s" split. */
    T_STR_EQ(vqa_normalize("What's it?"), "what 's it");
    /* '.' before a digit stays; 'ten' maps to 10; an article dropped after number mapping. */
    T_STR_EQ(vqa_normalize("Ten .5 an apple"), "10 .5 apple");
    /* Characters outside the 21 (: ' * # $ % & ^ ~ |) stay. */
    T_STR_EQ(vqa_normalize("a*b#c&d^e~f|g"), "a*b#c&d^e~f|g");
}

static void test_vqa_accuracy(void) {
    /* §B1: k matching GTs out of 10 → 0, 0.3, 0.6, 0.9, 1.0 */
    const char *gts[10];
    const double want[] = {0.0, 0.3, 0.6, 0.9, 1.0};
    for (int k = 0; k <= 4; k++) {
        for (int i = 0; i < 10; i++) gts[i] = i < k ? "Two" : "three";
        T_NEAR(vqa_soft_accuracy("2", gts, 10), want[k]);
    }
    for (int i = 0; i < 10; i++) gts[i] = "yes";
    T_NEAR(vqa_soft_accuracy("Yes.", gts, 10), 1.0); /* normalised both sides */
    for (int i = 0; i < 10; i++) gts[i] = i < 5 ? "coca cola" : "pepsi";
    T_NEAR(vqa_soft_accuracy("Coca-Cola", gts, 10), 1.0); /* k = 5 >= 4 */
}

static void test_anls(void) {
    /* Derived from §B3 (lmms-eval anls): exact → 1; one edit in five → 0.8. */
    const char *g1[] = {"hello"};
    T_NEAR(anls_lmms("hello", g1, 1), 1.0);
    T_NEAR(anls_lmms("helo", g1, 1), 0.8);
    T_NEAR(anls_lmms("HELLO ", g1, 1), 1.0); /* strip + lower before the distance */
    /* Raw-string denominator: gt "ab  " (raw length 4, normalised "ab"), pred "ax": d = 1;
     * lmms: 1/max(4,2) = 0.25 → 0.75. RRC: 1/max(2,2) = 0.5, not < 0.5 → 0. */
    const char *g2[] = {"ab  "};
    T_NEAR(anls_lmms("ax", g2, 1), 0.75);
    T_NEAR(anls_rrc("ax", g2, 1), 0.0);
    /* NL == 0.5 exactly: lmms keeps q = 0.5 (only q < 0.5 is zeroed), RRC gives 0. */
    const char *g3[] = {"ab"};
    T_NEAR(anls_lmms("ax", g3, 1), 0.5);
    T_NEAR(anls_rrc("ax", g3, 1), 0.0);
    /* Below the threshold: "abc" vs "xyz": NL = 1 → 0. */
    const char *g4[] = {"abc"};
    T_NEAR(anls_lmms("xyz", g4, 1), 0.0);
    /* Best GT: min NL over the list. */
    const char *g5[] = {"xyz", "hello"};
    T_NEAR(anls_lmms("helo", g5, 2), 0.8);
    T_NEAR(anls_rrc("helo", g5, 2), 0.8);
    /* Both empty → NL 0 → 1. */
    const char *g6[] = {""};
    T_NEAR(anls_lmms("", g6, 1), 1.0);
    /* len(g.upper()): "straße".upper() = "STRASSE" (7); distance "straße"→"strasse" = 2 → 1 - 2/7. */
    const char *g7[] = {"stra\xC3\x9F" "e"};
    T_NEAR(anls_lmms("strasse", g7, 1), 1.0 - 2.0 / 7.0);
}

static void test_chartqa(void) {
    /* §B4 Cambrian: |a-g| <= 0.05|g| */
    T_CHECK(chartqa_correct_cambrian("12", "12.5"), "0.5 <= 0.625");
    T_CHECK(!chartqa_correct_cambrian("13.2", "12.5"), "0.7 > 0.625");
    T_CHECK(chartqa_correct_cambrian("12.5", "12.5"), "equal");
    /* g = 0 needs exact 0 */
    T_CHECK(chartqa_correct_cambrian("0", "0"), "0 == 0");
    T_CHECK(chartqa_correct_cambrian("0.0", "0"), "0.0 == 0 as floats");
    T_CHECK(!chartqa_correct_cambrian("0.01", "0"), "g=0: any difference is wrong");
    /* float() rules: ',' and '%' are not numbers → string equality */
    T_CHECK(!chartqa_correct_cambrian("1,000", "1000"), "'1,000' is not a float");
    T_CHECK(chartqa_correct_cambrian("50%", "50%"), "same strings");
    T_CHECK(!chartqa_correct_cambrian("50%", "0.5"), "Cambrian does not read percent");
    T_CHECK(chartqa_correct_cambrian("Yes", "yes"), "lower-cased");
    T_CHECK(chartqa_correct_cambrian(" 12 ", "12"), "float() allows surrounding spaces");
    T_CHECK(chartqa_correct_cambrian("1_000", "1000"), "float() allows '_' between digits");
    /* §B4 lmms-eval: trailing % is /100; relative check only for a non-zero target */
    T_CHECK(chartqa_correct_lmms("50%", "0.5"), "50 percent = 0.5");
    T_CHECK(chartqa_correct_lmms("0.51", "50%"), "0.01/0.5 = 2 percent");
    T_CHECK(!chartqa_correct_lmms("0.0", "0"), "zero target: string equality '0.0' != '0'");
    T_CHECK(chartqa_correct_lmms("0", "0"), "zero target, same string");
    T_CHECK(chartqa_correct_lmms("12", "12.5"), "4 percent relative");
    T_CHECK(chartqa_correct_lmms("ABC", "abc"), "case-insensitive");
}

static void test_ocrbench(void) {
    /* §B5: any GT substring of the prediction; HME removes spaces and keeps case */
    const char *g1[] = {"x^{2}"};
    T_CHECK(ocrbench_correct("x ^ { 2 }", g1, 1, 1), "HME: spaces removed on both sides");
    T_CHECK(!ocrbench_correct("x ^ { 2 }", g1, 1, 0), "non-HME keeps spaces");
    const char *g2[] = {"X^{2}"};
    T_CHECK(!ocrbench_correct("x^{2}", g2, 1, 1), "HME keeps case");
    const char *g3[] = {"hello", "world"};
    T_CHECK(ocrbench_correct("The word is WORLD.", g3, 2, 0), "lower + substring, any GT");
    T_CHECK(!ocrbench_correct("hell", g3, 2, 0), "GT must be inside pred, not the reverse");
    const char *g4[] = {"two\nlines"};
    T_CHECK(ocrbench_correct("two lines", g4, 1, 0), "\\n → space");
    /* lmms-eval: fullwidth folded before lower-casing */
    const char *g5[] = {"abc"};
    T_CHECK(!ocrbench_correct("\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3", g5, 1, 0), "ＡＢＣ lowers to fullwidth ａｂｃ");
    T_CHECK(ocrbench_correct_lmms("\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3", g5, 1, 0), "folded to ABC");
}

static void test_yes_no(void) {
    /* §B6 MME Cambrian: lower, rstrip('.'), exact */
    T_CHECK(mme_correct("Yes.", "Yes"), "rstrip('.')");
    T_CHECK(!mme_correct("Yes, it is.", "Yes"), "'yes, …' is wrong");
    T_CHECK(!mme_correct(" yes", "Yes"), "no strip");
    /* §B6 official parse: yes/no, else the first 4 characters */
    T_CHECK(strcmp(mme_parse_official("Yes, it is"), "yes") == 0, "prefix 'yes,'");
    T_CHECK(strcmp(mme_parse_official("No"), "no") == 0, "no");
    T_CHECK(strcmp(mme_parse_official("Not sure"), "no") == 0, "'not ' contains 'no'");
    T_CHECK(strcmp(mme_parse_official("I think yes"), "other") == 0, "'i th' has neither");
    /* §B7 POPE Cambrian: first word, rstrip('.:,') */
    T_STR_EQ(pope_first_token("Yes, there is a dog."), "yes");
    T_STR_EQ(pope_first_token("  No.  "), "no");
    T_CHECK(pope_first_token("") == NULL, "empty output: no first word");
    T_CHECK(pope_first_token(" \n") == NULL, "whitespace only");
    /* §B7 LLaVA: before the first '.', ',' removed, split(' '), {No, not, no} → no */
    T_CHECK(!pope_llava_is_yes("No, there is not."), "No");
    T_CHECK(!pope_llava_is_yes("There is no dog"), "no");
    T_CHECK(pope_llava_is_yes("Yes. There is no cat."), "only the first sentence counts");
    T_CHECK(pope_llava_is_yes("Not really"), "'Not' (capital) is not in the set");
    T_CHECK(pope_llava_is_yes("no\nthere"), "split(' ') keeps 'no\\nthere' whole");
    T_CHECK(!pope_llava_is_yes("no,"), "',' deleted before the split");
    /* §B15 HallusionBench, VLMEvalKit YOrN: punctuation-processed words */
    T_EQ_INT(yorn_extract("Yes, it is."), 1);
    T_EQ_INT(yorn_extract("No."), 0);
    T_EQ_INT(yorn_extract("yes and no"), -1);
    T_EQ_INT(yorn_extract("Yes-no"), -1); /* '-' becomes a space: both words */
    T_EQ_INT(yorn_extract("The answer is (yes)"), 1);
    T_EQ_INT(yorn_extract("Nope"), -1);
    T_EQ_INT(hb_intern_is_yes("Yesterday"), 1); /* substring rule */
    T_EQ_INT(hb_intern_is_yes("No"), 0);
}

static void test_mcq(void) {
    /* §B8 vectors */
    static const char *const v[][2] = {
        {"A", "a"},       {"(B)", "b"},     {"B) cat", "b"}, {"The answer is C.", "c"}, {"Answer: D", "d"},
        {"C: dog", "c"},  {"I think it is A", "i"},          {"Option A", "o"},          {"10", "1"},
        {"answer is: (a)", ":"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) T_STR_EQ(mcq_extract(v[i][0]), v[i][1]);
    /* Derived: the keyword splits run in turn and take the text after the last occurrence */
    T_STR_EQ(mcq_extract("The answer is B, not the answer is C"), "c");
    T_STR_EQ(mcq_extract(""), "");
    T_STR_EQ(mcq_extract("(((a)))"), "a");
    /* SEED (§B9): rstrip('.') only — ':' survives */
    T_STR_EQ(mcq_extract(":"), "");
    T_STR_EQ(mcq_extract_seed(":"), ":");
    T_STR_EQ(mcq_extract_seed("B."), "b");
    /* MMVP (§B14): no first-character truncation */
    T_STR_EQ(mcq_extract_mmvp("(a)"), "a");
    T_STR_EQ(mcq_extract_mmvp("Open."), "open");
    T_STR_EQ(mcq_extract_mmvp("(a) Open"), "a) open");
    int n;
    char **o = mmvp_give_options("(a) Open (b) Closed", &n);
    T_EQ_INT(n, 2);
    T_CHECK(n == 2 && strcmp(o[0], "open") == 0 && strcmp(o[1], "closed") == 0, "give_options");
    py_strv_free(o, n);
    /* RealWorldQA (§B13): first word after rstrip('.'); "(C)" stays "(c)" */
    T_STR_EQ(rwqa_extract("(C)"), "(c)");
    T_STR_EQ(rwqa_extract("C."), "c");
    T_STR_EQ(rwqa_extract("The answer is B"), "b");
    T_STR_EQ(rwqa_extract("C. The car"), "c.");
    T_CHECK(rwqa_extract("  ") == NULL, "empty → scored wrong");
    /* MMMU open (§B11) */
    T_STR_EQ(open_extract("The answer is 42."), "42");
    /* GQA (§B10): lower, rstrip('.'), no strip */
    T_CHECK(gqa_correct("Yes.", "yes"), "rstrip");
    T_CHECK(!gqa_correct(" yes", "yes"), "no strip");
    /* MMMU tolerance is relative to the prediction (§B11): gt 100, t 95: 5 > 0.05*95 */
    T_CHECK(!mmmu_correct("95", "100"), "5 > 4.75");
    T_CHECK(mmmu_correct("100", "105"), "5 <= 5");
    T_CHECK(mmmu_correct("b", "B"), "letter");
    T_CHECK(!mmmu_correct("a", "B"), "other letter");
}

static void test_python_semantics(void) {
    double x;
    /* §B0 float(): whitespace, '_', exponent, inf/nan; rejects ',' and '%' */
    T_CHECK(py_float(" 1.5 ", &x) == 0 && x == 1.5, "spaces");
    T_CHECK(py_float("1_000", &x) == 0 && x == 1000, "underscore");
    T_CHECK(py_float("1e3", &x) == 0 && x == 1000, "exponent");
    T_CHECK(py_float("-.5", &x) == 0 && x == -0.5, ".5");
    T_CHECK(py_float("5.", &x) == 0 && x == 5, "5.");
    T_CHECK(py_float("iNf", &x) == 0 && isinf(x) && x > 0, "inf");
    T_CHECK(py_float("-Infinity", &x) == 0 && isinf(x) && x < 0, "-Infinity");
    T_CHECK(py_float("nan", &x) == 0 && isnan(x), "nan");
    T_CHECK(py_float("\xD9\xA1\xD9\xA2", &x) == 0 && x == 12, "Arabic-Indic digits");
    T_CHECK(py_float("\xC2\xA0" "7\xE3\x80\x80", &x) == 0 && x == 7, "Unicode whitespace");
    const char *bad[] = {"1,000", "50%", "", " ", "1__0", "_1", "1_", "1._5", "0x10", "1e", ".", "e5", "inf5", "1 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        T_CHECK(py_float(bad[i], &x) == -1, "'%s' must be rejected", bad[i]);
    /* lower(): Latin-1, İ → i + U+0307, final sigma */
    T_STR_EQ(py_lower("\xC3\x80\xC3\x89Z"), "\xC3\xA0\xC3\xA9z");
    T_STR_EQ(py_lower("\xC4\xB0"), "i\xCC\x87");
    T_STR_EQ(py_lower("\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3"), "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82"); /* ΟΔΟΣ → οδος */
    T_STR_EQ(py_lower("\xCE\xA3\xCE\x91"), "\xCF\x83\xCE\xB1");                                /* ΣΑ → σα */
    T_STR_EQ(py_lower("\xD0\x9F\xD0\xA0\xD0\x98"), "\xD0\xBF\xD1\x80\xD0\xB8");                /* ПРИ */
    /* split(): Unicode whitespace */
    int n;
    char **w = py_split("a\xC2\xA0" "b\xE3\x80\x80" "c \n", &n);
    T_EQ_INT(n, 3);
    py_strv_free(w, n);
    T_STR_EQ(py_rstrip_chars("x.:,.", ".:,"), "x");
    T_STR_EQ(py_lstrip_chars("((a", "("), "a");
    T_EQ_INT(py_len("\xC3\xA9t\xC3\xA9"), 3);
    T_EQ_INT(py_upper_len("\xEF\xAC\x81"), 2); /* ﬁ → FI */
    T_EQ_INT(levenshtein("kitten", "sitting"), 3);
    T_EQ_INT(levenshtein("", "abc"), 3);
    T_EQ_INT(levenshtein("\xC3\xA9", "e"), 1); /* code points, not bytes */
}

int main(void) {
    test_vqa_normalize();
    test_vqa_accuracy();
    test_anls();
    test_chartqa();
    test_ocrbench();
    test_yes_no();
    test_mcq();
    test_python_semantics();
    return t_done();
}
