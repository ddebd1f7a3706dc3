# pulsetrace: a slim, non-root image whose entrypoint is the agent wrapping your service.
#
#   docker build -t pulsetrace .                                  # extras: --build-arg EXTRAS=instrumentations,aws
#   docker run -p 8000:8000 -p 8081:8081 pulsetrace python -m http.server 8000
#
# As the base of a service image:
#
#   FROM pulsetrace
#   COPY --chown=pulsetrace:pulsetrace . /app
#   RUN pip install --user -r requirements.txt
#   CMD ["uvicorn", "shop.app:app", "--host", "0.0.0.0", "--port", "8000"]
#
# The health server answers on port 8081 (/health for the load balancer, /health/live for
# the container's HEALTHCHECK). The bundled /etc/pulsetrace/pulsetrace.yaml only makes it listen
# on all interfaces; point PULSETRACE_CONFIG at your own file (and keep health.listen 0.0.0.0:8081).

# -- builder: the project and every dependency of the chosen extras as wheels ------------------------
FROM python:3.11.11-slim-bookworm AS builder
ARG EXTRAS=instrumentations
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# The image's own pip (24.0, bundled with Python 3.11.11) on purpose: it is what users of this base
# have, and scripts/test.sh checks that the extras resolve with it (tests/test_dockerfile.py re-enacts
# this stage with it).
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY instrumentation ./instrumentation
COPY healthchecks ./healthchecks
RUN python -m pip wheel --wheel-dir /wheels ".[${EXTRAS}]"

# -- runtime: no compilers, no source tree, no network needed to install -----------------------------
FROM python:3.11.11-slim-bookworm
ARG EXTRAS=instrumentations
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PULSETRACE_CONFIG=/etc/pulsetrace/pulsetrace.yaml \
    PULSETRACE_STORE=/var/lib/pulsetrace \
    PATH=/app/.local/bin:$PATH
RUN groupadd --system --gid 10001 pulsetrace \
 && useradd --system --uid 10001 --gid pulsetrace --home-dir /app --shell /usr/sbin/nologin pulsetrace
COPY --from=builder /wheels /tmp/wheels
# The README's install command, from the wheels built above (offline, nothing else on the index).
RUN pip install --no-index --find-links /tmp/wheels "pulsetrace[${EXTRAS}]" \
 && rm -rf /tmp/wheels
RUN mkdir -p /etc/pulsetrace /var/lib/pulsetrace /app \
 && printf 'health:\n  listen: "0.0.0.0:8081"\n' > /etc/pulsetrace/pulsetrace.yaml \
 && chown pulsetrace:pulsetrace /var/lib/pulsetrace /app
WORKDIR /app
USER pulsetrace:pulsetrace
EXPOSE 8081
# slim has no curl: ask /health/live with the standard library.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8081/health/live', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["pulsetrace", "run", "--"]
