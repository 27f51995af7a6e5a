# syntax=docker/dockerfile:1
#
# sync-service container image.
#
#   docker build -t sync-service:latest .
#   docker run --rm -p 8080:8080 -e SYNC_KAFKA_BOOTSTRAP_SERVERS=host:9092 sync-service:latest
#
# Stage 1 builds a wheel of the project and installs it, with its dependencies,
# into a virtual environment at /opt/venv. Stage 2 is the slim runtime: only that
# venv, a non-root user (uid 10001) and a writable working directory for the
# default embedded SQLite store.

ARG PYTHON_IMAGE=python:3.11-slim

############################ stage 1: build ############################
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv

WORKDIR /src
# Only what the wheel is built from: pyproject.toml names README.md as the readme.
COPY pyproject.toml README.md ./
COPY service ./service

RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/sync-service --help > /dev/null

########################### stage 2: runtime ###########################
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="sync-service" \
      org.opencontainers.image.description="Keeps destinations in step with models whose row changes arrive on Kafka." \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid 10001 sync \
 && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/sync-service --shell /usr/sbin/nologin sync \
 && mkdir -p /var/lib/sync-service \
 && chown 10001:10001 /var/lib/sync-service \
 && chmod 0750 /var/lib/sync-service

COPY --from=build /opt/venv /opt/venv

# The root filesystem can be read-only (bytecode was compiled at install time);
# with the default SQLite store, mount a volume on /var/lib/sync-service to keep
# the database across container restarts.
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
