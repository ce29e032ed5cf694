"""A generated catalogue in the exact format of the Flipkart sample: the embedded default data.

``make_sample`` writes a CSV with the same 15 columns (and pandas dtypes) as
``flipkart_com-ecommerce_sample_1050.csv`` plus an ``Images/`` folder. Each of the seven top-level
categories has its own shape, palette and texture, drawn with noise at varied sizes, positions and
aspect ratios, so the category is learnable from the pixels but not by a single pixel. Pictures are
JPEG or PNG. Names and descriptions carry the category the way real listings do (``_listing_text``):
category words mixed with words shared across categories, generic nouns and brands, some empty or
boilerplate descriptions and a few words of another category. The same seed gives the same bytes.

With ``defects=True`` extra rows carry the faults real catalogues have (see ``DEFECTS``). A
``sample_manifest.json`` next to the CSV lists every defect row with what ingestion should do with it,
so tests can check the outcome row by row.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

logger = logging.getLogger(__name__)

CSV_COLUMNS: Tuple[str, ...] = (
    "uniq_id",
    "crawl_timestamp",
    "product_url",
    "product_name",
    "product_category_tree",
    "pid",
    "retail_price",
    "discounted_price",
    "image",
    "is_FK_Advantage_product",
    "description",
    "product_rating",
    "overall_rating",
    "brand",
    "product_specifications",
)
CSV_NAME = "flipkart_com-ecommerce_sample_generated.csv"
IMAGES_DIR = "Images"
MANIFEST_NAME = "sample_manifest.json"

# Defect kinds written by --defects, with what ingestion must do with the row: the quarantine
# reason it gets, or "ok" (a valid row in an unusual form that must become an example).
DEFECTS: Dict[str, str] = {
    "missing_image": "missing_image",  # the row names a file that is not in Images/
    "truncated_jpeg": "undecodable_image",  # the JPEG stops half-way
    "not_an_image": "not_an_image",  # a text file named .jpg
    "tiny_image": "image_too_small",  # 8 x 8 pixels, below any useful size
    "duplicate_id": "duplicate_id",  # a second row with an existing uniq_id
    "duplicate_picture": "duplicate_picture",  # another category's product has the same picture
    "shared_picture": "ok",  # a variant of a product (same category) reusing its picture
    "empty_category": "unlabelled",  # product_category_tree is empty: the unlabelled split, categorised later
    "grayscale": "ok",  # 'L' mode JPEG
    "png_alpha": "ok",  # RGBA PNG with a transparent background
    "cmyk_jpeg": "ok",  # CMYK JPEG
}


@dataclass(frozen=True)
class Category:
    """A top-level category: how its products are named and drawn."""

    name: str
    subcategories: Tuple[str, ...]
    nouns: Tuple[str, ...]
    brands: Tuple[str, ...]
    hue: float  # 0..1, the palette's centre
    draw: Callable[[ImageDraw.ImageDraw, Tuple[int, int, int, int], random.Random, Tuple[int, ...]], None]


def _stripes(d: ImageDraw.ImageDraw, box, rng: random.Random, colour) -> None:
    """Curtains and bed sheets: a panel of horizontal stripes."""
    x0, y0, x1, y1 = box
    step = max(3, (y1 - y0) // rng.randint(5, 9))
    for i, y in enumerate(range(y0, y1, step)):
        fill = colour if i % 2 == 0 else _shade(colour, 0.55)
        d.rectangle([x0, y, x1, min(y + step // 2, y1)], fill=fill)


def _dots(d: ImageDraw.ImageDraw, box, rng: random.Random, colour) -> None:
    """Baby care: soft round blobs."""
    x0, y0, x1, y1 = box
    for _ in range(rng.randint(4, 8)):
        r = rng.randint(max(2, (x1 - x0) // 10), max(3, (x1 - x0) // 4))
        cx, cy = rng.randint(x0, x1), rng.randint(y0, y1)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_shade(colour, rng.uniform(0.8, 1.2)))


def _watch(d: ImageDraw.ImageDraw, box, rng: random.Random, colour) -> None:
    """Watches: a ring dial with two hands and a strap."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    r = max(4, min(x1 - x0, y1 - y0) // 3)
    d.rectangle([cx - r // 3, y0, cx + r // 3, y1], fill=_shade(colour, 0.4))
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(235, 235, 235), outline=colour, width=max(2, r // 5))
    a = rng.uniform(0, 2 * math.pi)
    d.line([cx, cy, cx + int(0.8 * r * math.cos(a)), cy + int(0.8 * r * math.sin(a))], fill=(20, 20, 20), width=2)
    d.line([cx, cy, cx + int(0.5 * r * math.cos(a * 3)), cy + int(0.5 * r * math.sin(a * 3))], fill=(20, 20, 20), width=3)


def _star(d: ImageDraw.ImageDraw, box, rng: random.Random, colour) -> None:
    """Home decor & festive: a star with points."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r_out = min(x1 - x0, y1 - y0) / 2
    points = rng.randint(5, 8)
    rot = rng.uniform(0, math.pi)
    pts = []
    for i in range(points * 2):
        r = r_out if i % 2 == 0 else r_out * 0.45
        a = rot + i * math.pi / points
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    d.polygon(pts, fill=colour, outline=_shade(colour, 0.5))


def _pot(d: ImageDraw.ImageDraw, box, rng: random.Random, colour) -> None:
    """Kitchen & dining: a wide pot with a lid knob and side handles."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    top = y0 + h // 3
    d.rounded_rectangle([x0 + w // 6, top, x1 - w // 6, y1], radius=max(1, w // 10), fill=colour)
    d.rectangle([x0, top + h // 8, x0 + w // 6, top + h // 5], fill=_shade(colour, 0.5))
    d.rectangle([x1 - w // 6, top + h // 8, x1, top + h // 5], fill=_shade(colour, 0.5))
    d.ellipse([x0 + w // 2 - w // 12, top - h // 8, x0 + w // 2 + w // 12, top], fill=_shade(colour, 0.5))


def _bottle(d: ImageDraw.ImageDraw, box, rng: random.Random, colour) -> None:
    """Beauty & personal care: a tall bottle with a cap."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    bw = max(4, int(w * rng.uniform(0.3, 0.45)))
    cx = (x0 + x1) // 2
    d.rounded_rectangle([cx - bw // 2, y0 + h // 4, cx + bw // 2, y1], radius=max(1, bw // 4), fill=colour)
    d.rectangle([cx - bw // 5, y0, cx + bw // 5, y0 + h // 4], fill=_shade(colour, 0.35))


def _laptop(d: ImageDraw.ImageDraw, box, rng: random.Random, colour) -> None:
    """Computers: a dark screen in a frame over a keyboard base."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    d.rectangle([x0 + w // 10, y0, x1 - w // 10, y0 + int(h * 0.65)], fill=(40, 40, 45))
    d.rectangle([x0 + w // 10 + 4, y0 + 4, x1 - w // 10 - 4, y0 + int(h * 0.65) - 4], fill=colour)
    d.polygon([(x0, y1), (x1, y1), (x1 - w // 10, y0 + int(h * 0.7)), (x0 + w // 10, y0 + int(h * 0.7))], fill=(90, 90, 95))


CATEGORIES: Tuple[Category, ...] = (
    Category("Home Furnishing", ("Curtains & Accessories", "Bed Linen", "Bath Linen"),
             ("Door Curtain", "Bedsheet", "Bath Towel", "Cushion Cover"), ("Elegance", "Swayam", "Story@Home"), 0.60, _stripes),
    Category("Baby Care", ("Baby Bath & Skin", "Infant Wear", "Baby Bedding"),
             ("Baby Romper", "Baby Lotion", "Baby Blanket", "Bib"), ("Babeezworld", "Mee Mee", "Chicco"), 0.92, _dots),
    Category("Watches", ("Wrist Watches", "Clocks"),
             ("Analog Watch", "Digital Watch", "Chronograph Watch"), ("Sonata", "Titan", "Fastrack"), 0.10, _watch),
    Category("Home Decor & Festive Needs", ("Showpieces", "Wall Decor & Clocks", "Candles & Fragrances"),
             ("Showpiece", "Wall Hanging", "Diya Set", "Candle"), ("eCraftIndia", "Craftsvilla", "Jaipur Raga"), 0.0, _star),
    Category("Kitchen & Dining", ("Cookware", "Coffee Mugs", "Kitchen Tools"),
             ("Cooking Pot", "Coffee Mug", "Pressure Cooker", "Kadhai"), ("Prestige", "Pigeon", "Hawkins"), 0.33, _pot),
    Category("Beauty and Personal Care", ("Fragrances", "Hair Care", "Body and Skin Care"),
             ("Deodorant Spray", "Shampoo", "Body Lotion", "Perfume"), ("Nivea", "Engage", "Dove"), 0.78, _bottle),
    Category("Computers", ("Laptop Accessories", "Network Components", "Computer Peripherals"),
             ("Laptop Skin", "Wireless Router", "USB Keyboard", "Laptop Adapter"), ("HP", "TP-Link", "Dell"), 0.50, _laptop),
)


def _shade(colour: Sequence[int], factor: float) -> Tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * factor))) for c in colour[:3])  # type: ignore[return-value]


def _hsv_to_rgb(h: float, s: float, v: float) -> Tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def draw_product(category: Category, rng: random.Random, np_rng: np.random.RandomState) -> Image.Image:
    """Draws one product picture of ``category``: RGB, varied size and aspect ratio, noisy."""
    width = rng.randint(160, 520)
    height = int(width * rng.uniform(0.65, 1.5))
    background = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.12), rng.uniform(0.85, 1.0))
    img = Image.new("RGB", (width, height), background)
    d = ImageDraw.Draw(img)
    # The product fills 45-85 % of the shorter side, anywhere in the frame.
    side = int(min(width, height) * rng.uniform(0.45, 0.85))
    bw, bh = int(side * rng.uniform(0.8, 1.2)), int(side * rng.uniform(0.8, 1.2))
    bw, bh = min(bw, width - 2), min(bh, height - 2)
    x0, y0 = rng.randint(0, width - bw - 1), rng.randint(0, height - bh - 1)
    hue = (category.hue + rng.uniform(-0.05, 0.05)) % 1.0
    colour = _hsv_to_rgb(hue, rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95))
    category.draw(d, (x0, y0, x0 + bw, y0 + bh), rng, colour)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    pixels = np.asarray(img, dtype=np.float32)
    pixels += np_rng.normal(0.0, rng.uniform(4.0, 14.0), size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=88)
    else:
        img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _hex_id(seed: int, index: int, salt: str = "") -> str:
    return hashlib.md5(f"placedemarche-sample/{seed}/{index}/{salt}".encode()).hexdigest()


def _pid(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(16))


# Listing text as sellers write it: each category has its own words, but many words are shared
# across categories, some names use generic nouns or brands sold in several categories, some
# descriptions are empty or say nothing about the product, and a few mention another category's
# words. The category can be read from the text most of the time, not always.
CATEGORY_WORDS: Dict[str, Tuple[str, ...]] = {
    "Home Furnishing": ("bedsheet", "pillow", "curtain", "eyelet", "window", "towel", "bath", "double", "single",
                        "polyester", "cushion", "linen", "bedroom"),
    "Baby Care": ("baby", "infant", "newborn", "kids", "girls", "boys", "feeding", "romper", "diaper", "toddler",
                  "bib", "nursery"),
    "Watches": ("analog", "digital", "dial", "strap", "wrist", "chronograph", "water resistant", "quartz",
                "stopwatch", "bracelet", "timepiece"),
    "Home Decor & Festive Needs": ("decorative", "showpiece", "festive", "diwali", "handcrafted", "brass", "idol",
                                   "wall hanging", "diya", "candle", "puja", "figurine"),
    "Kitchen & Dining": ("cooking", "kitchen", "mug", "ceramic", "cup", "microwave", "dishwasher", "lid", "stainless",
                         "cookware", "kadhai", "induction"),
    "Beauty and Personal Care": ("fragrance", "skin", "hair", "spray", "lotion", "deodorant", "oil", "shampoo",
                                 "perfume", "moisturising", "ml"),
    "Computers": ("laptop", "usb", "wireless", "port", "adapter", "compatible", "battery", "keyboard", "mouse",
                  "router", "mbps", "charger"),
}
SHARED_WORDS: Tuple[str, ...] = (
    "premium", "quality", "durable", "gift", "stylish", "design", "multicolor", "pack", "set", "combo", "soft",
    "leather", "wooden", "cotton", "steel", "plastic", "black", "blue", "red", "white", "pink", "brown", "men",
    "women", "home", "office", "travel", "printed", "classic", "modern", "light", "portable", "easy", "care",
)
SHARED_NOUNS: Tuple[str, ...] = ("Combo Set", "Gift Pack", "Cover", "Holder", "Stand", "Organizer", "Accessory")
SHARED_BRANDS: Tuple[str, ...] = ("Flipkart SmartBuy", "Generic", "Shopmania", "Vaishali", "HomeCraft")


def _listing_text(category: Category, brand: str, adjective: str, noun: str, discounted: float,
                  trng: random.Random) -> Tuple[str, str]:
    """``(product_name, description)`` of one product, from its own random stream ``trng``."""
    if trng.random() < 0.2:
        noun = trng.choice(SHARED_NOUNS)
    if trng.random() < 0.25:
        brand = trng.choice(SHARED_BRANDS)
    name = "" if trng.random() < 0.02 else f"{brand} {adjective} {noun}"
    kind = trng.random()
    if kind < 0.12:
        return name, ""
    price = f"Rs.{int(discounted)}"
    if kind < 0.32:  # the marketplace's boilerplate: nothing about the product
        shown = name or "this product"
        return name, (f"Buy {shown} for {price} online. {shown} at best prices with FREE shipping & cash on "
                      "delivery. Only Genuine Products. 30 Day Replacement Guarantee.")
    words = trng.sample(CATEGORY_WORDS[category.name], trng.randint(1, 3))
    words += trng.sample(SHARED_WORDS, trng.randint(3, 6))
    if trng.random() < 0.15:  # a word of another category (a cross-sold or mislabelled listing)
        other = trng.choice([c for c in CATEGORY_WORDS if c != category.name])
        words.append(trng.choice(CATEGORY_WORDS[other]))
    trng.shuffle(words)
    return name, f"Key Features of {name or 'the product'} {' '.join(words)}. Price: {price}."


def _row(uniq_id: str, image: str, category: Category, index: int, rng: random.Random) -> Dict[str, object]:
    """The CSV row of one product, with the real file's formats (prices as floats, JSON-ish tree)."""
    sub = rng.choice(category.subcategories)
    noun = rng.choice(category.nouns)
    brand = rng.choice(category.brands)
    adjective = rng.choice(('Classic', 'Premium', 'Smart', 'Elegant', 'Everyday'))
    tree_name = f"{brand} {adjective} {noun}"
    retail = float(rng.randrange(199, 9999, 10))
    discounted = float(int(retail * rng.uniform(0.4, 1.0)))
    rating = "No rating available" if rng.random() < 0.8 else f"{rng.uniform(1, 5):.1f}"
    day = 1 + index % 28
    pid = _pid(rng)
    # The text has a random stream of its own, so pictures (drawn from ``rng``) do not depend on it.
    name, description = _listing_text(category, brand, adjective, noun, discounted, random.Random(f"text/{uniq_id}"))
    return {
        "uniq_id": uniq_id,
        "crawl_timestamp": f"2016-0{1 + index % 6}-{day:02d} {index % 24:02d}:{index % 60:02d}:{(index * 7) % 60:02d} +0000",
        "product_url": f"http://www.flipkart.com/{tree_name.lower().replace(' ', '-')}/p/itm{uniq_id[:13]}?pid={pid}",
        "product_name": name or None,
        "product_category_tree": f'["{category.name} >> {sub} >> {noun} >> {tree_name}..."]',
        "pid": pid,
        "retail_price": retail,
        "discounted_price": discounted,
        "image": image,
        "is_FK_Advantage_product": rng.random() < 0.05,
        "description": description or None,
        "product_rating": rating,
        "overall_rating": rating,
        # About a third of the real rows have no brand.
        "brand": brand if rng.random() < 0.68 else None,
        "product_specifications": (
            '{"product_specification"=>[{"key"=>"Brand", "value"=>"%s"}, {"key"=>"Type", "value"=>"%s"}]}'
            % (brand, noun)
        ),
    }


def make_sample(
    out_dir: str | Path,
    per_class: int = 20,
    seed: int = 0,
    defects: bool = False,
    jpeg_share: float = 0.75,
    show_progress: bool = True,
    category_factors: Optional[Dict[str, float]] = None,
    size_factor: float = 1.0,
) -> Path:
    """Writes a generated catalogue to ``out_dir`` and returns the CSV path.

    Args:
      out_dir: folder to create (it may exist, but must not already hold a catalogue).
      per_class: clean products per top-level category (7 categories).
      seed: everything (ids, pictures, prices, formats) is a function of the seed.
      defects: also write one row per kind in ``DEFECTS`` (see the module docstring).
      jpeg_share: share of clean pictures written as JPEG; the others are PNG.
      show_progress: draw a progress bar on stderr.
      category_factors: category name -> multiplier of ``per_class`` for that category (e.g.
        ``{"Watches": 3}``: a batch where one category floods in).
      size_factor: pictures this many times wider and taller than usual (e.g. 3: a batch of bigger
        photos).

    Raises:
      ValueError: ``per_class`` < 1 (defects copy existing products), ``jpeg_share`` outside 0..1, an
        unknown category in ``category_factors``, or a factor <= 0.
      FileExistsError: ``out_dir`` already holds a CSV or an ``Images/`` folder with files.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if not 0.0 <= jpeg_share <= 1.0:
        raise ValueError(f"jpeg_share must be between 0 and 1, got {jpeg_share}")
    factors = dict(category_factors or {})
    unknown = sorted(set(factors) - {c.name for c in CATEGORIES})
    if unknown:
        raise ValueError(f"unknown categories {unknown} in category_factors; categories: "
                         f"{', '.join(c.name for c in CATEGORIES)}")
    if any(f <= 0 for f in factors.values()) or size_factor <= 0:
        raise ValueError(f"category and size factors must be > 0, got {factors} and {size_factor}")
    out = Path(out_dir)
    images = out / IMAGES_DIR
    if list(out.glob("*.csv")) or (images.is_dir() and any(images.iterdir())):
        raise FileExistsError(
            f"'{out}' already holds a catalogue (a CSV or files in {IMAGES_DIR}/); "
            "choose an empty folder or delete it first"
        )
    images.mkdir(parents=True, exist_ok=True)

    rng = random.Random(seed)
    np_rng = np.random.RandomState(seed)
    rows: List[Dict[str, object]] = []
    order = [c for c in CATEGORIES for _ in range(max(1, round(per_class * factors.get(c.name, 1.0))))]
    rng.shuffle(order)
    for index, category in enumerate(tqdm(order, desc="drawing products", unit="img", disable=not show_progress)):
        uniq_id = _hex_id(seed, index)
        fmt = "JPEG" if rng.random() < jpeg_share else "PNG"
        image_name = f"{uniq_id}.{'jpg' if fmt == 'JPEG' else 'png'}"
        picture = draw_product(category, rng, np_rng)
        if size_factor != 1.0:
            picture = picture.resize((round(picture.width * size_factor), round(picture.height * size_factor)),
                                     Image.BICUBIC)
        (images / image_name).write_bytes(_encode(picture, fmt))
        rows.append(_row(uniq_id, image_name, category, index, rng))

    manifest: Dict[str, object] = {
        "seed": seed,
        "per_class": per_class,
        "category_factors": factors,
        "size_factor": size_factor,
        "categories": [c.name for c in CATEGORIES],
        "clean_rows": len(rows),
        "defects": [],
    }
    if defects:
        manifest["defects"] = _add_defects(rows, images, seed, rng, np_rng)

    frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    csv_path = out / CSV_NAME
    frame.to_csv(csv_path, index=False)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "wrote %d rows (%d clean, %d defects) to %s", len(rows), manifest["clean_rows"],
        len(manifest["defects"]), csv_path,  # type: ignore[arg-type]
    )
    return csv_path


def _category_of(row: Dict[str, object]) -> Category:
    return next(c for c in CATEGORIES if str(row["product_category_tree"]).startswith(f'["{c.name} >>'))


def _add_defects(
    rows: List[Dict[str, object]],
    images: Path,
    seed: int,
    rng: random.Random,
    np_rng: np.random.RandomState,
) -> List[Dict[str, object]]:
    """Appends one row per kind in ``DEFECTS``; returns the manifest entries (CSV row numbers 1-based,
    counting the header as row 1, as a spreadsheet shows them)."""
    entries: List[Dict[str, object]] = []
    for k, kind in enumerate(DEFECTS):
        category = CATEGORIES[k % len(CATEGORIES)]
        uniq_id = _hex_id(seed, len(rows), salt=kind)
        image_name = f"{uniq_id}.jpg"
        picture = draw_product(category, rng, np_rng)
        data: Optional[bytes]
        if kind == "missing_image":
            data = None
        elif kind == "truncated_jpeg":
            full = _encode(picture, "JPEG")
            data = full[: len(full) // 2]
        elif kind == "not_an_image":
            data = b"<html><body>404 Not Found</body></html>\n"
        elif kind == "tiny_image":
            data = _encode(picture.resize((8, 8)), "JPEG")
        elif kind == "grayscale":
            data = _encode(picture.convert("L"), "JPEG")
        elif kind == "png_alpha":
            image_name = f"{uniq_id}.png"
            rgba = picture.convert("RGBA")
            alpha = np.full(rgba.size[::-1], 255, np.uint8)
            alpha[: alpha.shape[0] // 4] = 0  # a transparent band, as cut-out product shots have
            rgba.putalpha(Image.fromarray(alpha, "L"))
            data = _encode(rgba, "PNG")
        elif kind == "cmyk_jpeg":
            buf = io.BytesIO()
            picture.convert("CMYK").save(buf, format="JPEG", quality=88)
            data = buf.getvalue()
        elif kind == "duplicate_id":
            # Same id as the first clean product, with a picture of its own.
            uniq_id = str(rows[0]["uniq_id"])
            image_name = f"{_hex_id(seed, len(rows), salt='dup-file')}.jpg"
            data = _encode(picture, "JPEG")
        elif kind in ("duplicate_picture", "shared_picture"):
            # A new product reusing the exact picture file content of the second (third) clean
            # product: under another category (a catalogue error) or the same one (a variant).
            source_row = rows[1] if kind == "duplicate_picture" else rows[2]
            source = images / str(source_row["image"])
            image_name = f"{uniq_id}{source.suffix}"
            data = source.read_bytes()
            source_category = _category_of(source_row)
            if kind == "shared_picture":
                category = source_category
            elif category == source_category:
                category = CATEGORIES[(CATEGORIES.index(category) + 1) % len(CATEGORIES)]
        elif kind == "empty_category":
            data = _encode(picture, "JPEG")
        else:  # pragma: no cover - DEFECTS and this function are edited together
            raise AssertionError(f"unhandled defect kind {kind}")
        if data is not None:
            (images / image_name).write_bytes(data)
        row = _row(uniq_id, image_name, category, len(rows), rng)
        if kind == "duplicate_id":
            row["product_category_tree"] = rows[0]["product_category_tree"]
            category = _category_of(row)
        if kind == "empty_category":
            row["product_category_tree"] = None
        rows.append(row)
        entries.append(
            {
                "kind": kind,
                "expected": DEFECTS[kind],
                "row": len(rows) + 1,  # header is row 1
                "uniq_id": uniq_id,
                "image": image_name,
                "category": None if kind == "empty_category" else category.name,
            }
        )
    return entries
