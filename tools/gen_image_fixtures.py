#!/usr/bin/env python3
"""Golden fixtures for the image input path (tests/test_image.c, tests/cli_preprocess.sh).

Regenerate:  python3 tools/gen_image_fixtures.py
Needs:       Pillow 13, numpy, zstandard, xxhash (pip install zstandard xxhash), and the Debian package
             mate-backgrounds (apt-get install -y mate-backgrounds) for the photographs.
Writes:      tests/golden/images/  (inputs, expected outputs, manifest.json, corrupt/)
             tests/golden/fuzz/image/  (seed corpus for tests/fuzz/fuzz_image.c)

Every expected array comes from Pillow: `Image.open(p).convert('RGB')` for decoding (with
`ImageOps.exif_transpose` for the orientation cases), LLaVA's expand2square for the pad policy, and
`Image.resize((S, S), Image.BICUBIC, reducing_gap=None)`. The float case follows the HF image
processor: float64 rescale by 1/255, cast to float32, then (x - mean) / std in float32.
Expected pixel arrays are raw uint8 RGB (HWC) compressed with zstd; big ones are stored as xxh64.
"""
import io
import json
import os
import random
import struct
import zlib

import numpy as np
import xxhash
import zstandard
from PIL import Image, ImageFile, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "golden", "images")
FUZZ = os.path.join(ROOT, "tests", "golden", "fuzz", "image")
MATE = "/usr/share/backgrounds/mate"

SIGLIP_PAD = (127, 127, 127)
CLIP_PAD = (122, 116, 104)
STORE_LIMIT = 64 * 1024  # raw bytes above this are stored as xxh64 only ...
STORE_ALWAYS = set()      # ... unless the case is listed here

rng = np.random.default_rng(1234)
zc = zstandard.ZstdCompressor(level=19)


def expand2square(img, bg):
    w, h = img.size
    if w == h:
        return img
    if w > h:
        res = Image.new(img.mode, (w, w), bg)
        res.paste(img, (0, (w - h) // 2))
        return res
    res = Image.new(img.mode, (h, h), bg)
    res.paste(img, ((h - w) // 2, 0))
    return res


def store_array(name, arr, force=False):
    """Raw bytes -> {file} (zstd) when small or forced, else {xxh64}."""
    raw = np.ascontiguousarray(arr).tobytes()
    d = {"bytes": len(raw), "xxh64": xxhash.xxh64(raw, seed=0).hexdigest()}
    if force or len(raw) <= STORE_LIMIT:
        fn = name + ".zst"
        with open(os.path.join(OUT, fn), "wb") as f:
            f.write(zc.compress(raw))
        d["file"] = fn
    return d


# ---- a minimal PNG writer for what Pillow cannot write (16-bit colour, 2/4-bit, Adam7) ----------------

def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def pack_row(samples, depth):
    """samples: 1-D uint array (already interleaved channels) -> bytes at the given bit depth."""
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per = 8 // depth
    out = bytearray((len(samples) + per - 1) // per)
    for i, v in enumerate(samples):
        out[i // per] |= int(v) << (8 - depth * (i % per + 1))
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(arr, color_type, depth, interlace=False, palette=None, trns=None, extra=b""):
    """arr: HxW (gray/palette) or HxWxC samples."""
    h, w = arr.shape[:2]
    a = arr.reshape(h, w, -1)
    raw = bytearray()
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            sub = a[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            for row in sub:
                raw += b"\0" + pack_row(row.reshape(-1), depth)
    else:
        for row in a:
            raw += b"\0" + pack_row(row.reshape(-1), depth)
    png = b"\x89PNG\r\n\x1a\n"
    png += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0))
    if palette is not None:
        png += png_chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        png += png_chunk(b"tRNS", trns)
    png += extra
    png += png_chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    png += png_chunk(b"IEND", b"")
    return png


# ---- synthetic content --------------------------------------------------------------------------------

def smooth(h, w, c, seed):
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, c))
    for ch in range(c):
        fx, fy, ph = r.uniform(0.02, 0.3), r.uniform(0.02, 0.3), r.uniform(0, 6)
        out[..., ch] = 127.5 + 90 * np.sin(x * fx + y * fy + ph) + r.normal(0, 25, (h, w))
    return np.clip(out, 0, 255).astype(np.uint8)


cases = []
corrupt = []


def add_case(name, data, sizes, policies=("pad", "squash"), exif=False, pad=SIGLIP_PAD, force_store=False,
             normalize=False, accept_warnings=False):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        f.write(data)
    if accept_warnings:
        ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        im = Image.open(path)
        if exif:
            im = ImageOps.exif_transpose(im)
        rgb = im.convert("RGB")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    arr = np.asarray(rgb)
    base = name.replace(".", "_") + ("_exif" if exif else "") + ("_aw" if accept_warnings else "")
    case = {"name": base, "input": name, "exif": exif, "accept_warnings": accept_warnings,
            "width": rgb.size[0], "height": rgb.size[1],
            "rgb": store_array(base + ".rgb", arr, force_store), "preprocess": []}
    for pol in policies:
        for S in sizes:
            src = expand2square(rgb, pad) if pol == "pad" else rgb
            out = np.asarray(src.resize((S, S), Image.BICUBIC, reducing_gap=None))
            e = {"policy": pol, "size": S, "pad": list(pad),
                 "expected": store_array(f"{base}.{pol}{S}", out, force_store)}
            if normalize and pol == "pad":
                x = (out.astype(np.float64) * (1 / 255)).astype(np.float32)
                mean = np.float32(0.5)
                std = np.float32(0.5)
                t = ((x - mean) / std).transpose(2, 0, 1)
                e["normalized"] = {"mean": [0.5] * 3, "std": [0.5] * 3,
                                   "expected": store_array(f"{base}.{pol}{S}.f32", t.astype("<f4"), True)}
            case["preprocess"].append(e)
    cases.append(case)


def pil_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def main():
    os.makedirs(os.path.join(OUT, "corrupt"), exist_ok=True)
    os.makedirs(FUZZ, exist_ok=True)
    for d in (OUT, os.path.join(OUT, "corrupt"), FUZZ):
        for fn in os.listdir(d):
            p = os.path.join(d, fn)
            if os.path.isfile(p):
                os.remove(p)

    # -- photographs (mate-backgrounds), downscaled so the fixtures stay small --
    photos = [("nature/LadyBird.jpg", 480, "JPEG", dict(quality=90)),
              ("nature/YellowFlower.jpg", 400, "JPEG", dict(quality=85, subsampling=0)),
              ("nature/Storm.jpg", 360, "JPEG", dict(quality=90, progressive=True)),
              ("abstract/Silk.png", 320, "PNG", {})]
    for i, (rel, width, fmt, kw) in enumerate(photos):
        src = Image.open(os.path.join(MATE, rel)).convert("RGB")
        h = round(src.size[1] * width / src.size[0])
        small = src.resize((width, h), Image.LANCZOS)
        if i == 3:  # a portrait crop, so pad adds columns
            small = small.crop((60, 0, 60 + 150, h))
        name = "photo%d.%s" % (i, "jpg" if fmt == "JPEG" else "png")
        add_case(name, pil_bytes(small, fmt, **kw), [384], normalize=(i == 0), force_store=(i == 0))

    # -- JPEG variants --
    img = smooth(37, 53, 3, 1)
    im = Image.fromarray(img)
    add_case("j420.jpg", pil_bytes(im, "JPEG", quality=90, subsampling=2), [27, 64])
    add_case("j444.jpg", pil_bytes(im, "JPEG", quality=90, subsampling=0), [27, 97])
    add_case("j422.jpg", pil_bytes(im, "JPEG", quality=75, subsampling=1), [64])
    add_case("jprog.jpg", pil_bytes(im, "JPEG", quality=80, progressive=True), [27, 97])
    add_case("jgray.jpg", pil_bytes(Image.fromarray(smooth(41, 29, 1, 2)[..., 0]), "JPEG", quality=90), [27, 64])
    cmyk = Image.fromarray(smooth(33, 47, 4, 3), "CMYK")
    add_case("jcmyk.jpg", pil_bytes(cmyk, "JPEG", quality=90), [27, 64])
    add_case("j1xn.jpg", pil_bytes(Image.fromarray(smooth(1, 61, 3, 4)), "JPEG", quality=90), [27])
    add_case("jnx1.jpg", pil_bytes(Image.fromarray(smooth(61, 1, 3, 5)), "JPEG", quality=90), [27])
    add_case("jodd.jpg", pil_bytes(Image.fromarray(smooth(15, 17, 3, 6)), "JPEG", quality=95), [64, 97])

    # -- EXIF orientation: every value, JPEG; one PNG with an eXIf chunk --
    base = Image.fromarray(smooth(12, 20, 3, 7))
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        add_case("exif%d.jpg" % o, pil_bytes(base, "JPEG", quality=95, exif=ex.tobytes()), [27],
                 policies=("pad",), exif=True)
    ex = Image.Exif()
    ex[0x0112] = 6
    add_case("exif6.png", pil_bytes(base, "PNG", exif=ex.tobytes()), [27], policies=("pad",), exif=True)
    # ... and decoded without the option: the reference ignores orientation
    add_case("exif6_plain.jpg", pil_bytes(base, "JPEG", quality=95, exif=ex.tobytes()), [27], policies=("pad",))

    # -- PNG variants --
    rgb = smooth(23, 31, 3, 8)
    add_case("prgb.png", pil_bytes(Image.fromarray(rgb), "PNG"), [27, 64])
    add_case("prgba.png", pil_bytes(Image.fromarray(smooth(23, 31, 4, 9), "RGBA"), "PNG"), [27])
    add_case("pla.png", pil_bytes(Image.fromarray(smooth(29, 19, 2, 10), "LA"), "PNG"), [27])
    add_case("pl.png", pil_bytes(Image.fromarray(smooth(19, 29, 1, 11)[..., 0]), "PNG"), [27, 97])
    bw = Image.fromarray(smooth(21, 26, 1, 12)[..., 0] > 128)
    add_case("p1bit.png", pil_bytes(bw, "PNG"), [27])
    pal = Image.fromarray(rgb).quantize(colors=40)
    add_case("ppal.png", pil_bytes(pal, "PNG", transparency=3), [27, 64])
    add_case("ppal_trns.png", write_png(np.asarray(pal), 3, 8, palette=np.asarray(pal.getpalette()[:120]),
                                        trns=bytes(range(0, 250, 10))), [27])
    idx4 = (smooth(17, 22, 1, 13)[..., 0] // 16)
    add_case("ppal4.png", write_png(idx4, 3, 4, palette=rng.integers(0, 256, (16, 3))), [27])
    idx2 = (smooth(17, 22, 1, 14)[..., 0] // 64)
    add_case("ppal2_i.png", write_png(idx2, 3, 2, interlace=True, palette=rng.integers(0, 256, (4, 3))), [27])
    g2 = smooth(18, 13, 1, 15)[..., 0] // 64
    add_case("pg2.png", write_png(g2, 0, 2), [27])
    g4 = smooth(18, 13, 1, 16)[..., 0] // 16
    add_case("pg4_i.png", write_png(g4, 0, 4, interlace=True), [27])
    add_case("pg1_trns.png", write_png(smooth(9, 14, 1, 17)[..., 0] // 128, 0, 1, trns=b"\0\1"), [27])
    add_case("pgtrns.png", write_png(smooth(9, 14, 1, 18)[..., 0], 0, 8, trns=b"\0\x80"), [27])
    g16 = (rng.integers(0, 2, (15, 21)) * rng.integers(0, 65536, (15, 21))).astype(np.uint16)
    g16[0, :8] = [0, 1, 254, 255, 256, 257, 1000, 65535]
    add_case("pg16.png", write_png(g16, 0, 16), [27])
    add_case("pg16_i.png", write_png(g16, 0, 16, interlace=True), [27])
    rgb16 = rng.integers(0, 65536, (14, 19, 3)).astype(np.uint16)
    add_case("prgb16.png", write_png(rgb16, 2, 16), [27, 64])
    add_case("prgba16.png", write_png(rng.integers(0, 65536, (14, 19, 4)).astype(np.uint16), 6, 16), [27])
    add_case("pla16.png", write_png(rng.integers(0, 65536, (14, 19, 2)).astype(np.uint16), 4, 16), [27])
    add_case("prgb_i.png", write_png(rgb, 2, 8, interlace=True), [27, 64])
    add_case("prgba_i.png", write_png(smooth(23, 31, 4, 19), 6, 8, interlace=True), [27])
    add_case("prgb_trns.png", write_png(rgb, 2, 8, trns=b"\0\x10\0\x20\0\x30"), [27])
    add_case("p1xn.png", pil_bytes(Image.fromarray(smooth(1, 77, 3, 20)), "PNG"), [27, 97])
    add_case("pnx1.png", pil_bytes(Image.fromarray(smooth(77, 1, 3, 21)), "PNG"), [27, 97])
    add_case("p1x1.png", pil_bytes(Image.fromarray(smooth(1, 1, 3, 22)), "PNG"), [27])
    add_case("ptall.png", pil_bytes(Image.fromarray(smooth(150, 40, 3, 23)), "PNG"), [64, 97],
             pad=CLIP_PAD)
    add_case("pwide.png", pil_bytes(Image.fromarray(smooth(40, 151, 3, 24)), "PNG"), [27, 97])
    add_case("psame.png", pil_bytes(Image.fromarray(smooth(64, 64, 3, 25)), "PNG"), [64])

    # -- truncated JPEG, decoded with warnings accepted --
    photo = open(os.path.join(OUT, "photo0.jpg"), "rb").read()
    trunc = photo[: len(photo) * 6 // 10]
    # -- corrupt inputs: each must fail with a clear message naming the file --
    def bad(name, data, *needles):
        with open(os.path.join(OUT, "corrupt", name), "wb") as f:
            f.write(data)
        corrupt.append({"input": "corrupt/" + name, "error_contains": ["corrupt/" + name] + list(needles)})

    bad("truncated.jpg", trunc, "truncated")
    scan = photo.index(b"\xff\xda")
    seg = bytearray(photo)
    r = random.Random(5)
    start = scan + 400
    for i in range(start, start + 600):
        seg[i] = r.randrange(0, 255)  # never 0xFF: corrupt entropy data, not markers
    bad("bad_huffman.jpg", bytes(seg), "JPEG data is corrupt")
    pngd = bytearray(open(os.path.join(OUT, "prgb.png"), "rb").read())
    idat = pngd.index(b"IDAT")
    ln = struct.unpack(">I", pngd[idat - 4: idat])[0]
    pngd[idat + 4 + ln] ^= 0x55  # first CRC byte of the IDAT chunk
    bad("bad_crc.png", bytes(pngd), "CRC")
    bad("empty.jpg", b"", "empty")
    big = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    big += png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    bad("huge.png", big, "30000x30000", "900000000", "89478485")
    sof = photo.index(b"\xff\xc0")
    hj = bytearray(photo)
    hj[sof + 5: sof + 9] = struct.pack(">HH", 30000, 30000)
    bad("huge.jpg", bytes(hj), "30000x30000", "89478485")
    bad("random.bin", bytes(r.randrange(256) for _ in range(1000)), "not a JPEG, PNG or WebP")
    bad("text.jpg", b"hello, this is not an image\n", "not a JPEG, PNG or WebP", "starts with 'hell'")
    bad("zero_width.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)),
        "PNG")
    bad("header_only.jpg", photo[:scan], "JPEG")
    bad("png_sig_only.png", pngd[:8], "PNG")
    cut = bytes(open(os.path.join(OUT, "prgb_i.png"), "rb").read())
    bad("truncated.png", cut[: len(cut) // 2], "PNG data")

    manifest = {"generator": "tools/gen_image_fixtures.py", "pillow": Image.__version__,
                "cases": cases, "corrupt": corrupt,
                "truncated_accept": {"input": "corrupt/truncated.jpg",
                                     "width": Image.open(os.path.join(OUT, "photo0.jpg")).size[0],
                                     "height": Image.open(os.path.join(OUT, "photo0.jpg")).size[1]}}
    # Pillow's output for the truncated file with LOAD_TRUNCATED_IMAGES. Should Pillow leave undecoded
    # rows black (libjpeg fills them), only the rows above them are compared.
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    t = np.asarray(Image.open(io.BytesIO(trunc)).convert("RGB"))
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    black = np.all(t == 0, axis=(1, 2))
    rows_ok = t.shape[0]
    if black.any():  # stay clear of the last, partially decoded MCU row
        rows_ok = max(0, int(np.argmax(black)) - 16)
    manifest["truncated_accept"]["compare_rows"] = rows_ok
    manifest["truncated_accept"]["expected"] = store_array("truncated_accept.top.rgb", t[:rows_ok], True)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")

    # -- what tests/cli_preprocess.sh expects from `asvr-tokenize preprocess` (plain PPM, Pillow's bytes) --
    for src, pol, S, pad in (("j420.jpg", "pad", 27, SIGLIP_PAD), ("ptall.png", "squash", 64, SIGLIP_PAD),
                             ("pwide.png", "pad", 27, CLIP_PAD)):
        im = Image.open(os.path.join(OUT, src)).convert("RGB")
        im = expand2square(im, pad) if pol == "pad" else im
        out = im.resize((S, S), Image.BICUBIC, reducing_gap=None)
        with open(os.path.join(OUT, "cli_%s_%s%d.ppm" % (src.replace(".", "_"), pol, S)), "wb") as f:
            f.write(b"P6\n%d %d\n255\n" % (S, S) + out.tobytes())

    # -- fuzz seeds: tiny valid files of each kind --
    seeds = ["j420.jpg", "jprog.jpg", "jgray.jpg", "jcmyk.jpg", "exif6.jpg", "prgb.png", "ppal4.png",
             "pg16_i.png", "prgba_i.png", "ppal_trns.png"]
    for s in seeds:
        with open(os.path.join(OUT, s), "rb") as f, open(os.path.join(FUZZ, s), "wb") as g:
            g.write(f.read())
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print("%d cases, %d corrupt inputs, %.1f KiB in %s" % (len(cases), len(corrupt), total / 1024, OUT))


if __name__ == "__main__":
    main()
