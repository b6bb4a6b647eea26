# ovpn-supervisor as a container, for hosts without systemd (see deploy/with-docker/).
# Multi-stage on the official Python Alpine image: the build stage makes the wheel and a venv;
# the runtime stage gets only that venv, runs as a non-root user and has no build tools.
# No registry is reachable in this project's CI, so this file is linted (hadolint) but not built
# there. The runtime command is the same `ovpn-supervisor run` the systemd unit starts.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-alpine AS build
WORKDIR /src
COPY pyproject.toml ./
COPY supervisor ./supervisor
RUN python -m venv /opt/ovpn-supervisor \
    && /opt/ovpn-supervisor/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && rm -rf /opt/ovpn-supervisor/bin/pip* /opt/ovpn-supervisor/lib/python*/site-packages/pip

FROM python:${PYTHON_VERSION}-alpine
# The docker socket's group differs per host: add it at run time (compose `group_add`).
RUN addgroup -S -g 10001 ovpn-supervisor \
    && adduser -S -D -H -u 10001 -G ovpn-supervisor -s /sbin/nologin ovpn-supervisor
COPY --from=build /opt/ovpn-supervisor /opt/ovpn-supervisor
ENV PATH=/opt/ovpn-supervisor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OVPN_SUPERVISOR_HEALTHZ=http://127.0.0.1:9180/healthz
USER 10001:10001
# The daemon stops the stack in reverse order on SIGTERM; give it time (stop_grace_period).
STOPSIGNAL SIGTERM
# /healthz: 200 while the event loop is responsive and Docker reachable, else 503.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['OVPN_SUPERVISOR_HEALTHZ'], timeout=4)"]
ENTRYPOINT ["ovpn-supervisor"]
CMD ["run", "--config", "/etc/ovpn-supervisor/supervisor.yaml", "--log-format", "json"]
