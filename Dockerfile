# The CloudArb image used by docker-compose.yml (worker, sink, connectors, API, replay).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY connectors connectors
COPY streams streams
COPY solvers solvers
COPY outputs outputs
COPY backtest backtest
COPY embedded embedded
COPY cloudarb cloudarb
COPY infra infra
COPY data data
COPY examples examples
RUN pip install --no-cache-dir .
ENTRYPOINT ["cloudarb"]
