# carrygate service image. CPU by default; for CUDA:
#   docker build --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
# Empty: the default index (a CPU wheel on this base). Set it to a CUDA wheel index with a CUDA base.
ARG TORCH_INDEX=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CARRYGATE_DATA_DIR=/var/lib/carrygate

RUN if ! command -v python3 >/dev/null; then apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv && rm -rf /var/lib/apt/lists/*; fi \
    && apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/carrygate
# torch first and pinned, so the project's loose `torch>=2.5` never pulls another build
RUN python3 -m pip install ${TORCH_INDEX:+--index-url ${TORCH_INDEX}} "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
COPY models ./models
COPY migrations ./migrations
COPY examples ./examples
RUN python3 -m pip install .

RUN useradd --system --create-home --home-dir /home/carrygate carrygate \
    && mkdir -p /var/lib/carrygate && chown carrygate /var/lib/carrygate
USER carrygate
VOLUME /var/lib/carrygate
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1

ENTRYPOINT ["carrygate"]
# `serve` binds all interfaces inside the container, so it refuses to start without an API key:
# `docker run -e CARRYGATE_API_KEYS=... carrygate` (or create one with `carrygate keys create` against
# the same database); `--insecure` only behind a trusted network. `worker` and `migrate` are the other
# entry points.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
