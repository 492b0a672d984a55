# One image for the four gridbus services:
#   docker run gridbus run intake|router|sla|notifier
# and for the operator commands (`docker run gridbus topology apply`, ...).
# Configuration is by environment variables only (shared/config.py); the defaults below
# are the container ones (bind 0.0.0.0, JSON logs); AMQP_URI and REDIS_URL come from
# docker-compose.yml or the Kubernetes ConfigMap/Secret.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TZ=Asia/Shanghai \
    LOG_FORMAT=json \
    INTAKE_HTTP_HOST=0.0.0.0 \
    INTAKE_HTTP_PORT=8000 \
    METRICS_HOST=0.0.0.0 \
    CONFIG_DIR=/app/config

WORKDIR /app

# Dependencies first (pinned in pyproject.toml), so that a code change does not
# reinstall them: read the list from pyproject.toml without installing the project.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY shared ./shared
COPY services ./services
COPY bench ./bench
RUN pip install --no-deps .

# Routes, SLA policies, grids, departments, notification subscriptions (CONFIG_DIR).
COPY config ./config

RUN useradd --system --uid 10001 --home-dir /app gridbus
USER 10001

# intake HTTP API; /metrics of intake, router, sla, notifier (shared/config.py defaults)
EXPOSE 8000 9101 9102 9103 9104

ENTRYPOINT ["gridbus"]
CMD ["run", "intake"]
