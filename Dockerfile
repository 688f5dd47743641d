# hybridrec: one image for every role (API, retrain loop, one-shot commands, bootstrap),
# plus two small infrastructure targets for the compose stack (balancer, redis).
#
#   docker build -t hybridrec .                       # FROM python:3.11-slim
#   podman build --format docker -t hybridrec \
#       --build-arg BASE_IMAGE=localhost/hybridrec-base:bookworm .   # no registry: see deploy/
#
# The base is either the official Python image (python in /usr/local) or a plain Debian
# bookworm with Debian's python3 (deploy/make-base-image.sh): every stage picks whichever
# it finds. `--format docker` keeps the HEALTHCHECK under podman (OCI images drop it).

ARG BASE_IMAGE=python:3.11-slim

# ------------------------------------------------------------------------------ build
FROM ${BASE_IMAGE} AS build
SHELL ["/bin/sh", "-eu", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# A compiler for LightFM (and Python's headers when Python is Debian's). Every apt step
# keeps its package lists and .debs in one cache mount, outside the layers (so the
# official image's docker-clean hook goes): `apt-get update` then only revalidates.
RUN --mount=type=cache,id=hybridrec-apt,target=/var/cache/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean; \
    apt="apt-get -o Dir::State::Lists=/var/cache/apt/lists"; mkdir -p /var/cache/apt/lists/partial; \
    if [ -x /usr/local/bin/python3 ]; then extra=""; \
    else extra="python3-dev python3-venv"; fi; \
    $apt update -qq; \
    $apt install -y -qq --no-install-recommends gcc libc6-dev $extra >/dev/null
RUN python3 -m venv /opt/hybridrec
WORKDIR /src
# Dependencies (and the build backend) first, from pyproject.toml alone: this layer
# changes only when they do. LightFM is compiled from source with LIGHTFM_NO_CFLAGS=1
# (portable: no SIGILL on another CPU). Downloaded and compiled wheels stay in a cache
# mount, outside every layer, for the next build (deploy/install-requirements.sh).
COPY pyproject.toml deploy/install-requirements.sh ./
RUN --mount=type=cache,id=hybridrec-wheels,target=/wheels,sharing=locked \
    ./install-requirements.sh pyproject.toml /opt/hybridrec/bin/pip /wheels
COPY README.md LICENSE ./
COPY src ./src
# HYBRIDREC_EXTRAS: optional extras to add, fetched from the index (e.g. "s3" for models in
# an S3 bucket, "s3,gcs")
ARG HYBRIDREC_EXTRAS=""
RUN /opt/hybridrec/bin/pip install -q --no-deps --no-build-isolation . ; \
    if [ -n "$HYBRIDREC_EXTRAS" ]; then /opt/hybridrec/bin/pip install -q ".[$HYBRIDREC_EXTRAS]"; fi; \
    /opt/hybridrec/bin/pip check; \
    /opt/hybridrec/bin/python -c 'import lightfm._lightfm_fast_openmp, hybridrec.cli'; \
    /opt/hybridrec/bin/pip uninstall -q -y setuptools wheel

# ---------------------------------------------------------------------------- balancer
# HAProxy from the base image's Debian packages, health-checking the API replicas.
FROM ${BASE_IMAGE} AS balancer
RUN --mount=type=cache,id=hybridrec-apt,target=/var/cache/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && mkdir -p /var/cache/apt/lists/partial \
 && apt-get -o Dir::State::Lists=/var/cache/apt/lists update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get -o Dir::State::Lists=/var/cache/apt/lists install -y -qq --no-install-recommends haproxy >/dev/null
COPY deploy/haproxy.cfg /etc/haproxy/haproxy.cfg
RUN haproxy -c -q -f /etc/haproxy/haproxy.cfg
USER haproxy
EXPOSE 8080
STOPSIGNAL SIGUSR1
# -W: master-worker (handles signals as PID 1); -db: stay in the foreground
ENTRYPOINT ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]

# ------------------------------------------------------------------------------- redis
# Debian's redis-server (7.0) for the stack, with the script that forms the cluster of
# the compose file's "cluster" profile. Any Redis >= 6.2 server can take its place.
FROM ${BASE_IMAGE} AS redis
RUN --mount=type=cache,id=hybridrec-apt,target=/var/cache/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && mkdir -p /var/cache/apt/lists/partial \
 && apt-get -o Dir::State::Lists=/var/cache/apt/lists update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get -o Dir::State::Lists=/var/cache/apt/lists install -y -qq --no-install-recommends redis-server redis-tools >/dev/null \
 && mkdir -p /data && chown redis:redis /data
COPY deploy/cluster-init.sh /usr/local/bin/hybridrec-cluster-init
USER redis
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["redis-server"]
CMD ["--appendonly", "yes", "--protected-mode", "no", "--dir", "/data"]

# ----------------------------------------------------------------------------- runtime
# The default target: no compiler, a venv copied from the build stage, a non-root user.
FROM ${BASE_IMAGE} AS runtime
# tini: PID 1 that forwards SIGTERM and reaps children (Python as PID 1 would ignore
# SIGTERM); libgomp1: LightFM's OpenMP runtime.
RUN --mount=type=cache,id=hybridrec-apt,target=/var/cache/apt,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && mkdir -p /var/cache/apt/lists/partial \
 && apt-get -o Dir::State::Lists=/var/cache/apt/lists update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get -o Dir::State::Lists=/var/cache/apt/lists install -y -qq --no-install-recommends tini libgomp1 >/dev/null \
 && groupadd --system --gid 10001 hybridrec \
 && useradd --no-log-init --uid 10001 --gid hybridrec --home-dir /var/lib/hybridrec --shell /usr/sbin/nologin hybridrec \
 && mkdir -p /var/lib/hybridrec/models /var/lib/hybridrec/data \
 && chown -R hybridrec:hybridrec /var/lib/hybridrec
COPY --from=build /opt/hybridrec /opt/hybridrec
COPY deploy/bootstrap.sh /usr/local/bin/hybridrec-bootstrap
COPY deploy/healthcheck.py /usr/local/bin/hybridrec-healthcheck
ENV PATH=/opt/hybridrec/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HYBRIDREC_MODEL_STORE=/var/lib/hybridrec/models \
    HYBRIDREC_DATA_DIR=/var/lib/hybridrec/data \
    HYBRIDREC_HEALTH_PORT=8000
USER hybridrec
WORKDIR /var/lib/hybridrec
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["hybridrec-healthcheck"]
ENTRYPOINT ["tini", "--", "hybridrec"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
