/* test_image_webp.c — WebP decoding (RealWorldQA's images) equals Pillow's convert('RGB') byte for
 * byte (tools/gen_webp_fixtures.py), and a truncated WebP is refused naming the file. */
#include <jansson.h>

#include "base/fsutil.h"
#include "io/image.h"
#include "test.h"

int main(void) {
    json_error_t je;
    json_t *m = json_load_file(ASVR_GOLDEN "/images/webp/manifest.json", 0, &je);
    T_CHECK(m != NULL, "manifest: %s", je.text);
    if (!m) return t_done();
    asvr_error err;
    for (size_t i = 0; i < json_array_size(m); i++) {
        json_t *c = json_array_get(m, i);
        char path[512], rgbp[512];
        snprintf(path, sizeof path, ASVR_GOLDEN "/images/webp/%s", json_string_value(json_object_get(c, "file")));
        snprintf(rgbp, sizeof rgbp, ASVR_GOLDEN "/images/webp/%s", json_string_value(json_object_get(c, "rgb")));
        image_rgb img;
        T_EQ_INT(image_decode_file(path, NULL, &img, &err), 0);
        uint8_t *want;
        size_t n;
        T_EQ_INT(asvr_read_file(rgbp, &want, &n, &err), 0);
        T_EQ_INT(img.width, json_integer_value(json_object_get(c, "width")));
        T_EQ_INT(img.height, json_integer_value(json_object_get(c, "height")));
        T_CHECK(n == (size_t)img.width * img.height * 3 && memcmp(img.pixels, want, n) == 0, "%s: pixels differ from Pillow", path);
        /* a truncated copy is an error naming the file */
        uint8_t *data;
        size_t dn;
        T_EQ_INT(asvr_read_file(path, &data, &dn, &err), 0);
        image_rgb bad;
        T_EQ_INT(image_decode(data, dn / 2, "cut.webp", NULL, &bad, &err), -1);
        T_STR_CONTAINS(err.msg, "cut.webp");
        free(data);
        free(want);
        image_free(&img);
    }
    json_decref(m);
    return t_done();
}
