"""A synthetic marketplace stream for the demo and the benchmarks (deterministic per seed).

All five policy classes, prices with outliers for the fraud class, GMV and exposure
signals, new items, golden items with their known labels, near-duplicate listings
(re-posted with small edits and the same photo), and photos taken from scikit-image's
bundled images (crops and re-encodes make the near-duplicates).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRODUCTS: dict[str, list[tuple[str, str, tuple[float, float]]]] = {
    "ok": [
        ("Wireless earbuds with charging case", "Bluetooth 5.3, 24h battery, USB-C.", (15, 80)),
        ("Cotton T-shirt, regular fit", "100% cotton, sizes S to XXL, machine washable.", (5, 30)),
        ("Stainless steel water bottle 750 ml", "Keeps drinks cold for 24 hours.", (8, 35)),
        ("Children's wooden puzzle", "Twelve pieces, non-toxic paint, ages 3+.", (6, 25)),
        ("Ceramic coffee mug set", "Four mugs, 350 ml, dishwasher safe.", (12, 40)),
        ("Running shoes, breathable mesh", "Lightweight sole, sizes 36 to 46.", (25, 120)),
        ("LED desk lamp with dimmer", "Three colour temperatures, USB charging port.", (14, 60)),
        ("Yoga mat 6 mm", "Non-slip surface, carrying strap included.", (10, 45)),
        ("Phone case for iPhone 15", "Shock-absorbing silicone, several colours.", (3, 20)),
        ("Kitchen knife sharpener", "Two-stage ceramic and diamond wheels.", (7, 25)),
    ],
    "restricted": [
        ("Glass hookah 55 cm", "Complete set with hose and bowl, for tobacco.", (30, 150)),
        ("Airsoft replica pistol", "Spring powered, 6 mm BBs, orange tip.", (20, 90)),
        ("Folding hunting knife", "Locking blade 9 cm, wooden handle.", (15, 70)),
        ("E-cigarette starter kit", "Refillable pod system, 1100 mAh.", (15, 60)),
        ("Pepper spray 50 ml", "Self-defence spray, legal for adults.", (8, 25)),
    ],
    "adult": [
        ("Erotic lingerie set, lace", "Adults only 18+, discreet packaging.", (12, 60)),
        ("Adult toy, silicone", "18+ only, body-safe silicone, discreet delivery.", (15, 80)),
        ("Adult card game for couples", "18+ party game, 120 cards.", (8, 30)),
    ],
    "prohibited": [
        ("Cannabis seeds, high yield", "Fast flowering strain, discreet shipping.", (20, 100)),
        ("Counterfeit designer handbag", "Mirror quality copy with logo and dust bag.", (40, 200)),
        ("Brass knuckles, heavy duty", "Solid brass, fits most hands.", (10, 40)),
        ("Fake passport template", "Editable high resolution files.", (50, 300)),
        ("Prescription painkillers, no prescription", "Strong tablets, fast delivery.", (30, 150)),
        ("Stun gun 5 million volts", "Rechargeable, flashlight included.", (20, 80)),
    ],
    "fraud": [
        ("iPhone 15 Pro Max 1TB new sealed", "Contact me on WhatsApp for details.", (0.5, 3)),
        ("Rolex Submariner original", "Pay by wire, ships from abroad.", (1, 4)),
        ("PlayStation 5 bundle", "write me on telegram", (0.9, 4)),
        ("MacBook Pro M3", "cheap!!! only today", (1, 4.5)),
        ("Designer sneakers 90% off", "Limited, pay first, write on Telegram.", (2000, 9000)),
    ],
}
CLASS_MIX = {"ok": 0.72, "restricted": 0.08, "adult": 0.05, "prohibited": 0.08, "fraud": 0.07}
CATEGORIES = {"ok": ["electronics", "fashion", "home", "toys", "sport"],
              "restricted": ["hobby", "outdoor", "tobacco"], "adult": ["adult"],
              "prohibited": ["misc", "fashion", "health"], "fraud": ["electronics", "fashion"]}
ADJECTIVES = ["", "NEW ", "Hot sale ", "2026 ", "Original ", "Best ", "Free shipping "]
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
          "camera", "moon", "coins"]


@dataclass
class DemoItems:
    rows: list[dict[str, Any]]
    truth: dict[str, str]  # external_id -> true label
    duplicates_of: dict[str, str]  # external_id -> the listing it near-duplicates


def make_photos(directory: Path, *, seed: int = 0) -> list[str]:
    """Save scikit-image's bundled photos (and crops/re-encodes) as JPEGs; return paths."""
    import numpy as np
    from PIL import Image
    from skimage import data

    directory.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    for name in PHOTOS:
        path = directory / f"{name}.jpg"
        crop = directory / f"{name}_crop.jpg"
        if not path.exists() or not crop.exists():
            arr = getattr(data, name)()
            if arr.ndim == 2:
                arr = np.stack([arr] * 3, axis=-1)
            img = Image.fromarray(arr.astype("uint8")).convert("RGB")
            img.save(path, quality=90)
            w, h = img.size
            img.crop((w // 10, h // 10, w - w // 10, h - h // 10)).resize((w // 2, h // 2)) \
                .save(crop, quality=60)
        paths.extend([str(path), str(crop)])
    return paths


def generate(n: int, *, seed: int = 7, photo_dir: Path | None = None,
             source: str = "demo-shop", duplicate_rate: float = 0.08,
             golden_rate: float = 0.03) -> DemoItems:
    rng = random.Random(seed)
    photos = make_photos(photo_dir, seed=seed) if photo_dir else []
    labels = list(CLASS_MIX)
    weights = [CLASS_MIX[k] for k in labels]
    rows: list[dict[str, Any]] = []
    truth: dict[str, str] = {}
    dups: dict[str, str] = {}
    for i in range(n):
        ext = f"L{i:07d}"
        if rows and rng.random() < duplicate_rate:
            base = rng.choice(rows[-500:])
            row = dict(base)
            row["external_id"] = ext
            row["title"] = rng.choice(ADJECTIVES) + base["title"].split(" ", 1)[-1] \
                if rng.random() < 0.3 else base["title"] + rng.choice(["", " !", " (copy)", " *"])
            row["seller_id"] = f"S{rng.randint(1, 400):04d}"
            row["is_golden"], row["golden_label"] = False, None
            row = {k: v for k, v in row.items() if v is not None}
            if photos and base.get("image") and rng.random() < 0.5:
                row["image"] = base["image"].replace(".jpg", "_crop.jpg") \
                    if not base["image"].endswith("_crop.jpg") else base["image"]
            truth[ext] = truth[base["external_id"]]
            dups[ext] = base["external_id"]
            rows.append(row)
            continue
        label = rng.choices(labels, weights)[0]
        title, desc, (lo, hi) = rng.choice(PRODUCTS[label])
        price = round(rng.uniform(lo, hi), 2)
        if label == "ok" and rng.random() < 0.01:
            price = round(price * rng.choice([0.05, 40]), 2)  # honest outliers exist too
        row = {
            "source": source, "external_id": ext,
            "title": rng.choice(ADJECTIVES) + title, "description": desc,
            "price": price, "currency": "USD",
            "seller_id": f"S{rng.randint(1, 400):04d}",
            "category": rng.choice(CATEGORIES[label]),
            "gmv": round(rng.lognormvariate(7, 1.6), 2),
            "exposure": round(rng.lognormvariate(8, 1.5)),
            "is_new": rng.random() < 0.6,
            "url": f"https://demo-shop.example/item/{ext}",
            "metadata": {"ads_feed": rng.random() < 0.2, "top_search": rng.random() < 0.1},
        }
        if photos and rng.random() < 0.5:
            row["image"] = rng.choice(photos[::2])
        if rng.random() < golden_rate:
            row["is_golden"], row["golden_label"] = True, label
        truth[ext] = label
        rows.append(row)
    return DemoItems(rows=rows, truth=truth, duplicates_of=dups)
