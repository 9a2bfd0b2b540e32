/* asvr-train plot — loss curves from a run's log.jsonl, drawn into a PNG with libpng: total, text
 * and visual loss against the step, with axes, tick labels and a legend (a built-in 5×7 font). */
#include <jansson.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "commands.h"

#define W 900
#define H 540
#define ML 70 /* margins */
#define MR 20
#define MT 20
#define MB 50

typedef struct canvas {
    uint8_t px[H][W][3];
} canvas;

static void put(canvas *c, int x, int y, const uint8_t rgb[3]) {
    if (x >= 0 && x < W && y >= 0 && y < H) memcpy(c->px[y][x], rgb, 3);
}

static void line(canvas *c, int x0, int y0, int x1, int y1, const uint8_t rgb[3], int thick) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, e = dx + dy;
    for (;;) {
        for (int a = 0; a < thick; a++)
            for (int b = 0; b < thick; b++) put(c, x0 + a, y0 + b, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) e += dy, x0 += sx;
        if (e2 <= dx) e += dx, y0 += sy;
    }
}

/* 5×7 glyphs: 7 rows of 5 columns each, '#' = ink. */
static const char *glyph(char ch) {
    switch (ch) {
    case '0': return " ### #   ##  ### # ###  ##   # ### ";
    case '1': return "  #   ##    #    #    #    #   ### ";
    case '2': return " ### #   #    #   #   #   #   #####";
    case '3': return "#####   #   #     #     ##   # ### ";
    case '4': return "   #   ##  # # #  # #####   #    # ";
    case '5': return "######    ####     #    ##   # ### ";
    case '6': return "  ##  #   #    #### #   ##   # ### ";
    case '7': return "#####    #   #   #   #    #    #   ";
    case '8': return " ### #   ##   # ### #   ##   # ### ";
    case '9': return " ### #   ##   # ####    #   #  ##  ";
    case '.': return "                          ##   ##  ";
    case '-': return "                ###                ";
    case '+': return "       #    #  #####  #    #       ";
    case 'a': return "           ###     # #####   # ####";
    case 'e': return "           ### #   #######     ### ";
    case 'i': return "  #        ##    #    #    #   ### ";
    case 'l': return " ##    #    #    #    #    #   ### ";
    case 'o': return "           ### #   ##   ##   # ### ";
    case 'p': return "          #### #   ##### #    #    ";
    case 's': return "           #####     ###     ##### ";
    case 't': return "  #    #  #####  #    #    #     ##";
    case 'u': return "          #   ##   ##   ##  ## ## #";
    case 'v': return "          #   ##   ##   # # #   #  ";
    case 'x': return "          #   # # #   #   # # #   #";
    default: return NULL;
    }
}

static void text(canvas *c, int x, int y, const char *s, const uint8_t rgb[3]) {
    for (; *s; s++, x += 7) {
        const char *g = glyph(*s);
        if (!g) continue;
        for (int k = 0; k < 35; k++)
            if (g[k] == '#') put(c, x + k % 5, y + k / 5, rgb);
    }
}

static int write_png(const char *path, canvas *c, asvr_error *err) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return asvr_err_set(err, "creating '%s'", tmp);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        remove(tmp);
        return asvr_err_set(err, "libpng failed writing '%s'", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, W, H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < H; y++) png_write_row(png, (png_const_bytep)c->px[y]);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0 || rename(tmp, path) != 0) return asvr_err_set(err, "finishing '%s'", path);
    return 0;
}

static void fmt_num(char *buf, size_t n, double v) {
    if (fabs(v) >= 1000 || (fabs(v) < 0.01 && v != 0)) snprintf(buf, n, "%.1e", v);
    else snprintf(buf, n, "%.2f", v);
}

int cmd_plot(int argc, char **argv) {
    const asvr_cli cli = {"asvr-train plot", "LOG.jsonl OUT.png",
                          "Draws total, text and visual loss against the step from a run's log into a PNG.", NULL, 0, 2, 2};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    asvr_error err;
    uint8_t *data;
    size_t n;
    if (asvr_read_file(pos[0], &data, &n, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    size_t cap = 1024, m = 0;
    double *st = malloc(cap * sizeof(double)), *ys[3] = {malloc(cap * sizeof(double)), malloc(cap * sizeof(double)), malloc(cap * sizeof(double))};
    const char *keys[3] = {"loss", "text_loss", "visual_loss"};
    char *save = NULL;
    int has_vis = 0;
    for (char *l = strtok_r((char *)data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *j = json_loads(l, 0, NULL);
        if (!j) continue;
        if (m == cap) {
            cap *= 2;
            st = realloc(st, cap * sizeof(double));
            for (int k = 0; k < 3; k++) ys[k] = realloc(ys[k], cap * sizeof(double));
        }
        st[m] = (double)json_integer_value(json_object_get(j, "step"));
        for (int k = 0; k < 3; k++) { /* null: nothing was scored in that step; not drawn */
            json_t *v = json_object_get(j, keys[k]);
            ys[k][m] = json_is_number(v) ? json_number_value(v) : NAN;
        }
        if (!isnan(ys[2][m])) has_vis = 1;
        m++;
        json_decref(j);
    }
    free(data);
    if (m == 0) ASVR_FATAL("train first, or check the path", "'%s' holds no steps", pos[0]);
    double x0 = st[0], x1 = st[m - 1] > st[0] ? st[m - 1] : st[0] + 1, y0 = 0, y1 = 0;
    for (size_t i = 0; i < m; i++)
        for (int k = 0; k < 3; k++) y1 = !isnan(ys[k][i]) && ys[k][i] > y1 ? ys[k][i] : y1;
    if (y1 <= 0) y1 = 1;
    y1 *= 1.05;
    canvas *c = calloc(1, sizeof *c);
    memset(c, 255, sizeof *c);
    const uint8_t black[3] = {0, 0, 0}, grey[3] = {220, 220, 220};
    const uint8_t colors[3][3] = {{20, 20, 20}, {31, 119, 180}, {214, 39, 40}};
    int pw = W - ML - MR, ph = H - MT - MB;
    for (int t = 0; t <= 5; t++) { /* grid and tick labels */
        int y = MT + ph - t * ph / 5, x = ML + t * pw / 5;
        line(c, ML, y, ML + pw, y, grey, 1);
        char b[32];
        fmt_num(b, sizeof b, y0 + (y1 - y0) * t / 5);
        text(c, 5, y - 3, b, black);
        snprintf(b, sizeof b, "%.0f", x0 + (x1 - x0) * t / 5);
        text(c, x - 10, MT + ph + 10, b, black);
    }
    line(c, ML, MT, ML, MT + ph, black, 1);
    line(c, ML, MT + ph, ML + pw, MT + ph, black, 1);
    text(c, ML + pw / 2 - 14, H - 18, "step", black);
    for (int k = 0; k < 3; k++) {
        if (k == 2 && !has_vis) continue;
        for (size_t i = 1; i < m; i++) {
            if (isnan(ys[k][i - 1]) || isnan(ys[k][i])) continue;
            int xa = ML + (int)((st[i - 1] - x0) / (x1 - x0) * pw), xb = ML + (int)((st[i] - x0) / (x1 - x0) * pw);
            int ya = MT + ph - (int)((ys[k][i - 1] - y0) / (y1 - y0) * ph), yb = MT + ph - (int)((ys[k][i] - y0) / (y1 - y0) * ph);
            line(c, xa, ya, xb, yb, colors[k], 2);
        }
        const char *names[3] = {"total", "text", "visual"};
        line(c, ML + pw - 110, MT + 12 + 14 * k, ML + pw - 90, MT + 12 + 14 * k, colors[k], 3);
        text(c, ML + pw - 84, MT + 9 + 14 * k, names[k], colors[k]);
    }
    int rc = write_png(pos[1], c, &err);
    if (rc < 0) LOG_ERROR("%s", err.msg);
    else LOG_INFO("plotted %zu steps into '%s'", m, pos[1]);
    free(c);
    free(st);
    for (int k = 0; k < 3; k++) free(ys[k]);
    free(pos);
    return rc < 0 ? ASVR_EXIT_FAIL : ASVR_EXIT_OK;
}
