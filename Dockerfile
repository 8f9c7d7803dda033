# The control image: orchestrator, agent, injector (Locust) and the scalelab CLI.
#   docker build -t scalelab/scalelab:0.1.0 .
# Non-root; the source is installed as a package (no editable paths at run time).
FROM python:3.11.10-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY orchestrator orchestrator
COPY agent agent
COPY injector injector
COPY simulator simulator
COPY sandbox sandbox
COPY experiments experiments
COPY scalelab scalelab
RUN pip wheel --wheel-dir /wheels ".[live]"

FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 NUMBA_CACHE_DIR=/tmp/numba
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels "scalelab[live]" && rm -rf /wheels \
    && groupadd --gid 10001 scalelab && useradd --uid 10001 --gid 10001 --create-home scalelab
USER 10001:10001
WORKDIR /home/scalelab
CMD ["scalelab", "--help"]
