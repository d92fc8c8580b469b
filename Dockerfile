# teams-bridge as a container: `serve` by default (health, metrics and the last report on :9464).
#   docker build -t teams-bridge .
#   docker run --rm -p 9464:9464 --read-only --tmpfs /tmp teams-bridge --sandbox serve /app/examples/northwind.yaml --listen 0.0.0.0:9464
# Built from the wheel (what users install), run as a non-root user; works with a read-only root
# file system: everything written (history, journal, lock) goes to /var/lib/teams-bridge (a volume).

FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/teams-bridge --create-home teams-bridge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY examples /app/examples
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/var/lib/teams-bridge/state \
    BRIDGE_HISTORY=/var/lib/teams-bridge/history.sqlite \
    BRIDGE_JOURNAL=/var/lib/teams-bridge/journal.jsonl \
    BRIDGE_LISTEN=0.0.0.0:9464
USER 10001
WORKDIR /var/lib/teams-bridge
VOLUME ["/var/lib/teams-bridge"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BRIDGE_LISTEN', ':9464').rsplit(':', 1)[1] + '/healthz', timeout=4)"]
ENTRYPOINT ["teams-bridge"]
CMD ["serve", "/config/desired.yaml"]
