FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY mappings ./mappings
RUN pip install . && useradd --system --uid 10001 --no-create-home gateway \
 && mkdir -p /var/lib/gateway && chown gateway /var/lib/gateway

# The state store (rotated OAuth2 tokens, Idempotency-Key answers) must outlive
# the container: mount a volume here, or point GATEWAY_STATE_URL at Redis.
ENV GATEWAY_STATE_URL=sqlite:////var/lib/gateway/state.sqlite3
VOLUME /var/lib/gateway

USER gateway
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
