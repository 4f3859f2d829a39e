# syntax=docker/dockerfile:1
# Two small images from one build: `tasks-api` and `rds-iam-emulator`, each running as a non-root user.
#
#   docker build --target tasks-api -t tasks-api .
#   docker build --target rds-iam-emulator -t rds-iam-emulator .
#
# Base images are pinned by digest, so a build uses the bytes that were reviewed, not whatever a tag points at today;
# a digest that no longer resolves fails the build instead of changing it. To update one, read the tag's current
# index digest and replace it here, in its own commit:
#
#   docker buildx imagetools inspect rust:1.95-bookworm --format '{{json .Manifest.Digest}}'
#   docker buildx imagetools inspect debian:bookworm-slim --format '{{json .Manifest.Digest}}'

FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY . .
# The caches keep crates and build artefacts between builds; the binaries are copied out of the cached target.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tasks-api -p rds-iam-emulator \
    && install -m 0755 target/release/tasks-api target/release/rds-iam-emulator /usr/local/bin/

FROM debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251 AS runtime
# ca-certificates for AWS endpoints; curl for health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --create-home app \
    && install -d -o app -g app /tls
WORKDIR /app

FROM runtime AS rds-iam-emulator
COPY --from=build /usr/local/bin/rds-iam-emulator /usr/local/bin/rds-iam-emulator
USER 10001
EXPOSE 5433
ENTRYPOINT ["rds-iam-emulator"]
CMD ["--listen", "0.0.0.0:5433", "--tls-dir", "/tls", "--credentials", "/etc/rds-iam-emulator/credentials"]

FROM runtime AS tasks-api
COPY --from=build /usr/local/bin/tasks-api /usr/local/bin/tasks-api
USER 10001
ENV APP__SERVER__HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=20 CMD ["curl", "-fsS", "http://127.0.0.1:8080/health/ready"]
ENTRYPOINT ["tasks-api"]
