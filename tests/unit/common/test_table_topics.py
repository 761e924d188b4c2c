"""The compacted topics `deskgen topics create` makes are the tables the stages declare in the topology
(``StageSpec.tables``), and a stage's declaration agrees with the tables its built stage reads (no broker)."""

from __future__ import annotations

import subprocess
import sys

from deskgen.common import events, kafka, topology
from deskgen.common.catalogue.product_vectors import VECTORS_KIND
from deskgen.common.settings import KafkaSettings, RuntimeSettings
from deskgen.services.captioner.settings import CaptionerSettings
from deskgen.services.captioner.stage import build_stage as build_captioner
from deskgen.services.generator.styles import STYLES_KIND


class _Admin:
    """Accepts every topic (their futures resolve at once) and remembers what it was asked to create."""

    def __init__(self):
        self.topics = []

    def create_topics(self, topics, request_timeout):
        self.topics = list(topics)
        return {topic.topic: _Done() for topic in topics}


class _Done:
    def result(self, timeout):
        return None


def test_the_captioner_declares_the_kinds_of_the_tables_its_built_stage_reads():
    stage = build_captioner(CaptionerSettings())

    assert stage.tables, "the default captioner reads the catalogue"
    assert tuple(table.kind for table in stage.tables) == topology.spec("captioner").tables


def test_the_product_vectors_the_catalogue_and_the_styles_are_the_table_kinds_of_the_pipeline():
    assert topology.table_kinds() == (VECTORS_KIND, events.CATALOGUE_KIND, STYLES_KIND)
    assert [(s.name, s.tables) for s in topology.STAGES.values() if s.tables] == [
        ("captioner", (VECTORS_KIND, events.CATALOGUE_KIND)), ("generator", (STYLES_KIND,))]


def test_create_topics_compacts_exactly_the_table_kinds_and_leaves_the_event_topics_deleting(monkeypatch):
    admin = _Admin()
    monkeypatch.setattr(kafka, "make_admin", lambda _: admin)
    runtime = RuntimeSettings()

    rows = kafka.create_topics(KafkaSettings(), runtime, partitions=3, replication=1)

    compacted = {t.topic for t in admin.topics if (t.config or {}).get("cleanup.policy") == "compact"}
    assert compacted == {runtime.topic(kind) for kind in topology.table_kinds()}
    assert {t.topic for t in admin.topics} - compacted == {runtime.topic(kind) for kind in events.KINDS}
    assert all(t.num_partitions == 3 for t in admin.topics)
    assert rows == [(t.topic, "created") for t in admin.topics]


def test_the_topic_creation_path_imports_no_torch():
    code = "import sys, deskgen.common.kafka; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
