# Transport Informer: one image for the hub and the agent.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# app/store/migrate.py finds the migrations at <source tree>/alembic, so the package is
# installed editable from /srv rather than copied into site-packages.
WORKDIR /srv
COPY pyproject.toml ./
COPY app ./app
COPY alembic ./alembic
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir -e . \
 && useradd --system --uid 10001 --home-dir /srv --shell /usr/sbin/nologin informer \
 && mkdir -p /srv/data \
 && chown informer /srv/data

USER informer
EXPOSE 8000
ENTRYPOINT ["transport-informer"]
CMD ["--help"]
