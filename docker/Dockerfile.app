# syntax=docker/dockerfile:1
# App image of helm/wingpt: Python 3.11 + the project (UI, client, serving) + the tritonserver binary of the
# nvidia-pytriton wheel. Runs the Gradio UI, the `helm test` chat (wingpt-chat) and, for target cpu, Triton itself.
# Build from the repository root (the chart's default tag is its appVersion):
#   docker build -f docker/Dockerfile.app -t registry.local/wingpt/app:0.1.0 .
FROM python:3.11-slim

WORKDIR /opt/wingpt
COPY requirements/ requirements/
# requirements/client.txt installs ./client editable, so the client package must be in place first.
COPY client/ client/
# torch first from the CPU wheel index, so nothing pulls a CUDA build; then every area's requirements except the
# test tooling.
RUN python -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu -r requirements/torch.txt \
 && find requirements -name '*.txt' ! -name torch.txt ! -name test.txt ! -name helm.txt -printf '-r\n%p\n' \
    | xargs python -m pip install --no-cache-dir

# `tritonserver` on PATH, as in NVIDIA's images: the wheel's binary with its libraries, backend directory and the
# Python-backend stub for this interpreter.
COPY docker/tritonserver-pytriton.sh /usr/local/bin/tritonserver
RUN pt=$(python -c 'import os, pytriton; print(os.path.dirname(pytriton.__file__))') \
 && cp "$pt/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" "$pt/tritonserver/backends/python/" \
 && chmod 0755 /usr/local/bin/tritonserver

RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin wingpt
COPY . /opt/wingpt/
ENV PYTHONPATH=/opt/wingpt:/opt/wingpt/client \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 10001:10001
EXPOSE 7860 8000 8001 8002
CMD ["python", "-m", "ui", "--help"]
