# syntax=docker/dockerfile:1
# The `answers` image: one binary with every subcommand (serve, relay, project, migrate,
# rebuild, seed...), on a small Debian runtime, as a non-root user, fine with a read-only root
# filesystem (it writes nothing to disk). docs/deployment.md says how to build and run it.
#
#   docker build -t answers:0.1.0 .
#
# BINARY=prebuilt takes `answers` from the build context instead of compiling it (what the
# image test does on machines without a registry: scripts/image.sh).
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
ARG BINARY=compiled

FROM ${RUST_IMAGE} AS compiled
WORKDIR /src
# cmake and a C++ compiler for rdkafka's bundled librdkafka.
RUN apt-get update && apt-get install -y --no-install-recommends cmake g++ \
    && rm -rf /var/lib/apt/lists/*
COPY . .
# The queries were checked against the migrations when .sqlx/ was prepared: no database here.
ENV SQLX_OFFLINE=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p answers \
    && cp target/release/answers /answers

FROM scratch AS prebuilt
COPY answers /answers

FROM ${BINARY} AS binary

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="answers" \
      org.opencontainers.image.description="Multi-tenant, event-sourced backend for an AI answers platform" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="UNLICENSED" \
      org.opencontainers.image.source="https://example.invalid/answers"
# ca-certificates: Kapa.ai, identity providers and webhooks are reached over TLS.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 answers \
    && useradd --system --uid 10001 --gid answers --no-create-home --shell /usr/sbin/nologin answers
COPY --from=binary /answers /usr/local/bin/answers
# Listen on every interface inside the container; everything else comes from APP__* variables
# (README, "Configuration") or a mounted file (APP_CONFIG_FILE).
ENV APP__SERVER__HOST=0.0.0.0 \
    APP__SERVER__PORT=8080 \
    APP__LOG__FORMAT=json
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["answers", "probe", "live"]
ENTRYPOINT ["answers"]
CMD ["serve"]
