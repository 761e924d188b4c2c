"""``deskgen adapters publish|preset|list|delete``: the styles topic (``styles.py``) from a shell."""

from __future__ import annotations

import argparse

from deskgen.common.errors import DeskgenError, FatalError
from deskgen.common.models import ModelSources, resolve
from deskgen.common.settings import KafkaSettings, RuntimeSettings, load
from deskgen.common.tables import publish, replay
from deskgen.services.generator.components import lora_file
from deskgen.services.generator.presets import load_presets
from deskgen.services.generator.styles import (STYLES_KIND, AdapterRow, PresetRow, StyleTable, adapter_record,
                                               describe, file_sha256, preset_record, tombstone)

__all__ = ["cli", "publish_adapter"]


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deskgen adapters", description="LoRA adapters and presets that every "
                                     "generator loads without a restart (the styles topic)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("publish", help="publish an adapter (its sha256 is computed from the URI's file)")
    add.add_argument("name")
    add.add_argument("uri", help="file://, s3:// or hf:// LoRA (a safetensors file or a folder holding one)")
    add.add_argument("--weight", type=float, default=1.0, help="default weight in a mix (0, 2]")
    preset = actions.add_parser("preset", help="publish a preset: NAME ADAPTER=WEIGHT …")
    preset.add_argument("name")
    preset.add_argument("mix", nargs="+", metavar="ADAPTER=WEIGHT")
    actions.add_parser("list", help="replay the topic and print its adapters and presets")
    delete = actions.add_parser("delete", help="delete an adapter (its presets become unavailable) or a preset")
    delete.add_argument("name")
    delete.add_argument("--preset", action="store_true", help="NAME is a preset")
    args = parser.parse_args(argv)
    kafka, runtime = load(KafkaSettings), load(RuntimeSettings)
    if args.action == "publish":
        row = publish_adapter(args.name, args.uri, args.weight, kafka, runtime, ModelSources.load())
        print(f"published adapter {row.name} ({row.sha256[:12]}…) to {runtime.topic(STYLES_KIND)}")
    elif args.action == "preset":
        _publish_preset(args.name, args.mix, kafka, runtime)
    elif args.action == "list":
        print("\n".join(describe(_replay(kafka, runtime).rows)) or "(no adapters or presets published)")
    else:
        kind = "preset" if args.preset else "adapter"
        publish(kafka, runtime.topic(STYLES_KIND), [tombstone(kind, args.name)])
        print(f"deleted {kind} {args.name} (tombstone published)")
    return 0


def publish_adapter(name: str, uri: str, weight: float, kafka: KafkaSettings, runtime: RuntimeSettings,
                    sources: ModelSources) -> AdapterRow:
    """Resolve ``uri`` here, hash its LoRA file and publish the adapter record (what the generators check)."""
    try:
        row = AdapterRow(name=name, uri=uri, sha256=file_sha256(lora_file(resolve(uri, sources))), weight=weight)
    except (ValueError, DeskgenError) as exc:
        raise FatalError(f"adapter {name!r}: {exc}") from None
    publish(kafka, runtime.topic(STYLES_KIND), [adapter_record(row)])
    return row


def _publish_preset(name: str, mix: list[str], kafka: KafkaSettings, runtime: RuntimeSettings) -> None:
    adapters: dict[str, float] = {}
    for item in mix:
        adapter, _, weight = item.partition("=")
        try:
            adapters[adapter] = float(weight)
        except ValueError:
            raise FatalError(f"preset {name!r}: {item!r} is not ADAPTER=WEIGHT") from None
    try:
        row = PresetRow(name=name, adapters=adapters)
    except ValueError as exc:
        raise FatalError(f"preset {name!r}: {exc}") from None
    known = set(load_presets().adapters) | {r.name for r in _replay(kafka, runtime).rows.values()
                                           if isinstance(r, AdapterRow)}
    unknown = sorted(set(adapters) - known)
    if unknown:
        raise FatalError(f"preset {name!r} names unknown adapters {unknown}; publish them first "
                         f"(known: {sorted(known)})")
    publish(kafka, runtime.topic(STYLES_KIND), [preset_record(row)])
    print(f"published preset {name} {adapters} to {runtime.topic(STYLES_KIND)}")


def _replay(kafka: KafkaSettings, runtime: RuntimeSettings) -> StyleTable:
    table = StyleTable(fetch=False)
    replay(table, kafka, runtime)
    return table
