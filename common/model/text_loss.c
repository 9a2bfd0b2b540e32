#include "model/text_loss.h"

#include "base/error.h"
#include "nn/ops.h"

static void need_i32_bt(const tensor *t, const char *what, int64_t B, int64_t T) {
    char s[96];
    CHECK(t->device == NN_CPU && t->dtype == NN_I32, "", "text_loss_targets: %s '%s' must be i32 on the CPU", what,
          t->name);
    CHECK(t->ndim == 2 && t->shape[0] == B && t->shape[1] == T, "",
          "text_loss_targets: %s '%s' is %s, want [%lld, %lld]", what, t->name, tensor_shape_str(t, s, sizeof s),
          (long long)B, (long long)T);
}

int64_t text_loss_targets(const tensor *labels, const tensor *seg, tensor *targets) {
    CHECK(labels->ndim == 2, "", "text_loss_targets: labels '%s' must be [B, T]", labels->name);
    int64_t B = labels->shape[0], T = labels->shape[1];
    need_i32_bt(labels, "labels", B, T);
    need_i32_bt(seg, "segments", B, T);
    need_i32_bt(targets, "targets", B, T);
    CHECK(targets->data != labels->data && targets->data != seg->data, "",
          "text_loss_targets: targets '%s' aliases an input", targets->name);
    const int32_t *lab = labels->data, *sg = seg->data;
    int32_t *tg = targets->data;
    int64_t count = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t;
            int32_t y = NN_IGNORE_INDEX;
            if (t + 1 < T && sg[i] >= 0 && sg[i + 1] == sg[i]) y = lab[i + 1];
            CHECK(y == NN_IGNORE_INDEX || y >= 0, "", "text_loss_targets: label %d at row %lld position %lld",
                  (int)y, (long long)b, (long long)(t + 1));
            tg[i] = y;
            count += y != NN_IGNORE_INDEX;
        }
    return count;
}
