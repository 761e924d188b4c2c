"""Writes the sample product catalogue (``stack/sample-catalogue.jsonl``), written for this project.

Brands are real makers of desk gear; models, prices, shops and URLs are made up (shops live
under ``example.com``); nothing is scraped. Deterministic: the same file every run. Run
``python stack/make_catalogue.py`` after editing the tables below; the JSONL file is what the demo
and the tests load.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

OUT = Path(__file__).with_name("sample-catalogue.jsonl")
SHOPS = ("Desk Supply Co", "Workspace Outfitters", "Pixel & Plank", "Home Office Depot", "Studio Gear Shop")
CURRENCIES = ("EUR", "USD", "GBP")

# category: (brands, [(model name, sub-category, tags, description)], price range)
TABLE: dict[str, tuple[tuple[str, ...], list[tuple[str, str, list[str], str]], tuple[int, int]]] = {
    "monitor": (("Dell", "LG", "BenQ", "ASUS", "Samsung"), [
        ("UltraSharp 27 4K USB-C Monitor", "4K monitor", ["27 inch", "4k", "usb-c", "ips"], "27-inch 4K IPS monitor with USB-C power delivery and factory colour calibration."),
        ("34 inch Curved Ultrawide Monitor", "ultrawide monitor", ["34 inch", "curved", "ultrawide", "3440x1440"], "Curved 21:9 ultrawide display for side-by-side windows and immersive games."),
        ("24 inch Full HD Office Monitor", "office monitor", ["24 inch", "1080p", "eye care"], "Slim-bezel 1080p monitor with flicker-free backlight for long office days."),
        ("27 inch 165Hz Gaming Monitor", "gaming monitor", ["27 inch", "1440p", "165hz", "gaming"], "Fast 1440p IPS panel at 165 Hz with adaptive sync for smooth gaming."),
        ("32 inch 4K Designer Monitor", "designer monitor", ["32 inch", "4k", "hdr", "colour accurate"], "Wide-gamut 4K display for photo and video editing."),
    ], (129, 899)),
    "keyboard": (("Keychron", "Logitech", "Ducky", "Razer", "Das Keyboard"), [
        ("Wireless Mechanical Keyboard 75%", "mechanical keyboard", ["mechanical", "hot-swappable", "bluetooth", "brown switches"], "Compact 75% mechanical keyboard with hot-swappable tactile switches and Bluetooth."),
        ("Full-Size Mechanical Keyboard", "mechanical keyboard", ["mechanical", "full size", "red switches", "rgb"], "Full-size mechanical keyboard with linear switches, numpad and per-key lighting."),
        ("Low-Profile Wireless Keyboard", "wireless keyboard", ["low profile", "quiet", "multi-device"], "Quiet low-profile scissor keys that pair with three devices."),
        ("Tenkeyless Gaming Keyboard", "gaming keyboard", ["tenkeyless", "gaming", "mechanical", "rgb"], "Tenkeyless mechanical gaming keyboard with fast optical switches."),
        ("Ergonomic Split Keyboard", "ergonomic keyboard", ["split", "ergonomic", "wrist rest"], "Split, tented layout that keeps wrists straight."),
    ], (49, 229)),
    "mouse": (("Logitech", "Razer", "Microsoft", "SteelSeries", "Glorious"), [
        ("Ergonomic Wireless Mouse", "ergonomic mouse", ["wireless", "ergonomic", "silent clicks"], "Sculpted wireless mouse with a thumb rest and silent clicks."),
        ("Lightweight Gaming Mouse", "gaming mouse", ["gaming", "lightweight", "26k dpi"], "A 60 g gaming mouse with a precise optical sensor."),
        ("Vertical Mouse", "vertical mouse", ["vertical", "ergonomic", "bluetooth"], "Handshake-angle vertical mouse that eases forearm strain."),
        ("Compact Travel Mouse", "travel mouse", ["compact", "bluetooth", "quiet"], "Pocketable Bluetooth mouse for laptops on the go."),
    ], (19, 149)),
    "laptop": (("Lenovo", "Apple", "Dell", "HP", "Framework"), [
        ("14 inch Ultrabook", "ultrabook", ["14 inch", "lightweight", "16gb ram"], "Thin 14-inch laptop with all-day battery and a bright display."),
        ("16 inch Creator Laptop", "creator laptop", ["16 inch", "dedicated gpu", "32gb ram"], "Powerful 16-inch laptop with a colour-accurate screen for creative work."),
        ("13 inch Business Laptop", "business laptop", ["13 inch", "fingerprint reader", "durable"], "Durable business notebook with a comfortable keyboard and privacy shutter."),
        ("15 inch Gaming Laptop", "gaming laptop", ["15 inch", "rtx", "144hz"], "Gaming laptop with a high-refresh display and discrete graphics."),
    ], (649, 2499)),
    "desk lamp": (("BenQ", "IKEA", "Philips", "Dyson", "Anglepoise"), [
        ("LED Desk Lamp with Dimmer", "led desk lamp", ["led", "dimmable", "colour temperature"], "Dimmable LED desk lamp with adjustable colour temperature."),
        ("Monitor Light Bar", "monitor light bar", ["light bar", "asymmetric", "usb"], "Clip-on light bar that lights the desk without screen glare."),
        ("Architect Swing-Arm Lamp", "swing-arm lamp", ["swing arm", "clamp", "metal"], "Classic balanced-arm lamp that clamps to the desk edge."),
        ("Minimal Table Lamp", "table lamp", ["fabric shade", "warm light", "minimal"], "Soft warm table lamp with a linen shade."),
    ], (25, 599)),
    "speaker": (("Audioengine", "Edifier", "Creative", "Bose", "Kanto"), [
        ("Powered Bookshelf Speakers", "bookshelf speakers", ["bookshelf", "bluetooth", "stereo"], "A pair of powered bookshelf speakers with Bluetooth and analogue inputs."),
        ("Compact Desktop Speakers", "desktop speakers", ["compact", "usb", "stereo"], "USB-powered desktop speakers that fit beside a monitor."),
        ("PC Soundbar", "soundbar", ["soundbar", "under monitor", "usb-c"], "Slim soundbar that sits under the monitor."),
    ], (39, 499)),
    "headphones": (("Sony", "Sennheiser", "Audio-Technica", "Bose", "Jabra"), [
        ("Wireless Noise Cancelling Headphones", "noise cancelling headphones", ["wireless", "noise cancelling", "over-ear"], "Over-ear wireless headphones with adaptive noise cancelling."),
        ("Open-Back Studio Headphones", "studio headphones", ["open back", "wired", "studio"], "Open-back wired headphones for mixing and long listening."),
        ("Office Headset with Boom Mic", "headset", ["headset", "boom microphone", "usb"], "USB headset with a noise-rejecting boom microphone for calls."),
    ], (49, 449)),
    "chair": (("Herman Miller", "Steelcase", "Secretlab", "IKEA", "Autonomous"), [
        ("Ergonomic Mesh Office Chair", "office chair", ["mesh", "lumbar support", "adjustable arms"], "Breathable mesh office chair with adjustable lumbar support."),
        ("Gaming Chair", "gaming chair", ["gaming", "reclining", "memory foam"], "Reclining gaming chair with memory-foam head pillow."),
        ("Task Chair", "task chair", ["compact", "fabric", "swivel"], "Compact fabric task chair for small home offices."),
        ("Kneeling Chair", "kneeling chair", ["kneeling", "posture", "wood"], "Wooden kneeling chair that encourages an upright posture."),
    ], (89, 1499)),
    "desk": (("IKEA", "FlexiSpot", "Uplift", "Fully", "Autonomous"), [
        ("Electric Standing Desk", "standing desk", ["standing", "electric", "memory presets"], "Dual-motor height-adjustable desk with memory presets."),
        ("Solid Wood Desk", "wooden desk", ["solid wood", "oak", "minimal"], "Minimal oak desk with a generous work surface."),
        ("Corner L-Shaped Desk", "l-shaped desk", ["l-shaped", "corner", "large"], "L-shaped corner desk for multi-monitor setups."),
        ("Compact Writing Desk", "writing desk", ["compact", "drawer", "small space"], "Small writing desk with a drawer for tight spaces."),
    ], (119, 999)),
    "plant": (("Bloomscape", "The Sill", "Patch", "Leafy", "Greenery Co"), [
        ("Snake Plant in Ceramic Pot", "snake plant", ["low light", "easy care", "ceramic pot"], "Hardy snake plant in a matte ceramic pot; thrives on little light."),
        ("Pothos Hanging Plant", "pothos", ["trailing", "easy care", "air purifying"], "Trailing pothos that drapes nicely from a shelf."),
        ("Succulent Trio", "succulents", ["succulent", "small", "desk plant"], "Three small succulents in concrete planters for the desk."),
        ("ZZ Plant", "zz plant", ["low light", "glossy leaves"], "Glossy ZZ plant that tolerates a dim office."),
    ], (15, 79)),
    "desk mat": (("Grovemade", "Orbitkey", "Logitech", "SteelSeries", "Satechi"), [
        ("Felt Desk Mat", "felt desk pad", ["felt", "wool", "large"], "Large merino wool felt desk mat that softens the workspace."),
        ("Vegan Leather Desk Pad", "leather desk pad", ["vegan leather", "waterproof", "two-tone"], "Water-resistant vegan leather desk pad."),
        ("Extended Gaming Mouse Pad", "gaming mouse pad", ["xxl", "cloth", "stitched edges"], "Extended cloth mouse pad that spans keyboard and mouse."),
    ], (15, 99)),
    "monitor arm": (("Ergotron", "Humanscale", "Amazon Basics", "North Bayou", "Fully"), [
        ("Single Monitor Arm", "single monitor arm", ["gas spring", "vesa", "clamp"], "Gas-spring monitor arm that floats one screen up to 32 inches."),
        ("Dual Monitor Arm", "dual monitor arm", ["dual", "vesa", "cable management"], "Dual arm for two monitors with built-in cable channels."),
        ("Heavy Duty Ultrawide Arm", "ultrawide monitor arm", ["heavy duty", "ultrawide", "49 inch"], "Heavy-duty arm rated for large ultrawide monitors."),
    ], (29, 399)),
    "webcam": (("Logitech", "Razer", "Elgato", "Anker", "Insta360"), [
        ("4K Webcam", "4k webcam", ["4k", "hdr", "auto focus"], "4K webcam with HDR and auto focus for sharp video calls."),
        ("1080p Webcam with Privacy Cover", "hd webcam", ["1080p", "privacy cover", "stereo mic"], "Full HD webcam with a privacy shutter and stereo microphones."),
        ("AI Tracking Webcam", "tracking webcam", ["ai tracking", "gimbal", "4k"], "Gimbal webcam that follows you around the room."),
    ], (39, 299)),
    "microphone": (("Shure", "Rode", "Blue", "Elgato", "Audio-Technica"), [
        ("USB Condenser Microphone", "usb microphone", ["usb", "condenser", "podcast"], "Plug-and-play USB condenser microphone for podcasts and streams."),
        ("Dynamic Broadcast Microphone", "dynamic microphone", ["dynamic", "xlr", "broadcast"], "Broadcast dynamic microphone that rejects room noise."),
        ("Microphone Boom Arm Kit", "microphone arm", ["boom arm", "shock mount"], "Low-profile boom arm with a shock mount."),
    ], (39, 399)),
    "shelf": (("IKEA", "Hay", "String", "Umbra", "Songmics"), [
        ("Floating Wall Shelf", "wall shelf", ["floating", "wall mounted", "oak"], "Oak floating shelf for books and plants above the desk."),
        ("Desk Shelf Monitor Riser", "monitor riser", ["riser", "storage", "bamboo"], "Bamboo desktop shelf that raises the monitor and stores gear."),
        ("Modular Bookshelf", "bookshelf", ["modular", "metal", "open"], "Modular open bookshelf in powder-coated steel."),
    ], (19, 349)),
    "laptop stand": (("Rain Design", "Twelve South", "Nexstand", "Satechi", "Roost"), [
        ("Aluminium Laptop Stand", "laptop stand", ["aluminium", "ergonomic", "fixed height"], "Aluminium stand that lifts the laptop screen to eye level."),
        ("Adjustable Folding Laptop Stand", "portable laptop stand", ["adjustable", "foldable", "portable"], "Foldable stand with adjustable height for travel."),
        ("Vertical Laptop Dock Stand", "vertical stand", ["vertical", "clamshell", "space saving"], "Vertical stand that holds a closed laptop beside the monitor."),
    ], (25, 149)),
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def build() -> list[dict]:
    rng = random.Random(12)
    products = []
    for category, (brands, models, (low, high)) in TABLE.items():
        for model_index, (model, sub_category, tags, description) in enumerate(models):
            for brand_index, brand in enumerate(brands):
                if (model_index + brand_index) % 5 == 4 and len(models) > 3:
                    continue  # not every brand makes every model
                code = f"{category[:3].upper()}-{brand_index}{model_index}-{rng.randrange(1000, 9999)}"
                shop = SHOPS[rng.randrange(len(SHOPS))]
                price = round(rng.uniform(low, high), 0) - 0.01
                products.append({
                    "id": code, "name": model, "brand": brand, "category": category, "sub_category": sub_category,
                    "price": {"amount": price, "currency": CURRENCIES[rng.randrange(len(CURRENCIES))]},
                    "shop": shop,
                    "url": f"https://{_slug(shop)}.example.com/p/{_slug(brand)}-{_slug(model)}",
                    "image": f"products/{code.lower()}.jpg",
                    "tags": tags, "description": description,
                    "available": rng.random() > 0.1,
                })
    return products


def main() -> None:
    products = build()
    OUT.write_text("".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in products))
    print(f"{OUT}: {len(products)} products, {len({p['category'] for p in products})} categories, "
          f"{sum(not p['available'] for p in products)} unavailable")


if __name__ == "__main__":
    main()
