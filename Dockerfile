# syntax=docker/dockerfile:1.7
# notif-worker image. GPU hosts (default):   docker build -t notif-triage-worker:cuda .
#                     CPU-only image:         docker build --build-arg VARIANT=cpu -t notif-triage-worker:cpu .
# The model is not baked in: it is downloaded on first start into HF_HOME, a volume (/models).

# cuda: CUDA runtime base + the PyPI torch wheel (bundles its CUDA libraries; the host supplies the driver).
# cpu:  slim Debian base + the CPU-only torch wheel (about 1.5 GB smaller).
ARG VARIANT=cuda
ARG CUDA_BASE=nvidia/cuda:12.6.3-runtime-ubuntu24.04
ARG CPU_BASE=debian:bookworm-slim
ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.5.31

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --- build: a self-contained Python (python-build-standalone via uv) and a venv under /opt ------------
FROM debian:bookworm-slim AS build
ARG VARIANT
ARG PYTHON_VERSION
# Empty: PyPI's torch for cuda (bundles its CUDA runtime), the CPU wheel index for cpu. Set it to pick a
# CUDA build that matches an older driver, e.g. https://download.pytorch.org/whl/cu126.
ARG TORCH_INDEX_URL=
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    VIRTUAL_ENV=/opt/venv
RUN --mount=type=cache,target=/root/.cache/uv \
    uv python install ${PYTHON_VERSION} && uv venv --python ${PYTHON_VERSION} /opt/venv
WORKDIR /src

# Layer 1: torch alone, the largest download (rebuilt when pyproject.toml changes; the uv cache mount
# keeps the wheel, so that costs an install, not a download).
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -n "$TORCH_INDEX_URL" ]; then index=$TORCH_INDEX_URL; \
    elif [ "$VARIANT" = "cpu" ]; then index=https://download.pytorch.org/whl/cpu; \
    else index=https://pypi.org/simple; fi; \
    torch_req=$(/opt/venv/bin/python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); print(next(r for r in d['project']['dependencies'] if r.startswith('torch')))"); \
    uv pip install --index-url "$index" "$torch_req"

# Layer 2: the other runtime dependencies, read from pyproject.toml (reused until it changes).
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && uv pip install -r /tmp/requirements.txt

# Layer 3: the project itself (changes on every commit; seconds to rebuild).
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --no-deps .

# --- runtime -----------------------------------------------------------------------------------------
FROM ${CUDA_BASE} AS runtime-cuda
FROM ${CPU_BASE} AS runtime-cpu
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
