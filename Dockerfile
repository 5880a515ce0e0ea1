# syntax=docker/dockerfile:1
# batch-reaper image: a wheel built in one stage, installed into a virtualenv, copied into a slim
# runtime that has no build tools, runs as a numeric non-root user and holds no secret.
#
#   docker build -t batch-reaper .
#   docker run --rm -e ANTHROPIC_API_KEY_FILE=/run/secrets/key -v ./key:/run/secrets/key:ro batch-reaper
#
# tests/test_image_smoke.py does what this file does (wheel -> fresh venv -> `reaper`), without Docker.

# Pinned to a patch release; bump it (and the runtime stage below) in one commit.
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel needs (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY reaper ./reaper

# --no-deps: the wheel is only our code; its dependencies are resolved once, into the venv.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/reaper \
    && /opt/reaper/bin/pip install /wheels/*.whl \
    && /opt/reaper/bin/reaper --version


FROM python:3.11.13-slim-bookworm

LABEL org.opencontainers.image.title="batch-reaper" \
      org.opencontainers.image.description="Keeps an organisation's Anthropic Message Batches tidy: retention, cancel, delete, metrics." \
      org.opencontainers.image.licenses="MIT"

# A numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER. --no-log-init (no lastlog)
# keeps a high uid from bloating the image.
RUN groupadd --system --gid 10001 reaper \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
       --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin reaper

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH="/opt/reaper/bin:${PATH}"

COPY --from=build /opt/reaper /opt/reaper

USER 10001:10001
WORKDIR /tmp

# Metrics, /healthz and /readyz (REAPER_METRICS_PORT).
EXPOSE 9464

# For plain Docker and compose; Kubernetes uses the Deployment's probes instead. Follows
# REAPER_METRICS_PORT so a moved port does not make the container look unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REAPER_METRICS_PORT', '9464'), timeout=4)"]

ENTRYPOINT ["reaper"]
CMD ["run"]
