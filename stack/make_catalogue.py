"""Writes the sample product catalogue (``stack/sample-catalogue.jsonl``), written for this project.

Every product is a maker's own product line under that maker only (no line under another brand); the
variants (size, colour, finish), prices, shops and URLs are made up (shops live under ``example.com``);
nothing is scraped. Each category has six lines, each with its own kind, tags and description, so within a
category the query picks the product, not only the brand. A price is the line's euro list price times its
variant's factor, converted into the shop's currency at fixed rates and ended the way that currency's shops
end prices. Deterministic: the same file every run. Run ``python stack/make_catalogue.py`` after editing the
tables below; the JSONL file is what the demo and the tests load.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

OUT = Path(__file__).with_name("sample-catalogue.jsonl")
# shop: its currency (each shop sells in one)
SHOPS = {"Desk Supply Co": "USD", "Workspace Outfitters": "USD", "Pixel & Plank": "GBP", "Home Office Depot": "EUR",
         "Studio Gear Shop": "EUR", "Bureau Berlin": "EUR", "Tokyo Desk Lab": "JPY"}
EUR_TO = {"EUR": 1.0, "USD": 1.08, "GBP": 0.86, "JPY": 162.0}

# category: ([(brand, line, sub-category, tags, description, euro list price)], [(variant, tag, price factor)])
Line = tuple[str, str, str, list[str], str, int]
TABLE: dict[str, tuple[list[Line], list[tuple[str, str, float]]]] = {
    "monitor": ([
        ("Dell", "UltraSharp 4K USB-C Hub Monitor", "4K monitor", ["4k", "usb-c hub", "ips"], "4K IPS office monitor that charges a laptop and hosts its keyboard, mouse and network over one USB-C cable.", 579),
        ("LG", "UltraFine 5K Display", "5K monitor", ["5k", "thunderbolt", "mac"], "Very sharp 5K panel made to pair with a Mac over Thunderbolt, with built-in camera and speakers.", 1299),
        ("BenQ", "DesignVue PD Designer Monitor", "designer monitor", ["colour accurate", "hdr", "calibrated"], "Factory-calibrated wide-gamut display for photo, video and print design work.", 699),
        ("ASUS", "ProArt Display", "professional monitor", ["colour accurate", "calman verified", "usb-c"], "Colour-verified IPS screen for creators, with a hotkey puck and ergonomic stand.", 499),
        ("Samsung", "Odyssey G7 Curved Gaming Monitor", "gaming monitor", ["curved", "240hz", "gaming", "1000r"], "Deeply curved high-refresh gaming screen with fast response for shooters and racing games.", 549),
        ("Samsung", "ViewFinity S6 Office Monitor", "office monitor", ["qhd", "eye saver", "height adjustable"], "Plain QHD office screen with a flicker-free backlight and a height-adjustable stand.", 279),
    ], [("", "tilt stand", 1.0), ("with Height-Adjustable Stand", "height-adjustable stand", 1.1), ("Refurbished", "refurbished", 0.8)]),
    "keyboard": ([
        ("Keychron", "Q1 Pro Mechanical Keyboard", "mechanical keyboard", ["mechanical", "aluminium", "hot-swappable", "qmk"], "Heavy gasket-mounted aluminium keyboard with hot-swappable switches and remappable keys.", 199),
        ("Keychron", "K3 Low-Profile Keyboard", "low-profile mechanical keyboard", ["low profile", "slim", "bluetooth"], "Slim low-profile mechanical keyboard for laptop users who want short key travel.", 89),
        ("Logitech", "MX Keys S Wireless Keyboard", "wireless keyboard", ["quiet", "backlit", "multi-device"], "Quiet scissor-key keyboard with spherical keycaps that switches between three computers.", 119),
        ("Ducky", "One 3 Mechanical Keyboard", "mechanical keyboard", ["mechanical", "rgb", "pbt keycaps", "wired"], "Wired mechanical keyboard with thick PBT keycaps and bright per-key lighting.", 139),
        ("Razer", "BlackWidow V4 Gaming Keyboard", "gaming keyboard", ["gaming", "macro keys", "rgb", "media dial"], "Gaming keyboard with macro keys, a media dial and fast mechanical switches.", 169),
        ("Kinesis", "Advantage360 Split Keyboard", "ergonomic keyboard", ["split", "contoured", "tenting"], "Contoured split keyboard with thumb clusters and tenting that keeps wrists straight.", 449),
    ], [("Black", "black", 1.0), ("White", "white", 1.0), ("Nordic layout", "iso layout", 1.05)]),
    "mouse": ([
        ("Logitech", "MX Master 3S Mouse", "productivity mouse", ["ergonomic", "silent clicks", "fast scroll wheel"], "Sculpted productivity mouse with a thumb wheel, silent clicks and a fast scroll wheel.", 109),
        ("Logitech", "Lift Vertical Mouse", "vertical mouse", ["vertical", "ergonomic", "small hands"], "Upright vertical mouse held in a handshake position to ease forearm strain.", 79),
        ("Razer", "DeathAdder V3 Gaming Mouse", "gaming mouse", ["gaming", "lightweight", "esports"], "Very light ergonomic gaming mouse with a precise optical sensor.", 89),
        ("Microsoft", "Bluetooth Ergonomic Mouse", "ergonomic mouse", ["bluetooth", "ergonomic", "office"], "Affordable contoured Bluetooth mouse for everyday office work.", 39),
        ("SteelSeries", "Aerox 3 Wireless Mouse", "gaming mouse", ["gaming", "honeycomb shell", "wireless"], "Perforated ultra-light wireless gaming mouse that resists dust and water.", 99),
        ("Apple", "Magic Mouse", "multi-touch mouse", ["multi-touch", "mac", "low profile"], "Flat multi-touch mouse that scrolls and swipes with a finger on a Mac.", 89),
    ], [("Graphite", "graphite", 1.0), ("Pale Grey", "pale grey", 1.0), ("Travel Edition", "travel case", 1.15)]),
    "laptop": ([
        ("Lenovo", "ThinkPad X1 Carbon", "business ultrabook", ["14 inch", "lightweight", "durable"], "Light carbon-fibre business laptop with a comfortable keyboard and a privacy shutter.", 1899),
        ("Apple", "MacBook Air", "ultrabook", ["fanless", "silent", "long battery"], "Silent fanless laptop with all-day battery life for everyday work.", 1199),
        ("Apple", "MacBook Pro", "creator laptop", ["xdr display", "video editing", "high performance"], "Powerful laptop with a bright mini-LED screen for video, music and code.", 2199),
        ("Dell", "XPS 13", "compact ultrabook", ["13 inch", "compact", "edge-to-edge screen"], "Compact 13-inch laptop with a nearly borderless screen.", 1099),
        ("Framework", "Laptop 13", "repairable laptop", ["repairable", "modular ports", "upgradeable"], "Repairable laptop whose ports, memory and battery can be swapped by hand.", 1049),
        ("ASUS", "ROG Zephyrus G14", "gaming laptop", ["gaming", "dedicated gpu", "120hz"], "Compact gaming laptop with a discrete graphics card and a fast display.", 1699),
    ], [("16 GB", "16gb ram", 1.0), ("32 GB", "32gb ram", 1.25), ("Refurbished 16 GB", "refurbished", 0.75)]),
    "desk lamp": ([
        ("BenQ", "ScreenBar Halo Monitor Light", "monitor light bar", ["light bar", "no screen glare", "wireless dial"], "Light bar that clips on top of the monitor and lights the desk without glare on the screen.", 179),
        ("BenQ", "e-Reading LED Desk Lamp", "led desk lamp", ["led", "wide light", "dimmable"], "Tall dimmable LED lamp whose wide head lights a whole desk for reading.", 229),
        ("IKEA", "TERTIAL Work Lamp", "swing-arm lamp", ["swing arm", "clamp", "adjustable"], "Inexpensive swing-arm work lamp that clamps to the desk edge.", 15),
        ("IKEA", "FORSÅ Work Lamp", "task lamp", ["metal", "adjustable arm", "compact"], "Small metal task lamp with an adjustable arm and head.", 25),
        ("Anglepoise", "Type 75 Desk Lamp", "balanced-arm lamp", ["balanced arm", "spring", "design classic"], "Spring-balanced design lamp that stays wherever its arm is put.", 299),
        ("Dyson", "Solarcycle Morph Desk Light", "smart desk lamp", ["daylight tracking", "smart", "led"], "LED desk light that follows local daylight colour through the day.", 599),
    ], [("Black", "black", 1.0), ("White", "white", 1.0), ("Brass", "brass", 1.2)]),
    "speaker": ([
        ("Audioengine", "A2+ Wireless Desktop Speakers", "desktop speakers", ["compact", "bluetooth", "usb"], "Small powered desktop speakers with a USB input and Bluetooth.", 299),
        ("Audioengine", "A5+ Bookshelf Speakers", "bookshelf speakers", ["bookshelf", "powerful", "wood veneer"], "Larger powered bookshelf speakers that fill a room.", 469),
        ("Edifier", "R1280T Powered Bookshelf Speakers", "bookshelf speakers", ["budget", "wood", "remote"], "Affordable wooden bookshelf speakers with bass and treble dials and a remote.", 119),
        ("Edifier", "MR4 Studio Monitors", "studio monitors", ["studio", "flat response", "mixing"], "Small studio monitors with a flat response for music production.", 129),
        ("Creative", "Pebble V3 Desktop Speakers", "usb speakers", ["usb-c", "tiny", "budget"], "Tiny round speakers powered by one USB-C cable, angled towards the listener.", 39),
        ("Kanto", "ORA Reference Desktop Speakers", "desktop speakers", ["near-field", "bass port", "usb"], "Compact near-field speakers tuned for listening at a desk.", 349),
    ], [("Black", "black", 1.0), ("White", "white", 1.0), ("with Stands", "desk stands", 1.2)]),
    "headphones": ([
        ("Sony", "WH-1000XM5 Headphones", "noise cancelling headphones", ["noise cancelling", "wireless", "over-ear"], "Wireless over-ear headphones with strong noise cancelling for open offices and travel.", 399),
        ("Sennheiser", "HD 600 Open-Back Headphones", "open-back headphones", ["open back", "wired", "audiophile"], "Wired open-back headphones with a natural sound for quiet rooms.", 329),
        ("Audio-Technica", "ATH-M50x Studio Headphones", "studio headphones", ["closed back", "studio", "detachable cable"], "Closed-back studio monitoring headphones with a folding headband.", 169),
        ("Bose", "QuietComfort Headphones", "noise cancelling headphones", ["noise cancelling", "comfortable", "wireless"], "Light, comfortable noise-cancelling headphones for long days.", 349),
        ("Jabra", "Evolve2 65 Office Headset", "office headset", ["boom microphone", "busy light", "teams"], "Wireless office headset with a boom microphone and a busy light for calls.", 259),
        ("SteelSeries", "Arctis Nova 7 Gaming Headset", "gaming headset", ["gaming", "retractable mic", "wireless"], "Wireless gaming headset with a retractable microphone and long battery.", 199),
    ], [("Black", "black", 1.0), ("Silver", "silver", 1.0), ("with Travel Case", "travel case", 1.1)]),
    "chair": ([
        ("Herman Miller", "Aeron Chair", "ergonomic office chair", ["mesh", "lumbar support", "12-year warranty"], "Breathable mesh office chair with adjustable lumbar support.", 1599),
        ("Herman Miller", "Embody Chair", "ergonomic office chair", ["pixelated support", "long sitting", "recline"], "Chair whose flexible back follows the spine through long sitting hours.", 1899),
        ("Steelcase", "Leap Chair", "ergonomic office chair", ["adjustable", "upholstered", "live back"], "Upholstered task chair with a back that flexes as the sitter moves.", 1199),
        ("Secretlab", "Titan Evo Gaming Chair", "gaming chair", ["gaming", "racing style", "magnetic pillow"], "Racing-style gaming chair with a magnetic head pillow and built-in lumbar.", 549),
        ("IKEA", "MARKUS Office Chair", "office chair", ["budget", "mesh back", "headrest"], "Affordable high-back office chair with a mesh back and headrest.", 189),
        ("Haworth", "Fern Chair", "ergonomic office chair", ["flexible back", "edge-free", "knit"], "Task chair with a flexible, frameless knit back.", 1099),
    ], [("Graphite", "graphite", 1.0), ("Light Grey", "light grey", 1.0), ("with Headrest", "headrest", 1.12)]),
    "desk": ([
        ("IKEA", "BEKANT Desk", "office desk", ["fixed height", "cable net", "budget"], "Plain fixed-height office desk with a cable net under the top.", 199),
        ("IKEA", "IDÅSEN Sit-Stand Desk", "standing desk", ["electric", "sit-stand", "memory settings"], "Electric sit-stand desk with a steel frame and a quiet motor.", 549),
        ("FlexiSpot", "E7 Standing Desk", "standing desk", ["electric", "dual motor", "sit-stand"], "Dual-motor standing desk that lifts heavy setups smoothly.", 499),
        ("Uplift", "V2 Standing Desk", "standing desk", ["electric", "bamboo top", "stable"], "Very stable electric standing desk, here with a bamboo top.", 699),
        ("Fully", "Jarvis Bamboo Standing Desk", "standing desk", ["bamboo", "electric", "sustainable"], "Standing desk with a renewable bamboo top and a fast lift.", 649),
        ("Vitra", "Tyde 2 Desk", "design desk", ["design", "sit-stand", "minimal"], "Minimal design desk with a slim frame for studios and home offices.", 1490),
    ], [("120 x 60 cm", "120 cm", 1.0), ("160 x 80 cm", "160 cm", 1.2), ("Walnut finish", "walnut", 1.35)]),
    "plant": ([
        ("The Sill", "Snake Plant", "succulent", ["low light", "easy care", "air purifying"], "Upright snake plant that tolerates low light and rare watering.", 45),
        ("The Sill", "ZZ Plant", "tropical plant", ["low light", "glossy leaves", "easy care"], "Glossy ZZ plant that thrives on neglect in a dim office.", 49),
        ("Bloomscape", "Monstera Deliciosa", "tropical plant", ["large leaves", "bright indirect light", "statement"], "Statement monstera with large split leaves for a bright corner.", 79),
        ("Bloomscape", "Pothos", "trailing plant", ["trailing", "fast growing", "shelf"], "Trailing pothos that drapes from a shelf or the desk's edge.", 35),
        ("Patch", "Fiddle Leaf Fig", "tree", ["tall", "bright light", "statement"], "Tall fiddle leaf fig for a bright spot beside the desk.", 69),
        ("IKEA", "FEJKA Artificial Succulents", "artificial plant", ["artificial", "no care", "set of three"], "Artificial succulents in small pots that never need water.", 12),
    ], [("in a Ceramic Pot", "ceramic pot", 1.0), ("in a Terracotta Pot", "terracotta pot", 0.9), ("Large", "large", 1.6)]),
    "desk mat": ([
        ("Grovemade", "Wool Felt Desk Pad", "felt desk pad", ["wool felt", "merino", "minimal"], "Thick merino wool felt pad that softens the desk and dampens sound.", 90),
        ("Grovemade", "Leather Desk Pad", "leather desk pad", ["leather", "vegetable tanned", "ages well"], "Vegetable-tanned leather pad that darkens with use.", 180),
        ("Orbitkey", "Desk Mat", "vegan leather desk mat", ["vegan leather", "cable slot", "magnetic"], "Vegan-leather mat with a magnetic cable holder and a hidden pocket.", 65),
        ("Logitech", "Desk Mat Studio Series", "desk mat", ["recycled", "anti-slip", "spill resistant"], "Spill-resistant fabric desk mat with an anti-slip base.", 29),
        ("SteelSeries", "QcK Heavy Gaming Mouse Pad", "gaming mouse pad", ["gaming", "micro-woven cloth", "thick"], "Thick micro-woven cloth pad tuned for gaming mouse sensors.", 29),
        ("Satechi", "Eco-Leather Deskmate", "desk mat", ["eco leather", "two-tone", "water resistant"], "Water-resistant eco-leather mat in two tones.", 49),
    ], [("Medium", "medium", 0.8), ("Large", "large", 1.0), ("Extra Large", "extra large", 1.3)]),
    "monitor arm": ([
        ("Ergotron", "LX Monitor Arm", "single monitor arm", ["single", "gas spring", "aluminium"], "Polished aluminium single arm that floats one monitor and frees the desk.", 189),
        ("Ergotron", "HX Heavy Monitor Arm", "heavy monitor arm", ["heavy", "ultrawide", "gas spring"], "Strong arm that holds a heavy ultrawide or large curved screen.", 329),
        ("Humanscale", "M2.1 Monitor Arm", "single monitor arm", ["slim", "cable management", "design"], "Slim, precise arm with cables hidden inside.", 349),
        ("Herman Miller", "Flo Monitor Arm", "single monitor arm", ["design", "smooth motion", "clamp"], "Design monitor arm with smooth motion and a small clamp.", 379),
        ("Fully", "Jarvis Dual Monitor Arm", "dual monitor arm", ["dual", "two screens", "gas spring"], "Dual arm that holds two monitors side by side.", 279),
        ("Humanscale", "M8.1 Dual Monitor Arm", "dual monitor arm", ["dual", "heavy duty", "crossbar"], "Heavy-duty arm with a crossbar for two large monitors.", 549),
    ], [("Black", "black", 1.0), ("Silver", "silver", 1.0), ("White", "white", 1.05)]),
    "webcam": ([
        ("Logitech", "Brio 4K Webcam", "4k webcam", ["4k", "hdr", "windows hello"], "4K webcam with HDR and face login for sharp video calls.", 199),
        ("Logitech", "C920 HD Pro Webcam", "hd webcam", ["1080p", "stereo mics", "budget"], "Dependable 1080p webcam with two microphones.", 79),
        ("Razer", "Kiyo Pro Streaming Webcam", "streaming webcam", ["streaming", "low light", "wide angle"], "Streaming webcam with an adaptive sensor for low light.", 179),
        ("Elgato", "Facecam MK.2", "streaming webcam", ["streaming", "pan tilt zoom", "studio controls"], "Streaming camera with studio-style manual controls.", 149),
        ("Insta360", "Link AI Webcam", "ai tracking webcam", ["ai tracking", "4k", "gimbal"], "4K webcam on a small gimbal that follows the speaker.", 299),
        ("OBSBOT", "Tiny 2 PTZ Webcam", "ptz webcam", ["pan tilt zoom", "voice control", "tracking"], "Pan-tilt-zoom webcam steered by voice and gestures.", 329),
    ], [("", "black", 1.0), ("with Privacy Cover", "privacy cover", 1.05), ("with Tripod", "tripod", 1.15)]),
    "microphone": ([
        ("Shure", "MV7+ Podcast Microphone", "podcast microphone", ["dynamic", "usb-c", "xlr"], "Dynamic podcast microphone with USB-C and XLR outputs.", 279),
        ("Shure", "SM7B Vocal Microphone", "broadcast microphone", ["dynamic", "xlr", "broadcast"], "Broadcast dynamic microphone that rejects room noise.", 399),
        ("Rode", "NT-USB+ Microphone", "usb condenser microphone", ["condenser", "usb", "studio"], "USB studio condenser microphone with a headphone output.", 169),
        ("Rode", "PodMic USB", "podcast microphone", ["dynamic", "usb", "xlr"], "Dynamic microphone made for speech, on USB or XLR.", 199),
        ("Elgato", "Wave:3 Microphone", "streaming microphone", ["condenser", "usb", "clip guard"], "Streaming condenser microphone that keeps loud peaks from clipping.", 149),
        ("Audio-Technica", "AT2020USB-X Microphone", "usb condenser microphone", ["condenser", "usb-c", "cardioid"], "Cardioid USB-C condenser microphone for voice and music.", 139),
    ], [("", "black", 1.0), ("with Boom Arm", "boom arm", 1.35), ("with Shock Mount", "shock mount", 1.15)]),
    "shelf": ([
        ("IKEA", "KALLAX Shelving Unit", "cube shelf", ["cube", "storage boxes", "budget"], "Cube shelving unit that takes storage boxes or stands as a room divider.", 65),
        ("IKEA", "LACK Wall Shelf", "wall shelf", ["floating", "wall mounted", "budget"], "Floating wall shelf with hidden fixings.", 20),
        ("String Furniture", "String System Shelf", "modular wall shelf", ["modular", "wall mounted", "scandinavian"], "Modular Scandinavian wall shelf on thin metal side panels.", 249),
        ("USM", "Haller Sideboard", "modular storage", ["modular", "steel", "design classic"], "Steel and chrome modular storage with lockable doors.", 1890),
        ("Vitsoe", "606 Universal Shelving System", "modular shelving", ["modular", "wall track", "design classic"], "Wall-track shelving that grows shelf by shelf.", 890),
        ("Muuto", "Stacked Storage System", "modular shelf", ["stackable", "open and closed", "colourful"], "Stackable boxes that build an open or closed shelf.", 329),
    ], [("White", "white", 1.0), ("Oak", "oak", 1.2), ("Black", "black", 1.0)]),
    "laptop stand": ([
        ("Rain Design", "mStand Laptop Stand", "laptop stand", ["aluminium", "fixed height", "cable hole"], "One-piece aluminium stand that lifts a laptop to eye level.", 59),
        ("Twelve South", "Curve SE Laptop Stand", "laptop stand", ["aluminium", "open design", "cooling"], "Open curved stand that keeps the laptop cool.", 49),
        ("Twelve South", "BookArc Vertical Stand", "vertical laptop stand", ["vertical", "closed clamshell", "space saving"], "Vertical stand that holds a closed laptop beside a monitor.", 59),
        ("Roost", "Laptop Stand V3", "portable laptop stand", ["portable", "foldable", "travel"], "Folding stand light enough to travel with the laptop.", 89),
        ("Nexstand", "K2 Laptop Stand", "portable laptop stand", ["portable", "adjustable height", "budget"], "Adjustable folding stand that fits in a backpack.", 35),
        ("Satechi", "Aluminum Laptop Stand", "adjustable laptop stand", ["adjustable angle", "aluminium", "foldable"], "Adjustable-angle aluminium stand that folds flat.", 45),
    ], [("Silver", "silver", 1.0), ("Space Grey", "space grey", 1.0), ("Black", "black", 1.05)]),
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _price(eur: float, currency: str) -> float:
    """``eur`` in ``currency``: yen in whole hundreds less ten; others ending in .99 (.00 above 1,000)."""
    amount = eur * EUR_TO[currency]
    if currency == "JPY":
        return float(max(round(amount, -2), 100) - 10)
    return float(round(amount)) if amount >= 1000 else round(amount) - 0.01


def build() -> list[dict]:
    rng = random.Random(12)
    shops = list(SHOPS)
    products = []
    for category, (lines, variants) in TABLE.items():
        for line_index, (brand, line, sub_category, tags, description, eur) in enumerate(lines):
            for variant_index, (variant, variant_tag, factor) in enumerate(variants):
                name = f"{line} {variant}".strip()
                code = f"{_slug(category)[:3].upper()}-{line_index}{variant_index}-{rng.randrange(1000, 9999)}"
                shop = shops[rng.randrange(len(shops))]
                products.append({
                    "id": code, "name": name, "brand": brand, "category": category, "sub_category": sub_category,
                    "price": {"amount": _price(eur * factor, SHOPS[shop]), "currency": SHOPS[shop]},
                    "shop": shop,
                    "url": f"https://{_slug(shop)}.example.com/p/{_slug(brand)}-{_slug(name)}",
                    "image": f"products/{code.lower()}.jpg",
                    "tags": [*tags, variant_tag], "description": f"{description} Variant: {variant_tag}.",
                    "available": rng.random() > 0.1,
                })
    return products


def main() -> None:
    products = build()
    OUT.write_text("".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in products))
    print(f"{OUT}: {len(products)} products, {len({p['category'] for p in products})} categories, "
          f"{len({p['brand'] for p in products})} brands, {sum(not p['available'] for p in products)} unavailable")


if __name__ == "__main__":
    main()
