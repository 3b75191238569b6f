# syntax=docker/dockerfile:1
#
# chat_exporter container image.
#
#   docker build -t chat_exporter:local .
#   docker build --build-arg REVISION="$(git rev-parse --short HEAD)" -t chat_exporter:local .
#
# Build stage: the Rust toolchain on Debian 12, so the binary links against the same glibc
# as the runtime stage. Runtime stage: distroless "cc" (glibc, libgcc, CA certificates, no
# shell, no package manager), running as the unprivileged user 65532 ("nonroot").
# The image has no curl: its HEALTHCHECK runs `chat_exporter healthcheck`.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Exposed by the binary as the `revision` label of chat_exporter_build_info.
ARG REVISION=unknown
ENV CHAT_EXPORTER_REVISION=${REVISION}

COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY web ./web

# The cache mounts keep the crate registry and the build directory between builds; the
# binary is copied out of the cached target directory before the mount goes away.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CHAT_EXPORTER_RUSTC_VERSION="$(rustc --version | cut -d' ' -f2)" \
    cargo build --release --locked --bin chat_exporter \
 && install -D -m 0755 target/release/chat_exporter /out/usr/local/bin/chat_exporter \
 && install -d -m 0750 /out/var/lib/chat_exporter \
 && install -d -m 0755 /out/etc/chat_exporter

FROM gcr.io/distroless/cc-debian12:nonroot

ARG REVISION=unknown
LABEL org.opencontainers.image.title="chat_exporter" \
      org.opencontainers.image.description="Prometheus exporter for customer-service chat platforms (Movidesk first)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/chat-exporter/chat_exporter" \
      org.opencontainers.image.revision="${REVISION}"

COPY --from=build /out/usr/local/bin/chat_exporter /usr/local/bin/chat_exporter
COPY --from=build --chown=65532:65532 /out/var/lib/chat_exporter /var/lib/chat_exporter
COPY --from=build /out/etc/chat_exporter /etc/chat_exporter

USER 65532:65532
WORKDIR /var/lib/chat_exporter
EXPOSE 9877

# Exit status 0 when /-/healthy answers 200. With --web.config.file and TLS on, override it
# (docker run --health-cmd / compose `healthcheck:`) with the https URL.
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/chat_exporter", "healthcheck", "--url", "http://127.0.0.1:9877/-/healthy"]

ENTRYPOINT ["/usr/local/bin/chat_exporter"]
