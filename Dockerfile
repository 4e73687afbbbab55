# syntax=docker/dockerfile:1
#
# Payment service image.
#   docker build -t foodies/payment-service:<version> .     (<version>: pyproject.toml, CHANGELOG.md)
#
# Two stages: "build" creates the virtual environment from the runtime lock and installs the
# service into it as a wheel; "runtime" receives only that environment (the package with its
# migrations and static assets as package data), on the same slim Python base (same interpreter
# path, so the environment works unchanged), without pip caches, build tools or tests.
#
# The dependencies are requirements/runtime.txt: the same versions, checked by the same hashes,
# as requirements/dev.txt that scripts/bootstrap and CI install, minus the dev tools.

# The Python the project tests with, as an exact patch release so that a rebuild gets the same
# interpreter. To pin the image digest as well, look it up where the registry is reachable
# (`docker buildx imagetools inspect python:<version>-slim-bookworm`) and append @sha256:<digest>.
ARG PYTHON_VERSION=3.11.15

FROM python:${PYTHON_VERSION}-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first, so this layer is rebuilt only when the lock changes. The environment gets
# no pip or setuptools of its own (the base image's pip installs into it): the image carries
# exactly the lock.
COPY requirements/runtime.txt requirements/build.txt ./requirements/
RUN python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install --quiet --require-hashes -r requirements/runtime.txt

# The project: a wheel built with the locked build backend (in a throw-away environment), then
# installed without dependencies, since the lock above is the complete set.
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m venv /tmp/builder \
 && /tmp/builder/bin/python -m pip install --quiet --require-hashes -r requirements/build.txt \
 && /tmp/builder/bin/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
 && python -m pip --python /opt/venv/bin/python install --quiet --no-deps /tmp/dist/*.whl \
 && /opt/venv/bin/payment-service --version


FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

# The package, its migrations included (package data), lives in the venv and was compiled by
# pip at install time. The root filesystem is read-only in Kubernetes.
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

# The same server as the README and scripts/run: the `payment-service` console script
# (app.cli:main; `python -m app` is equivalent). It applies migrations, then serves HTTP and
# consumes; SIGTERM drains in-flight payments and exits 0.
CMD ["/opt/venv/bin/payment-service"]
