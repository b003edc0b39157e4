# tuneplan: the web app and CLI (no torch), and a `train` image that can run verification jobs.
#
#   docker build -t tuneplan .                        # app only: estimates, page, REST API (no verify runs)
#   docker run -p 127.0.0.1:8000:8000 tuneplan         # http://localhost:8000, published on loopback only
#   docker build --target train -t tuneplan-train .    # + torch, transformers, peft, bitsandbytes (CUDA wheels)
#   docker run --gpus all -p 127.0.0.1:8000:8000 -e TUNEPLAN_API_TOKEN="$(openssl rand -hex 32)" tuneplan-train
#
# Inside a container the server must listen on 0.0.0.0 to be reachable through the published port, so the train
# image refuses to start without TUNEPLAN_API_TOKEN (the verify button launches training processes; the page asks
# for the token). Publish on another interface only with TUNEPLAN_ALLOWED_HOSTS set to the names clients use
# (docs/security.md). The app image serves no verify runs (--no-jobs).
FROM python:3.11-slim AS app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TUNEPLAN_DATA_DIR=/data
WORKDIR /srv/tuneplan
COPY pyproject.toml README.md ./
COPY estimator ./estimator
COPY app ./app
COPY trainer ./trainer
COPY templates ./templates
COPY static ./static
RUN pip install -e . && useradd --system --home-dir /data tuneplan && mkdir -p /data && chown tuneplan /data
USER tuneplan
EXPOSE 8000
CMD ["tuneplan", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-jobs"]

FROM app AS train
USER root
RUN pip install -e '.[train]'
USER tuneplan
CMD ["tuneplan", "serve", "--host", "0.0.0.0", "--port", "8000"]
