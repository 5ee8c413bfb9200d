# voltha-gevent node image: `docker build -t voltha-gevent .`
#
# The image runs `voltha-gevent run` as an unprivileged user. Point it at a Consul agent with
# VOLTHA_CONSUL (host:port) and give each container its own VOLTHA_INSTANCE_ID; every other
# setting is a VOLTHA_* variable too (see examples/voltha.toml). The ACL token comes from
# VOLTHA_CONSUL_TOKEN or a mounted file named by VOLTHA_CONSUL_TOKEN_FILE, never from a flag.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# setup.cfg reads README.md as the long description, so it is part of the build.
COPY setup.cfg pyproject.toml README.md ./
COPY voltha_gevent ./voltha_gevent
RUN python -m pip install --no-cache-dir /src \
    && rm -rf /src \
    && groupadd --system --gid 10001 voltha \
    && useradd --system --uid 10001 --gid voltha --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin voltha

WORKDIR /
USER 10001:10001

# A container must listen beyond loopback for its port mapping and health check to work.
ENV VOLTHA_REST_BIND=0.0.0.0 \
    VOLTHA_REST_PORT=8880 \
    VOLTHA_LOG_FORMAT=json
EXPOSE 8880

# /health answers 200 only while the node's Consul session is live and it is a member;
# urlopen raises on 503 or no answer, so the exit status is 1 then (slim has no curl).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('VOLTHA_REST_PORT', '8880'), timeout=3)"]

# SIGTERM starts a graceful leave (items drained by handover, then the session destroyed): give
# the container a stop timeout above VOLTHA_DRAIN_TIMEOUT + VOLTHA_STOP_TIMEOUT, e.g. `docker stop -t 40`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["voltha-gevent"]
# Never start an embedded dev agent inside a container: Consul is always external here.
CMD ["run", "--embedded-consul", "never"]
