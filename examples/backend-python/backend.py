"""A deskgen backend in Python, on ``deskgen.common.backend``: store each photo, publish its minimal upload
event (key = job id), wait for each job's one terminal result, print status, reason, timeline and products.

    python examples/backend-python/backend.py [--concept BASIC] [--budget 250 EUR]
        [--include "monitor,desk lamp"] [--exclude chair] [--timeout 300] PHOTO...

``--budget`` is the most one recommended product may cost; ``--include``/``--exclude`` name product categories
(``common/schemas/product.json``), comma-separated. A value the schema refuses stops here (exit 2), before upload.

Settings: the services' DESKGEN_* variables (``eval "$(python3 stack/localstack.py env)"`` for the local stack).
"""

import argparse
import sys
from pathlib import Path

from deskgen.common.backend import Backend, BackendSettings
from deskgen.common.errors import DeskgenError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    parser.add_argument("--concept")
    parser.add_argument("--budget", nargs=2, metavar=("AMOUNT", "CURRENCY"), help="per product, e.g. 250 EUR")
    parser.add_argument("--include", help="only these product categories, comma-separated")
    parser.add_argument("--exclude", help="never these product categories, comma-separated")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    try:
        request = build_request(args)
    except ValueError as exc:
        parser.error(str(exc))

    try:
        with Backend(BackendSettings.load()) as backend:
            jobs = {backend.submit(photo.read_bytes(), request=request, filename=photo.name): photo
                    for photo in args.photos}
            for job_id, photo in jobs.items():
                print(f"submitted job={job_id} file={photo.name}")
            results = backend.results(list(jobs), timeout_s=args.timeout)
    except (DeskgenError, OSError) as exc:  # a setting to fix, an unreadable photo, S3 or Kafka unreachable
        print(f"backend-python: {exc}", file=sys.stderr)
        return 2

    for job_id, photo in jobs.items():
        if job_id in results:
            print(describe(photo, results[job_id]))
    missing = [job_id for job_id in jobs if job_id not in results]
    if missing:
        print(f"timed out waiting for {len(missing)} job(s): {missing}", file=sys.stderr)
    return 1 if missing else 0


def build_request(args: argparse.Namespace) -> dict:
    """The upload event's ``request`` from the options (the schema checks the values when the event is built)."""
    request: dict = {"concept": args.concept} if args.concept else {}
    if args.budget:
        amount, currency = args.budget
        try:
            request["budget"] = {"amount": float(amount), "currency": currency}
        except ValueError:
            raise ValueError(f"--budget: {amount!r} is not a number") from None
    categories = {name: [c.strip() for c in value.split(",") if c.strip()]
                  for name, value in (("include", args.include), ("exclude", args.exclude)) if value}
    if categories:
        request["categories"] = categories
    return request


def describe(photo: Path, result: dict) -> str:
    """One line per result: job, file, status, reason, per-stage timeline; the output or detail below it, then
    the recommended products (category, brand, name, price) or why there are none."""
    timeline = ", ".join(f"{stage} {entry.get('handle_ms', 0) / 1000:.2f}s" for stage, entry in result["timeline"].items())
    below = f"output {result['output']['image_key']}" if result["status"] == "succeeded" else f"detail {result['detail']}"
    captioning = result.get("captioning") or {}
    if "products" in captioning:
        below += "\n    products " + ("; ".join(
            f"{p['category']}: {p['brand']} {p['name']} {p['price']['amount']} {p['price']['currency']}"
            for p in captioning["products"]) or f"none ({captioning.get('products_note')})")
    return (f"result job={result['job_id']} file={photo.name} status={result['status']} reason={result.get('reason', '-')} "
            f"stage={result['stage']} timeline={timeline}\n    {below}")


if __name__ == "__main__":
    sys.exit(main())
