# One image for every pipeline step and for the model server (two entry points):
#   steps:   KFP runs `python3 -m kfp.dsl.executor_main ...` in it (nothing installed at run time)
#   serving: python -m kfp_lifecycle.serving.server --model /mnt/models (the ServingRuntime)
# Its tag is the package version: kfp_lifecycle/image.py is the one place that names it.

# --- build: wheels for the project and its pinned dependencies --------------------------
FROM python:3.11.11-slim-bookworm AS build
# LightGBM's library links the system OpenMP runtime (xgboost bundles its own): fetched here,
# copied into the runtime stage, which installs nothing from the network.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY kfp_lifecycle kfp_lifecycle
COPY components components
COPY pipelines pipelines
COPY serving serving
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.lock ".[onnx]"

# --- runtime: no compiler, no pip cache, a non-root user ---------------------------------
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MPLCONFIGDIR=/tmp/matplotlib
COPY --from=build /wheels /wheels
COPY --from=build /usr/lib/x86_64-linux-gnu/libgomp.so.1* /usr/lib/x86_64-linux-gnu/
RUN pip install --no-index --find-links /wheels /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --uid 1000 --create-home --shell /usr/sbin/nologin lifecycle
USER 1000
WORKDIR /home/lifecycle
EXPOSE 8080
CMD ["python", "-m", "kfp_lifecycle.serving.server", "--model", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"]
