# syntax=docker/dockerfile:1
# batch-reaper image: locked, hash-checked dependencies and a wheel of our code, installed into a
# virtualenv in one stage and copied into a slim runtime that has no build tools, runs as a numeric
# non-root user and holds no secret.
#
#   docker build -t batch-reaper .
#   docker run --rm -e ANTHROPIC_API_KEY_FILE=/run/secrets/key -v ./key:/run/secrets/key:ro batch-reaper
#
# Built and run for real by `make image-test` (deploy/image/check.py). Behind a proxy with a
# private CA, mount pip's configuration and the CA bundle into the RUN steps, never COPY them:
#   podman build --format docker -v /etc/pip.conf:/etc/pip.conf:ro \
#     -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro .

# Pinned to a patch release; bump it (and the runtime stage below) in one commit.
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# The lock first: a change to our code reuses this layer. Every package is pinned and
# hash-checked (requirements/*.txt, made by pip-compile; CONTRIBUTING.md says how to refresh
# them), wheels only. /opt/build holds the build backend; /opt/reaper, without pip, is what ships.
COPY requirements/ ./requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --only-binary=:all: -r requirements/build.txt \
    && python -m venv --without-pip /opt/reaper \
    && /opt/build/bin/pip --python /opt/reaper/bin/python install --no-compile \
       --require-hashes --only-binary=:all: -r requirements/runtime.txt

# Only what the wheel needs (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY reaper ./reaper

# --no-deps: the wheel is only our code; its dependencies came from the lock above.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /wheels . \
    && /opt/build/bin/pip --python /opt/reaper/bin/python install --no-compile --no-deps --no-index \
       /wheels/*.whl \
    && /opt/build/bin/pip --python /opt/reaper/bin/python check \
    && /opt/reaper/bin/reaper --version

# Bytecode for every module the reaper can import, made here: the container cannot write any
# (read-only root, uid 10001, PYTHONDONTWRITEBYTECODE), so a module without valid bytecode is
# compiled again, in memory, at every start. unchecked-hash, not pip's timestamp .pyc: the copy
# into the runtime stage rounds mtimes to whole seconds, which left a quarter to a half of pip's
# .pyc stale (their recorded mtime no longer matched); a hash-based .pyc records no mtime, so it
# stays valid, and the same sources give the same bytes. Unchecked, not checked-hash: the files
# never change, so no import needs to read and hash the source (a derived image that patches a
# .py must recompile it). The official slim base deletes the stdlib's .pyc: compiled here too
# (both stages use the same base, so the same files) and only their __pycache__ directories
# copied into the runtime stage. `make image-test` fails on a module that would be recompiled.
RUN stdlib="$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
    && python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/reaper/lib \
    && python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash \
       -x '/(site-packages|dist-packages|idlelib|tkinter|turtledemo|lib2to3|ensurepip)/' "$stdlib" \
    && mkdir /opt/stdlib-bytecode \
    && find "$stdlib" -type d -name __pycache__ -exec cp -R --parents -t /opt/stdlib-bytecode {} +

# A numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER. --no-log-init (no
# lastlog) keeps a high uid from bloating the image. Made here and copied: the runtime stage runs
# no command, so nothing mounted into RUN steps (pip's configuration, a CA bundle) can leave a
# trace, not even an empty mount point, in the layers that ship.
RUN groupadd --system --gid 10001 reaper \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
       --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin reaper


FROM python:3.11.13-slim-bookworm

LABEL org.opencontainers.image.title="batch-reaper" \
      org.opencontainers.image.description="Keeps an organisation's Anthropic Message Batches tidy: retention, cancel, delete, metrics." \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH="/opt/reaper/bin:${PATH}"

COPY --from=build /etc/passwd /etc/group /etc/
COPY --from=build /opt/reaper /opt/reaper
COPY --from=build /opt/stdlib-bytecode/ /

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
