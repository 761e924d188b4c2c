"""``deskgen``: run a stage, manage topics, submit photos and watch results, build dev weights, show the
topology."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path

from .errors import DeskgenError, FatalError
from .request import MODES
from .topology import STAGES, chart_yaml, resolve, spec

__all__ = ["main"]

CONCEPTS = ("BASIC", "MSPAINT", "SIMPLE", "OIL", "CARTOON", "WEEKDAY")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args, rest) or 0
    except DeskgenError as exc:
        print(f"deskgen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deskgen", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run one stage as a service")
    run.add_argument("stage", choices=STAGES)
    run.set_defaults(func=_run)

    topics = commands.add_parser("topics", help="manage the pipeline's topics")
    topic_commands = topics.add_subparsers(required=True, metavar="ACTION")
    create = topic_commands.add_parser("create", help="create every topic (existing ones are kept)")
    create.add_argument("--partitions", type=int, default=3)
    create.add_argument("--replication", type=int, default=1)
    create.set_defaults(func=_topics_create)

    submit = commands.add_parser("submit", help="upload photos and publish their `uploaded` events")
    submit.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    submit.add_argument("--concept", choices=CONCEPTS)
    submit.add_argument("--preset")
    for name, kind in (("steps", int), ("guidance", float), ("width", int), ("height", int), ("seed", int)):
        submit.add_argument(f"--{name}", type=kind)
    submit.add_argument("--scheduler")
    submit.add_argument("--mode", choices=MODES)
    submit.add_argument("--fast", action="store_true", default=None, help="few-step LoRA, CFG off")
    submit.add_argument("--strength", type=float, help="inpainting strength (keep_devices)")
    submit.add_argument("--budget", nargs=2, metavar=("AMOUNT", "CURRENCY"),
                        help="the most one recommended product may cost, e.g. 250 EUR")
    submit.add_argument("--include", help="recommend only these product categories, comma-separated")
    submit.add_argument("--exclude", help="never recommend these product categories, comma-separated")
    submit.set_defaults(func=_submit)

    watch = commands.add_parser("watch", help="print terminal results from the `generated` topic")
    watch.add_argument("jobs", nargs="*", metavar="JOB")
    watch.add_argument("--json", action="store_true", help="one JSON line per result")
    watch.add_argument("--timeout", type=float, default=None, help="give up after S seconds (exit 1)")
    watch.set_defaults(func=_watch)

    models = commands.add_parser("models", help="model weights")
    model_commands = models.add_subparsers(required=True, metavar="ACTION")
    build = model_commands.add_parser("build-dev", help="build random dev weights in the real formats")
    build.add_argument("stage", choices=(*STAGES, "all"))
    build.add_argument("--size", choices=("tiny", "full"), default="tiny")
    build.add_argument("--arch", help="architecture, for the builders that take one (classifier: vgg16)")
    build.add_argument("--out", type=Path, help="output folder (default: the dev-models folder)")
    build.set_defaults(func=_build_dev)
    export = model_commands.add_parser("export-onnx", help="export a classifier to ONNX (served without torch)")
    export.add_argument("stage", choices=("classifier",))
    export.add_argument("--model", help="model URI (default: the classifier's default model)")
    export.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    export.set_defaults(func=_export_onnx)

    train = commands.add_parser("train", help="train a model (`deskgen train classifier|lora --help`)")
    trainers = {"classifier": "deskgen.services.classifier.train", "lora": "deskgen.services.generator.train_lora"}
    train.add_argument("what", choices=tuple(trainers))
    train.set_defaults(func=lambda args, rest: _delegate(trainers[args.what])(args, rest), passthrough=True)

    evaluate = commands.add_parser("eval", help="evaluations (see `deskgen eval presets --help`)")
    evaluate.add_argument("what", choices=("presets",))
    evaluate.set_defaults(func=_delegate("deskgen.services.generator.evaluate"), passthrough=True)

    products = commands.add_parser("products", help="the product catalogue (see `deskgen products --help`)")
    products.set_defaults(func=_delegate("deskgen.common.catalogue.cli"), passthrough=True)

    adapters = commands.add_parser("adapters", help="LoRA adapters and presets (see `deskgen adapters --help`)")
    adapters.set_defaults(func=_delegate("deskgen.services.generator.styles_cli"), passthrough=True)

    config = commands.add_parser("config", help="list every DESKGEN_* setting (markdown)")
    config.set_defaults(func=_config)

    topology = commands.add_parser("topology", help="print the chart's topology file (helm/deskgen/topology.yaml)")
    topology.set_defaults(func=lambda args, rest: print(chart_yaml(), end=""))
    return parser


def _delegate(module: str):
    def call(args: argparse.Namespace, rest: list[str]) -> int:
        return importlib.import_module(module).cli(rest)
    return call


def _run(args: argparse.Namespace, rest: list[str]) -> int:
    from .service import run_stage

    return run_stage(args.stage)


def _topics_create(args: argparse.Namespace, rest: list[str]) -> int:
    from .kafka import create_topics
    from .settings import KafkaSettings, RuntimeSettings, load

    kafka = load(KafkaSettings)
    for topic, status in create_topics(kafka, load(RuntimeSettings), partitions=args.partitions,
                                       replication=args.replication):
        print(f"{topic}\t{status}")
    return 0


def _submit(args: argparse.Namespace, rest: list[str]) -> int:
    from .backend import Backend, BackendSettings

    request = {name: getattr(args, name) for name in ("concept", "preset", "steps", "guidance", "width", "height",
                                                      "seed", "scheduler", "mode", "fast", "strength")
               if getattr(args, name) is not None}
    if args.budget:
        try:
            request["budget"] = {"amount": float(args.budget[0]), "currency": args.budget[1]}
        except ValueError:
            raise FatalError(f"--budget: {args.budget[0]!r} is not a number") from None
    categories = {name: [c.strip() for c in getattr(args, name).split(",") if c.strip()]
                  for name in ("include", "exclude") if getattr(args, name)}
    if categories:
        request["categories"] = categories  # the schema checks the names when the event is built
    with Backend(BackendSettings.load(), source="/deskgen/cli") as backend:
        backend.ensure_bucket()
        for path in args.paths:
            if not path.is_file():
                raise FatalError(f"{path}: no such file")
            print(backend.submit(path.read_bytes(), request=request, filename=path.name, wait=False), flush=True)
    return 0


def _watch(args: argparse.Namespace, rest: list[str]) -> int:
    from .backend import Backend, BackendSettings

    waiting, seen = set(args.jobs), set()
    with Backend(BackendSettings.load()) as backend:
        for result in backend.watch(args.jobs or None, timeout_s=args.timeout, from_start=bool(args.jobs)):
            if result["job_id"] in seen:
                print(f"warning: a second terminal result for job {result['job_id']}", file=sys.stderr)
            seen.add(result["job_id"])
            waiting.discard(result["job_id"])
            print(json.dumps(result, sort_keys=True) if args.json else format_result(result), flush=True)
    if waiting:
        print(f"timed out waiting for {len(waiting)} job(s): {' '.join(sorted(waiting))}", file=sys.stderr)
        return 1
    return 0


def format_result(result: dict) -> str:
    """One human line per result: status, reason or image, and the per-stage timeline."""
    status = result["status"]
    parts = [result["job_id"], status.upper()]
    if status == "succeeded":
        output = result["output"]
        parts.append(f"image={output['image_key']} preset={output['preset']} {output['width']}x{output['height']}")
        if output.get("mode"):
            parts.append(f"mode={output['mode']}" + (" fast" if output.get("fast") else "")
                         + (f" (fallback: {output['fallback']})" if output.get("fallback") else ""))
    else:
        parts.append(f"reason={result.get('reason')} ({result.get('detail', '')[:120]})")
    timeline = sorted(result.get("timeline", {}).items(), key=lambda item: item[1].get("received", ""))
    stages = " | ".join(f"{name} {entry.get('handle_ms', 0) / 1000:.2f}s" for name, entry in timeline)
    if result.get("uploaded_at"):
        from datetime import datetime

        start = datetime.fromisoformat(result["uploaded_at"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(result["finished_at"].replace("Z", "+00:00"))
        parts.append(f"end-to-end {(end - start).total_seconds():.2f}s")
    if stages:
        parts.append(f"[{stages}]")
    return "  ".join(parts)


def _build_dev(args: argparse.Namespace, rest: list[str]) -> int:
    from .models import dev_models_dir

    stages = [stage for stage in STAGES.values() if stage.devweights] if args.stage == "all" else [spec(args.stage)]
    for stage in stages:
        if not stage.devweights:
            raise FatalError(f"{stage.name} has no dev-weights builder (topology.StageSpec.devweights)")
        build = resolve(stage.devweights)
        arch = inspect.signature(build).parameters.get("arch")
        options = {"arch": args.arch or arch.default} if arch else {}
        out = args.out if args.out and len(stages) == 1 else dev_models_dir() / "-".join(
            [stage.name, *options.values(), args.size])
        print(f"{stage.name}: dev weights ({args.size}) in {build(out, size=args.size, **options)}")
    return 0


def _export_onnx(args: argparse.Namespace, rest: list[str]) -> int:
    from deskgen.services.classifier.model import export_onnx
    from deskgen.services.classifier.settings import DEFAULT_MODEL_URI

    print(f"classifier: ONNX model in {export_onnx(args.model or DEFAULT_MODEL_URI, args.out)}")
    return 0


def _config(args: argparse.Namespace, rest: list[str]) -> int:
    from .settings import ImageSettings, KafkaSettings, RuntimeSettings, S3Settings, describe

    sections, missing = [RuntimeSettings, KafkaSettings, S3Settings, ImageSettings], []
    for stage in STAGES.values():
        try:
            sections.append(stage.settings_class())
        except ImportError as exc:  # e.g. the classifier image has no torch for the other stages' packages
            missing.append(f"{stage.name} ({stage.settings}): {exc}")
    print("| variable | default | meaning |\n|---|---|---|")
    for section in sections:
        for variable, default, meaning in describe(section):
            meaning = meaning.replace("|", "\\|")
            print(f"| `{variable}` | `{default}` | {meaning} |" if default else f"| `{variable}` | | {meaning} |")
    for line in missing:
        print(f"deskgen config: left out the settings of {line}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
