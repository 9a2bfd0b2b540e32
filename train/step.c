/* step.c — one optimizer step of a run (trainer.h), and its checkpoint.
 *
 * Loss normalisation (the whole optimizer step is one mean, whatever the micro-batching): the text
 * loss is the mean CE over the supervised tokens of all the step's micro-batches; the visual loss of
 * a head is, per depth, the mean CE over the step's image positions, then the mean over depths, times
 * λ. Each micro-batch's gradient is scaled accordingly before it is accumulated. */
#include <jansson.h>
#include <string.h>

#include "base/progress.h" /* asvr_now */
#include "checkpoint.h"
#include "trainer.h"

/* The step's gradient scales: 1 / supervised text tokens; λ / (D · image positions) per head (with the
 * reference's text-only samples counted as P positions each). */
static asvr_scales step_scales(const trainer *t, const step_batches *sb) {
    const asvr_config *c = &t->mc;
    int64_t img_pos = sb->image_positions, app_pos = sb->image_positions;
    if (t->zero_codes) img_pos += sb->text_only * c->image_positions;
    int D = c->has_head ? c->head.depth : 0, Da = c->has_app_head ? c->head_app.depth : 0;
    asvr_scales s = {sb->text_targets ? 1.0 / (double)sb->text_targets : 0,
                     (D && img_pos) ? c->lambda_visual / ((double)D * img_pos) : 0,
                     (Da && app_pos) ? c->lambda_visual / ((double)Da * app_pos) : 0};
    return s;
}

void trainer_step(trainer *t, step_batches *sb, step_stats *st) {
    double t0 = asvr_now();
    memset(st, 0, sizeof *st);
    asvr_scales s = step_scales(t, sb);
    param_set_zero_grads(&t->m.ps);
    for (int k = 0; k < sb->n; k++) {
        const train_batch *b = &sb->mb[k];
        asvr_batch ab = {b->B, b->T, b->ids, b->labels, b->pos, b->seg, b->n_images, b->image_pos, b->codes,
                         b->codes_app, b->pixels, b->n_text_only, t->zero_codes};
        asvr_forward(&t->m, t->acts, &ab);
        asvr_loss(&t->m, t->acts, &s, &st->L, 1);
        asvr_backward(&t->m, t->acts);
    }
    st->lr = optim_step(&t->opt, &st->grad_norm, &st->clip_coef);
    t->step++;
    st->seconds = asvr_now() - t0;
    st->tokens = sb->tokens;
    st->samples = sb->samples;
}

int trainer_save(trainer *t, const step_batches *sb, asvr_error *err) {
    const train_opts *o = &t->o;
    json_t *cfg = json_loads(t->config_text, 0, NULL);
    /* the cursor after this step's data, not the prefetch's */
    json_t *state = json_pack("{s:I, s:I, s:I, s:s, s:I, s:I, s:f, s:o, s:s, s:s, s:s, s:s}", "step", (json_int_t)t->step,
                              "data_epoch", (json_int_t)sb->epoch, "data_index", (json_int_t)sb->index, "stage",
                              o->rc.stage, "seed", (json_int_t)o->seed, "total_steps", (json_int_t)t->total, "lr", o->lr,
                              "model_config", cfg, "visual_loss", o->rc.visual_loss, "input", o->rc.input,
                              "packed_source_fingerprint", data_packed_fingerprint(t->dl),
                              "codes_tokenizer_fingerprint", data_codes_fingerprint(t->dl));
    int rc = checkpoint_save(o->out, t->step, &t->m.ps, &t->opt, state, NULL, err);
    json_decref(state);
    return rc;
}
