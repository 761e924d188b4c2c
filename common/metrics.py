"""Every metric the services export, in one place with one label scheme (``stage`` first)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "STAGE_DURATION", "INFERENCE", "JOB_E2E", "EVENTS", "RESULTS", "DLQ", "RETRIES", "TRANSACTIONS",
    "MODEL_LOAD", "INFLIGHT", "CONSUMER_LAG", "BATCH_SIZE", "READY", "GPU_MEMORY",
    "TABLE_UP", "TABLE_LAG", "CATALOGUE_SIZE", "RECOMMEND", "PRESET_AVAILABLE", "COMPONENT_INFO",
    "CAPTIONER_BACKEND",
]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

STAGE_DURATION = Histogram("deskgen_stage_duration_seconds", "Receive to commit, per job and stage.",
                           ["stage", "outcome"], buckets=_LATENCY_BUCKETS)
INFERENCE = Histogram("deskgen_inference_seconds", "Time inside the stage's handle (model), per batch.",
                      ["stage"], buckets=_LATENCY_BUCKETS)
JOB_E2E = Histogram("deskgen_job_e2e_seconds", "Upload time to terminal result committed.",
                    ["stage", "status"], buckets=_LATENCY_BUCKETS)
EVENTS = Counter("deskgen_events", "Events handled, by outcome (ok | rejected | failed).", ["stage", "outcome"])
RESULTS = Counter("deskgen_results", "Terminal results produced.", ["stage", "status", "reason"])
DLQ = Counter("deskgen_dlq", "Records sent to the dead-letter topic.", ["stage", "reason"])
RETRIES = Counter("deskgen_retries", "Retries after transient errors.", ["stage", "operation"])
TRANSACTIONS = Counter("deskgen_transactions", "Kafka transactions by result (committed | aborted).", ["stage", "result"])
MODEL_LOAD = Gauge("deskgen_model_load_seconds", "Time the stage took to load its models.", ["stage"])
INFLIGHT = Gauge("deskgen_inflight_jobs", "Jobs received and not yet committed.", ["stage"])
CONSUMER_LAG = Gauge("deskgen_consumer_lag", "Messages behind the end of each assigned partition.",
                     ["stage", "topic", "partition"])
BATCH_SIZE = Histogram("deskgen_batch_size", "Events per batch (one transaction).", ["stage"],
                       buckets=(1, 2, 4, 8, 16, 32, 64))
READY = Gauge("deskgen_ready", "1 when models are loaded and the consumer has joined its group.", ["stage"])
GPU_MEMORY = Gauge("deskgen_gpu_memory_bytes", "GPU memory of the stage's process (allocated | peak).",
                   ["stage", "kind"])
CATALOGUE_SIZE = Gauge("deskgen_catalogue_products", "Products held in the replica's catalogue (available | unavailable).",
                       ["stage", "availability"])
TABLE_UP = Gauge("deskgen_table_up", "1 when the table has replayed its topic and follows it; 0 before, or when its "
                 "feed failed.", ["stage", "table"])
TABLE_LAG = Gauge("deskgen_table_lag", "Table records not yet applied (end offsets - position).", ["stage", "table"])
RECOMMEND = Histogram("deskgen_recommend_seconds", "Time to choose a job's products (embed queries, search, rank).",
                      ["stage"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
PRESET_AVAILABLE = Gauge("deskgen_generator_preset_available", "1 when the generator can serve the preset (every "
                         "adapter it needs is configured), else 0.", ["stage", "preset"])
COMPONENT_INFO = Gauge("deskgen_generator_component_info", "Always 1: a part of the generator as loaded; kind off when "
                       "not configured, the locator auto chose in kind.",
                       ["stage", "component", "kind", "weights", "uri", "placement"])
CAPTIONER_BACKEND = Gauge("deskgen_captioner_backend_info", "Always 1: the path BLIP runs on (torch | onnxruntime), "
                          "its precision and the CPU instructions it was chosen for (isa; cuda on a GPU).",
                          ["stage", "backend", "precision", "isa"])
