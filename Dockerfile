# tuneplan: the web app and CLI (no torch), and a `train` image that can run verification jobs.
#
#   docker build -t tuneplan .                       # app only: estimates, page, REST API
#   docker run -p 8000:8000 tuneplan                  # http://localhost:8000
#   docker build --target train -t tuneplan-train .   # + torch, transformers, peft, bitsandbytes (CUDA wheels)
#   docker run --gpus all -p 8000:8000 tuneplan-train # the "verify" button runs on the GPU
FROM python:3.11-slim AS app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TUNEPLAN_DATA_DIR=/data
WORKDIR /srv/tuneplan
COPY pyproject.toml README.md ./
COPY estimator ./estimator
COPY app ./app
COPY trainer ./trainer
COPY templates ./templates
COPY static ./static
RUN pip install -e . && mkdir -p /data
EXPOSE 8000
CMD ["tuneplan", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM app AS train
RUN pip install -e '.[train]'
