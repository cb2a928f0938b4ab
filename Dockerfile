# The add-on's image. The Supervisor (or CI) builds it on a machine of the
# architecture it is for, so no stage names a --platform: a stage pinned to
# the build machine's platform would ship that machine's binary to every
# architecture.
ARG BUILD_FROM=ghcr.io/home-assistant/base:3.24

# A static binary (musl), with the release profile the project ships
# (`dist`: fat LTO, stripped) and the locked dependencies.
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# No BuildKit-only instructions (cache mounts): a Supervisor that builds
# the image itself may use the classic builder.
RUN cargo build --profile dist --locked --bin switchboard \
    && cp target/dist/switchboard /switchboard \
    && /switchboard --version

FROM ${BUILD_FROM}
ARG BUILD_ARCH
ARG BUILD_VERSION

COPY --from=build /switchboard /usr/bin/switchboard
# The s6-overlay service that starts it (run, finish) and nothing else.
COPY addon/rootfs /

# A graceful stop takes up to the add-on's `timeout` (config.yaml); s6 must
# not kill the service sooner.
ENV S6_SERVICES_GRACETIME=55000

# The Supervisor's watchdog restarts the add-on when this fails. The web
# server answers /healthz on loopback whatever sources it admits, so the
# probe works while the ingress port serves only the ingress proxy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD wget -q -T 5 -O /dev/null "http://127.0.0.1:${SWITCHBOARD_WEB_PORT:-8099}/healthz" || exit 1

LABEL \
    io.hass.type="app" \
    io.hass.name="Switchboard" \
    io.hass.description="HL7 v2 interface engine" \
    io.hass.version="${BUILD_VERSION}" \
    io.hass.arch="${BUILD_ARCH}" \
    org.opencontainers.image.title="Switchboard" \
    org.opencontainers.image.source="https://github.com/switchboard-hl7/switchboard" \
    org.opencontainers.image.licenses="Apache-2.0" \
    org.opencontainers.image.version="${BUILD_VERSION}"
