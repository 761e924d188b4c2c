# deskgen generator stage (GPU). Build from the repository root:
#   docker build -f docker/gpu.Dockerfile -t deskgen/generator .
# PyPI's torch wheel bundles the CUDA runtime libraries (nvidia-* wheels), so no CUDA base image is
# needed: the node needs an NVIDIA driver, the container toolkit and the device plugin. The build
# arguments BASE and PIP_OPTIONS are docker/cpu.Dockerfile's; the lines up to the dependency
# install are identical there, so the torch layer is shared with the captioner image.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE}
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
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
# Downloaded model weights (SDXL is about 7 GB); the chart mounts an emptyDir or a PVC here.
VOLUME ["/var/cache/deskgen"]
# /healthz, /readyz and /metrics
EXPOSE 8080
ENTRYPOINT ["deskgen", "run", "generator"]
