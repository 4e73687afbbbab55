# syntax=docker/dockerfile:1
#
# Payment service image.
#   docker build -t foodies/payment-service:<tag> .
#
# Two stages: "build" creates the virtual environment and installs the service
# into it; "runtime" receives only that environment (the package and its
# migrations), on the same slim Python base (same interpreter path, so the
# environment works unchanged), without pip caches, compilers or tests.
#
# The install steps are the commands of scripts/bootstrap, which the README and CI
# run (`python3.11 -m venv .venv`, then `.venv/bin/python -m pip install ... -e
# '.[dev]'`), minus the dev extra and the editable mode. Docker cannot run where the
# tests run, so keep the two in step: what CI exercises is what the image does.

# The Python version the project tests with (CI and scripts/bootstrap: 3.11).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app

# Same commands as scripts/bootstrap, without '.[dev]' and '-e'.
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip \
 && /opt/venv/bin/python -m pip install --quiet --disable-pip-version-check . \
 && /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash app


FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

# The package, its migrations included (package data), lives in the venv. The root
# filesystem is read-only in Kubernetes, and the sources come precompiled.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 payment \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin payment

WORKDIR /app
COPY --from=build /opt/venv /opt/venv

# Numeric, so Kubernetes can verify runAsNonRoot (matches the pod securityContext).
USER 10001:10001

EXPOSE 8085

# The same server as the README and scripts/run: the `payment-service` console
# script (app.cli:main; `python -m app` is equivalent). It applies migrations, then
# serves HTTP and consumes; SIGTERM drains in-flight payments and exits 0.
CMD ["/opt/venv/bin/payment-service"]
