# lstm-service: the model server with a trained default model. See docs/deploy.md.
#
#   docker build -t lstm-service .
#   docker run -p 8000:8000 lstm-service
#
# Stage "build" makes a virtual environment with torch's CPU build and the project, and trains
# the default model into /opt/lstm/default-store; the runtime stage copies both into a clean
# python:3.11-slim (no compiler, no pip cache, no sources) that runs as a non-root user.

FROM python:3.11-slim AS build

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch's CPU build, on its own and first: the project pins torch==2.13.0, which 2.13.0+cpu
# satisfies, so the project's install below keeps it instead of pulling a CUDA build.
# Give a mirror with --build-arg TORCH_PIP_ARGS="--index-url URL" (or "--find-links URL").
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# TORCH_PIP_ARGS is unquoted on purpose: it holds several pip arguments (SC2086), and hadolint
# takes that word for an unpinned package (DL3013); torch itself is pinned by TORCH_VERSION.
# hadolint ignore=SC2086,DL3013
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" ${TORCH_PIP_ARGS}

# The project, non-editable and without the dev extras; then prove that no CUDA package came
# along, and drop what nothing uses at run time: torch's C++ headers, CMake files, C++ test
# programs and protoc (138 MB; torch_shm_manager stays), and the test suites of packages.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model_store/ model_store/
COPY training/ training/
COPY service/ service/
RUN pip install --no-cache-dir . \
    && ! pip list 2>/dev/null | grep -i -E '^(nvidia|cuda|triton)' \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__" \
    && torch_dir=/opt/venv/lib/python3.11/site-packages/torch \
    && rm -rf "$torch_dir/include" "$torch_dir/share" "$torch_dir/test" \
    && find "$torch_dir/bin" -mindepth 1 -maxdepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
    && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +

# The default model: the default (robust) preset with a fixed seed, so `docker run` serves at once.
# --time-limit 86400 lifts the presets' 3600 s wall-clock limit: on a busy builder, hitting it
# would stop training early and bake a different, weaker model (README, "Determinism").
# The store writes some files owner-only; the runtime user must be able to read (and copy) them.
RUN lstm-train --store /opt/lstm/default-store --seed 0 --time-limit 86400 --no-progress \
    && chmod -R a+rX /opt/lstm/default-store


FROM python:3.11-slim AS runtime

# A fixed, numeric, non-root user (Kubernetes' runAsNonRoot can check a numeric USER).
# /data/model-store is made here and owned by it, so a new volume mounted there is writable.
RUN groupadd --system --gid 10001 lstm \
    && useradd --system --uid 10001 --gid lstm --home-dir /home/lstm --create-home \
               --shell /usr/sbin/nologin lstm \
    && mkdir -p /data/model-store \
    && chown -R lstm:lstm /data

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/lstm/default-store /opt/lstm/default-store
COPY docker/entrypoint.sh /usr/local/bin/lstm-entrypoint

# Configuration is LSTM_* environment variables (README "Settings"); these are the image's defaults.
# LSTM_BAKED_STORE: the store the entrypoint seeds an empty LSTM_STORE_DIR from ("" turns it off).
# LSTM_API_TOKEN is not set: management routes then answer loopback clients only, which from
# outside the container means nobody. Pass a token at run time (docs/deploy.md), never here.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    LSTM_HOST=0.0.0.0 \
    LSTM_PORT=8000 \
    LSTM_STORE_DIR=/data/model-store \
    LSTM_BAKED_STORE=/opt/lstm/default-store

USER 10001:10001
WORKDIR /home/lstm
VOLUME ["/data/model-store"]
# HTTP (LSTM_PORT) and gRPC (LSTM_GRPC_PORT, docs/grpc.md).
EXPOSE 8000 8001

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('LSTM_PORT', '8000'), timeout=4)"]

# Exec form throughout: the entrypoint execs lstm-serve, which becomes PID 1 and receives SIGTERM
# itself; uvicorn then stops accepting, drains in-flight requests for up to LSTM_DRAIN_TIMEOUT s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/lstm-entrypoint"]
CMD ["lstm-serve"]
