# Echora server image.
#
#   docker build -t echora-server .
#   docker run --rm -p 127.0.0.1:8080:8080 -e ECHORA_DATABASE_URL=... echora-server
#
# Both stages use the same base so the virtualenv's interpreter path stays valid.
# Kept to the classic Dockerfile syntax (no BuildKit-only features) so any builder works.
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: build the project's wheel and install it into /opt/venv -------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv

# .dockerignore keeps the context to what the package build needs (no .venv, .git, data, tests).
COPY . /src
RUN pip wheel --no-deps --wheel-dir /wheels /src \
    && /opt/venv/bin/pip install /wheels/*.whl \
    && /opt/venv/bin/pip check

# ---- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="Echora server" \
      org.opencontainers.image.description="Self-hostable chat backend in which files are first-class" \
      org.opencontainers.image.licenses="Apache-2.0"

# Fixed uid/gid so volume ownership is predictable across rebuilds and hosts.
RUN groupadd --system --gid 10001 echora \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin echora \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0750 /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    ECHORA_LISTEN=0.0.0.0:8080 \
    ECHORA_DATA_DIR=/data

# Numeric so orchestrators (e.g. Kubernetes runAsNonRoot) can verify it is not root.
USER 10001:10001
WORKDIR /data
# Embedded PostgreSQL (when ECHORA_DATABASE_URL is unset) and local file storage live here.
VOLUME /data
EXPOSE 8080

# The server shuts down gracefully on SIGTERM (closes WebSockets, drains requests).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["echora", "healthcheck"]

ENTRYPOINT ["echora"]
CMD ["serve"]
