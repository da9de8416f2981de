# toolplex in a container: a slim Python image, the wheel (with the JS client and demo
# page as package data), a non-root user, `toolplex serve` on all interfaces.
#
#   docker build -t toolplex .
#   docker run -p 8000:8000 -e TOOLPLEX_API_KEY="$(openssl rand -hex 24)" toolplex
#
# A host other than loopback needs an API key (TOOLPLEX_API_KEY): without one the server
# refuses to start. compose.yaml runs two of these on one Redis behind one port.

# The demo page's two npm dependencies (vendor/), which the wheel's build copies in.
FROM node:22-slim AS client
WORKDIR /src/client_js
COPY client_js/package.json client_js/package-lock.json ./
COPY client_js/scripts ./scripts
RUN npm ci --no-audit --no-fund

FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY server ./server
COPY client_js ./client_js
COPY --from=client /src/client_js/vendor ./client_js/vendor
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin toolplex
USER toolplex
WORKDIR /home/toolplex
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["toolplex", "serve", "--host", "0.0.0.0", "--port", "8000"]
