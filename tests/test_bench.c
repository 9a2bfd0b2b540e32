/* test_bench.c — eval/bench.h: the prompt of every benchmark against the construction in
 * reference/data_and_eval.md §B2–B15 (written out by hand here), and the aggregate metrics
 * (MME acc+, POPE F1, MMBench circular groups, MMVP pairs, HallusionBench fAcc/qAcc) on small
 * hand-made sets whose expected values are worked out in the comments. */
#include <jansson.h>
#include <math.h>

#include "bench.h"
#include "test.h"

static char *prompt_of(const char *bench, const char *json) {
    json_error_t je;
    json_t *q = json_loads(json, 0, &je);
    if (!q) {
        fprintf(stderr, "bad test JSON: %s\n", je.text);
        return NULL;
    }
    asvr_error err;
    char *p = bench_prompt(bench_find(bench), q, &err);
    if (!p) fprintf(stderr, "%s: %s\n", bench, err.msg);
    json_decref(q);
    return p;
}

#define T_PROMPT(bench, json, want)                                                                \
    do {                                                                                           \
        char *p_ = prompt_of(bench, json);                                                         \
        T_CHECK(p_ && strcmp(p_, want) == 0, "%s prompt:\n[%s]\nwant:\n[%s]", bench, p_ ? p_ : "(null)", want); \
        free(p_);                                                                                  \
    } while (0)

#define WORD "Answer the question using a single word or phrase."
#define LETTER "Answer with the option's letter from the given choices directly."

static void test_prompts(void) {
    /* §B2: OCR header even with no tokens; tokens " t1, t2" */
    T_PROMPT("textvqa", "{\"question\":\"what brand?\",\"image\":\"a.jpg\",\"ocr_tokens\":[\"coca\",\"cola\"]}",
             "<image>\nwhat brand?\nReference OCR tokens: coca, cola\n" WORD);
    T_PROMPT("textvqa", "{\"question\":\"what?\",\"image\":\"a.jpg\",\"ocr_tokens\":[]}",
             "<image>\nwhat?\nReference OCR tokens:\n" WORD);
    T_PROMPT("docvqa", "{\"question\":\"date?\",\"image\":\"d.png\"}", "<image>\ndate?\nGive the short answer directly.");
    T_PROMPT("ocrbench", "{\"question\":\"text?\",\"image\":\"o.png\"}", "<image>\ntext?\nGive the short answer directly.");
    T_PROMPT("chartqa", "{\"question\":\"max?\",\"image\":\"c.png\"}",
             "<image>\nmax?\nAnswer the question using a single number or phrase.");
    /* §B8: hint line when not "nan"; options "nan" skipped, letters by position */
    T_PROMPT("mmbench_en_dev",
             "{\"question\":\"Which?\",\"hint\":\"Look.\",\"image\":\"m.jpg\",\"options\":[\"x\",\"y\",\"nan\",null]}",
             "<image>\nLook.\nWhich? Options:\nA. x\nB. y\n" LETTER);
    T_PROMPT("mmbench_en_dev", "{\"question\":\"Which?\",\"hint\":\"nan\",\"image\":\"m.jpg\",\"options\":[\"x\",\"y\",\"z\"]}",
             "<image>\nWhich? Options:\nA. x\nB. y\nC. z\n" LETTER);
    /* §B6 (the question already ends with "Please answer yes or no.") */
    T_PROMPT("mme", "{\"question\":\"Is it red? Please answer yes or no.\",\"image\":\"e.png\"}",
             "<image>\nIs it red? Please answer yes or no.\n" WORD);
    /* §B9 */
    T_PROMPT("seed_image", "{\"question\":\"How many?\",\"image\":\"s.jpg\",\"options\":[\"1\",\"2\",\"3\",\"4\"]}",
             "<image>\nHow many? Options:\nA. 1\nB. 2\nC. 3\nD. 4\n" LETTER);
    T_PROMPT("gqa", "{\"question\":\"Color?\",\"image\":\"g.jpg\"}", "<image>\nColor?\n" WORD);
    /* §B11: MC and open; <image N> removed after the prefix, then stripped */
    T_PROMPT("mmmu_val",
             "{\"question\":\"<image 1> What is shown?\",\"image\":\"u.png\",\"question_type\":\"multiple-choice\","
             "\"options\":[\"cat <image 2>\",\"dog\"]}",
             "<image>\n What is shown? Options:\nA. cat \nB. dog\n" LETTER);
    T_PROMPT("mmmu_val", "{\"question\":\"Compute x. <image 12>\",\"image\":\"u.png\",\"question_type\":\"open\"}",
             "<image>\nCompute x. \n" WORD);
    T_PROMPT("mmmu_val", "{\"question\":\" <image 1>\",\"question_type\":\"open\"}", WORD);
    /* §B12: no " Options:" */
    T_PROMPT("ai2d", "{\"question\":\"Which part?\",\"image\":\"i.png\",\"options\":[\"leaf\",\"root\"]}",
             "<image>\nWhich part?\nA. leaf\nB. root\n" LETTER);
    /* §B13: the question as is */
    T_PROMPT("realworldqa", "{\"question\":\"Which way? A. left B. right Please answer directly.\",\"image\":\"r.webp\"}",
             "<image>\nWhich way? A. left B. right Please answer directly.");
    /* §B14 (mmvp_eval.py process): split on "(b)", strip, (a)→A., parts[1] = "B. " + part */
    T_PROMPT("mmvp", "{\"question\":\"Is the door open?\",\"image\":\"1.jpg\",\"options_raw\":\"(a) Open (b) Closed\"}",
             "<image>\nIs the door open? Options:\nA. Open\nB. Closed\n" LETTER);
    T_PROMPT("hallusionbench", "{\"question\":\"Is this a cat?\",\"image\":\"h.png\"}", "<image>\nIs this a cat?\n" WORD);
    T_PROMPT("pope", "{\"question\":\"Is there a dog in the image?\",\"image\":\"p.jpg\"}",
             "<image>\nIs there a dog in the image?\n" WORD);
    /* A row without what the prompt needs is refused. */
    T_CHECK(prompt_of("ai2d", "{\"question\":\"x\",\"image\":\"i.png\",\"options\":[\"1\",\"2\",\"3\",\"4\",\"5\"]}") == NULL,
            "AI2D with 5 options (\"ABCD\"[4] fails in the reference)");
    T_CHECK(prompt_of("seed_image", "{\"question\":\"x\"}") == NULL, "SEED without options");
    /* max_new_tokens (§B16) */
    const char *names[] = {"textvqa", "docvqa", "ocrbench", "chartqa", "mmbench_en_dev", "mme", "seed_image",
                           "gqa", "mmmu_val", "ai2d", "realworldqa", "mmvp", "hallusionbench", "pope"};
    const int toks[] = {512, 128, 512, 128, 512, 32, 512, 128, 512, 512, 512, 512, 128, 128};
    int n;
    const bench_def *all = bench_all(&n);
    T_EQ_INT(n, 14);
    for (int i = 0; i < 14 && i < n; i++) {
        T_CHECK(strcmp(all[i].name, names[i]) == 0, "column %d is %s", i, all[i].name);
        T_EQ_INT(all[i].max_new_tokens, toks[i]);
    }
}

/* A set from (question JSON, answer) pairs. */
static void make_set(bench_set *s, const char *const *qs, const char *const *preds, size_t n) {
    memset(s, 0, sizeof *s);
    s->path = strdup("memory.jsonl");
    s->items = calloc(n, sizeof *s->items);
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        json_error_t je;
        s->items[i].q = json_loads(qs[i], 0, &je);
        if (!s->items[i].q) fprintf(stderr, "bad test JSON %zu: %s\n", i, je.text);
        char buf[64];
        if (bench_qid_text(json_object_get(s->items[i].q, "question_id"), buf, sizeof buf) < 0) snprintf(buf, sizeof buf, "%zu", i);
        s->items[i].qid = strdup(buf);
        s->items[i].pred = strdup(preds[i]);
        s->items[i].answered = 1;
        s->items[i].line = (long)i + 1;
    }
    s->answered = n;
}

static double metric(json_t *sc, const char *name) {
    json_t *v = json_object_get(json_object_get(sc, "metrics"), name);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static json_t *score(const char *bench, const char *const *qs, const char *const *preds, size_t n) {
    bench_set s;
    make_set(&s, qs, preds, n);
    asvr_error err;
    json_t *sc = bench_score(bench_find(bench), &s, &err);
    if (!sc) fprintf(stderr, "%s: %s\n", bench, err.msg);
    bench_set_free(&s);
    return sc;
}

/* measured 0 (exact here); 1e-12 leaves a few double roundings of scores up to 200 */
#define T_NEAR(a, b) T_CHECK(fabs((a) - (b)) < 1e-12, "%.9g != %.9g", (double)(a), (double)(b))

static void test_mme(void) {
    /* §B6: existence, 2 images × 2 questions: image 1 both right, image 2 first right only →
     * acc 3/4, acc+ 1/2, score 100·(0.75 + 0.5) = 125. code_reasoning, 1 image, both right → 200.
     * Perception = 125, Cognition = 200. */
    const char *qs[] = {
        "{\"question_id\":\"e/1#0\",\"image\":\"e/1.png\",\"category\":\"existence\",\"answer\":\"Yes\"}",
        "{\"question_id\":\"e/1#1\",\"image\":\"e/1.png\",\"category\":\"existence\",\"answer\":\"No\"}",
        "{\"question_id\":\"e/2#0\",\"image\":\"e/2.png\",\"category\":\"existence\",\"answer\":\"Yes\"}",
        "{\"question_id\":\"e/2#1\",\"image\":\"e/2.png\",\"category\":\"existence\",\"answer\":\"No\"}",
        "{\"question_id\":\"c/1#0\",\"image\":\"c/1.png\",\"category\":\"code_reasoning\",\"answer\":\"Yes\"}",
        "{\"question_id\":\"c/1#1\",\"image\":\"c/1.png\",\"category\":\"code_reasoning\",\"answer\":\"No\"}",
    };
    const char *preds[] = {"Yes", "No.", "yes", "Yes", "Yes", "No, it does not."};
    json_t *sc = score("mme", qs, preds, 6);
    T_CHECK(sc != NULL, "scored");
    /* Cambrian: "No, it does not." is wrong (exact), so code_reasoning: acc 1/2, acc+ 0 → 50. */
    T_NEAR(metric(sc, "perception"), 125.0);
    T_NEAR(metric(sc, "cognition"), 50.0);
    /* Official parse: "No, it does not." → first 4 chars "no, " → no → right: 200. */
    T_NEAR(metric(sc, "official_cognition"), 200.0);
    T_CHECK(strcmp(json_string_value(json_object_get(json_object_get(sc, "reported"), "metric")), "perception") == 0,
            "MME reports Perception");
    json_decref(sc);
    /* Second question right, first wrong: the reference counter does not count it (acc+ 0). */
    const char *qs2[] = {qs[0], qs[1]};
    const char *p2[] = {"No", "No"};
    sc = score("mme", qs2, p2, 2);
    T_NEAR(metric(sc, "perception"), 50.0); /* acc 1/2, acc+ 0 */
    json_decref(sc);
}

static void test_pope(void) {
    /* §B7. random: gts yes,yes,no,no; preds "Yes","No","No","Yes, there is" → LLaVA yes,no,no,yes:
     * tp 1 fn 1 tn 1 fp 1 → P = R = F1 = acc = yes_ratio = 0.5. popular: 2 right → F1 1.
     * mean F1 = 0.75. Cambrian accuracy: random 2/4 right, popular 2/2 → 4/6. */
    const char *qs[] = {
        "{\"question_id\":1,\"category\":\"random\",\"answer\":\"yes\"}",
        "{\"question_id\":2,\"category\":\"random\",\"answer\":\"yes\"}",
        "{\"question_id\":3,\"category\":\"random\",\"answer\":\"no\"}",
        "{\"question_id\":4,\"category\":\"random\",\"answer\":\"no\"}",
        "{\"question_id\":5,\"category\":\"popular\",\"answer\":\"yes\"}",
        "{\"question_id\":6,\"category\":\"popular\",\"answer\":\"no\"}",
    };
    const char *preds[] = {"Yes", "No", "No", "Yes, there is", "Yes.", "No"};
    json_t *sc = score("pope", qs, preds, 6);
    T_NEAR(metric(sc, "accuracy"), 100.0 * 4 / 6);
    T_NEAR(metric(sc, "llava_mean_f1"), 75.0);
    json_t *r = json_object_get(json_object_get(json_object_get(sc, "breakdown"), "llava"), "random");
    T_NEAR(json_number_value(json_object_get(r, "f1")), 50.0);
    T_NEAR(json_number_value(json_object_get(r, "precision")), 50.0);
    T_NEAR(json_number_value(json_object_get(r, "recall")), 50.0);
    T_NEAR(json_number_value(json_object_get(r, "yes_ratio")), 50.0);
    json_decref(sc);
    /* An empty output is wrong (the reference crashes on split()[0]). */
    const char *q1[] = {qs[0]};
    const char *p1[] = {""};
    sc = score("pope", q1, p1, 1);
    T_NEAR(metric(sc, "accuracy"), 0.0);
    json_decref(sc);
}

static void test_mmbench(void) {
    /* §B8: rows 1 and 1000001 are circular copies (index % 1e6), both right → group right; rows 2 and
     * 1000002, one wrong → group wrong; circular 1/2, per-row 3/4. */
    const char *qs[] = {
        "{\"question_id\":1,\"index\":1,\"answer\":\"A\",\"category\":\"x\"}",
        "{\"question_id\":1000001,\"index\":1000001,\"answer\":\"B\",\"category\":\"x\"}",
        "{\"question_id\":2,\"index\":2,\"answer\":\"C\",\"category\":\"x\"}",
        "{\"question_id\":1000002,\"index\":1000002,\"answer\":\"D\",\"category\":\"x\"}",
    };
    const char *preds[] = {"A", "(B)", "The answer is C.", "A"};
    json_t *sc = score("mmbench_en_dev", qs, preds, 4);
    T_NEAR(metric(sc, "circular_accuracy"), 50.0);
    T_NEAR(metric(sc, "accuracy"), 75.0);
    T_EQ_INT(json_integer_value(json_object_get(sc, "groups")), 2);
    json_decref(sc);
    /* An explicit circular_group wins over index. */
    const char *qs2[] = {
        "{\"question_id\":1,\"index\":1,\"circular_group\":\"g\",\"answer\":\"A\"}",
        "{\"question_id\":2,\"index\":2,\"circular_group\":\"g\",\"answer\":\"B\"}",
    };
    const char *p2[] = {"A", "C"};
    sc = score("mmbench_en_dev", qs2, p2, 2);
    T_NEAR(metric(sc, "circular_accuracy"), 0.0);
    T_EQ_INT(json_integer_value(json_object_get(sc, "groups")), 1);
    json_decref(sc);
}

static void test_mmvp(void) {
    /* §B14: pair 1 both right (letter, then option text), pair 2 second wrong → 1 pair of 2 → 50;
     * per question 3/4. */
    const char *qs[] = {
        "{\"question_id\":1,\"options_raw\":\"(a) Open (b) Closed\",\"answer\":\"(a)\",\"pair_id\":1}",
        "{\"question_id\":2,\"options_raw\":\"(a) Open (b) Closed\",\"answer\":\"(b)\",\"pair_id\":1}",
        "{\"question_id\":3,\"options_raw\":\"(a) Yes (b) No\",\"answer\":\"(a)\",\"pair_id\":2}",
        "{\"question_id\":4,\"options_raw\":\"(a) Yes (b) No\",\"answer\":\"(b)\",\"pair_id\":2}",
    };
    const char *preds[] = {"(a)", "Closed.", "A", "a"};
    json_t *sc = score("mmvp", qs, preds, 4);
    T_NEAR(metric(sc, "accuracy"), 50.0);
    T_NEAR(metric(sc, "question_accuracy"), 75.0);
    json_decref(sc);
}

static void test_hallusion(void) {
    /* §B15: figure f0 of set 1 has questions q0, q1; figure f1 has q0, q1. preds: f0q0 right, f0q1 right,
     * f1q0 wrong ("maybe"), f1q1 right. aAcc 3/4; fAcc: f0 right, f1 wrong → 1/2; qAcc: q0 group
     * (f0q0, f1q0) wrong, q1 group right → 1/2. Overall = (75 + 50 + 50) / 3. */
    const char *qs[] = {
        "{\"question_id\":\"a\",\"category\":\"VS\",\"subcategory\":\"chart\",\"set_id\":1,\"figure_id\":0,\"hb_question_id\":0,\"answer\":\"yes\"}",
        "{\"question_id\":\"b\",\"category\":\"VS\",\"subcategory\":\"chart\",\"set_id\":1,\"figure_id\":0,\"hb_question_id\":1,\"answer\":\"no\"}",
        "{\"question_id\":\"c\",\"category\":\"VS\",\"subcategory\":\"chart\",\"set_id\":1,\"figure_id\":1,\"hb_question_id\":0,\"answer\":\"0\"}",
        "{\"question_id\":\"d\",\"category\":\"VS\",\"subcategory\":\"chart\",\"set_id\":1,\"figure_id\":1,\"hb_question_id\":1,\"answer\":\"1\"}",
    };
    const char *preds[] = {"Yes.", "No, it is not.", "maybe", "yes"};
    json_t *sc = score("hallusionbench", qs, preds, 4);
    T_NEAR(metric(sc, "aAcc"), 75.0);
    T_NEAR(metric(sc, "fAcc"), 50.0);
    T_NEAR(metric(sc, "qAcc"), 50.0);
    T_NEAR(metric(sc, "overall_mean"), 175.0 / 3.0);
    /* intern rule: "maybe" has no "yes" → no → right for gt 0: all 4 right. */
    T_NEAR(metric(sc, "intern_aAcc"), 100.0);
    json_decref(sc);
}

static void test_others(void) {
    /* TextVQA with 9 answers is a malformed row (the reference asserts 10). */
    const char *q1[] = {"{\"question_id\":1,\"answers\":[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}"};
    const char *p1[] = {"a"};
    bench_set s;
    make_set(&s, q1, p1, 1);
    asvr_error err;
    json_t *sc = bench_score(bench_find("textvqa"), &s, &err);
    T_CHECK(sc == NULL && strstr(err.msg, "malformed"), "9 answers refused: %s", err.msg);
    bench_set_free(&s);
    /* AI2D: letters map to indices; an unmapped prediction stays as is ("1" equals gt "1"). */
    const char *q2[] = {"{\"question_id\":1,\"answer\":\"1\"}", "{\"question_id\":2,\"answer\":\"1\"}",
                        "{\"question_id\":3,\"answer\":\"2\"}"};
    const char *p2[] = {"B", "1", "A"};
    sc = score("ai2d", q2, p2, 3);
    T_NEAR(metric(sc, "accuracy"), 200.0 / 3.0);
    json_decref(sc);
    /* OCRBench: score counts correct answers; total_accuracy is the percentage. */
    const char *q3[] = {
        "{\"question_id\":1,\"question_type\":\"Regular Text Recognition\",\"answers\":[\"stop\"]}",
        "{\"question_id\":2,\"question_type\":\"Handwritten Mathematical Expression Recognition\",\"answers\":[\"a+b\"]}",
    };
    const char *p3[] = {"STOP sign", "a + b"};
    sc = score("ocrbench", q3, p3, 2);
    T_NEAR(metric(sc, "total_accuracy"), 100.0);
    T_NEAR(metric(sc, "score"), 2.0);
    json_decref(sc);
    /* DocVQA without ground truth (test split) is refused with the reason. */
    const char *q4[] = {"{\"question_id\":1,\"question\":\"x\"}"};
    make_set(&s, q4, p1, 1);
    sc = bench_score(bench_find("docvqa"), &s, &err);
    T_CHECK(sc == NULL, "DocVQA test split is not scored locally");
    bench_set_free(&s);
}

int main(void) {
    test_prompts();
    test_mme();
    test_pope();
    test_mmbench();
    test_mmvp();
    test_hallusion();
    test_others();
    return t_done();
}
