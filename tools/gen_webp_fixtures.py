#!/usr/bin/env python3
"""WebP decoding goldens (RealWorldQA ships WebP): small images saved by Pillow as lossy, lossless and
lossy-with-alpha WebP, and the RGB bytes Pillow's Image.open(p).convert('RGB') gives for each, written
to tests/golden/images/webp/ as NAME.webp and NAME.rgb (raw, width*height*3) with a manifest.

    python3 tools/gen_webp_fixtures.py          # needs Pillow built with WebP (the PyPI wheel is)
"""
import json
import os
import random

from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "golden", "images", "webp")


def picture(w, h, mode, seed):
    r = random.Random(seed)
    img = Image.new(mode, (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            v = ((x * 7 + y * 3) % 256, (x * y) % 256, (255 - x * 5) % 256)
            if r.random() < 0.1:
                v = (r.randrange(256), r.randrange(256), r.randrange(256))
            px[x, y] = v + ((x * 9) % 256,) if mode == "RGBA" else v
    return img


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = [("lossy", 37, 23, "RGB", dict(quality=80)), ("lossless", 31, 17, "RGB", dict(lossless=True)),
             ("alpha", 24, 29, "RGBA", dict(quality=90)), ("tall", 9, 40, "RGB", dict(quality=50))]
    manifest = []
    for i, (name, w, h, mode, kw) in enumerate(cases):
        path = os.path.join(OUT, name + ".webp")
        picture(w, h, mode, i).save(path, "WEBP", **kw)
        rgb = Image.open(path).convert("RGB")
        with open(os.path.join(OUT, name + ".rgb"), "wb") as f:
            f.write(rgb.tobytes())
        manifest.append({"file": name + ".webp", "rgb": name + ".rgb", "width": rgb.width, "height": rgb.height})
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("wrote %d WebP cases" % len(manifest))


if __name__ == "__main__":
    main()
