# The pipeline image: every Kubeflow step runs in it (placedemarche compile: runner.image).
#
#   docker build -t REGISTRY/placedemarche-pipeline:1.0 .                       # CPU
#   docker build --build-arg GPU=1 -t REGISTRY/placedemarche-pipeline:1.0-gpu .  # + CUDA libraries
#   docker build --build-arg BAKE_WEIGHTS="efficientnet_b7 vgg19" ...           # ImageNet weights inside
#
# Python 3.10.13 as on the development machines (TFX 1.16 needs < 3.11); the same pinned set as
# scripts/install.sh. GPU=1 adds TensorFlow's CUDA wheels (the driver comes from the node).
# BAKE_WEIGHTS downloads the named backbones' weights into $KERAS_HOME at build time, so the
# Trainers never download at run time (the build needs internet for that).
# Not built on the development machines: they have no Docker engine.
ARG PYTHON_IMAGE=python:3.10.13-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG GPU=0
ARG BAKE_WEIGHTS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_HOME=/opt/keras \
    TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /opt/placedemarche
COPY requirements-lock.txt .
RUN pip install -r requirements-lock.txt \
 && if [ "$GPU" = "1" ]; then pip install "tensorflow[and-cuda]==2.16.2"; fi

COPY setup.py README.md ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY serving/ serving/
RUN pip install --no-deps . && pip check

RUN mkdir -p "$KERAS_HOME/models" \
 && if [ -n "$BAKE_WEIGHTS" ]; then placedemarche fetch-weights $BAKE_WEIGHTS; fi \
 && chmod -R a+rX "$KERAS_HOME"

# Kubeflow runs the TFX executor entry point given in the compiled spec; no ENTRYPOINT needed.
USER 1000:1000
