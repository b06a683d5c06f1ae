# syntax=docker/dockerfile:1
#
# Linux image of the cimconv converter for the Helm chart's webhook receiver
# (webhook.image): `converter serve --role=webhook`, which receives registry
# notifications and queues conversions but never builds CIMs. The Windows
# workers use Dockerfile.windows.
#
# NOT BUILT IN THIS PROJECT'S CI (no Docker there). .ci/extra builds the same
# binary with the same command and runs it as the webhook role; this file is
# kept correct by review and by charts/cimconv/dockerfile_test.go.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=v0.1.0 \
#     -t registry.example.com/cimconv/converter:v0.1.0-linux --push .
#
# Static binary (CGO_ENABLED=0) on distroless/static: no shell, no package
# manager, runs as nonroot (uid/gid 65532, the chart's runAsUser).

ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
# Modules first: this layer is reused while only sources change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=v0.0.0-dev
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath \
      -ldflags "-s -w -X github.com/cimconv/cimconv/internal/version.Version=${VERSION}" \
      -o /out/converter ./cmd/converter

FROM ${BASE_IMAGE}
ARG VERSION=v0.0.0-dev
LABEL org.opencontainers.image.title="cimconv converter (webhook receiver)" \
      org.opencontainers.image.description="Receives registry webhooks and queues CimFS conversions for the Windows workers" \
      org.opencontainers.image.source="https://github.com/cimconv/cimconv" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/converter /usr/local/bin/converter
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/converter"]
# The chart replaces these arguments (role, --config, --data-dir, secrets).
# Standalone it still needs a NATS URL, a token or HMAC secret file and the
# allowed registries, e.g. CIMCONV_NATS_URL, CIMCONV_WEBHOOK_TOKEN_FILE,
# CIMCONV_WEBHOOK_ALLOWED_REGISTRIES.
CMD ["serve", "--role=webhook", "--listen=:8080", "--data-dir=/tmp/cimconv"]
