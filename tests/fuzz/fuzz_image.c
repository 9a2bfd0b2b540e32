/* fuzz_image.c — libFuzzer harness: bytes -> image_decode (small pixel limit, EXIF on, warnings
 * accepted on every other input) -> image_preprocess. Must never crash, leak, or hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "io/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    image_decode_opts o;
    image_decode_opts_default(&o);
    o.max_pixels = 1 << 20;
    o.apply_exif_orientation = 1;
    o.accept_jpeg_warnings = size & 1;
    image_rgb img;
    asvr_error err;
    if (image_decode(data, size, "fuzz", &o, &img, &err) < 0) return 0;
    image_preprocess_opts po;
    image_preprocess_opts_default(&po);
    po.size = 17;
    po.policy = (size & 2) ? IMAGE_POLICY_SQUASH : IMAGE_POLICY_PAD;
    uint8_t out[17 * 17 * 3];
    if (image_preprocess(&img, &po, out, &err) < 0) abort(); /* a decoded image always preprocesses */
    image_free(&img);
    return 0;
}
