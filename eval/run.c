/* asvr-eval run — answers every question of a benchmark file with greedy decoding and scores them:
 * RUN/answers/<bench>.jsonl (one {question_id, answer} per line, appended batch by batch, so a rerun
 * skips what is answered) and RUN/scores/<bench>.json (every metric variant, atomically).
 * --shard K/N answers part K of N (question i of the file, counting non-blank lines from 0, goes to
 * part i mod N) into RUN/answers/<bench>.part-K-of-N.jsonl and does not score: `asvr-eval score
 * --answers RUN/answers` reads every part. --shard auto takes K, N and (with --device cuda) the local
 * rank's GPU from mpirun/srun (base/shard.h). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "base/progress.h"
#include "base/shard.h"
#include "bench.h"
#include "commands.h"
#include "eval_model.h"
#include "nn/device.h"

/* Keeps the well-formed lines of an existing answers file (a killed run may leave a partial last
 * line) and returns the set of answered question ids. */
static json_t *load_answered(const char *path, asvr_error *err) {
    json_t *seen = json_object();
    if (!asvr_path_exists(path)) return seen;
    uint8_t *data;
    size_t n;
    if (asvr_read_file(path, &data, &n, err) < 0) {
        json_decref(seen);
        return NULL;
    }
    char *kept = asvr_malloc(n + 1, "answers");
    size_t kn = 0;
    int dropped = 0;
    char *save = NULL;
    for (char *line = strtok_r((char *)data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *o = json_loads(line, 0, NULL);
        char qid[512];
        if (o && json_is_string(json_object_get(o, "answer")) && bench_qid_text(json_object_get(o, "question_id"), qid, sizeof qid) == 0) {
            json_object_set_new(seen, qid, json_true());
            size_t l = strlen(line);
            memcpy(kept + kn, line, l);
            kept[kn + l] = '\n';
            kn += l + 1;
        } else {
            dropped++;
        }
        json_decref(o);
    }
    free(data);
    int rc = 0;
    if (dropped) {
        LOG_WARN("'%s': %d incomplete line(s) dropped (an interrupted run); those questions are answered again", path, dropped);
        rc = asvr_atomic_write(path, kept, kn, err);
    }
    free(kept);
    if (rc < 0) {
        json_decref(seen);
        return NULL;
    }
    return seen;
}

int cmd_run(int argc, char **argv) {
    eval_model_opts mo;
    eval_model_opts_default(&mo);
    const char *bench = NULL, *questions = NULL, *image_root = "", *out = NULL, *shard_s = NULL;
    int64_t batch = 8, limit = 0, max_new = 0;
    asvr_opt opts[EVAL_MODEL_NOPTS + 8];
    eval_model_opts_table(&mo, opts);
    int k = EVAL_MODEL_NOPTS;
    opts[k++] = (asvr_opt){"bench", ASVR_OPT_STR, &bench, "NAME", "benchmark (asvr-eval benchmarks lists them)"};
    opts[k++] = (asvr_opt){"questions", ASVR_OPT_STR, &questions, "Q.jsonl", "the benchmark's question file"};
    opts[k++] = (asvr_opt){"image-root", ASVR_OPT_STR, &image_root, "DIR", "folder the questions' image paths are relative to"};
    opts[k++] = (asvr_opt){"out", ASVR_OPT_STR, &out, "RUN_DIR", "run folder: answers/<bench>.jsonl and scores/<bench>.json"};
    opts[k++] = (asvr_opt){"batch", ASVR_OPT_COUNT, &batch, "N", "questions decoded together (default 8)"};
    opts[k++] = (asvr_opt){"limit", ASVR_OPT_COUNT, &limit, "N", "answer only the first N questions (a quick look; scores then need all)"};
    opts[k++] = (asvr_opt){"max-new-tokens", ASVR_OPT_COUNT, &max_new, "N", "override the benchmark's token limit"};
    opts[k++] = (asvr_opt){"shard", ASVR_OPT_STR, &shard_s, "K/N|auto",
                           "answer part K of N (question i goes to part i mod N) into answers/<bench>.part-K-of-N.jsonl, "
                           "unscored; auto: K, N and the GPU from mpirun/srun"};
    const asvr_cli cli = {"asvr-eval run",
                          "(--checkpoint DIR | --model FILE --config FILE) --vision FILE --tokenizer FILE --bench NAME "
                          "--questions Q.jsonl --image-root DIR --out RUN_DIR [options]",
                          "Answers a benchmark's questions with the evaluation prompt (vicuna_v1, image first) and greedy\n"
                          "decoding, appending to RUN_DIR/answers/<bench>.jsonl (a rerun skips answered questions), then\n"
                          "scores them into RUN_DIR/scores/<bench>.json for asvr-eval report. With --shard K/N it answers\n"
                          "part K of N into RUN_DIR/answers/<bench>.part-K-of-N.jsonl and leaves the scoring to\n"
                          "asvr-eval score --answers RUN_DIR/answers (every part, the same scores as one run).",
                          opts, k, 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!bench || !questions || !out) asvr_cli_usage_error(&cli, "--bench, --questions and --out are required");
    const bench_def *b = bench_find(bench);
    if (!b) asvr_cli_usage_error(&cli, "unknown benchmark '%s' (known: %s)", bench, bench_names());
    if (batch > 1024) asvr_cli_usage_error(&cli, "--batch must be at most 1024");
    if (max_new > 1 << 20) asvr_cli_usage_error(&cli, "--max-new-tokens must be at most %d", 1 << 20);
    asvr_shard shard;
    char shard_why[256], tag[64] = "";
    if (asvr_shard_parse(shard_s, &shard, shard_why, sizeof shard_why) < 0) asvr_cli_usage_error(&cli, "%s", shard_why);
    if (shard_s) asvr_shard_tag(&shard, tag, sizeof tag);

    asvr_error err = {{0}};
    bench_set s;
    if (bench_load_questions(questions, b, &s, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        bench_set_free(&s);
        return ASVR_EXIT_FAIL;
    }
    char ans_name[256], sc_name[256];
    if (shard_s) snprintf(ans_name, sizeof ans_name, "answers/%s.part-%s.jsonl", b->name, tag);
    else snprintf(ans_name, sizeof ans_name, "answers/%s.jsonl", b->name);
    snprintf(sc_name, sizeof sc_name, "scores/%s.json", b->name);
    char *ans_path = asvr_path_join(out, ans_name), *sc_path = asvr_path_join(out, sc_name), *ans_dir = asvr_path_dirname(ans_path);
    int rc = ASVR_EXIT_FAIL;
    eval_model em;
    int loaded = 0;
    json_t *seen = NULL;
    FILE *af = NULL;
    if (asvr_mkdir_p(ans_dir, &err) < 0 || !(seen = load_answered(ans_path, &err))) {
        LOG_ERROR("%s", err.msg);
        goto done;
    }
    size_t todo_n = 0, mine = 0, upto = limit > 0 && (size_t)limit < s.n ? (size_t)limit : s.n;
    size_t *todo = asvr_malloc(sizeof(size_t) * (s.n ? s.n : 1), "the question list");
    for (size_t i = 0; i < upto; i++) {
        if (!asvr_shard_owns(&shard, i)) continue;
        mine++;
        if (!json_object_get(seen, s.items[i].qid)) todo[todo_n++] = i;
    }
    if (shard_s)
        LOG_INFO("%s: %zu questions, part %d of %d (launcher %s) holds %zu: %zu already answered in '%s', %zu to answer",
                 b->name, s.n, shard.index, shard.count, shard.launcher, mine, mine - todo_n, ans_path, todo_n);
    else
        LOG_INFO("%s: %zu questions, %zu already answered in '%s', %zu to answer", b->name, s.n, mine - todo_n, ans_path,
                 todo_n);
    if (todo_n > 0) {
        if (shard_s && strcmp(mo.device, "cuda") == 0 && nn_use_cuda_device(shard.device, &err) < 0)
            asvr_cli_usage_error(&cli, "--shard %s: %s", shard_s, err.msg);
        if (eval_model_load(&cli, &mo, &em, &err) < 0) {
            LOG_ERROR("%s", err.msg);
            free(todo);
            goto done;
        }
        loaded = 1;
        int ctx = em.m.c.llm.max_positions;
        if (max_new > 0 && ctx > 0 && max_new >= ctx)
            asvr_cli_usage_error(&cli, "--max-new-tokens %lld: the model's context is %d positions (max_position_embeddings)",
                                 (long long)max_new, ctx);
        af = asvr_fopen_append(ans_path, &err);
        if (!af) {
            LOG_ERROR("%s", err.msg);
            free(todo);
            goto done;
        }
        int S = em.pre.size, mnt = max_new > 0 ? (int)max_new : b->max_new_tokens;
        int write_errno = 0;
        float *pixels = asvr_malloc(sizeof(float) * 3 * (size_t)S * S * (size_t)batch, "batch images");
        int64_t NC = eval_model_codes_per_image(&em);
        uint16_t *codes = asvr_malloc(sizeof(uint16_t) * (size_t)(NC * batch + 1), "batch image codes");
        ivec *ids = asvr_calloc((size_t)batch, sizeof *ids, "prompt ids");
        gen_prompt *gp = asvr_calloc((size_t)batch, sizeof *gp, "prompts");
        asvr_progress *bar = asvr_progress_begin(b->name, todo_n, "q");
        int failed = 0;
        for (size_t t0 = 0; t0 < todo_n && !failed; t0 += (size_t)batch) {
            int B = (int)((todo_n - t0) < (size_t)batch ? (todo_n - t0) : (size_t)batch);
            for (int r = 0; r < B && !failed; r++) {
                bench_item *it = &s.items[todo[t0 + r]];
                char *prompt = bench_prompt(b, it->q, &err);
                const char *img = json_string_value(json_object_get(it->q, "image"));
                int has_img = img && img[0];
                const char *text = prompt;
                if (prompt && has_img && !strncmp(prompt, "<image>\n", 8)) text = prompt + 8;
                ids[r].n = 0;
                float *px = pixels + (size_t)r * 3 * S * S;
                char *path = has_img ? asvr_path_join(image_root, img) : NULL;
                if (!prompt || gen_prompt_ids(em.tmpl, &em.enc, text, has_img, &ids[r], &err) < 0 ||
                    (has_img && eval_model_image(&em, path, px, codes + (size_t)r * NC, NULL, &err) < 0)) {
                    LOG_ERROR("question %s (line %ld of '%s'): %s", it->qid, it->line, questions, err.msg);
                    failed = 1;
                }
                gp[r] = (gen_prompt){ids[r].v, (int)ids[r].n, has_img ? px : NULL, it->qid,
                                     has_img && em.vt ? codes + (size_t)r * NC : NULL};
                free(path);
                free(prompt);
            }
            if (failed) break;
            gen_options go = {mnt, sp_tokenizer_eos_id(em.tok), 1, NULL, NULL};
            gen_result gr = {0};
            if (asvr_generate(&em.m, gp, B, &go, &gr, &err) < 0) {
                LOG_ERROR("%s", err.msg);
                failed = 1;
                break;
            }
            for (int r = 0; r < B && !failed; r++) {
                char *answer = gen_decode_answer(em.tok, gr.ids + (size_t)r * gr.max_new, gr.n[r], &err);
                if (!answer) {
                    LOG_ERROR("%s", err.msg);
                    failed = 1;
                    break;
                }
                json_t *o = json_pack("{s:s, s:s}", "question_id", s.items[todo[t0 + r]].qid, "answer", answer);
                char *line = json_dumps(o, JSON_COMPACT);
                if (fprintf(af, "%s\n", line) < 0) failed = 1, write_errno = errno;
                free(line);
                json_decref(o);
                free(answer);
            }
            gen_result_free(&gr);
            if (!failed && (fflush(af) != 0 || fsync(fileno(af)) != 0)) failed = 1, write_errno = errno;
            asvr_progress_add(bar, (uint64_t)B);
        }
        asvr_progress_end(bar);
        for (int r = 0; r < batch; r++) ivec_free(&ids[r]);
        free(ids);
        free(gp);
        free(pixels);
        free(codes);
        free(todo);
        if (fclose(af) != 0 && !failed) failed = 1, write_errno = errno;
        af = NULL;
        if (write_errno) LOG_ERROR("writing '%s': %s", ans_path, strerror(write_errno));
        if (failed) {
            LOG_ERROR("'%s' keeps the answers written so far; rerun to continue", ans_path);
            goto done;
        }
    } else {
        free(todo);
    }
    if (shard_s) {
        LOG_INFO("%s: part %d of %d answered in '%s'; once every part is, score them all with: asvr-eval score --bench %s "
                 "--questions %s --answers %s --out %s",
                 b->name, shard.index, shard.count, ans_path, b->name, questions, ans_dir, sc_path);
        rc = ASVR_EXIT_OK;
        goto done;
    }
    if (upto < s.n) {
        LOG_INFO("--limit %lld: %zu of %zu questions answered; not scoring", (long long)limit, upto, s.n);
        rc = ASVR_EXIT_OK;
        goto done;
    }
    if (bench_attach_answers(&s, ans_path, 0, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        goto done;
    }
    json_t *scores = bench_score(b, &s, &err);
    if (!scores || bench_write_scores(sc_path, scores, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        json_decref(scores);
        goto done;
    }
    json_t *rep = json_object_get(scores, "reported");
    LOG_INFO("%s: %s = %.2f (%s)", b->name, json_string_value(json_object_get(rep, "metric")),
             json_number_value(json_object_get(rep, "value")), sc_path);
    json_decref(scores);
    rc = ASVR_EXIT_OK;
done:
    if (af) fclose(af);
    if (loaded) eval_model_free(&em);
    json_decref(seen);
    bench_set_free(&s);
    free(ans_path), free(sc_path), free(ans_dir);
    return rc;
}
