# syntax=docker/dockerfile:1.7
# notif-worker image. GPU hosts (default):   docker build -t notif-triage-worker:cuda .
#                     CPU-only image:         docker build --build-arg VARIANT=cpu -t notif-triage-worker:cpu .
# The model is not baked in: it is downloaded on first start into HF_HOME, a volume (/models).

# cuda: CUDA 13.0 runtime base + PyPI's torch (a CUDA 13.0 build that bundles its CUDA libraries). The host
#       needs NVIDIA driver R580 or newer; the base's NVIDIA_REQUIRE_CUDA=cuda>=13.0 makes the NVIDIA
#       Container Toolkit refuse to start the container on an older driver instead of running on the CPU.
#       Hosts with R560-R575: build a CUDA 12.6 image (docs/DEPLOY.md, "The image"):
#         --build-arg CUDA_BASE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 \
#         --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# cpu:  slim Debian base + the CPU-only torch wheel (about 1.5 GB smaller).
ARG VARIANT=cuda
ARG CUDA_BASE=nvidia/cuda:13.0.0-runtime-ubuntu24.04
ARG CPU_BASE=debian:bookworm-slim
ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.5.31

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --- build: a self-contained Python (python-build-standalone via uv) and a venv under /opt ------------
FROM debian:bookworm-slim AS build
ARG VARIANT
ARG PYTHON_VERSION
# Empty: PyPI's torch for cuda, the CPU wheel index for cpu. Set it to take torch from another index, e.g.
# https://download.pytorch.org/whl/cu126 (with CUDA_BASE at 12.6) for an R560-R575 driver.
ARG TORCH_INDEX_URL=
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
# constraints.txt: the tested version of every package; every pip install below uses it (-c).
COPY constraints.txt ./
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=cache,target=/root/.cache/pip \
    uv python install ${PYTHON_VERSION} \
    && uv venv --seed --python ${PYTHON_VERSION} /opt/venv \
    && python -m pip install -c constraints.txt pip

# Layer 1: torch alone, the largest download (rebuilt when pyproject.toml or constraints.txt change; the pip
# cache mount keeps the wheel, so that costs an install, not a download). From a torch index (the CPU one,
# or TORCH_INDEX_URL) torch comes alone (--no-deps): such an index need not carry torch's own dependencies,
# which layer 2 takes from PyPI. torch==2.13.0 in constraints.txt admits the index's 2.13.0+cpu/+cu126.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    torch_req=$(python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); print(next(r for r in d['project']['dependencies'] if r.startswith('torch')))"); \
    if [ -z "$TORCH_INDEX_URL" ] && [ "$VARIANT" = "cpu" ]; then TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu; fi; \
    if [ -n "$TORCH_INDEX_URL" ]; then \
        python -m pip install -c constraints.txt --no-deps --index-url "$TORCH_INDEX_URL" "$torch_req"; \
    else \
        python -m pip install -c constraints.txt "$torch_req"; \
    fi

# Layer 2: the other runtime dependencies (and torch's own), read from pyproject.toml, from PyPI.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && python -m pip install -c constraints.txt -r /tmp/requirements.txt \
    && python -m pip check

# Layer 3: the project itself (changes on every commit; seconds to rebuild).
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip install -c constraints.txt --no-deps . \
    && python -c "from worker.stream.kafka.codecs import require_codecs; require_codecs()"  # every Kafka codec (cramjam)

# --- runtime -----------------------------------------------------------------------------------------
# Each image says where it runs: the CUDA image fails loudly without a usable GPU instead of crawling on the
# CPU (NOTIF_DEVICE=auto would fall back without a word). Override with -e NOTIF_DEVICE=...
FROM ${CUDA_BASE} AS runtime-cuda
ENV NOTIF_DEVICE=cuda
FROM ${CPU_BASE} AS runtime-cpu
ENV NOTIF_DEVICE=cpu
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS runtime
ARG VARIANT
RUN groupadd --gid 10001 notif \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/notif --shell /usr/sbin/nologin notif \
    && mkdir -p /models \
    && chown notif:notif /models
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/models/huggingface \
    NOTIF_LOG_FORMAT=json
LABEL org.opencontainers.image.title="notif-triage worker" \
      org.opencontainers.image.description="notif-worker (${VARIANT} image)"
VOLUME ["/models"]
USER 10001:10001
WORKDIR /home/notif
EXPOSE 9108

# Liveness only (/healthz); /readyz is for orchestrators. The start period covers a first model download.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NOTIF_METRICS_PORT', '9108'), timeout=4)"]

# `docker run IMAGE` runs `notif-worker serve`; `docker run IMAGE produce-demo --rate 5` runs another subcommand.
ENTRYPOINT ["notif-worker"]
CMD ["serve"]
