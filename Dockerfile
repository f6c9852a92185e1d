# syntax=docker/dockerfile:1
# tunelab's serving image: CPU only, `tunelab serve` as the entry point.
#
#   docker build -t tunelab .
#   docker build -t tunelab --build-arg TUNELAB_EXTRAS=llamacpp .   # with an extra
#   docker run -d -p 8000:8000 -v tunelab-home:/data \
#     -e TUNELAB_API_KEYS=change-me tunelab smollm2-135m-instruct
#
# The install steps are docker/install.sh, and the start is docker/entrypoint.sh; a test
# (tests/integration/test_container_install.py) runs both in a fresh venv and calls
# /health, since no container engine runs where tunelab is developed. README.md,
# "Container image", says what was and was not verified.

FROM python:3.11-slim-bookworm

# torch first and from the CPU index: PyPI's torch wheel for Linux is the CUDA build (GBs
# of libraries a CPU image never loads). The version is the one the test suite passes on.
ARG TORCH_REQUIREMENT=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# optional extras, comma-separated (e.g. llamacpp); default: none
ARG TUNELAB_EXTRAS=""

# TUNELAB_HOST: every interface, chosen here on purpose: a port published with -p reaches
# a container only through its own network interface, never through its loopback. API
# keys stay required (the entry point refuses to start without one: TUNELAB_API_KEYS, or
# a key file mounted at /run/secrets/tunelab_api_keys); /health and /ready are the only
# routes open without a key.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/tunelab/bin:$PATH \
    TUNELAB_HOME=/data \
    TUNELAB_HOST=0.0.0.0 \
    TUNELAB_PORT=8000

WORKDIR /app
COPY docker/install.sh docker/install.sh
RUN TORCH_REQUIREMENT="$TORCH_REQUIREMENT" TORCH_INDEX_URL="$TORCH_INDEX_URL" \
    sh docker/install.sh torch /opt/tunelab

COPY pyproject.toml README.md ./
COPY src src
RUN TUNELAB_EXTRAS="$TUNELAB_EXTRAS" sh docker/install.sh project /opt/tunelab /app

COPY docker docker

# A user of its own, no login shell; /data (the tunelab home: the model store, the
# default SQLite request log) belongs to it, so a named volume starts writable. A bind
# mount must be writable by uid 10001. USER by number: Kubernetes' runAsNonRoot can check
# a number, not a name.
RUN groupadd --system --gid 10001 tunelab \
    && useradd --system --uid 10001 --gid tunelab --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin tunelab \
    && mkdir /data \
    && chown tunelab:tunelab /data
VOLUME ["/data"]
USER 10001:10001
# Commands run from the volume: `tunelab train` writes runs/ there, and `tunelab serve
# RUN_NAME` finds them (the default runs folder is relative to the working folder).
WORKDIR /data

EXPOSE 8000
# start period: loading a model takes seconds to minutes; failures before it do not count
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]
# SIGTERM (docker stop) drains: requests in flight finish within drain_timeout (30 s by
# default); give `docker stop --time` / compose's stop_grace_period more than that.
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["smollm2-135m-instruct"]
