# sync-service container image.
#
#   make image                     build (scripts/image/build.sh picks the base, see below)
#   docker build -t sync-service:0.1.0 .
#   docker run --rm --read-only --cap-drop ALL -p 8080:8080 \
#     -e SYNC_KAFKA_BOOTSTRAP_SERVERS=host:9092 -v sync-data:/var/lib/sync-service sync-service:0.1.0
#
# No `# syntax=` line: the builder's own Dockerfile frontend is used, so building needs no
# registry beyond the one holding the base image.
#
# BASE_IMAGE is pinned by tag and digest. Where that registry cannot be reached,
# scripts/image/base.sh builds an equivalent base (Debian bookworm with Debian's python3 3.11)
# from Debian packages and the build passes it here: --build-arg BASE_IMAGE=<that image>.
#
# Stage 1 installs the project and its dependencies into a virtual environment at /opt/venv.
# Stage 2 is the runtime: that venv, a non-root user (uid 10001) and a writable directory for
# the default embedded SQLite store.

ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

############################ stage 1: build ############################
FROM ${BASE_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv

# Wheels in .wheelhouse/ (scripts/image/build.sh downloads them on the host, where the package
# index is trusted) are used first; PIP_NO_INDEX=1 makes them the only source. Without that
# directory, pip installs from the package index.
ARG PIP_NO_INDEX=0
ENV PIP_FIND_LINKS=/wheelhouse PIP_NO_INDEX=${PIP_NO_INDEX}
COPY pyproject.toml .wheelhouse* /wheelhouse/

WORKDIR /src
# The dependencies first, from pyproject.toml alone, so that a change to the code reuses this
# layer. pyproject.toml names README.md as the readme.
COPY pyproject.toml README.md ./
RUN mkdir service && touch service/__init__.py \
 && /opt/venv/bin/pip install -q . \
 && /opt/venv/bin/pip uninstall -q -y sync-service \
 && rm -rf service build *.egg-info

COPY service ./service
RUN /opt/venv/bin/pip install -q --no-deps . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/sync-service --help > /dev/null

########################### stage 2: runtime ###########################
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="sync-service" \
      org.opencontainers.image.description="Keeps destinations in step with models whose row changes arrive on Kafka." \
      org.opencontainers.image.licenses="Apache-2.0"

# Debian-based images already have a system user named `sync`, hence `syncsvc`.
RUN groupadd --system --gid 10001 syncsvc \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/sync-service --shell /usr/sbin/nologin syncsvc \
 && mkdir -p /var/lib/sync-service \
 && chown 10001:10001 /var/lib/sync-service \
 && chmod 0750 /var/lib/sync-service

COPY --from=build /opt/venv /opt/venv

# The root file system can be read-only (bytecode was compiled at build time); with the
# default SQLite store, mount a volume on /var/lib/sync-service to keep the database.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SYNC_DATABASE_URL=sqlite:////var/lib/sync-service/sync-service.db

WORKDIR /var/lib/sync-service
USER 10001:10001

EXPOSE 8080

# Liveness only (/healthz); /readyz also needs the store and the Kafka consumer group.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SYNC_HTTP_PORT', '8080'), timeout=4)"]

# SIGTERM: stop fetching, finish or abandon the batch in flight, commit, exit 0 within 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sync-service"]
CMD ["serve"]
